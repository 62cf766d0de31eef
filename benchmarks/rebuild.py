"""Question 9 (issues 3 and 5): rebuild and audit from the log, and snapshot plus tail against a full replay.

On a fresh database holding the job, a full snapshot of the scope is taken (untimed) and a tail of events is then
appended through the API (``TAIL_TASKS`` new tasks, each added and started: twice as many events), so that the
newest verified snapshot lacks exactly that tail. Then, their repetitions interleaved on the same database:

- ``TaskStore.rebuild()`` from the log: every scope folded from its first event into fresh tables, the catch-up,
  and the swap (what ``taskstore rebuild`` does), against reading and decoding the same events with raw SQL
  (question 4's raw reader: 1,000 rows a batch by keyset on the position, JSON decoded by orjson). Goal (issue 3):
  at least half the raw read-and-decode rate.
  A scope of ``PARALLEL_MIN_EVENTS`` events or more is folded by one process per core (``projections/seeding.py``),
  the raw reader reads in one: ``TaskStore.rebuild(workers=1)`` is measured beside it, without a goal.
- ``TaskStore.rebuild(from_snapshots=True)``: the newest verified full snapshot copied in and only the events it
  lacks folded on top. Goal (issue 5): it reads only the events after the snapshot (the tail), however large the
  job; its time is that of copying the snapshot's rows plus the tail.
- ``TaskStore.audit()`` from the log alone (``from_snapshots=False``: fold every stream again and compare every row
  and count field by field) and with the snapshots too (the default), each expected to find no difference.
- The scope's counts as of the log's head from the newest snapshot plus its tail (``queries.counts_as_of``), against
  the same answer from the scope's first event (the same code without snapshots: a full replay of the scope's
  count deltas).

Rates are events of the whole log per second (for the counts rows, the events each answer covers). Up to 200,000
tasks peak memory is measured and the audit with snapshots is timed; above, the first is not (tracing a rebuild of
a larger job takes too long) and the second is left out (minutes a repetition). Repetitions: as the run's mode says
up to 10,000 tasks (no warm-up in quick mode), three without a warm-up at 200,000 (fewer if the mode says fewer), one
without a warm-up above (without warm-ups, the raw reader reads the job once untimed first, up to 1,000,000 tasks);
for the counts as of the head, as the run's mode says up to 200,000 tasks, three after one warm-up above.
"""

from __future__ import annotations

from typing import Any

from projections.replay import last_position
from projections.seeding import PARALLEL_MIN_EVENTS, default_workers

from .harness import (
    POSTGRESQL,
    SQLITE,
    Comparison,
    Config,
    Context,
    Measurement,
    SimulatedJob,
    Stopwatch,
    Target,
    in_fresh_process,
    interleaved,
    peak_memory,
    spec_batches,
)
from .replay import _raw_reader

KEY = "rebuild"
TITLE = "Rebuild and audit from the log; snapshot plus tail against a full replay"
GOAL = ("rebuild at least half the raw read-and-decode rate; from a snapshot, read only the events after it; "
        "snapshot plus tail faster than a full replay")
UNIT = "whole log"
ENGINES = (SQLITE, POSTGRESQL)
TAIL_TASKS = 1000  # tasks added (and started) after the snapshot: the tail is twice as many events
MEMORY_UP_TO = 200_000
WARM_RAW_UP_TO = 1_000_000  # without warm-ups, the raw reader reads once untimed first (above, it takes minutes)

RAW = "raw SQL + orjson.loads (read and decode the log)"
REBUILD = "TaskStore.rebuild() from the log"
REBUILD_ONE = "TaskStore.rebuild(workers=1) from the log"
REBUILD_SNAP = "TaskStore.rebuild(from_snapshots=True)"
AUDIT_LOG = "TaskStore.audit(from_snapshots=False)"
AUDIT_ALL = "TaskStore.audit() (log and snapshots)"
AS_OF_SNAP = "counts_as_of(head): snapshot + tail"
AS_OF_FULL = "counts_as_of(head): from the first event"


def _measure(cfg: Config, target: Target, size: int) -> tuple[dict[str, list[float]], dict[str, int | None],
                                                             dict[Any, Any]]:
    """The question's timed work on the fresh database ``target``: its samples, peak memory and facts."""
    from eventstore import State

    facts: dict[Any, Any] = {}
    store = target.open_store()
    scope = target.scope()
    raw_read = _raw_reader(target)
    try:
        snap = store.snapshot(scope, "full")
        assert snap is not None and snap.verified, "the full snapshot the question starts from"
        tail_ids = []
        for batch in spec_batches("tail", TAIL_TASKS // 100):
            tail_ids += [t.task_id for t in store.add_tasks(scope, batch)]
        store.transition_many(scope, [(tid, State.STARTING) for tid in tail_ids])
        facts["tail"] = 2 * len(tail_ids)
        # The tail's last event: this process wrote it and it has committed. (Not ``log.head()``: on PostgreSQL
        # that stops below the commit horizon, which any long transaction in the database holds back.)
        with store.log.reading() as conn:
            head = last_position(conn, store.log.scope_id(scope, conn))

        def raw(_i: int = 0) -> float:
            with Stopwatch() as sw:
                facts["raw events"] = raw_read(None)
            return sw.total

        def rebuild(from_snapshots: bool, workers: int | None = None) -> Any:
            def sample(_i: int = 0) -> float:
                with Stopwatch() as sw:
                    result = store.rebuild(from_snapshots=from_snapshots, workers=workers)
                if workers is None:
                    facts[(from_snapshots, "seeded")] = result.seeded
                    facts[(from_snapshots, "events")] = result.events
                    facts[(from_snapshots, "snapshot scopes")] = result.scopes_from_snapshots
                return sw.total

            return sample

        def audit(from_snapshots: bool) -> Any:
            def sample(_i: int = 0) -> float:
                with Stopwatch() as sw:
                    report = store.audit(scope, from_snapshots=from_snapshots)
                assert report.ok, f"the audit found differences: {report.differences[:3]}"
                facts[("audit", from_snapshots)] = (report.events, report.snapshots)
                return sw.total

            return sample

        def as_of(snapshots: Any) -> Any:
            from projections.as_of import counts_as_of

            def sample(_i: int = 0) -> float:
                with Stopwatch() as sw:
                    summary = counts_as_of(store.log, snapshots, scope, head)
                assert summary.total == size + len(tail_ids)
                facts[("as of", snapshots is not None)] = summary.validation_detail
                return sw.total

            return sample

        if size <= 10_000:
            reps = cfg.reps
        elif size <= MEMORY_UP_TO:  # a set of the contenders takes about 40 s; one sample gave 0.54x, then 0.46x
            reps = min(cfg.reps, 3)
        else:  # one takes minutes
            reps = 1
        warmup = 0 if cfg.quick or size > 10_000 else 1  # each unit takes seconds: a warm-up matters little
        contenders = {RAW: raw, REBUILD: rebuild(False), REBUILD_ONE: rebuild(False, workers=1),
                      REBUILD_SNAP: rebuild(True), AUDIT_LOG: audit(False)}
        if size <= MEMORY_UP_TO:  # above, the audit of the snapshots too takes minutes a repetition
            contenders[AUDIT_ALL] = audit(True)
        if warmup == 0 and size <= WARM_RAW_UP_TO:
            # The raw reader runs first: without a warm-up, its one sample would be the first read of a job just
            # copied (a cold cache and connection) and every rebuild after it would read a warm one. At 200,000
            # tasks that made the baseline 3.6 s against 1.7 s for the same reader in the replay question.
            raw()
        got = interleaved(cfg, contenders, reps=reps, warmup=warmup)
        # The full replay of the count deltas takes over a minute at 10,000,000 tasks: 3 repetitions above 200,000.
        as_of_reps = {} if size <= MEMORY_UP_TO else {"reps": 3, "warmup": 1}
        got.update(interleaved(cfg, {AS_OF_SNAP: as_of(store.snapshots), AS_OF_FULL: as_of(None)}, **as_of_reps))
        peaks: dict[str, int | None] = {}
        if size <= MEMORY_UP_TO:
            # In one process: tracemalloc sees this one only (each seeding process holds what one would).
            peaks = {REBUILD: peak_memory(rebuild(False, workers=1)), REBUILD_SNAP: peak_memory(rebuild(True)),
                     AUDIT_LOG: peak_memory(audit(False))}
    finally:
        getattr(raw_read, "close", lambda: None)()
        store.close()
    return got, peaks, facts


def run(ctx: Context, engine: str, size: int) -> list[Measurement]:
    ctx.status(f"{KEY} · {engine} · {size:,}")
    with ctx.dbs.fresh(engine, SimulatedJob(), size) as target:
        # In a process of its own, started afresh: a rebuild forks its seeding workers, and forking costs what this
        # process has mapped (about 20 ms per 350 MB here, with the child's exit); the other questions' fold
        # baselines leave hundreds of MB behind. ``taskstore rebuild`` runs in a process of its own too.
        got, peaks, facts = in_fresh_process(_measure, ctx.cfg, target, size)
    total, tail = facts["raw events"], facts["tail"]
    workers = default_workers()
    parallel = workers > 1 and facts[(False, "seeded")] >= PARALLEL_MIN_EVENTS
    seeded = facts[(True, "seeded")]
    reads_tail_only = facts[(True, "snapshot scopes")] == 1 and seeded == tail
    notes = {
        RAW: f"{facts['raw events']:,} events",
        REBUILD: (f"read {facts[(False, 'events')]:,} events ({facts[(False, 'seeded')]:,} folding the scope); "
                  + (f"{workers} seeding processes (one per core)" if parallel else "folded in one process "
                     f"(a scope of fewer than {PARALLEL_MIN_EVENTS:,} events)")),
        REBUILD_ONE: "the same, folded in one process (the raw reader uses one)",
        REBUILD_SNAP: (f"copied the snapshot's {size:,} rows and read {seeded:,} events of the log "
                       f"(the tail after the snapshot: {tail:,}; the log: {total:,})"),
        AUDIT_LOG: f"{facts[('audit', False)][0]:,} events folded; no difference",
        AUDIT_ALL: (f"{facts[('audit', True)][0]:,} events, {facts[('audit', True)][1]} snapshots; no difference"
                    if ("audit", True) in facts else ""),
        AS_OF_SNAP: facts[("as of", True)],
        AS_OF_FULL: facts[("as of", False)],
    }
    comps: dict[str, list[Comparison]] = {
        REBUILD: [Comparison(RAW, 0.5, "≥ 0.5× raw read-and-decode")],
        REBUILD_ONE: [Comparison(RAW), Comparison(REBUILD)],
        REBUILD_SNAP: [Comparison(REBUILD), Comparison(RAW)],
        AUDIT_LOG: [Comparison(RAW)],
        AUDIT_ALL: [Comparison(RAW)],
        AS_OF_SNAP: [Comparison(AS_OF_FULL, 1.0, "faster than the full replay")],
    }
    out = []
    for name, secs in got.items():
        per_unit = total
        unit = UNIT
        if name in (AS_OF_SNAP, AS_OF_FULL):
            unit = "count summary as of the head"
        m = Measurement(KEY, name, engine, size, unit, secs, per_unit, comps.get(name, []), peaks.get(name),
                        note=notes[name])
        if name == REBUILD_SNAP:
            m.limit = (float("inf") if reads_tail_only else 0.0,
                       "reads only the events after its snapshot" + ("" if reads_tail_only else
                                                                    f" (it read {seeded:,}, the tail is {tail:,})"))
        out.append(m)
    return out
