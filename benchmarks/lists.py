"""Question 6 (issue 3): list pages of 50 at the first, middle and last position of every sort.

``TaskQueries.list_tasks`` (a keyset page over the task view, with a signed cursor; what ``taskstore list`` and
the HTTP dialects serve) for each sort at the first page, the page that starts at the middle of the job and the
last page; for createdAt:desc also filtered on state (running) and with a ``q`` search, and its first page as a new
connection reads it (its first ``FRESH_READS`` reads, through a store of its own). Against the same keyset
query in raw SQL on the task view (the physical limit; its LIMIT a bound parameter, as taskstore's), and against the approach the Blaxel document describes:
read the scope's whole event history, fold it into tasks, sort, slice the page in memory (measured once per job: it
costs the same for every page). Cursors for the middle and last pages are made, untimed, with the store's own
cursor codec from the key of the row at that position.
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

KEY = "lists"
MEMORY_BOUNDED = True  # taskstore's operations here hold one batch or page, whatever the job's size
TITLE = "List pages: first, middle and last page of every sort (limit 50)"
GOAL = ("every page within 1.5 times the first page of its sort; at least 10,000 times faster than folding the "
        "scope's events (stated at 1,000,000 tasks); under 1 ms in process on SQLite")
UNIT = "page of 50"
ENGINES = (SQLITE, POSTGRESQL)
CHANGES_JOB = False  # it only reads its job
LIMIT = 50
PER_SAMPLE = SHORT_OPS_PER_SAMPLE  # pages per timed sample (harness.short_ops says why so few)
SORTS = ["createdAt:desc", "createdAt:asc", "name:asc", "name:desc"]
FOLD = "fold the scope's events, sort, slice (Blaxel)"
# PostgreSQL plans a statement afresh for a connection's first executions of it (psycopg prepares it at the fifth;
# the server then tries five custom plans before it settles on a generic one): the first ten reads of a page on a
# new connection are the ones a plan that knows the LIMIT decides.
FRESH_READS = 10
NEW_CONNECTION = "taskstore createdAt:desc first page, a new connection's first 10 reads"


def op(kind: str, sort: str, where: str, position: str) -> str:
    return f"{kind} {sort}{where} {position} page"


def run(ctx: Context, engine: str, size: int) -> list[Measurement]:
    from sqlalchemy import func, select

    from eventstore import State
    from projections.filters import Cmp
    from projections.listing import _order, key_of
    from projections.queries import TaskQueries

    cfg = ctx.cfg
    ctx.status(f"{KEY} · {engine} · {size:,}")
    out: list[Measurement] = []
    with ctx.dbs.fresh(engine, SimulatedJob(), size, changes=CHANGES_JOB) as target:
        store = target.open_store()
        scope = target.scope()
        queries = store.queries
        view = queries.view
        raw = _RawKeyset(target)
        try:
            sid = store.log.scope_id(scope)
            running = Cmp("state", "eq", frozenset({State.RUNNING}))
            cases: list[tuple[str, str, Any, str | None]] = [(s, "", None, None) for s in SORTS]
            cases += [("createdAt:desc", " state=running", running, None), ("createdAt:desc", " q=align", None, "align")]
            samples: dict[str, Any] = {}
            peaks: dict[str, int] = {}
            baselines: dict[str, list[Comparison]] = {}
            for sort, label, where, q in cases:
                fp = TaskQueries.query_fingerprint(scope, sort, q, where)
                with store.log.reading() as conn:
                    base = select(view).where(view.c.scope_id == sid)
                    if where is not None:
                        base = base.where(view.c.state == State.RUNNING.value)
                    n = conn.execute(select(func.count()).select_from(base.subquery())).scalar_one()
                    positions: list[tuple[str, Any]] = [("first", None)]
                    if q is None:
                        for name, offset in (("middle", n // 2 - 1), ("last", max(0, n - LIMIT - 1))):
                            row = conn.execute(base.order_by(*_order(view.c, sort)).offset(offset).limit(1)
                                               ).mappings().first()
                            positions.append((name, key_of(row, sort) if row else None))
                first_name = op("taskstore", sort, label, "first")
                for position, after in positions:
                    cursor = store.cursors.encode({"k": after}, fp) if after is not None else None
                    name = op("taskstore", sort, label, position)
                    samples[name] = _pages(queries, scope, sort, cursor, q, where)
                    peaks[name] = peak_memory(lambda c=cursor, s=sort, q_=q, w=where: queries.list_tasks(
                        scope, sort=s, limit=LIMIT, cursor=c, q=q_, where=w))
                    comps = [Comparison(first_name, 1 / 1.5, "within 1.5× the first page's time (ratio ≥ 0.67)")] if position != "first" else []
                    if where is None and q is None:
                        raw_name = op("raw keyset SQL", sort, label, position)
                        samples[raw_name] = _raw_pages(raw, sid, sort, after)
                        comps.append(Comparison(raw_name))
                    comps.append(Comparison(FOLD, 10_000.0 if size >= 1_000_000 else None,
                                            "≥ 10,000× the fold" if size >= 1_000_000 else ""))
                    baselines[name] = comps
            fresh_store = target.open_store()  # its own connection pool, made anew for every sample
            samples[NEW_CONNECTION] = _new_connection_pages(fresh_store, scope)
            baselines[NEW_CONNECTION] = [Comparison(op("taskstore", "createdAt:desc", "", "first"))]
            try:
                got = interleaved(cfg, samples, **short_ops(cfg))
            finally:
                fresh_store.close()
            # The event-history approach: one fold of the scope per page asked for, whatever the page.
            fold_reps = cfg.reps if size <= 10_000 else (3 if size <= 200_000 else 1)
            fold_samples: dict[str, list[float]] = {FOLD: []}
            if not fold_skipped(size):
                fold_samples = interleaved(cfg, {FOLD: lambda _i: _fold_page(store, scope)}, reps=fold_reps, warmup=0)
            fold_peak = peak_memory(lambda: _fold_page(store, scope)) if size <= 200_000 else None
        finally:
            raw.close()
            store.close()
    for name, secs in got.items():
        limit = (1e-3, "under 1 ms (SQLite, in process)") if engine == SQLITE and name.startswith("taskstore") else None
        out.append(Measurement(KEY, name, engine, size, UNIT, secs, LIMIT, baselines.get(name, []), peaks.get(name),
                               limit=limit, rate_unit="rows"))
    out.append(Measurement(KEY, FOLD, engine, size, UNIT, fold_samples[FOLD], LIMIT, [], fold_peak,
                           note=f"{len(fold_samples[FOLD])} repetitions", rate_unit="rows", skipped=fold_skipped(size)))
    return out


def _pages(queries: Any, scope: Any, sort: str, cursor: str | None, q: str | None, where: Any) -> Any:
    def sample(_i: int) -> float:
        with Stopwatch() as sw:
            for _ in range(PER_SAMPLE):
                page = queries.list_tasks(scope, sort=sort, limit=LIMIT, cursor=cursor, q=q, where=where)
        assert page.items or q is not None, "an empty page where tasks were expected"
        return sw.total / PER_SAMPLE

    return sample


def _new_connection_pages(store: Any, scope: Any) -> Any:
    """The default list's first page, read ``FRESH_READS`` times on a connection made for the sample (made by a count
    summary, untimed: another statement)."""

    def sample(_i: int) -> float:
        store.log.engine.dispose()
        store.queries.counts(scope, validate=False)
        with Stopwatch() as sw:
            for _ in range(FRESH_READS):
                page = store.queries.list_tasks(scope, limit=LIMIT)
        assert page.items, "an empty page where tasks were expected"
        return sw.total / FRESH_READS

    return sample


def _fold_page(store: Any, scope: Any) -> float:
    """Blaxel's way: every event of the scope, folded into tasks, sorted by createdAt desc, the first page sliced."""
    from eventstore.task import evolve

    with Stopwatch() as sw:
        tasks: dict[str, Any] = {}
        for e in store.log.iter_scope(scope, batch_size=1000):
            tasks[e.stream] = evolve(tasks.get(e.stream), e)
        ordered = sorted(tasks.values(), key=lambda t: (t.created_at, t.key), reverse=True)
        page = ordered[:LIMIT]
    assert len(page) == min(LIMIT, len(tasks))
    return sw.total


class _RawKeyset:
    """The same keyset page in raw SQL on the task view: the physical limit of a list page."""

    def __init__(self, target: Target) -> None:
        self.sqlite = target.engine == SQLITE
        self.conn: Any = sqlite_connect(target.path) if self.sqlite else pg_connect(target.pg_url, target.schema)
        self.mark = "?" if self.sqlite else "%s"

    def page(self, sid: int, sort: str, after: list[Any] | None) -> list[Any]:
        from projections.listing import SORTS as KEYS

        names, desc = KEYS[sort]
        m = self.mark
        where = f"scope_id = {m}"
        params: list[Any] = [sid]
        if after is not None:
            cmp = "<" if desc else ">"
            where += f" AND ({', '.join(names)}) {cmp} ({', '.join([m] * len(names))})"
            params += after
        order = ", ".join(f"{n} {'DESC' if desc else 'ASC'}" for n in names)
        # The LIMIT a bound parameter: a literal one lets PostgreSQL plan a small table's first page as a bitmap scan
        # of the whole scope and a sort (8 ms at 10,000 tasks, against 0.7 ms in index order); so does a bound one
        # for a connection's first executions, which the samples, after their warm-ups, never are. (taskstore's
        # page reads its LIMIT from a sub-select on PostgreSQL: index order from the first execution.)
        sql = f"SELECT * FROM task_view WHERE {where} ORDER BY {order} LIMIT {m}"
        params.append(LIMIT + 1)
        if self.sqlite:
            self.conn.execute("BEGIN")
            rows = self.conn.execute(sql, params).fetchall()
            self.conn.execute("COMMIT")
            return rows
        with self.conn.transaction():
            return self.conn.execute(sql, params).fetchall()

    def close(self) -> None:
        self.conn.close()


def _raw_pages(raw: _RawKeyset, sid: int, sort: str, after: list[Any] | None) -> Any:
    def sample(_i: int) -> float:
        with Stopwatch() as sw:
            for _ in range(PER_SAMPLE):
                rows = raw.page(sid, sort, after)
        assert rows
        return sw.total / PER_SAMPLE

    return sample
