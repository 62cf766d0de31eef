"""Question 7 (issue 3): the count summary of a job.

``TaskQueries.counts`` validated (what ``taskstore counts`` serves: the precomputed summary row, checked by a
recount up to 200,000 tasks and above that from the last verified snapshot plus the deltas after it) and
unvalidated (the row alone), against raw SQL reading the same summary row, a raw ``GROUP BY`` recount of the task
view (a full scan of the scope), and the event-history approach: fold the scope's whole event history into tasks and
count them by state.
"""

from __future__ import annotations

from typing import Any

from .harness import (
    POSTGRESQL,
    SQLITE,
    Comparison,
    Context,
    Measurement,
    SHORT_OPS_PER_SAMPLE,
    SimulatedJob,
    Stopwatch,
    Target,
    fold_skipped,
    interleaved,
    peak_memory,
    pg_connect,
    short_ops,
    sqlite_connect,
)

KEY = "counts"
MEMORY_BOUNDED = True  # taskstore's operations here hold one batch or page, whatever the job's size
TITLE = "Count summary of a job"
GOAL = "validated and under 1 ms (stated at 1,000,000 tasks); where the event-history approach stands"
UNIT = "count summary"
ENGINES = (SQLITE, POSTGRESQL)
CHANGES_JOB = False  # it only reads its job
PER_SAMPLE = SHORT_OPS_PER_SAMPLE  # summaries per timed sample (harness.short_ops says why so few)

VALIDATED = "TaskQueries.counts (validated)"
UNVALIDATED = "TaskQueries.counts (unvalidated)"
RAW_ROW = "raw SQL: read the summary row"
RAW_RECOUNT = "raw SQL: GROUP BY recount of the task view"
FOLD = "fold the scope's events and count (Blaxel)"


def run(ctx: Context, engine: str, size: int) -> list[Measurement]:
    cfg = ctx.cfg
    ctx.status(f"{KEY} · {engine} · {size:,}")
    with ctx.dbs.fresh(engine, SimulatedJob(), size, changes=CHANGES_JOB) as target:
        store = target.open_store()
        scope = target.scope()
        raw = _Raw(target, store.log.scope_id(scope))
        status: dict[str, str] = {}
        try:
            def counts(validate: bool) -> Any:
                def sample(_i: int) -> float:
                    with Stopwatch() as sw:
                        for _ in range(PER_SAMPLE):
                            summary = store.queries.counts(scope, validate=validate)
                    if validate:
                        status["status"] = f"{summary.validation_status}: {summary.validation_detail}"
                    assert summary.total == size
                    return sw.total / PER_SAMPLE

                return sample

            def raw_sample(fn: Any, per: int) -> Any:
                def sample(_i: int) -> float:
                    with Stopwatch() as sw:
                        for _ in range(per):
                            fn()
                    return sw.total / per

                return sample

            got = interleaved(cfg, {
                VALIDATED: counts(True),
                UNVALIDATED: counts(False),
                RAW_ROW: raw_sample(raw.summary_row, PER_SAMPLE),
            }, **short_ops(cfg))
            got.update(interleaved(cfg, {RAW_RECOUNT: raw_sample(raw.recount, 1 if size > 200_000 else 5)}))
            peaks = {VALIDATED: peak_memory(lambda: store.queries.counts(scope, validate=True)),
                     UNVALIDATED: peak_memory(lambda: store.queries.counts(scope, validate=False))}
            fold_reps = cfg.reps if size <= 10_000 else (3 if size <= 200_000 else 1)
            got[FOLD] = []
            if not fold_skipped(size):
                got.update(interleaved(cfg, {FOLD: lambda _i: _fold_count(store, scope, size)}, reps=fold_reps,
                                       warmup=0))
        finally:
            raw.close()
            store.close()
    limit = (1e-3, "under 1 ms and validated")
    out = []
    for name, secs in got.items():
        comps = [] if name == FOLD else [Comparison(FOLD)]
        if name in (VALIDATED, UNVALIDATED):
            comps = [Comparison(RAW_ROW), Comparison(RAW_RECOUNT)] + comps
        m = Measurement(KEY, name, engine, size, UNIT, secs, 1, comps, peaks.get(name),
                        limit=limit if name == VALIDATED else None,
                        note=status.get("status", "") if name == VALIDATED else "", rate_unit="summaries",
                        skipped=fold_skipped(size) if name == FOLD else "")
        if name == VALIDATED and not status.get("status", "").startswith("validated"):
            m.limit = (0.0, "under 1 ms and validated (it said unvalidated)")
        out.append(m)
    return out


def _fold_count(store: Any, scope: Any, size: int) -> float:
    from collections import Counter

    from eventstore.task import evolve

    with Stopwatch() as sw:
        tasks: dict[str, Any] = {}
        for e in store.log.iter_scope(scope, batch_size=1000):
            tasks[e.stream] = evolve(tasks.get(e.stream), e)
        by_state = Counter(t.state for t in tasks.values())
    assert sum(by_state.values()) == size
    return sw.total


class _Raw:
    def __init__(self, target: Target, sid: int | None) -> None:
        self.sqlite = target.engine == SQLITE
        self.sid = sid
        self.conn: Any = sqlite_connect(target.path) if self.sqlite else pg_connect(target.pg_url, target.schema)
        m = "?" if self.sqlite else "%s"
        self.row_sql = f"SELECT * FROM scope_counts WHERE scope_id = {m}"
        self.recount_sql = (f"SELECT state, count(*), sum(required_slots) FROM task_view WHERE scope_id = {m} "
                            "GROUP BY state")

    def _one(self, sql: str) -> list[Any]:
        if self.sqlite:
            self.conn.execute("BEGIN")
            rows = self.conn.execute(sql, (self.sid,)).fetchall()
            self.conn.execute("COMMIT")
            return rows
        with self.conn.transaction():
            return self.conn.execute(sql, (self.sid,)).fetchall()

    def summary_row(self) -> list[Any]:
        return self._one(self.row_sql)

    def recount(self) -> list[Any]:
        return self._one(self.recount_sql)

    def close(self) -> None:
        self.conn.close()
