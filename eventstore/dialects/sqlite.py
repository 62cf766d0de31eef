"""SQLite: the embedded default.

- WAL journal, ``synchronous=NORMAL`` (durable across application crashes; the last transactions may be lost on
  power failure, the usual trade of an embedded store), foreign keys on, a busy timeout so that concurrent writers
  wait instead of failing.
- Writers begin with ``BEGIN IMMEDIATE``: they take the write lock first, so two writers never both read a stream
  version and then race to upgrade their locks. SQLite serialises writers, so positions commit in order and a reader
  of the whole log may simply follow positions.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, event, insert, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import Select

WRITE = "taskstore_write"
_MAX_POSITION = text("SELECT max(position) FROM events")


class SQLiteDialect:
    name = "sqlite"
    read_isolation = None  # the isolation level of read transactions

    def configure(self, engine: Engine, *, schema: str | None) -> None:
        if schema:
            raise ValueError("schemas are a PostgreSQL option; on SQLite use another file")

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_connection.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")

    def insert_ignoring_conflicts(self, table: Table, rows: list[dict[str, Any]]) -> Any:
        return sqlite_insert(table).values(rows).on_conflict_do_nothing()

    def insert_events(self, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> list[tuple[int, int]]:
        """Insert events and return their (position, txid) in row order.

        Writers hold the write lock (``BEGIN IMMEDIATE``) and positions are rowids, which SQLite assigns as one more
        than the largest, so a batch takes the consecutive positions after the current maximum: one executemany, no
        RETURNING (which SQLAlchemy can only keep in order here by inserting row by row). Checked, not assumed: if the
        maximum afterwards is not where it must be, the positions are read back by (scope, stream, version).
        """
        before = conn.execute(_MAX_POSITION).scalar() or 0
        conn.execute(insert(table), rows)
        after = conn.execute(_MAX_POSITION).scalar() or 0
        if after == before + len(rows):
            return [(before + i, 0) for i in range(1, len(rows) + 1)]
        found = {
            (r.scope_id, r.stream, r.version): r.position
            for r in conn.execute(
                select(table.c.scope_id, table.c.stream, table.c.version, table.c.position).where(
                    table.c.position > before
                )
            )
        }
        return [(found[(r["scope_id"], r["stream"], r["version"])], 0) for r in rows]

    def lock_for_migration(self, conn: Connection) -> None:
        pass  # the migration runs inside BEGIN IMMEDIATE, which already excludes other writers

    def readable_log(self, query: Select, after: tuple[int, int], limit: int) -> Select:
        from ..schema import events

        return query.where(events.c.position > after[1]).order_by(events.c.position).limit(limit)

    def horizon(self, conn: Connection) -> int | None:
        return None

