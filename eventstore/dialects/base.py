"""The engine-specific operations the event log needs, as one small interface."""

from __future__ import annotations

from typing import Any, Callable, Protocol

import orjson

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Engine


class Dialect(Protocol):
    name: str
    read_isolation: str | None
    one_statement_isolation: str | None
    serial_writers: bool  # the engine lets one writer in at a time (``EventLog`` then holds one writing connection)

    def configure(self, engine: Engine, *, schema: str | None) -> None:
        """Install per-connection settings (pragmas, session options, transaction style)."""

    def begin_write(self, conn: Connection) -> None:
        """Begin ``conn``'s transaction as a writer's, before ``conn.begin()`` (SQLite: take the write lock)."""

    def insert_ignoring_conflicts(self, table: Table, rows: list[dict[str, Any]]) -> Any:
        """An INSERT that silently skips rows whose unique key exists (an upsert that changes nothing)."""

    def insert_events(
        self, conn: Connection, table: Table, rows: list[dict[str, Any]]
    ) -> list[tuple[int, int] | None] | None:
        """Insert event rows in one statement (or executemany) and return their (position, txid) in row order.

        A row whose ``after`` is not 0 is inserted only if its stream holds version ``after``; a row left out is
        None in the result, or the whole result is None when the engine cannot tell which."""

    def stream_versions(self, conn: Connection, table: Table, scope_id: int, streams: list[str]) -> dict[str, int]:
        """The current version of each of the scope's streams that has events (absent ones are left out)."""

    def lock_for_migration(self, conn: Connection) -> None:
        """Serialise concurrent schema upgrades of the same database."""

    def horizon(self, conn: Connection) -> int | None:
        """The transaction id below which every writer has finished (PostgreSQL), or None (serial writers)."""

    def read_log(self, conn: Connection, after: tuple[int, int], limit: int) -> list[tuple]:
        """What a follower of the whole log may read next, in order: the next ``limit`` event rows after ``after`` (a
        checkpoint's (txid, position)), read with the driver as plain tuples in ``EVENT_COLUMNS`` order, ``data``
        and ``metadata`` as JSON text (``EventLog.decode_rows`` decodes them)."""


# -- the driver, directly ----------------------------------------------------------------------------------------
#
# The append path runs a handful of fixed statements per transaction. Through SQLAlchemy Core each execution costs
# its cache lookup, parameter processing and result set-up (tens of microseconds, more than SQLite takes to run the
# statement); these helpers hand fixed SQL text (built once by the dialect modules and ``projections.engine_sql``)
# and plain parameters to the driver connection of the caller's Connection, inside its transaction. Driver errors
# are raised as SQLAlchemy's (``IntegrityError``, ``OperationalError``, ...) with the driver's error as ``orig``,
# exactly as Core raises them, so that callers handle one kind of exception.


def json_text(value: Any) -> str:
    """A JSON parameter as the engine's serializer writes it (orjson; ``null`` for None)."""
    return orjson.dumps(value).decode()


def metadata_texts() -> Callable[[Any], str]:
    """``json_text`` that encodes each object once: one append's rows share their metadata document."""
    encoded: dict[int, str] = {}

    def text_of(value: Any) -> str:
        got = encoded.get(id(value))
        if got is None:
            got = encoded[id(value)] = json_text(value)
        return got

    return text_of


def driver_execute(conn: Connection, sql: str, params: Any = ()) -> Any:
    """Execute ``sql`` on the driver connection of ``conn`` (in its transaction); the driver's cursor."""
    try:
        return conn.connection.driver_connection.execute(sql, params)  # type: ignore[union-attr]
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _wrapped(conn, sql, params, exc) from exc


def driver_executemany(conn: Connection, sql: str, rows: Any) -> Any:
    """``executemany`` on a cursor of the driver connection of ``conn``; the cursor."""
    try:
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cur.executemany(sql, rows)
        return cur
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _wrapped(conn, sql, rows, exc) from exc


def driver_copy(conn: Connection, sql: str, rows: Any) -> None:
    """PostgreSQL: ``COPY ... FROM STDIN`` (``sql``) of ``rows`` (tuples in its column order) on the driver
    connection of ``conn``, in its transaction: the cheapest way to load many rows (bulk loads only)."""
    try:
        with conn.connection.driver_connection.cursor() as cur:  # type: ignore[union-attr]
            with cur.copy(sql) as copy:
                write = copy.write_row
                for row in rows:
                    write(row)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _wrapped(conn, sql, None, exc) from exc


def _wrapped(conn: Connection, sql: str, params: Any, exc: Exception) -> Exception:
    """The driver's error as Core raises it; a connection the error says is gone is invalidated first, as Core does
    (so that the pool never hands it out again), and the error says so (``connection_invalidated``)."""
    from sqlalchemy.exc import DBAPIError

    gone = False
    try:
        gone = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)
    except Exception:  # noqa: BLE001 - deciding must never hide the error itself
        gone = False
    if gone and not conn.invalidated:
        conn.invalidate(exc)
    return DBAPIError.instance(sql, params, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect,
                               connection_invalidated=gone)
