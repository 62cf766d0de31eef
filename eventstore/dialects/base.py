"""The engine-specific operations the event log needs, as one small interface."""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import Select


class Dialect(Protocol):
    name: str
    read_isolation: str | None

    def configure(self, engine: Engine, *, schema: str | None) -> None:
        """Install per-connection settings (pragmas, session options, transaction style)."""

    def insert_ignoring_conflicts(self, table: Table, rows: list[dict[str, Any]]) -> Any:
        """An INSERT that silently skips rows whose unique key exists (an upsert that changes nothing)."""

    def insert_events(self, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> list[tuple[int, int]]:
        """Insert event rows in one statement (or executemany) and return their (position, txid) in row order."""

    def lock_for_migration(self, conn: Connection) -> None:
        """Serialise concurrent schema upgrades of the same database."""

    def readable_log(self, query: Select, after: tuple[int, int], limit: int) -> Select:
        """Restrict a query over ``events`` to what a follower of the whole log may read next, in order."""

    def horizon(self, conn: Connection) -> int | None:
        """The transaction id below which every writer has finished (PostgreSQL), or None (serial writers)."""
