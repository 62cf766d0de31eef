"""Question 1: bulk add, 100 tasks per call, one transaction per call.

taskstore's ``TaskStore.add_tasks`` of realistic specs (validated, appended with "no stream yet" expectations, and
the inline projections -- task view and count summary -- updated in the same transaction), and the event log alone
(``EventLog.append`` of the same TaskAdded events, without projections), against the same event rows
written with raw sqlite3 ``executemany`` (the PRAGMAs of eventstore/dialects/sqlite.py, ``BEGIN IMMEDIATE``) and raw
psycopg ``executemany`` and ``COPY``: same table (the one the migrations make), same batch size, one transaction
per batch. Goal (issues 2 and 5): at least half the raw rate.
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
    now_iso,
    pg_connect,
    scope_id,
    side_by_side,
    spec_batches,
    sqlite_connect,
)

KEY = "append"
TITLE = "Bulk add: 100 tasks per call, one transaction each"
GOAL = "at least half the raw rate (same rows, same engine, same batch size)"
UNIT = "batch of 100 tasks"
BATCH = 100

RAW_SQLITE = "raw sqlite3 executemany"
RAW_PG = "raw psycopg executemany"
RAW_COPY = "raw psycopg COPY"
LOG = "EventLog.append, events only (no projections)"
API = "TaskStore.add_tasks (validate, append, inline projections)"


def run(ctx: Context, engine: str, size: int) -> list[Measurement]:
    cfg = ctx.cfg
    shape = SimulatedJob()
    n_batches = (cfg.warmup + cfg.reps) * cfg.batches + 1  # +1: the memory run
    specs = spec_batches("add", n_batches)
    contenders: list[tuple[str, Callable[[Target], Any]]]
    if engine == SQLITE:
        contenders = [(RAW_SQLITE, _raw_sqlite), (LOG, _log_append), (API, _api)]
        base = [Comparison(RAW_SQLITE, 0.5, "≥ 0.5× raw executemany")]
    else:
        contenders = [(RAW_PG, _raw_pg_executemany), (RAW_COPY, _raw_pg_copy), (LOG, _log_append), (API, _api)]
        base = [Comparison(RAW_PG, 0.5, "≥ 0.5× raw executemany"), Comparison(RAW_COPY, 0.5, "≥ 0.5× raw COPY")]
    def setup(make: Callable[[Target], Any]) -> Callable[[ExitStack], Contender]:
        def open_(stack: ExitStack) -> Contender:
            target = stack.enter_context(ctx.dbs.fresh(engine, shape, size))
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
        if name == RAW_COPY:
            comparisons = [Comparison(RAW_PG)]
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


ENGINES = (SQLITE, POSTGRESQL)
