"""One connection kept checked out for the event log's writer, on engines whose writers are serial (SQLite).

Checking a connection out of SQLAlchemy's pool, wrapping it in a ``Connection`` and handing it back costs a
one-row append about a fifth of its time: more than SQLite takes to run the append's statements. SQLite lets one
writer in at a time anyway, so a log keeps one connection for writing and its writers take turns on it: a writer
that finds it taken by another thread waits for it on a lock, which wakes it the moment the other is done. On a
pooled connection it would wait for SQLite's write lock in SQLite's busy handler instead, which sleeps between
tries (up to 100 ms at a time), so that a writer queued behind a 30 ms transaction (a chunk of a snapshot) would
lose 50 ms. Writers of other processes still meet in SQLite's lock, as before.

A writer that already holds the connection (a nested transaction in the same thread), or that has waited longer
than SQLite's own busy timeout, checks a connection out of the pool and waits for SQLite's write lock there.

A connection is never shared across a fork: a process that finds the held connection made by its parent leaves
it alone (the parent still uses the database handle inside it) and makes its own, with a lock of its own (the
parent's may have been taken by a thread that does not exist in the child). A connection the pool invalidated
(its database went away) is replaced.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from sqlalchemy.engine import Connection, Engine

_INHERITED: list[Any] = []  # held connections of a parent process: kept referenced, never closed or collected here
_fork_guard = threading.Lock()


def _new_fork_guard() -> None:
    global _fork_guard
    _fork_guard = threading.Lock()  # the parent's may have been held by one of its threads at the fork


os.register_at_fork(after_in_child=_new_fork_guard)


class HeldWriter:
    def __init__(self, engine: Engine, *, wait: float = 30.0) -> None:
        self.engine = engine
        self.wait = wait  # seconds; SQLite's busy timeout (eventstore.dialects.sqlite)
        self._lock = threading.Lock()
        self._owner: int | None = None  # the thread that holds the connection
        self._conn: Connection | None = None
        self._pid = os.getpid()
        self._closed = False

    def acquire(self) -> Connection | None:
        """The held connection, now this caller's until :meth:`release`, once any other thread is done with it;
        None (write on a pooled connection) when this thread holds it already, after ``wait`` seconds, or after
        :meth:`close`."""
        if self._closed:
            return None
        if self._pid != os.getpid():
            self._forked()
        me = threading.get_ident()
        if self._owner == me or not self._lock.acquire(timeout=self.wait):
            return None
        self._owner = me
        try:
            conn = self._conn
            if self._closed:
                conn = None
            elif conn is None or conn.closed or conn.invalidated:
                if conn is not None:
                    conn.close()
                conn = self._conn = self.engine.connect()
        except BaseException:
            self.release()
            raise
        if conn is None:
            self.release()
        return conn

    def release(self) -> None:
        self._owner = None
        self._lock.release()

    def close(self) -> None:
        """Hand the held connection back to the pool; later writers check theirs out as before."""
        self._closed = True
        if self._pid != os.getpid():
            self._forked()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None

    def _forked(self) -> None:
        """In a child process: leave the parent's connection alone, and start with a lock of this process."""
        with _fork_guard:
            if self._pid == os.getpid():
                return
            if self._conn is not None:
                _INHERITED.append(self._conn)
            self._conn, self._owner, self._lock, self._pid = None, None, threading.Lock(), os.getpid()
