"""The read side's engine-specific SQL, all in one place: consistent reads, which events a snapshot lacks, the
delta aggregate that validates counts, the inline projection's reads and writes on every append (sent to the driver
as fixed text), the snapshot schedule, copying task rows into snapshots, and swapping rebuilt tables in.

SQLite serialises writers, so a log position alone says which events a state reflects. PostgreSQL commits
concurrent transactions out of position order; a state read there reflects exactly the events visible in the
reading transaction's snapshot (``pg_current_snapshot()``), which a snapshot of a scope records, so that the events
it lacks are found exactly later (those of the transactions it did not see), even below its position.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import JSON, Index, Table, bindparam, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from eventstore import EventLog
from eventstore.dialects.base import driver_execute, driver_executemany
from eventstore.dialects.base import json_text as _dumps
from eventstore.task import TASK_ADDED, TASK_TRANSITIONED

from .snapshot_tables import projection_checkpoints
from .tables import STATE_COLUMNS

# Event shapes (type, schema version) whose fields the delta aggregate reads in SQL; any other falls back to Python.
SQL_SHAPES = frozenset({(TASK_ADDED, 1), (TASK_TRANSITIONED, 1)})


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


@dataclass(frozen=True)
class Point:
    """A state of one scope: the last of its events it reflects and, on PostgreSQL, the snapshot it was read in."""

    position: int
    xmin: int | None = None
    visibility: str | None = None


# -- consistent reads -------------------------------------------------------------------------------------------


@contextmanager
def consistent(log: EventLog) -> Iterator[Connection]:
    """A transaction in which every statement sees the same state (REPEATABLE READ on PostgreSQL; on SQLite any
    transaction is one snapshot). Writes are allowed, and on SQLite take the write lock when first made."""
    if is_postgresql(log.engine):
        with log.engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
            yield conn
    else:
        with log.reading() as conn:
            yield conn


def point_of(conn: Connection, position: int) -> Point:
    """The state ``conn`` reads, for a scope whose last visible event is at ``position``."""
    if conn.engine.dialect.name != "postgresql":
        return Point(position)
    row = conn.execute(
        text("SELECT pg_current_snapshot()::text, (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")
    ).one()
    return Point(position, int(row[1]), row[0])


def _open_then(visibility: str) -> tuple[int, list[int]]:
    """A pg_snapshot's ``xmax`` (the first transaction id not yet assigned when it was taken) and its in-progress
    transaction ids: of the transactions that wrote anything, exactly those were not visible in it."""
    _xmin, xmax, xip = visibility.split(":")
    return int(xmax), [int(x) for x in xip.split(",") if x]


def lacks(conn_or_engine: Connection | Engine, alias: str, base: Point | None) -> tuple[str, dict[str, Any]]:
    """A SQL condition on ``alias`` (the events table): the event is not reflected in the state ``base``.

    SQLite: after its position. PostgreSQL: after its position, or written by a transaction the state's snapshot did
    not see: one it lists as open then, or one whose id was assigned after it (``>= xmax``; such a transaction took
    its positions later, bar the first row of an insert that drew its position just before its id, hence the
    ``position <=`` half, which the (txid, position) index answers without reading rows).
    """
    if base is None:
        return "1 = 1", {}
    if conn_or_engine.dialect.name != "postgresql" or base.visibility is None:
        return f"{alias}.position > :base_position", {"base_position": base.position}
    # The positions of the unseen events at or below the state's position, found once through the (txid, position)
    # index (an InitPlan), so that the planner never trades it for a scan of the scope.
    u = f"{alias}_unseen"
    unseen_below, params = _unseen_at_or_below(u, base)
    cond = (
        f"({alias}.position > :base_position OR {alias}.position = ANY(ARRAY("
        f"SELECT {u}.position FROM events {u} WHERE {unseen_below})))"
    )
    return cond, params


def _unseen_at_or_below(u: str, base: Point) -> tuple[str, dict[str, Any]]:
    """PostgreSQL: a SQL condition on ``u`` (the events table): an event at or below ``base``'s position that its
    snapshot did not see, answered by the (txid, position) index. The range on the transaction id has an upper bound
    (the largest bigint: every id is below it) so that the planner reads it from that index whatever its statistics:
    on a table no ANALYZE has seen it takes a one-sided range for a third of the table and scans the table instead
    (5.7 ms against 0.07 ms at 50,000 events; a table of 42,801,900 would take seconds)."""
    assert base.visibility is not None
    xmax, open_then = _open_then(base.visibility)
    cond = (  # + 0: not by position
        f"({u}.txid >= :base_xmax AND {u}.txid <= {2**63 - 1} AND {u}.position + 0 <= :base_position)"
    )
    if open_then:
        cond += f" OR {u}.txid IN ({', '.join(str(x) for x in open_then)})"  # integers PostgreSQL printed
    return cond, {"base_position": base.position, "base_xmax": xmax}


def lacks_after(conn: Connection, base: Point | None) -> int:
    """A position that every event ``base`` lacks (``lacks``) comes after: a read of those events by keyset on the
    position starts there, so that its index range begins at the state rather than at the scope's first event (with
    a lower bound of 0 beside ``lacks``, SQLite walked the scope's every event before the state's: 100 ms at 200,000
    tasks for an empty tail). SQLite: the state's position; PostgreSQL: before any event at or below it that its
    snapshot did not see, too (one probe of the (txid, position) index)."""
    if base is None:
        return 0
    if conn.engine.dialect.name != "postgresql" or base.visibility is None:
        return base.position
    unseen_below, params = _unseen_at_or_below("u", base)
    # min(position + 0): min(position) would be read off the positions' own index, in order, until a row matches
    # (no row: the whole table).
    first = conn.execute(text(f"SELECT min(u.position + 0) FROM events u WHERE {unseen_below}"), params).scalar()
    return base.position if first is None else min(base.position, int(first) - 1)


def unseen(alias: str, point: Point) -> tuple[str, dict[str, Any]]:
    """PostgreSQL: a SQL condition on ``alias`` (the events table): the event's transaction was not visible in the
    snapshot ``point`` was read in (it was still open then, or began later)."""
    assert point.visibility is not None
    xmax, open_then = _open_then(point.visibility)
    cond = f"{alias}.txid >= :unseen_xmax"
    if open_then:
        cond = f"({cond} OR {alias}.txid IN ({', '.join(str(x) for x in open_then)}))"
    return cond, {"unseen_xmax": xmax}


# -- the delta aggregate ----------------------------------------------------------------------------------------


def count_since(conn: Connection, scope_id: int, base: Point | None, upto: int | None = None) -> int:
    """How many of the scope's events ``base`` lacks (an index range count), up to position ``upto``."""
    cond, params = lacks(conn, "e", base)
    sql = f"SELECT count(*) FROM events e WHERE e.scope_id = :sid AND {cond}"
    if upto is not None:
        sql += " AND e.position <= :upto"
        params["upto"] = upto
    return int(conn.execute(text(sql), {"sid": scope_id, **params}).scalar_one())


def delta_groups(conn: Connection, scope_id: int, base: Point | None, upto: int | None = None) -> list[tuple]:
    """The count changes of the events ``base`` lacks, aggregated in the database: one row per (type, schema
    version, from, to) with the number of events, their tasks' required slots, and the schema versions of those
    tasks' TaskAdded events (required slots come from the TaskAdded event: the log, not the projection)."""
    pg = conn.engine.dialect.name == "postgresql"
    if pg:
        f, t = "e.data->>'from'", "e.data->>'to'"
        slots = "COALESCE(NULLIF((a.data->'spec'->>'requiredSlots')::bigint, 0), 1)"
    else:
        f, t = "json_extract(e.data, '$.from')", "json_extract(e.data, '$.to')"
        slots = "COALESCE(NULLIF(json_extract(a.data, '$.spec.requiredSlots'), 0), 1)"
    cond, params = lacks(conn, "e", base)
    added = f"a.scope_id = e.scope_id AND a.stream = e.stream AND a.version = 1 AND a.type = '{TASK_ADDED}'"
    where = f"e.scope_id = :sid AND e.type IN ('{TASK_ADDED}', '{TASK_TRANSITIONED}') AND {cond}"
    if upto is not None:
        where += " AND e.position <= :upto"
        params["upto"] = upto
    sql = _delta_groups_sql(f, t, slots, added, where, tail=base is not None, pg=pg, upto=upto is not None)
    return [tuple(r) for r in conn.execute(text(sql), {"sid": scope_id, **params})]


def _delta_groups_sql(f: str, t: str, slots: str, added: str, where: str, *, tail: bool, pg: bool,
                      upto: bool = False) -> str:
    """The delta aggregate's text, in a shape that does not depend on the planner's statistics.

    - From the scope's first event, the join, its rows narrowed, in a sub-select the planner may not merge into the
      grouping (PostgreSQL: ``OFFSET 0``; SQLite: ``LIMIT -1 OFFSET 0``, which its query flattener does not merge into
      an aggregate), to the six values grouped and summed. Grouped by sorting, each row would otherwise carry both
      joined events' whole data documents into the sort: at 200,000 tasks (855,890 events), 372 MB of temporary
      files against 46 MB on PostgreSQL (2.7 s against 2.1 s; at 42,801,900 events, about 23 GB), 845 MiB written by
      SQLite's sorter against 56 MiB (2.5 s against 2.1 s). On PostgreSQL the join is the planner's (jsonb is read
      without parsing). SQLite's planner drives it from every event and looks its TaskAdded event up, parsing that
      JSON text again for each of the task's events; so on SQLite the join is driven from the scope's TaskAdded
      events instead (with ``upto``, those at or before ``:upto``: a task's events all follow its TaskAdded), each
      one's required slots read once, in a sub-select of its own, and each task's events found through the (scope,
      stream, version) index (``CROSS JOIN`` fixes that order): at 200,000 tasks, 2.06 s became 1.70 s.
    - PostgreSQL, after a base (a tail): the same, but each event after the base looks its TaskAdded event up in a
      lateral sub-select (kept by OFFSET 0 from being pulled up), so that the join is always driven by the tail. As
      a plain join, on an events table no ANALYZE has seen the planner may drive it from the scope's every TaskAdded
      event instead: at 200,000 tasks, 1.0 s against 0.8 ms for a tail of 20 events.
    - SQLite, after a base: the plain join. Its planner drives it from the tail, and a tail about as long as the
      snapshots' interval (10,000 events) sorts in memory, where the sub-select costs more per row than it saves
      (at 200,000 tasks, a tail of 2,000 events: 5.0 ms against 5.8; of 20,000: 66 ms against 62)."""
    if not pg and tail:
        return (
            f"SELECT e.type, e.schema_version, {f} AS f, {t} AS t, count(*), sum({slots}), min(a.schema_version), "
            f"max(a.schema_version) FROM events e JOIN events a ON {added} WHERE {where} "
            "GROUP BY e.type, e.schema_version, f, t"
        )
    if pg and tail:
        values = "a.slots, a.added_version"
        source = (
            f"events e CROSS JOIN LATERAL (SELECT {slots} AS slots, a.schema_version AS added_version "
            f"FROM events a WHERE {added} OFFSET 0) a"
        )
    elif pg:
        values = f"{slots} AS slots, a.schema_version AS added_version"
        source = f"events e JOIN events a ON {added}"
    else:
        values = "a.slots, a.added_version"
        first = f"a.scope_id = :sid AND a.version = 1 AND a.type = '{TASK_ADDED}'"
        if upto:
            first += " AND a.position <= :upto"
        source = (
            f"(SELECT a.scope_id, a.stream, {slots} AS slots, a.schema_version AS added_version FROM events a "
            f"WHERE {first} LIMIT -1 OFFSET 0) a CROSS JOIN events e ON e.scope_id = a.scope_id AND e.stream = a.stream"
        )
    fence = "OFFSET 0" if pg else "LIMIT -1 OFFSET 0"
    return (
        "SELECT type, schema_version, f, t, count(*), sum(slots), min(added_version), max(added_version) "
        f"FROM (SELECT e.type, e.schema_version, {f} AS f, {t} AS t, {values} FROM {source} WHERE {where} {fence}) d "
        "GROUP BY type, schema_version, f, t"
    )


# -- the inline projection's writes ------------------------------------------------------------------------------
#
# Every append runs these, so they go to the driver directly (``eventstore.dialects.base.driver_execute``) as fixed
# text built once per engine and table, with plain tuples: SQLAlchemy's per-statement compilation lookup and
# per-row parameter processing cost more than SQLite takes to run them. JSON columns are encoded here as the
# engine's serializer encodes them (orjson; ``null`` for None), cast to jsonb on PostgreSQL.


class _RowSQL:
    """A table's full-row INSERT and UPDATEs (by its primary key) for one engine, and rows as their tuples."""

    def __init__(self, table: Table, pg: bool) -> None:
        self.table = table
        self.pg = pg
        self.names = [c.name for c in table.columns]
        self.keys = [c.name for c in table.primary_key.columns]
        self.json = {c.name for c in table.columns if isinstance(c.type, JSON)}
        mark = self.mark = "%s" if pg else "?"
        self.insert = (
            f"INSERT INTO {table.name} ({', '.join(self.names)}) VALUES ({', '.join(self._m(n) for n in self.names)})"
        )
        self._insert_order = [(n, n in self.json) for n in self.names]
        self._where = " AND ".join(f"{k} = {mark}" for k in self.keys)
        self._updates: dict[tuple[str, ...], tuple[str, list[tuple[str, bool]]]] = {}
        self._many_updates: dict[tuple[str, ...], tuple[str, list[tuple[str, bool]]]] = {}
        if pg:
            from sqlalchemy.dialects import postgresql

            d = postgresql.dialect()
            # Each column as an array parameter (JSON as text, cast per element), for unnest().
            self._array = {
                c.name: "text[]" if c.name in self.json else f"{c.type.compile(dialect=d)}[]" for c in table.columns
            }
            self.insert_many = self._unnest_insert()

    def _unnest(self, names: Sequence[str]) -> str:
        arrays = ", ".join(f"%b::{self._array[n]}" for n in names)
        return f"unnest({arrays}) AS u({', '.join(f'c{i}' for i in range(len(names)))})"

    def _value(self, i: int, name: str) -> str:
        return f"u.c{i}::jsonb" if name in self.json else f"u.c{i}"

    def _unnest_insert(self) -> str:
        values = ", ".join(self._value(i, n) for i, n in enumerate(self.names))
        names = ", ".join(self.names)
        return f"INSERT INTO {self.table.name} ({names}) SELECT {values} FROM {self._unnest(self.names)}"

    def update_many(self, columns: tuple[str, ...] | None) -> tuple[str, list[tuple[str, bool]]]:
        """PostgreSQL: the UPDATE of many rows from one unnest() of array parameters, and their order."""
        got = self._many_updates.get(columns)  # type: ignore[arg-type]
        if got is None:
            rest = [n for n in self.names if n not in self.keys and (columns is None or n in columns)]
            order = rest + self.keys
            sets = ", ".join(f"{n} = {self._value(i, n)}" for i, n in enumerate(rest))
            where = " AND ".join(f"t.{k} = u.c{len(rest) + i}" for i, k in enumerate(self.keys))
            sql = f"UPDATE {self.table.name} AS t SET {sets} FROM {self._unnest(order)} WHERE {where}"
            got = self._many_updates[columns] = (sql, [(n, n in self.json) for n in order])  # type: ignore[index]
        return got

    def _m(self, name: str) -> str:
        return f"CAST({self.mark} AS jsonb)" if self.pg and name in self.json else self.mark

    def insert_tuples(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple]:
        order = self._insert_order
        return [tuple(_dumps(r[n]) if j else r[n] for n, j in order) for r in rows]

    def update(self, columns: tuple[str, ...] | None) -> tuple[str, list[tuple[str, bool]]]:
        """The UPDATE of ``columns`` (None: every column but the key) and the order of its parameters."""
        got = self._updates.get(columns)  # type: ignore[arg-type]
        if got is None:
            rest = [n for n in self.names if n not in self.keys and (columns is None or n in columns)]
            sql = f"UPDATE {self.table.name} SET {', '.join(f'{n} = {self._m(n)}' for n in rest)} WHERE {self._where}"
            got = self._updates[columns] = (sql, [(n, n in self.json) for n in rest + self.keys])  # type: ignore[index]
        return got


_ROW_SQL: dict[tuple[str, int], _RowSQL] = {}


def _row_sql(conn: Connection, table: Table) -> _RowSQL:
    key = (conn.dialect.name, id(table))
    got = _ROW_SQL.get(key)
    if got is None or got.table is not table:
        got = _ROW_SQL[key] = _RowSQL(table, conn.dialect.name == "postgresql")
    return got


def _columns(rows: Sequence[Mapping[str, Any]], order: list[tuple[str, bool]]) -> tuple[list[Any], ...]:
    return tuple([_dumps(r[n]) for r in rows] if j else [r[n] for r in rows] for n, j in order)


def insert_view_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]],
                     values: Sequence[tuple] = ()) -> None:
    """Insert whole rows (every column), given as ``rows`` (by column name) and as ``values`` (tuples in the
    table's column order, JSON columns as JSON text): one statement of array parameters on PostgreSQL (one round
    trip, one statement text whatever the number of rows, arrays in binary), one executemany on SQLite."""
    sql = _row_sql(conn, table)
    every = [*values, *sql.insert_tuples(rows)] if rows else list(values)
    if sql.pg and len(every) > 1:
        driver_execute(conn, sql.insert_many, tuple(list(column) for column in zip(*every)))
    elif every:
        _execute_rows(conn, sql.insert, every)


def update_view_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]],
                     columns: tuple[str, ...] | None = None) -> None:
    """Set ``columns`` (None: every column) of rows found by their primary key; each row holds the key columns
    and those columns. As ``insert_view_rows``: one statement of arrays on PostgreSQL, one executemany on SQLite."""
    sql = _row_sql(conn, table)
    if sql.pg and len(rows) > 1:
        text_, order = sql.update_many(columns)
        driver_execute(conn, text_, _columns(rows, order))
        return
    text_, order = sql.update(columns)
    _execute_rows(conn, text_, [tuple(_dumps(r[n]) if j else r[n] for n, j in order) for r in rows])


def _execute_rows(conn: Connection, sql: str, rows: list[tuple]) -> None:
    # One row (a transition) is one plain execution: psycopg runs an executemany as a pipeline, which costs more
    # round trips than it saves for a single row.
    if len(rows) == 1:
        driver_execute(conn, sql, rows[0])
    else:
        driver_executemany(conn, sql, rows)


_COUNTS_SQL: dict[tuple[str, int], tuple[Table, str]] = {}


def add_to_counts(conn: Connection, table: Table, scope_id: int, position: int,
                  moves: Sequence[tuple[int, int]]) -> None:
    """Move one scope's count summary row by ``moves`` (per state column, in ``STATE_COLUMNS`` order: tasks and
    slots) and its position to the greatest folded in; a scope without a row yet gets one holding the moves.

    One upsert (no result to wait for): a concurrent first append of the same scope makes one row either way."""
    from .tables import STATE_COLUMNS

    key = (conn.dialect.name, id(table))
    got = _COUNTS_SQL.get(key)
    if got is None or got[0] is not table:
        mark = "%s" if conn.dialect.name == "postgresql" else "?"
        t = table.name
        names = ["scope_id", "position"]
        for state in STATE_COLUMNS:
            names += [state, f"slots_{state}"]
        # The greatest position folded in: on PostgreSQL appends commit out of position order, and a later
        # commit of a lower position must not move the summary's position back.
        sets = [f"position = CASE WHEN {t}.position > excluded.position THEN {t}.position ELSE excluded.position END"]
        sets += [f"{n} = {t}.{n} + excluded.{n}" for n in names[2:]]
        got = _COUNTS_SQL[key] = (table, (
            f"INSERT INTO {t} ({', '.join(names)}) VALUES ({', '.join(mark for _ in names)}) "
            f"ON CONFLICT (scope_id) DO UPDATE SET {', '.join(sets)}"
        ))
    params: list[int] = [scope_id, position]
    for tasks, slots in moves:
        params += [tasks, slots]
    driver_execute(conn, got[1], params)


class _ViewRead:
    """A table's rows by (scope_id, key): every column, JSON decoded as the engine's deserializer does."""

    def __init__(self, table: Table, pg: bool) -> None:
        self.table = table
        self.pg = pg
        self.names = [c.name for c in table.columns]
        self.json = [i for i, c in enumerate(table.columns) if isinstance(c.type, JSON)]
        cols = ", ".join(self.names)
        if pg:  # jsonb columns arrive decoded (the engine's json_deserializer is psycopg's jsonb loader)
            self.one = f"SELECT {cols} FROM {table.name} WHERE scope_id = %s AND key = %s"
            self.many = f"SELECT {cols} FROM {table.name} WHERE scope_id = %s AND key = ANY(%s::text[])"
        else:
            self.one = f"SELECT {cols} FROM {table.name} WHERE scope_id = ? AND key = ?"
            self.many = ""

    def values(self, conn: Connection, scope_id: int, keys: Sequence[str]) -> list[list[Any]]:
        """The rows as value lists in the table's column order, JSON decoded."""
        return decoded_rows(self._fetch(conn, scope_id, keys), [] if self.pg else self.json)

    def rows(self, conn: Connection, scope_id: int, keys: Sequence[str]) -> list[dict[str, Any]]:
        names = self.names
        return [dict(zip(names, v)) for v in self.values(conn, scope_id, keys)]

    def _fetch(self, conn: Connection, scope_id: int, keys: Sequence[str]) -> list[Any]:
        if len(keys) == 1:
            got = driver_execute(conn, self.one, (scope_id, keys[0])).fetchall()
        elif self.pg:
            got = driver_execute(conn, self.many, (scope_id, list(keys))).fetchall()
        else:
            got = []
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                sql = f"SELECT {', '.join(self.names)} FROM {self.table.name} WHERE scope_id = ? AND key IN " \
                      f"({', '.join('?' * len(chunk))})"
                got += driver_execute(conn, sql, (scope_id, *chunk)).fetchall()
        return got


_VIEW_READ: dict[tuple[str, int], _ViewRead] = {}


def _view_read(conn: Connection, table: Table) -> _ViewRead:
    key = (conn.dialect.name, id(table))
    got = _VIEW_READ.get(key)
    if got is None or got.table is not table:
        got = _VIEW_READ[key] = _ViewRead(table, conn.dialect.name == "postgresql")
    return got


def view_rows(conn: Connection, table: Table, scope_id: int, keys: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of ``keys`` in one scope of the task view ``table`` (those that exist), as mappings of every
    column, read with the driver directly."""
    return _view_read(conn, table).rows(conn, scope_id, keys) if keys else []


def view_values(conn: Connection, table: Table, scope_id: int, keys: Sequence[str]) -> list[list[Any]]:
    """As ``view_rows``, each row as its values in the table's column order (for ``rows.task_builder``): the
    commands' and the inline projection's one read per append, with no mapping made."""
    return _view_read(conn, table).values(conn, scope_id, keys) if keys else []


# -- one-statement reads: an unfiltered page with its total, a summary with what a check needs ------------------
#
# The two most frequent reads of the service, each one fixed statement sent to the driver (see
# eventstore.dialects.base): a page and the scope's total come from one snapshot without a transaction around them,
# which on PostgreSQL saves the BEGIN and COMMIT round trips, and on both engines SQLAlchemy's per-statement work.


class _PageRead:
    """A keyset page of one sort (first page or after a key), unfiltered or of some states (one seek per state into
    the (scope, state, sort key) index, merged), each row with the scope's total."""

    def __init__(self, view: Table, counts: Table, names: Sequence[str], desc: bool, first: bool,
                 states: tuple[str, ...] | None, pg: bool) -> None:
        self.view, self.counts, self.states = view, counts, states
        self.names = [c.name for c in view.columns]
        self.json = [i for i, c in enumerate(view.columns) if isinstance(c.type, JSON)] if not pg else []
        mark = "%s" if pg else "?"
        # PostgreSQL plans a LIMIT it knows against its estimate of the scope's rows, which is 0.5% of the table (the
        # scope_id has no statistics, see ``scopes_estimated_evenly``): while the whole view is small, a page's
        # LIMIT is then about the scope, and a bitmap scan of it and a sort looks cheaper than the index's order (at
        # 10,000 tasks, 18 ms for 201 rows where the index reads them in 4). A LIMIT read from a sub-select is one it
        # cannot know when planning, custom plan or generic: it assumes a tenth of the rows, and reads in the order
        # of the sort's index at every size.
        limit = "(SELECT %s)" if pg else "?"
        self.seek_values = 0 if first else len(names)
        seek = ""
        if not first:
            op = "<" if desc else ">"
            if len(names) == 1:
                seek = f" AND v.{names[0]} {op} {mark}"
            else:
                seek = f" AND ({', '.join(f'v.{n}' for n in names)}) {op} ({', '.join(mark for _ in names)})"
        order = ", ".join(f"v.{n} {'DESC' if desc else 'ASC'}" for n in names)
        cols = ", ".join(f"v.{n}" for n in self.names)
        total = f"({_total_sql('postgresql' if pg else 'sqlite', counts.name)})"

        def arm(state: str | None) -> str:
            which = "" if state is None else f" AND v.state = '{state}'"  # a State value: [a-z]+
            return (f"SELECT {cols} FROM {view.name} v WHERE v.scope_id = {mark}{which}{seek} "
                    f"ORDER BY {order} LIMIT {limit}")

        if states is None or len(states) == 1:
            self.arms = 1
            self.sql = arm(states[0] if states else None).replace(f"SELECT {cols} ", f"SELECT {cols}, {total} ", 1)
        else:
            self.arms = len(states)
            merged = " UNION ALL ".join(f"SELECT * FROM ({arm(st)}) a{i}" for i, st in enumerate(states))
            self.sql = f"SELECT {cols}, {total} FROM ({merged}) v ORDER BY {order} LIMIT {limit}"

    def rows(self, conn: Connection, scope_id: int, after: Sequence[Any] | None, n: int) -> tuple[list[list[Any]], int]:
        if self.states == ():
            got = []
        else:
            one = (scope_id, *(after or ()), n)
            params = (scope_id, *one) if self.arms == 1 else (scope_id, *(one * self.arms), n)
            got = driver_execute(conn, self.sql, params).fetchall()
        if not got:
            return [], scope_total(conn, self.counts, scope_id)
        return decoded_rows(got, self.json, drop_last=True), int(got[0][-1])  # each row's last value: the total


def decoded_rows(rows: Sequence[Sequence[Any]], json_at: Sequence[int], *, drop_last: bool = False) -> list[list[Any]]:
    """Driver rows as value lists, the JSON text at ``json_at`` decoded (psycopg decodes JSON itself: pass none),
    without each row's last value when ``drop_last``."""
    loads = orjson.loads
    out = []
    for r in rows:
        row = list(r)
        if drop_last:
            row.pop()
        for i in json_at:
            if row[i] is not None:
                row[i] = loads(row[i])
        out.append(row)
    return out


_PAGE_READ: dict[tuple[Any, ...], _PageRead] = {}


def page_with_total(
    conn: Connection, view: Table, counts: Table, scope_id: int, names: Sequence[str], desc: bool,
    after: Sequence[Any] | None, n: int, states: tuple[str, ...] | None = None,
) -> tuple[list[list[Any]], int]:
    """Up to ``n`` rows of the scope in the task view ``view`` in the order of ``names`` (descending when
    ``desc``), after the key ``after`` when given, of the given ``states`` only when given, each the values of
    every column in the table's order (JSON decoded: ``rows.task_builder`` makes tasks of them); and the scope's
    total from its count summary in ``counts``, from the same snapshot."""
    pg = conn.dialect.name == "postgresql"
    key = (pg, id(view), id(counts), tuple(names), desc, after is None, states)
    got = _PAGE_READ.get(key)
    if got is None or got.view is not view or got.counts is not counts:
        got = _PAGE_READ[key] = _PageRead(view, counts, names, desc, after is None, states, pg)
    return got.rows(conn, scope_id, after, n)


class DriverQuery:
    """A SELECT built with SQLAlchemy Core, compiled once for one dialect, then run by the driver (see
    ``eventstore.dialects.base``): the values bound when it was built travel with it, the caller's parameters by
    name; rows come back as value lists in the order of its columns, JSON columns decoded (psycopg decodes them
    itself). For statements run on every page, where Core's per-execution work is a good part of the cost."""

    def __init__(self, stmt: Any, dialect: Any) -> None:
        compiled = stmt.compile(dialect=dialect)
        # A statement with a parameter expanded as it runs (an IN list) is left to Core.
        self.stmt = stmt if compiled.post_compile_params else None
        self.sql = compiled.string
        self.defaults = dict(compiled.params)
        self.order = compiled.positiontup if dialect.paramstyle in ("qmark", "numeric") else None
        self.json = [] if dialect.name == "postgresql" else [
            i for i, col in enumerate(stmt.selected_columns) if isinstance(col.type, JSON)
        ]

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[list[Any]]:
        if self.stmt is not None:
            return [list(r) for r in conn.execute(self.stmt, dict(params))]
        values = {**self.defaults, **params}
        args: Any = values if self.order is None else tuple(values[n] for n in self.order)
        return decoded_rows(driver_execute(conn, self.sql, args).fetchall(), self.json)


def summary_row(conn: Connection, counts: Table, scope_id: int) -> dict[str, Any] | None:
    """The scope's count summary row in ``counts`` as a mapping of its columns (None when it has none), by the
    driver."""
    names = tuple(counts.c.keys())
    found = driver_execute(conn, _summary_sql(conn.dialect.name, counts.name, names), (scope_id,)).fetchone()
    return None if found is None else dict(zip(names, found))


@functools.lru_cache(maxsize=64)
def _summary_sql(dialect: str, counts: str, names: tuple[str, ...]) -> str:
    mark = "%s" if dialect == "postgresql" else "?"
    return f"SELECT {', '.join(names)} FROM {counts} WHERE scope_id = {mark}"


def scope_total(conn: Connection, counts: Table, scope_id: int) -> int:
    """The scope's task total from its count summary in ``counts`` (0 when it has none), by the driver."""
    found = driver_execute(conn, _total_sql(conn.dialect.name, counts.name), (scope_id,)).fetchone()
    return int(found[0]) if found else 0


@functools.lru_cache(maxsize=64)
def _total_sql(dialect: str, counts: str) -> str:
    mark = "%s" if dialect == "postgresql" else "?"
    return f"SELECT {' + '.join(STATE_COLUMNS)} FROM {counts} WHERE scope_id = {mark}"


def summary_unchanged_since(conn: Connection, counts: Table, scope_id: int, base: Point) -> tuple[Any, Any, int] | None:
    """In one statement: the scope's count summary row, the projection version of the live task view, and how
    many of the scope's events ``base`` lacks; None when the scope has no summary."""
    cond, params = lacks(conn, "e", base)
    names = tuple(counts.c.keys())
    # Straight to the driver (the most frequent read after a page), its text made once per condition.
    cur = driver_execute(conn, _unchanged_sql(conn.dialect.name, counts.name, names, cond), {"sid": scope_id, **params})
    found = cur.fetchone()
    if found is None:
        return None
    row = dict(zip(names, found))
    return row, found[-2], int(found[-1])


@functools.lru_cache(maxsize=256)
def _unchanged_sql(dialect: str, counts: str, names: tuple[str, ...], cond: str) -> str:
    sql = (
        f"SELECT {', '.join(f'c.{n}' for n in names)}, "
        f"(SELECT projection_version FROM {projection_checkpoints.name} WHERE name = 'tasks'), "
        f"(SELECT count(*) FROM events e WHERE e.scope_id = :sid AND {cond}) "
        f"FROM {counts} c WHERE c.scope_id = :sid"
    )
    # SQLite takes the :named parameters as they are, psycopg as %(named)s.
    return _NAMED.sub(r"%(\1)s", sql) if dialect == "postgresql" else sql


_NAMED = re.compile(r"(?<![:\w]):([a-z_]+)\b")


# -- the snapshot schedule --------------------------------------------------------------------------------------


_SCHEDULE_ADD: dict[tuple[str, int], tuple[Table, str]] = {}


def schedule_add(conn: Connection, table: Table, rows: list[dict[str, int]]) -> list[tuple[int, int, int]]:
    """Add to each scope's events-since-snapshot counters; returns (scope_id, events, since_full) after.

    One single-row upsert per scope, fixed text sent to the driver (see the inline projection's writes above)."""
    key = (conn.dialect.name, id(table))
    got = _SCHEDULE_ADD.get(key)
    if got is None or got[0] is not table:
        mark = "%s" if conn.dialect.name == "postgresql" else "?"
        t = table.name
        got = _SCHEDULE_ADD[key] = (table, (
            f"INSERT INTO {t} (scope_id, events, since_full) VALUES ({mark}, {mark}, {mark}) "
            f"ON CONFLICT (scope_id) DO UPDATE SET events = {t}.events + excluded.events, "
            f"since_full = {t}.since_full + excluded.since_full RETURNING scope_id, events, since_full"
        ))
    sql = got[1]
    out = []
    for row in rows:
        out.append(tuple(driver_execute(conn, sql, (row["scope_id"], row["events"], row["since_full"])).fetchall()[0]))
    return out


# -- copying task rows ------------------------------------------------------------------------------------------


def single_connection(engine: Engine) -> bool:
    """An in-memory SQLite database: one connection, so no reading on one while writing on another."""
    return isinstance(engine.pool, StaticPool)


def copy_rows_in_database(conn: Connection, columns: Sequence[str], *, source: str, source_key: str,
                          source_id: int, target: str, target_key: str, target_id: int,
                          after: str | None = None, limit: int | None = None,
                          keys: Sequence[str] | None = None) -> str | None:
    """INSERT ... SELECT a scope's (or a snapshot's) task rows into another table, renaming the key column; with
    ``limit``, one chunk in key order after ``after``, returning the chunk's last key (None when none was left);
    with ``keys``, only the rows of those keys."""
    cols = ", ".join(columns)
    where = f"{source_key} = :sid"
    params: dict[str, Any] = {"sid": source_id, "tid": target_id}
    if keys is not None:
        where += " AND key IN :keys"
        params["keys"] = list(keys)
    if after is not None:
        where += " AND key > :after"
        params["after"] = after
    last = None
    if limit is not None:
        params["n"] = limit
        last = conn.execute(
            text(f"SELECT max(key) FROM (SELECT key FROM {source} WHERE {where} ORDER BY key LIMIT :n) chunk"), params
        ).scalar()
        if last is None:
            return None
        where += " AND key <= :last"
        params["last"] = last
    statement = text(f"INSERT INTO {target} ({target_key}, {cols}) SELECT :tid, {cols} FROM {source} WHERE {where}")
    if keys is not None:
        statement = statement.bindparams(bindparam("keys", expanding=True))
    conn.execute(statement, {k: v for k, v in params.items() if k != "n"})
    return last


# -- swapping rebuilt tables in ---------------------------------------------------------------------------------


SWAP_LOCK_TIMEOUT = "5s"


def lock_for_swap(conn: Connection, live: Sequence[str]) -> None:
    """Keep writers out of the live tables until the swap commits (readers go on). SQLite: the write transaction
    the swap runs in already excludes every other writer.

    PostgreSQL: waiting for the lock queues every later writer behind it, so the wait is short
    (``SWAP_LOCK_TIMEOUT``); when it runs out (:func:`lock_timed_out`) the caller catches up and tries again."""
    if conn.engine.dialect.name == "postgresql":
        conn.execute(text(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"))
        conn.execute(text(f"LOCK TABLE {', '.join(live)} IN EXCLUSIVE MODE"))


def lock_timed_out(exc: BaseException) -> bool:
    return getattr(getattr(exc, "orig", None), "sqlstate", None) == "55P03"  # lock_not_available


def swap(conn: Connection, pairs: Sequence[tuple[str, str, str]], index_names: Callable[[str], list[str]]) -> list[str]:
    """Rename each (live, fresh, retired): live to retired, fresh to live, in the caller's transaction.

    Returns the retired tables, to drop: on PostgreSQL at once (the swap holds their locks; a drop is quick), and
    the indexes and primary keys of the fresh tables take the live names, so the schema reads as if never rebuilt.
    On SQLite, where a drop rewrites pages and indexes cannot be renamed, the caller drops them after the swap has
    committed and the fresh tables keep their index names.
    """
    pg = conn.engine.dialect.name == "postgresql"
    for live, fresh, retired in pairs:
        conn.execute(text(f"ALTER TABLE {live} RENAME TO {retired}"))
        conn.execute(text(f"ALTER TABLE {fresh} RENAME TO {live}"))
    if not pg:
        return [retired for _, _, retired in pairs]
    for live, fresh, retired in pairs:
        conn.execute(text(f"DROP TABLE {retired}"))
        for name in index_names(fresh):
            conn.execute(text(f"ALTER INDEX {name} RENAME TO {name.replace(f'ix_{fresh}_', f'ix_{live}_', 1)}"))
        conn.execute(text(f"ALTER TABLE {live} RENAME CONSTRAINT {fresh}_pkey TO {live}_pkey"))
    return []


def scopes_estimated_evenly(conn: Connection, table: str) -> None:
    """PostgreSQL: let the planner estimate every scope of ``table`` (a task view) at an even share of its rows,
    whatever ANALYZE saw: no statistics are kept of its ``scope_id``. With them, a scope they did not see (a job
    begun since the table was last analyzed, which on a large table may be hours before autovacuum comes back) is
    estimated at one row, and a task looked up by (scope_id, key) was then planned on the ``created`` index (whose
    trailing key column matches too) as readily as on the primary key: a walk of the whole job for every command.
    The sorts' indexes are chosen by their order and LIMIT, the state filters by the state's statistics: neither needs
    the scope's. Dropping the column's type in place clears statistics already gathered (no rewrite: the same type)."""
    if conn.engine.dialect.name == "postgresql":
        conn.execute(text(f"ALTER TABLE {table} ALTER COLUMN scope_id SET STATISTICS 0, "
                          "ALTER COLUMN scope_id TYPE bigint"))


# SQLite: the page cache while a rebuild builds its indexes (each reads the whole table). Pages are allocated as they
# are read, and given back after: a table smaller than this takes its own size.
INDEX_CACHE_KIB = 262_144


def create_indexes(conn: Connection, indexes: Iterable[Index]) -> None:
    """Build a fresh table's indexes, in the caller's transaction. On SQLite each index reads the whole table, and
    the connection's page cache (2 MiB by default) holds a few thousand rows of it: a table written by other
    processes is then read from the write-ahead log or the file four times over. With a cache of up to
    ``INDEX_CACHE_KIB`` for the builds, the first reads a table that fits and the others find it in memory (at 10,000
    tasks, 36 to 42 ms became 27 to 31 with 64 MiB; at 200,000 tasks, whose 136 MB table 64 MiB does not hold, the
    four took 400 to 450 ms with 256 MiB against 482 to 513 ms with 64 MiB, six rounds alternating; a larger table
    reads the file each time either way)."""
    sqlite = conn.engine.dialect.name == "sqlite"
    if sqlite:
        before = driver_execute(conn, "PRAGMA cache_size").fetchone()[0]
        driver_execute(conn, f"PRAGMA cache_size = -{INDEX_CACHE_KIB}")
    try:
        for index in sorted(indexes, key=lambda i: str(i.name)):  # one order every time (a table's are a set)
            index.create(conn)
    finally:
        if sqlite:
            driver_execute(conn, f"PRAGMA cache_size = {int(before)}")


def drop_tables(conn: Connection, names: Sequence[str]) -> None:
    for name in names:
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))


# -- the rebuild's seeding: driver reads and bulk loads -----------------------------------------------------------
#
# Seeding reads every event of the log once and writes every task row once: as the inline projection's statements
# above, fixed text to the driver with plain tuples (SQLAlchemy's row processing and per-row parameter handling
# cost as much as the fold itself).


def stream_page(conn: Connection, scope_id: int, after: tuple[str, int] | None, limit: int,
                before: str | None = None) -> list[tuple]:
    """A page of the scope's events in (stream, version) order (its unique index) after ``after`` (and of streams
    before ``before``), read by the driver, as (position, stream, version, type, schema_version, data as JSON
    text)."""
    pg = conn.engine.dialect.name == "postgresql"
    mark = "%s" if pg else "?"
    where = [f"scope_id = {mark}"]
    params: list[Any] = [scope_id]
    if after is not None:
        where.append(f"(stream, version) > ({mark}, {mark}{'::integer' if pg else ''})")
        params += after
    if before is not None:
        where.append(f"stream < {mark}")
        params.append(before)
    data = "data::text" if pg else "data"
    sql = (f"SELECT position, stream, version, type, schema_version, {data} FROM events "
           f"WHERE {' AND '.join(where)} ORDER BY stream, version LIMIT {mark}")
    walk_in_index_order(conn)
    return driver_execute(conn, sql, (*params, limit)).fetchall()


def walk_in_index_order(conn: Connection) -> None:
    """On PostgreSQL, for the rest of this transaction: read in the order of an index, never by a bitmap scan and a
    sort. For reads that walk an index a page or a window at a time (a scope's events in (stream, version) order, a
    list's walked windows): the planner's estimate of a scope's rows is often far too low (tables that no ANALYZE has
    seen since they grew), and it then picks a bitmap scan of the whole range and a sort of it for every page."""
    if conn.engine.dialect.name == "postgresql":
        driver_execute(conn, "SELECT set_config('enable_bitmapscan', 'off', true), "
                             "set_config('enable_sort', 'off', true)")


def stream_splits(conn: Connection, scope_id: int, lengths: Sequence[int]) -> list[str]:
    """Streams that cut the scope's events, in (stream, version) order, into runs of about ``lengths`` events each
    (the last run takes the rest; fewer runs when a stream is longer than a run): each the stream of the event a
    run's length after the previous cut's first event, read from the unique index (its entries only, no rows), so
    that the index is walked once in all."""
    pg = conn.engine.dialect.name == "postgresql"
    mark = "%s" if pg else "?"
    order = f"ORDER BY stream, version LIMIT 1 OFFSET {mark}"
    first = f"SELECT stream FROM events WHERE scope_id = {mark} {order}"
    after = f"SELECT stream FROM events WHERE scope_id = {mark} AND stream >= {mark} {order}"
    cuts: list[str] = []
    offset = 0
    for length in lengths:
        offset += max(1, length)
        args = (scope_id, offset) if not cuts else (scope_id, cuts[-1], offset)
        row = driver_execute(conn, after if cuts else first, args).fetchone()
        if row is None:
            break
        if cuts and row[0] == cuts[-1]:  # a stream longer than a run: the run takes it whole, and the next one more
            continue
        cuts.append(row[0])
        offset = 0
    return cuts


def load_rows(conn: Connection, table: str, columns: Sequence[str], rows: Sequence[tuple]) -> None:
    """Insert rows given as tuples of insert values in ``columns`` order (JSON columns as JSON text): one COPY on
    PostgreSQL (text format; the server parses the JSON text into jsonb, as the ``CAST(... AS jsonb)`` of the
    other inserts does), one executemany of fixed text on SQLite. For bulk loads into fresh tables."""
    if not rows:
        return
    names = ", ".join(columns)
    if conn.engine.dialect.name == "postgresql":
        from eventstore.dialects.base import driver_copy

        driver_copy(conn, f"COPY {table} ({names}) FROM STDIN", rows)
        return
    driver_executemany(conn, f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})", rows)
