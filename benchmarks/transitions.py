"""Question 2: single transitions, one per transaction.

``TaskStore.transition`` (read the task's row in the task view, decide, append with the expected version, update
the projections in the same transaction) and the event log alone (``EventLog.append`` of one decided
TaskTransitioned event with its expected version, no projections), against a raw
single-row INSERT per transaction, and a raw "read the stream's version, then insert" per transaction (what any
correct writer with optimistic concurrency must at least do). Each contender moves tasks that were added (untimed)
to the same job from pending to starting. Goal (issue 2): at least half the raw rate.

A transition writes more than its event: the task's view row, the count summary and the snapshot schedule. The
contender "every row TaskStore.transition writes" does all of it by hand in one transaction (read the task's view
row, insert the event, update the row, the counts and the schedule), and the API is also compared with it. The
single-row INSERT comparisons stay in the report with their verdicts. tests/test_benchmark_raw_rows.py checks that
the hand-written rows equal the API's.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Callable

import orjson

from .harness import (
    EVENT_COLUMNS,
    POSTGRESQL,
    SQLITE,
    Comparison,
    Contender,
    Context,
    Measurement,
    SimulatedJob,
    Stopwatch,
    Target,
    bare_log,
    dumps,
    now_iso,
    pg_connect,
    scope_id,
    side_by_side,
    spec_batches,
    sqlite_connect,
)

KEY = "transitions"
TITLE = "Single transitions: one per transaction"
GOAL = "at least half the raw single-row insert rate"
UNIT = "transition"
SHARES_JOB = True  # it adds tasks of its own (ids tagged by Target.tag) and moves only those

RAW = "raw single-row INSERT"
RAW_READ = "raw SELECT version + INSERT"
RAW_ALL = "raw SQL, every row TaskStore.transition writes"
LOG = "EventLog.append 1 event, events only"
API = "TaskStore.transition"


def run(ctx: Context, engine: str, size: int) -> list[Measurement]:
    cfg = ctx.cfg
    per = cfg.sqlite_singles if engine == SQLITE else cfg.singles
    count = (cfg.warmup + cfg.reps) * per
    goal = [Comparison(RAW, 0.5, "≥ 0.5× raw insert")]
    movers = ((RAW, _raw), (RAW_READ, _raw_read), (RAW_ALL, _raw_all), (LOG, _log), (API, _api))

    def setup(make: Callable[[Target], Mover]) -> Callable[[ExitStack], Contender]:
        def open_(stack: ExitStack) -> Contender:
            target = stack.enter_context(ctx.dbs.fresh(engine, SimulatedJob(), size, shared=SHARES_JOB))
            ids = _add_pending(target, count)
            move, close = make(target)
            stack.callback(close)

            def sample(i: int) -> float:
                return sum(move(t) for t in ids[i * per : (i + 1) * per]) / per

            return Contender(sample)

        return open_

    ctx.status(f"{KEY} · {engine} · {size:,}")
    got = side_by_side(cfg, {name: setup(make) for name, make in movers})
    out: list[Measurement] = []
    for name, _ in movers:
        comparisons = [] if name == RAW else ([Comparison(RAW)] if name in (RAW_READ, RAW_ALL) else list(goal))
        if name == API:  # the same rows: what transition writes, written by hand (the log alone writes the event)
            comparisons.append(Comparison(RAW_ALL, 0.5, "≥ 0.5× raw, every row it writes"))
        out.append(Measurement(KEY, name, engine, size, UNIT, got[name][0], 1, comparisons))
    if engine == SQLITE:
        ctx.note(KEY, "SQLite runs with synchronous=NORMAL in WAL mode (eventstore's setting), so a commit does not "
                      "wait for the disk: the raw rate is bounded by CPU, and every microsecond of Python shows.")
    return out


def _add_pending(target: Target, count: int) -> list[str]:
    """Add ``count`` fresh tasks (pending) to the job, untimed; their ids."""
    store = target.open_store()
    ids: list[str] = []
    try:
        for batch in spec_batches("single" + target.tag, (count + 99) // 100):
            store.add_tasks(target.scope(), batch)
            ids.extend(s["id"] for s in batch)
    finally:
        store.close()
    return ids[:count]


def _row(sid: int, task_id: str, version: int) -> tuple:
    at = now_iso()
    data = {"from": "pending", "to": "starting", "at": at, "cause": "transition", "retryCount": 0, "requeueCount": 0}
    return (sid, task_id.lower(), version, "TaskTransitioned", 1, dumps(data), dumps({"recordedAt": at}))


Mover = tuple[Callable[[str], float], Callable[[], None]]


def _api(target: Target) -> Mover:
    store = target.open_store()
    scope = target.scope()

    def move(task_id: str) -> float:
        with Stopwatch() as sw:
            store.transition(scope, task_id, "starting")
        return sw.total

    return move, store.close


def _log(target: Target) -> Mover:
    from eventstore import NewEvent, StreamAppend

    store = target.open_store()
    scope = target.scope()
    log = bare_log(store)

    def move(task_id: str) -> float:
        at = now_iso()
        data = {"from": "pending", "to": "starting", "at": at, "cause": "transition", "retryCount": 0,
                "requeueCount": 0}
        append = [StreamAppend(scope, task_id.lower(), [NewEvent("TaskTransitioned", data)], 1)]
        with Stopwatch() as sw:
            log.append(append)
        return sw.total

    return move, store.close


def _raw(target: Target) -> Mover:
    return _raw_mover(target, read=False)


def _raw_read(target: Target) -> Mover:
    return _raw_mover(target, read=True)


def _raw_mover(target: Target, *, read: bool) -> Mover:
    sid = scope_id(target)
    if target.engine == SQLITE:
        conn: Any = sqlite_connect(target.path)  # type: ignore[arg-type]
        insert = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        select = "SELECT max(version) FROM events WHERE scope_id = ? AND stream = ?"

        def move(task_id: str) -> float:
            with Stopwatch() as sw:
                conn.execute("BEGIN IMMEDIATE")
                version = conn.execute(select, (sid, task_id.lower())).fetchone()[0] + 1 if read else 2
                conn.execute(insert, _row(sid, task_id, version))
                conn.execute("COMMIT")
            return sw.total

        return move, conn.close
    conn = pg_connect(target.pg_url, target.schema)  # type: ignore[arg-type]
    insert = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)"
    select = "SELECT max(version) FROM events WHERE scope_id = %s AND stream = %s"

    def move_pg(task_id: str) -> float:
        with Stopwatch() as sw:
            with conn.transaction():
                version = conn.execute(select, (sid, task_id.lower())).fetchone()[0] + 1 if read else 2
                conn.execute(insert, _row(sid, task_id, version))
        return sw.total

    return move_pg, conn.close



# -- every row TaskStore.transition writes, by hand ---------------------------------------------------------------
# In one transaction: the task's row read from the task view (its version, state, times and slots: what deciding
# needs), the event inserted with the next version (its position taken after the log's largest under the write lock
# on SQLite, returned by the insert on PostgreSQL), the row's changed columns set, the count summary moved from
# pending to starting and the snapshot schedule's counter, each one single-row statement.

_READ_ROW = ("SELECT version, state, state_transition_time, required_slots FROM task_view "
             "WHERE scope_id = {m} AND key = {m}")
_SET_ROW = ("UPDATE task_view SET state = 'starting', previous_state = {m}, version = {m}, position = {m}, "
            "state_transition_time = {m}, previous_state_transition_time = {m}, last_modified = {m}, "
            "scheduled_at = {m} WHERE scope_id = {m} AND key = {m}")
_MOVE_COUNTS = ("UPDATE scope_counts SET pending = pending - 1, slots_pending = slots_pending - {m}, "
                "starting = starting + 1, slots_starting = slots_starting + {m}, position = {greatest}(position, {m}) "
                "WHERE scope_id = {m}")
_SCHEDULE = ("INSERT INTO snapshot_schedule (scope_id, events, since_full) VALUES ({m}, 1, 1) "
             "ON CONFLICT (scope_id) DO UPDATE SET events = snapshot_schedule.events + 1, "
             "since_full = snapshot_schedule.since_full + 1")


def _raw_all(target: Target) -> Mover:
    sid = scope_id(target)
    pg = target.engine == POSTGRESQL
    m, greatest = ("%s", "GREATEST") if pg else ("?", "max")
    read_row, set_row = _READ_ROW.format(m=m), _SET_ROW.format(m=m)
    move_counts, schedule = _MOVE_COUNTS.format(m=m, greatest=greatest), _SCHEDULE.format(m=m)

    def write(execute: Callable[..., Any], task_id: str, position_of: Callable[[tuple], int]) -> None:
        key = task_id.lower()
        version, state, since, slots = execute(read_row, (sid, key)).fetchone()
        row = _row(sid, task_id, version + 1)
        at = orjson.loads(row[5])["at"]
        position = position_of(row)
        execute(set_row, (state, version + 1, position, at, since, at, at, sid, key))
        execute(move_counts, (slots, slots, position, sid))
        execute(schedule, (sid,))

    if not pg:
        conn: Any = sqlite_connect(target.path)  # type: ignore[arg-type]
        insert = f"INSERT INTO events (position, {EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"

        def position_sqlite(row: tuple) -> int:
            position = (conn.execute("SELECT max(position) FROM events").fetchone()[0] or 0) + 1
            conn.execute(insert, (position, *row))
            return position

        def move(task_id: str) -> float:
            with Stopwatch() as sw:
                conn.execute("BEGIN IMMEDIATE")
                write(conn.execute, task_id, position_sqlite)
                conn.execute("COMMIT")
            return sw.total

        return move, conn.close
    conn = pg_connect(target.pg_url, target.schema)  # type: ignore[arg-type]
    insert_pg = (f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb) "
                 "RETURNING position")

    def position_pg(row: tuple) -> int:
        return conn.execute(insert_pg, row).fetchone()[0]

    def move_pg(task_id: str) -> float:
        with Stopwatch() as sw:
            with conn.transaction():
                write(conn.execute, task_id, position_pg)
        return sw.total

    return move_pg, conn.close

ENGINES = (SQLITE, POSTGRESQL)
