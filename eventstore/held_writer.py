"""One connection kept checked out for the event log's writer, on engines whose writers are serial (SQLite).

Checking a connection out of SQLAlchemy's pool, wrapping it in a ``Connection`` and handing it back costs a
one-row append about a fifth of its time: more than SQLite takes to run the append's statements. SQLite lets one
writer in at a time anyway, so a log keeps one connection for writing and hands it to whichever writer finds it
free. A writer that finds it taken (another thread is writing, or this one is, in a nested transaction) checks a
connection out of the pool as before and waits for SQLite's write lock there: nothing about concurrency changes.

A connection is never shared across a fork: a process that finds the held connection made by its parent leaves
it alone (the parent still uses the database handle inside it) and makes its own. A connection the pool
invalidated (its database went away) is replaced.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from sqlalchemy.engine import Connection, Engine

_INHERITED: list[Any] = []  # held connections of a parent process: kept referenced, never closed or collected here


class HeldWriter:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._pid = os.getpid()
        self._closed = False

    def acquire(self) -> Connection | None:
        """The held connection, now this caller's until :meth:`release`; None when another writer has it."""
        if self._closed or not self._lock.acquire(blocking=False):
            return None
        try:
            if self._pid != os.getpid():
                if self._conn is not None:
                    _INHERITED.append(self._conn)
                self._conn, self._pid = None, os.getpid()
            conn = self._conn
            if conn is None or conn.closed or conn.invalidated:
                if conn is not None:
                    conn.close()
                conn = self._conn = self.engine.connect()
            return conn
        except BaseException:
            self._lock.release()
            raise

    def release(self) -> None:
        self._lock.release()

    def close(self) -> None:
        """Hand the held connection back to the pool; later writers check theirs out as before."""
        with self._lock:
            self._closed = True
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
