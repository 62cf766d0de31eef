"""Question 5: several concurrent writers on PostgreSQL.

1, 2 and 4 threads each append bulk adds (100 tasks per call, one transaction each) to the same job, through
``TaskStore.add_tasks`` on one shared store (its connection pool; inline projections included, so every writer also
updates the scope's count summary row), and through the event log alone (``EventLog.append``, no projections),
against the same number of threads writing the
same rows with raw psycopg ``executemany``, one connection each; and, to show what sharing one job costs, the same
writers each adding to a job of its own. The figure is the aggregate rate of all writers
(wall time from a common start to the last commit). The event log never serialises writers (readers use the
commit horizon instead of a lock), so its rate should grow with writers until the machine's cores are busy; the
inline projections update one count-summary row (and one snapshot-schedule row) per job, which writers of the same
job can only take in turn. Python's GIL bounds every contender alike.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any, Callable

from .harness import (
    EVENT_COLUMNS,
    POSTGRESQL,
    Comparison,
    Contender,
    Context,
    Measurement,
    SimulatedJob,
    Target,
    added_row,
    bare_log,
    now_iso,
    pg_connect,
    scope_id,
    side_by_side,
    spec_batches,
)

KEY = "concurrency"
TITLE = "Concurrent writers on PostgreSQL: aggregate rate of bulk adds"
GOAL = "reported (no goal set): the aggregate rate, and how it scales with writers"
UNIT = "batch of 100 tasks (aggregate)"
ENGINES = (POSTGRESQL,)
SHARES_JOB = True  # it adds tasks of its own (ids and own jobs tagged by Target.tag)

RAW = "raw psycopg executemany"
LOG = "EventLog.append, events only"
API = "TaskStore.add_tasks"
API_OWN = "TaskStore.add_tasks, a job per writer"


def name(op: str, threads: int) -> str:
    return f"{op} × {threads} writer{'s' if threads > 1 else ''}"


def run(ctx: Context, engine: str, size: int) -> list[Measurement]:
    cfg = ctx.cfg
    out: list[Measurement] = []
    for threads in cfg.threads:
        per_thread = (cfg.warmup + cfg.reps) * cfg.batches
        makers: tuple[tuple[str, Any], ...] = ((RAW, _raw), (LOG, _log), (API, _api))
        if threads > 1:
            makers += ((API_OWN, _api_own_job),)

        def setup(make: Any, threads: int = threads) -> Callable[[ExitStack], Contender]:
            def open_(stack: ExitStack) -> Contender:
                target = stack.enter_context(ctx.dbs.fresh(engine, SimulatedJob(), size, shared=SHARES_JOB))
                specs = [spec_batches(f"w{k}{target.tag}", per_thread, seed=k) for k in range(threads)]
                writers, close = make(target, threads)
                stack.callback(close)
                pool = stack.enter_context(ThreadPoolExecutor(threads))

                def sample(i: int) -> float:
                    start = threading.Barrier(threads + 1)

                    def work(k: int) -> None:
                        start.wait()
                        for b in range(i * cfg.batches, (i + 1) * cfg.batches):
                            writers[k](specs[k][b])

                    futures = [pool.submit(work, k) for k in range(threads)]
                    start.wait()
                    t = time.perf_counter()
                    for f in futures:
                        f.result()
                    return (time.perf_counter() - t) / (threads * cfg.batches)

                return Contender(sample)

            return open_

        ctx.status(f"{KEY} · {engine} · {size:,} · {threads} writers")
        got = side_by_side(cfg, {name(op, threads): setup(make) for op, make in makers})
        for op, _ in makers:
            comparisons: list[Comparison] = []
            if op != RAW:
                comparisons.append(Comparison(name(RAW, threads)))
            if op == API_OWN:
                comparisons.append(Comparison(name(API, threads)))
            if threads > 1:
                comparisons.append(Comparison(name(API if op == API_OWN else op, 1)))
            out.append(Measurement(KEY, name(op, threads), engine, size, UNIT, got[name(op, threads)][0], 100,
                                   comparisons))
    return out


def _api(target: Target, threads: int) -> tuple[list[Callable[[list[dict]], Any]], Callable[[], None]]:
    store = target.open_store()
    scope = target.scope()
    return [lambda batch: store.add_tasks(scope, batch)] * threads, store.close


def _api_own_job(target: Target, threads: int) -> tuple[list[Callable[[list[dict]], Any]], Callable[[], None]]:
    """Each writer adds to a job of its own (a scope of its own): what changes when writers share no summary row."""
    from eventstore import Scope

    store = target.open_store()
    scopes = [Scope("bench", f"job-w{k}{target.tag}") for k in range(threads)]
    return [lambda batch, s=s: store.add_tasks(s, batch) for s in scopes], store.close


def _log(target: Target, threads: int) -> tuple[list[Callable[[list[dict]], Any]], Callable[[], None]]:
    from eventstore import Expect, NewEvent, StreamAppend

    store = target.open_store()
    scope = target.scope()
    log = bare_log(store)

    def write(batch: list[dict]) -> None:
        at = now_iso()
        log.append([
            StreamAppend(scope, s["id"].lower(), [NewEvent(
                "TaskAdded", {"taskId": s["id"], "spec": {k: v for k, v in s.items() if k != "id"}, "at": at}
            )], Expect.NO_STREAM)
            for s in batch
        ])

    return [write] * threads, store.close


def _raw(target: Target, threads: int) -> tuple[list[Callable[[list[dict]], Any]], Callable[[], None]]:
    sid = scope_id(target)
    sql = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)"
    conns = [pg_connect(target.pg_url, target.schema) for _ in range(threads)]  # type: ignore[arg-type]

    def writer(conn: Any) -> Callable[[list[dict]], None]:
        def write(batch: list[dict]) -> None:
            at = now_iso()
            rows = [added_row(sid, s, at) for s in batch]
            with conn.transaction():
                conn.cursor().executemany(sql, rows)

        return write

    def close() -> None:
        for c in conns:
            c.close()

    return [writer(c) for c in conns], close


def chart(ms: list[Measurement], path: Any) -> bool:
    """Aggregate rate against the number of writers: one panel per job size, one line per operation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[int, dict[str, list[tuple[int, float, float, float]]]] = {}
    for m in ms:
        if not m.samples or m.skipped:
            continue
        op, _, writers = m.operation.rpartition(" × ")
        threads = int(writers.split()[0])
        rates = [m.events_per_unit / s for s in m.samples]
        panels.setdefault(m.size, {}).setdefault(op, []).append((threads, m.rate, min(rates), max(rates)))
    if not panels:
        return False
    sizes = sorted(panels)
    cols = min(2, len(sizes))
    rows = (len(sizes) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    top = max(p[3] for series in panels.values() for pts in series.values() for p in pts)
    ops = list(dict.fromkeys(op for series in panels.values() for op in series))
    colors = {op: f"C{i}" for i, op in enumerate(ops)}  # an operation has one color in every panel
    for ax, size in zip(axes.flat, sizes):
        for label, pts in panels[size].items():
            pts.sort()
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                        yerr=[[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]], marker="o", capsize=3,
                        label=label, color=colors[label])
        ax.set_title(f"job of {size:,} tasks", fontsize=9)
        ax.set_xlabel("concurrent writers (threads)")
        ax.set_ylabel("events per second, all writers")
        ax.set_xticks(sorted({p[0] for pts in panels[size].values() for p in pts}))
        ax.set_ylim(0, top * 1.05)  # one scale for every panel: the sizes compare at a glance
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(sizes):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color=colors[op], marker="o", label=op) for op in ops]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(ops)), fontsize=8, frameon=False)
    fig.suptitle(TITLE, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
