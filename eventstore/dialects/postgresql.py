"""PostgreSQL through psycopg 3: the production engine.

Gap-free reading. Concurrent transactions take positions from a sequence when they insert but may commit in any
order, so a reader that follows positions alone can pass over an event that commits late with a lower position and
never see it. Each event therefore records its writing transaction's id (``pg_current_xact_id()``, a column default),
and a reader walks the log in (txid, position) order and stops below ``pg_snapshot_xmin(pg_current_snapshot())``:
every transaction below that horizon has finished, and every transaction that starts later gets a larger id, so
nothing can ever appear behind a reader's checkpoint. Writers are never serialised. The price is that one long open
transaction holds readers back; ``idle_in_transaction_session_timeout`` (set on every connection) bounds it, and
``EventLog.lag`` shows it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, insert, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import Select

_MIGRATION_LOCK = 0x7461736B73746F  # "tasksto"
_HORIZON = text("(pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")


class PostgreSQLDialect:
    name = "postgresql"
    read_isolation = "REPEATABLE READ"  # the isolation level of read transactions

    def configure(self, engine: Engine, *, schema: str | None) -> None:
        # Session settings (search_path, idle_in_transaction_session_timeout) travel in the connect options that
        # eventstore.engine builds; the schema itself must exist before the first migration.
        if schema:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                conn.commit()

    def insert_ignoring_conflicts(self, table: Table, rows: list[dict[str, Any]]) -> Any:
        return pg_insert(table).values(rows).on_conflict_do_nothing()

    def insert_events(self, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> list[tuple[int, int]]:
        """Insert events and return their (position, txid) in row order: one INSERT ... RETURNING per batch."""
        stmt = insert(table).returning(table.c.position, table.c.txid, sort_by_parameter_order=True)
        return [(p, t) for p, t in conn.execute(stmt, rows)]

    def lock_for_migration(self, conn: Connection) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})

    def readable_log(self, query: Select, after: tuple[int, int], limit: int) -> Select:
        from ..schema import events

        return (
            query.where(tuple_(events.c.txid, events.c.position) > tuple_(*after))
            .where(events.c.txid < _HORIZON)
            .order_by(events.c.txid, events.c.position)
            .limit(limit)
        )

    def horizon(self, conn: Connection) -> int | None:
        return int(conn.execute(text("SELECT (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")).scalar_one())
