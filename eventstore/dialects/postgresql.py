"""PostgreSQL through psycopg 3: the production engine.

Gap-free reading. Concurrent transactions take positions from a sequence when they insert but may commit in any
order, so a reader that follows positions alone can pass over an event that commits late with a lower position and
never see it. Each event therefore records its writing transaction's id (``pg_current_xact_id()``, a column default),
and a reader walks the log in (txid, position) order and stops below ``pg_snapshot_xmin(pg_current_snapshot())``:
every transaction below that horizon has finished, and every transaction that starts later gets a larger id, so
nothing can ever appear behind a reader's checkpoint. Writers are never serialised. The price is that one long open
transaction holds readers back; ``idle_in_transaction_session_timeout`` (set on every connection) bounds it, and
``EventLog.lag`` shows it.

Stale connections. A pooled connection can outlive its server process (a restart, a failover, a proxy's idle
timeout). SQLAlchemy's ``pool_pre_ping`` would find out with a ``SELECT 1`` round trip before every checkout, which
costs a quarter of a one-statement read; instead a connection is pinged on checkout only when it has sat in the pool
longer than ``PING_AFTER`` seconds. A busy pool pays nothing; a server that went away and came back (which takes
longer than that) is found out before any statement is sent.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from sqlalchemy import Table, event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError

from .base import driver_execute, json_text, metadata_texts

_MIGRATION_LOCK = 0x7461736B73746F  # "tasksto"
PING_AFTER = 1.0  # seconds a pooled connection may sit idle and still be handed out without a ping
_IDLE_SINCE = "taskstore_idle_since"


@functools.cache
def _insert_events(table: str) -> str:
    return (
        f"INSERT INTO {table} (scope_id, stream, version, type, schema_version, data, metadata) "
        "SELECT s, st, v, t, sv, d::jsonb, m::jsonb FROM unnest("
        "%b::bigint[], %b::text[], %b::int[], %b::text[], %b::smallint[], %b::text[], %b::text[], %b::int[]"
        ") AS u(s, st, v, t, sv, d, m, a) "
        f"WHERE u.a = 0 OR EXISTS (SELECT 1 FROM {table} e WHERE e.scope_id = u.s AND e.stream = u.st "
        "AND e.version = u.a) "
        "RETURNING position, txid, scope_id, stream, version"
    )


@functools.cache
def _insert_one_event(table: str) -> str:
    # One row (a transition, a condition): plain parameters. The unnest form costs a single row about 0.3 ms more:
    # the server plans it anew at every execution (its generic plan, costed for arrays of unknown length, never
    # wins against the custom one), which this statement's plan does not need.
    return (
        f"INSERT INTO {table} (scope_id, stream, version, type, schema_version, data, metadata) "
        "SELECT %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb "
        f"WHERE %s = 0 OR EXISTS (SELECT 1 FROM {table} e WHERE e.scope_id = %s AND e.stream = %s "
        "AND e.version = %s) "
        "RETURNING position, txid"
    )


@functools.cache
def _read_log(table: str) -> str:
    # data and metadata as text: decode_rows decodes them itself (and each distinct metadata document once).
    return (
        "SELECT position, txid, scope_id, stream, version, type, schema_version, data::text, metadata::text "
        f"FROM {table} WHERE (txid, position) > (%s::bigint, %s::bigint) "
        "AND txid < (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint "
        "ORDER BY txid, position LIMIT %s"
    )


def ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection on checkout when it has been idle more than ``PING_AFTER`` seconds; one that does not
    answer is replaced (the pool reconnects when a checkout listener raises ``DisconnectionError``)."""

    def idle_from_now(_dbapi_conn: Any, record: Any, *_: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    def checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get(_IDLE_SINCE, 0.0) <= PING_AFTER:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"a pooled connection did not answer a ping: {exc}") from exc

    event.listen(engine, "connect", idle_from_now)
    event.listen(engine, "checkin", idle_from_now)
    event.listen(engine, "checkout", checkout)


class PostgreSQLDialect:
    name = "postgresql"
    read_isolation = "REPEATABLE READ"  # the isolation level of read transactions
    # One-statement reads need no transaction (a statement is its own snapshot): no BEGIN and COMMIT round trips.
    serial_writers = False  # writers run side by side, each on its own connection
    one_statement_isolation = "AUTOCOMMIT"

    def configure(self, engine: Engine, *, schema: str | None) -> None:
        # Session settings (search_path, idle_in_transaction_session_timeout) travel in the connect options that
        # eventstore.engine builds; the schema itself must exist before the first migration.
        ping_when_idle(engine)
        if schema:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                conn.commit()

    def begin_write(self, conn: Connection) -> None:
        pass  # writers are never serialised: expected versions and unique keys decide

    def insert_ignoring_conflicts(self, table: Table, rows: list[dict[str, Any]]) -> Any:
        return pg_insert(table).values(rows).on_conflict_do_nothing()

    def insert_events(self, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> list[tuple[int, int]]:
        """Insert events and return their (position, txid) in row order.

        One ``INSERT ... SELECT FROM unnest(arrays)``: one round trip and one statement text whatever the batch size,
        so psycopg converts it once and the server prepares it once per connection (a multi-row VALUES statement
        changes with the batch size). The arrays travel in binary (``%b``): in text, psycopg would quote and escape
        every JSON document into an array literal, which costs more than the insert. RETURNING gives each row's
        (scope, stream, version) with its position and txid, so the rows are matched by key, not by the order the
        server happened to return them in.

        A single row goes in by a plain-parameter statement of the same meaning (see ``_insert_one_event``).

        A row whose ``after`` is not 0 goes in only if its stream holds version ``after`` (an exact expected version,
        checked by the insert, in the statement's snapshot: a version committed by another writer since is refused
        by the unique key instead); a row left out is None in the result (the append is then refused).
        """
        meta = metadata_texts()
        if len(rows) == 1:
            r = rows[0]
            got_one = driver_execute(
                conn, _insert_one_event(table.name),
                (r["scope_id"], r["stream"], r["version"], r["type"], r["schema_version"], json_text(r["data"]),
                 meta(r["metadata"]), r["after"], r["scope_id"], r["stream"], r["after"]),
            ).fetchone()
            return [None if got_one is None else (got_one[0], got_one[1])]
        params = (
            [r["scope_id"] for r in rows],
            [r["stream"] for r in rows],
            [r["version"] for r in rows],
            [r["type"] for r in rows],
            [r["schema_version"] for r in rows],
            [json_text(r["data"]) for r in rows],
            [meta(r["metadata"]) for r in rows],
            [r["after"] for r in rows],
        )
        got = {
            (sid, stream, version): (position, txid)
            for position, txid, sid, stream, version in driver_execute(conn, _insert_events(table.name), params)
        }
        return [got.get((r["scope_id"], r["stream"], r["version"])) for r in rows]

    def stream_versions(self, conn: Connection, table: Table, scope_id: int, streams: list[str]) -> dict[str, int]:
        if len(streams) == 1:
            version = driver_execute(
                conn, f"SELECT max(version) FROM {table.name} WHERE scope_id = %s AND stream = %s",
                (scope_id, streams[0]),
            ).fetchone()[0]
            return {} if version is None else {streams[0]: version}
        sql = (
            f"SELECT stream, max(version) FROM {table.name} WHERE scope_id = %s AND stream = ANY(%s::text[]) "
            "GROUP BY stream"
        )
        return dict(driver_execute(conn, sql, (scope_id, streams)).fetchall())

    def lock_for_migration(self, conn: Connection) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})

    def read_log(self, conn: Connection, after: tuple[int, int], limit: int) -> list[tuple]:
        """After the checkpoint in (txid, position) order, below the commit horizon (so that no event can commit
        later behind it), as fixed driver text, JSON columns as text."""
        from ..schema import events

        return driver_execute(conn, _read_log(events.name), (after[0], after[1], limit)).fetchall()

    def horizon(self, conn: Connection) -> int | None:
        return int(conn.execute(text("SELECT (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")).scalar_one())
