"""Question 1: bulk add, 100 tasks per call, one transaction per call.

taskstore's ``TaskStore.add_tasks`` of realistic specs (validated, appended with "no stream yet" expectations, and
the inline projections -- task view and count summary -- updated in the same transaction), and the event log alone
(``EventLog.append`` of the same TaskAdded events, without projections), against the same event rows
written with raw sqlite3 ``executemany`` (the PRAGMAs of eventstore/dialects/sqlite.py, ``BEGIN IMMEDIATE``) and raw
psycopg ``executemany`` and ``COPY``: same table (the one the migrations make), same batch size, one transaction
per batch. Goal (issues 2 and 5): at least half the raw rate.

Those raw writers write the events alone; ``add_tasks`` also writes a task view row per task, the scope's count
summary and the snapshot schedule. So a fourth contender per engine writes by hand every row ``add_tasks`` writes
(the same events, view rows, counts and schedule, in one transaction per batch, with the driver alone), and the API
is also compared with it: that is "the same rows" of the goal taken literally. The events-only comparisons stay in
the report with their verdicts. tests/test_benchmark_raw_rows.py checks that the hand-written rows equal the API's.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Callable

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
    added_row,
    bare_log,
    dumps,
    now_iso,
    pg_connect,
    scope_id,
    side_by_side,
    spec_batches,
    sqlite_connect,
)

KEY = "append"
MEMORY_BOUNDED = True  # taskstore's operations here hold one batch or page, whatever the job's size
TITLE = "Bulk add: 100 tasks per call, one transaction each"
GOAL = "at least half the raw rate (same rows, same engine, same batch size)"
UNIT = "batch of 100 tasks"
BATCH = 100
SHARES_JOB = True  # it adds tasks of its own (ids tagged by Target.tag)

RAW_SQLITE = "raw sqlite3 executemany"
RAW_PG = "raw psycopg executemany"
RAW_COPY = "raw psycopg COPY"
RAW_ALL_SQLITE = "raw sqlite3, every row add_tasks writes"
RAW_ALL_PG = "raw psycopg executemany, every row add_tasks writes"
LOG = "EventLog.append, events only (no projections)"
API = "TaskStore.add_tasks (validate, append, inline projections)"


def run(ctx: Context, engine: str, size: int) -> list[Measurement]:
    cfg = ctx.cfg
    shape = SimulatedJob()
    n_batches = (cfg.warmup + cfg.reps) * cfg.batches + 1  # +1: the memory run
    contenders: list[tuple[str, Callable[[Target], Any]]]
    if engine == SQLITE:
        contenders = [(RAW_SQLITE, _raw_sqlite), (RAW_ALL_SQLITE, _raw_sqlite_all), (LOG, _log_append), (API, _api)]
        base = [Comparison(RAW_SQLITE, 0.5, "≥ 0.5× raw executemany")]
        every_row = Comparison(RAW_ALL_SQLITE, 0.5, "≥ 0.5× raw, every row it writes")
    else:
        contenders = [(RAW_PG, _raw_pg_executemany), (RAW_COPY, _raw_pg_copy), (RAW_ALL_PG, _raw_pg_all),
                      (LOG, _log_append), (API, _api)]
        base = [Comparison(RAW_PG, 0.5, "≥ 0.5× raw executemany"), Comparison(RAW_COPY, 0.5, "≥ 0.5× raw COPY")]
        every_row = Comparison(RAW_ALL_PG, 0.5, "≥ 0.5× raw executemany, every row it writes")
    def setup(make: Callable[[Target], Any]) -> Callable[[ExitStack], Contender]:
        def open_(stack: ExitStack) -> Contender:
            target = stack.enter_context(ctx.dbs.fresh(engine, shape, size, shared=SHARES_JOB))
            specs = spec_batches("add" + target.tag, n_batches)
            write = make(target)  # write(batch_of_specs) -> seconds spent in the timed part
            stack.callback(write.close)

            def sample(i: int) -> float:
                first = i * cfg.batches
                return sum(write(specs[b]) for b in range(first, first + cfg.batches)) / cfg.batches

            return Contender(sample, lambda: write(specs[-1]))

        return open_

    ctx.status(f"{KEY} · {engine} · {size:,}")
    got = side_by_side(cfg, {name: setup(make) for name, make in contenders})
    out: list[Measurement] = []
    for name, _ in contenders:
        comparisons = [c for c in base if c.baseline != name] if name in (LOG, API) else []
        if name == API:  # the same rows: what add_tasks writes, written by hand (the log alone writes the events)
            comparisons.append(every_row)
        if name in (RAW_COPY, RAW_ALL_SQLITE, RAW_ALL_PG):
            comparisons = [Comparison(RAW_PG if engine == POSTGRESQL else RAW_SQLITE)]
        samples, peak = got[name]
        out.append(Measurement(KEY, name, engine, size, UNIT, samples, BATCH, comparisons, peak))
    return out


class _Writer:
    def __init__(self, fn: Callable[[list[dict]], float], close: Callable[[], None]) -> None:
        self._fn, self.close = fn, close

    def __call__(self, batch: list[dict]) -> float:
        return self._fn(batch)


def _api(target: Target) -> _Writer:
    store = target.open_store()
    scope = target.scope()

    def write(batch: list[dict]) -> float:
        with Stopwatch() as sw:
            store.add_tasks(scope, batch)
        return sw.total

    return _Writer(write, store.close)


def _log_append(target: Target) -> _Writer:
    from eventstore import Expect, NewEvent, StreamAppend
    from eventstore.spec import parse_spec

    store = target.open_store()
    scope = target.scope()
    log = bare_log(store)

    def write(batch: list[dict]) -> float:
        at = now_iso()
        appends = [
            StreamAppend(
                scope,
                s["id"].lower(),
                [NewEvent("TaskAdded", {"taskId": s["id"], "spec": parse_spec(s).to_data(), "at": at})],
                Expect.NO_STREAM,
            )
            for s in batch
        ]
        with Stopwatch() as sw:
            log.append(appends)
        return sw.total

    return _Writer(write, store.close)


def _raw_sqlite(target: Target) -> _Writer:
    sid = scope_id(target)
    conn = sqlite_connect(target.path)  # type: ignore[arg-type]
    sql = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"

    def write(batch: list[dict]) -> float:
        with Stopwatch() as sw:
            at = now_iso()
            rows = [added_row(sid, s, at) for s in batch]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, rows)
            conn.execute("COMMIT")
        return sw.total

    return _Writer(write, conn.close)


def _raw_pg_executemany(target: Target) -> _Writer:
    sid = scope_id(target)
    conn = pg_connect(target.pg_url, target.schema)  # type: ignore[arg-type]
    sql = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)"

    def write(batch: list[dict]) -> float:
        with Stopwatch() as sw:
            at = now_iso()
            rows = [added_row(sid, s, at) for s in batch]
            with conn.transaction():
                conn.cursor().executemany(sql, rows)
        return sw.total

    return _Writer(write, conn.close)


def _raw_pg_copy(target: Target) -> _Writer:
    sid = scope_id(target)
    conn = pg_connect(target.pg_url, target.schema)  # type: ignore[arg-type]
    sql = f"COPY events ({EVENT_COLUMNS}) FROM STDIN"

    def write(batch: list[dict]) -> float:
        with Stopwatch() as sw:
            at = now_iso()
            with conn.transaction():
                with conn.cursor().copy(sql) as cp:
                    for s in batch:
                        cp.write_row(added_row(sid, s, at))
        return sw.total

    return _Writer(write, conn.close)



# -- every row add_tasks writes, by hand ---------------------------------------------------------------------------
# In one transaction per batch: the events (positions taken after the log's largest, under the write lock on SQLite,
# returned by the insert on PostgreSQL), one task view row per task (what a task just added shows: pending, version
# 1, its times the add's), the scope's count summary moved by the batch and the snapshot schedule's counter, each
# one single-row upsert. The task view's columns are checked against the database's once, at the start.

VIEW_COLUMNS = (
    "scope_id", "key", "task_id", "number", "state", "previous_state", "version", "position", "created_at",
    "state_transition_time", "previous_state_transition_time", "last_modified", "scheduled_at", "start_time",
    "end_time", "exit_code", "result", "retry_count", "requeue_count", "last_retry_time", "last_requeue_time",
    "required_slots", "display_name", "status_message", "search", "spec", "failure_info", "node_info", "conditions",
)
COUNT_STATES = ("pending", "starting", "running", "stopping", "succeeded", "failed", "cancelled")


def _view_row(sid: int, spec: dict, at: str, position: int) -> tuple:
    task_id, display = spec["id"], spec.get("displayName")
    search = [task_id, display or ""]
    for k, v in sorted((spec.get("labels") or {}).items()):
        search += [k, v]
    data = {k: v for k, v in spec.items() if k != "id"}
    return (sid, task_id.lower(), task_id, position, "pending", None, 1, position, at, at, None, at, None, None,
            None, None, None, 0, 0, None, None, spec.get("requiredSlots") or 1, display, None,
            "\n".join(search).lower(), dumps(data), "null", "null", "null")


def _upserts(mark: str, greatest: str) -> tuple[str, str]:
    names = ["scope_id", "position"] + [n for s in COUNT_STATES for n in (s, f"slots_{s}")]
    sets = [f"position = {greatest}(scope_counts.position, excluded.position)"]
    sets += [f"{n} = scope_counts.{n} + excluded.{n}" for n in names[2:]]
    counts = (f"INSERT INTO scope_counts ({', '.join(names)}) VALUES ({', '.join(mark for _ in names)}) "
              f"ON CONFLICT (scope_id) DO UPDATE SET {', '.join(sets)}")
    schedule = (f"INSERT INTO snapshot_schedule (scope_id, events, since_full) VALUES ({mark}, {mark}, {mark}) "
                "ON CONFLICT (scope_id) DO UPDATE SET events = snapshot_schedule.events + excluded.events, "
                "since_full = snapshot_schedule.since_full + excluded.since_full")
    return counts, schedule


def _count_params(sid: int, position: int, view_rows: list[tuple]) -> tuple:
    slots = sum(r[21] for r in view_rows)
    return (sid, position, len(view_rows), slots) + (0,) * (2 * len(COUNT_STATES) - 2)


def _check_view_columns(columns: list[str]) -> None:
    if tuple(columns) != VIEW_COLUMNS:
        raise RuntimeError(f"the task view's columns changed ({columns}): update benchmarks/append.py VIEW_COLUMNS")


def _raw_sqlite_all(target: Target) -> _Writer:
    sid = scope_id(target)
    conn = sqlite_connect(target.path)  # type: ignore[arg-type]
    _check_view_columns([r[1] for r in conn.execute("PRAGMA table_info(task_view)")])
    events_sql = f"INSERT INTO events (position, {EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    view_sql = f"INSERT INTO task_view ({', '.join(VIEW_COLUMNS)}) VALUES ({', '.join('?' for _ in VIEW_COLUMNS)})"
    counts_sql, schedule_sql = _upserts("?", "max")

    def write(batch: list[dict]) -> float:
        with Stopwatch() as sw:
            at = now_iso()
            conn.execute("BEGIN IMMEDIATE")
            before = conn.execute("SELECT max(position) FROM events").fetchone()[0] or 0
            conn.executemany(events_sql, [(before + i, *added_row(sid, s, at)) for i, s in enumerate(batch, 1)])
            view = [_view_row(sid, s, at, before + i) for i, s in enumerate(batch, 1)]
            conn.executemany(view_sql, view)
            conn.execute(counts_sql, _count_params(sid, before + len(batch), view))
            conn.execute(schedule_sql, (sid, len(batch), len(batch)))
            conn.execute("COMMIT")
        return sw.total

    return _Writer(write, conn.close)


def _raw_pg_all(target: Target) -> _Writer:
    sid = scope_id(target)
    conn = pg_connect(target.pg_url, target.schema)  # type: ignore[arg-type]
    got = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'task_view' "
                       "AND table_schema = current_schema() ORDER BY ordinal_position").fetchall()
    _check_view_columns([r[0] for r in got])
    conn.commit()
    json_columns = {"spec", "failure_info", "node_info", "conditions"}
    events_sql = (f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb) "
                  "RETURNING position")
    view_sql = (f"INSERT INTO task_view ({', '.join(VIEW_COLUMNS)}) VALUES "
                f"({', '.join('%s::jsonb' if c in json_columns else '%s' for c in VIEW_COLUMNS)})")
    counts_sql, schedule_sql = _upserts("%s", "GREATEST")

    def write(batch: list[dict]) -> float:
        with Stopwatch() as sw:
            at = now_iso()
            with conn.transaction():
                cur = conn.cursor()
                cur.executemany(events_sql, [added_row(sid, s, at) for s in batch], returning=True)
                positions = []
                for _ in cur.results():
                    positions.append(cur.fetchone()[0])
                view = [_view_row(sid, s, at, p) for s, p in zip(batch, positions, strict=True)]
                cur.executemany(view_sql, view)
                cur.execute(counts_sql, _count_params(sid, max(positions), view))
                cur.execute(schedule_sql, (sid, len(batch), len(batch)))
        return sw.total

    return _Writer(write, conn.close)

ENGINES = (SQLITE, POSTGRESQL)
