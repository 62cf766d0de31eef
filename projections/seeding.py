"""The rebuild's seeding from the log: a scope's task view rows folded from its first event, stream by stream, and
written once each; for a large scope, in several processes at once, each folding the runs of its streams it claims.

The task view is the fold of each stream on its own, so the scope's events are read in the order of its unique
(stream, version) index rather than the log's, and the scope can be cut into runs of streams that fold without
each other. A large scope is cut into several runs per process, and this process and processes forked from it (so
that they have the same upcasters and tables), each with its own connections, claim the runs one at a time from a
counter they share until none is left: a process that folds faster (this one, whose connection is warm; one on a
core that the machine gives more time) folds more of them, and all end within about one run of each other. On
SQLite the runs' write transactions take turns under one lock (the database has one writer; reading, decoding and
folding, most of the time, go on side by side), on PostgreSQL they COPY at once. The scope's count summary is the sum
of the runs' counts. Where processes cannot be forked (no ``fork`` start method, an in-memory SQLite database), or a
scope is small, it is folded in this process.
"""

from __future__ import annotations

import functools
import gc
import multiprocessing
import os
import queue
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert

from eventstore import EventLog, Scope, State
from eventstore.log import gc_paused
from eventstore.task import TASK_ADDED

from . import engine_sql
from .replay import evolve_row, scope_streams, seed_row, seed_row_fits

PARALLEL_MIN_EVENTS = 20_000  # a scope with fewer events is folded in this process (forking costs more than it saves)
MAX_WORKERS = 8
# A scope folded in parallel is cut into this many runs per process, claimed one at a time. More runs even out the
# processes' ends (they differ by about one run's fold) at the cost of one index seek each and of shorter turns of
# the write lock. With the worker on a core slowed to half speed (a busy loop beside it), a rebuild took 244 ms where
# two runs of fixed length (this process's a twelfth longer) took 319 ms at 10,000 tasks, 4.1 s where they took 5.4 s
# at 200,000; on an even machine about the same either way.
RUNS_PER_PROCESS = 8
# The runs' lengths fall evenly from FIRST_RUN to LAST_RUN times their average, so that the processes end within
# about one short run of each other rather than one run of average length: at 200,000 tasks the one process folding
# alone at the end of the seeding did so for 58 ms on average against 233 ms with runs of one length, the rebuild
# 6.26 s against 6.48 s (medians of 6 alternating; 10,000 tasks: 6 ms against 11 ms).
FIRST_RUN, LAST_RUN = 1.6, 0.4
# SQLite: rows a seeding process writes in one turn of the write lock: about a TURNS-th of its share of the scope
# (rows estimated at EVENTS_PER_ROW events each), at least MIN_TURN_ROWS and at most ``batch`` rows, and a run's last
# rows a turn of their own. In turns that short, one process writes while the others fold, rather than all folding
# and then queueing for the lock with one long batch each.
TURNS, EVENTS_PER_ROW, MIN_TURN_ROWS = 5, 4, 1000
WAIT = 0.5  # seconds between looks at the workers while none reports
STOP_WAIT = 5.0  # seconds a stopped worker is given to end on SIGTERM before it is killed

Run = tuple[str | None, str | None]  # the streams from the first (included; None: the scope's first) to the second


class SeedingFailed(RuntimeError):
    """A seeding worker failed (its error is in the message), or ended without a word."""


class Watch:
    """What a seeding process checks as it takes a ``SharedLock`` and while it waits: ``check()`` raises to give up.
    Set in each process after the fork: this one looks for workers that ended before they reported, a worker for this
    one gone."""

    def __init__(self) -> None:
        self.check: Callable[[], None] = lambda: None


class SharedLock:
    """A lock shared with the processes forked after it was made, taken after ``watch.check()`` and in waits of
    ``WAIT`` seconds with ``watch.check()`` between them: a process killed while it held the lock (by the kernel's
    out-of-memory killer, say) leaves it held for good, and the others would wait for it without end; and a worker
    whose rebuild is gone stops at its next turn or claim rather than fold and write the rest of its share."""

    def __init__(self, ctx: Any, watch: Watch) -> None:
        self._lock = ctx.Lock()
        self._watch = watch

    def __enter__(self) -> SharedLock:
        self._watch.check()
        while not self._lock.acquire(timeout=WAIT):
            self._watch.check()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class Claims:
    """The runs of a scope's streams among ``processes`` seeding processes: process ``i`` folds run ``i`` first (so
    that each folds at least one), then each next unclaimed run until none is left, claimed through a counter in
    memory shared with the processes forked after it was made."""

    def __init__(self, ctx: Any, runs: list[Run], processes: int, watch: Watch) -> None:
        self.runs = runs
        self._next = ctx.Value("i", processes, lock=False)
        self._lock = SharedLock(ctx, watch)

    def of(self, i: int) -> Iterator[Run]:
        """The runs process ``i`` folds, claimed as it asks for each."""
        yield self.runs[i]
        while True:
            with self._lock:
                n = self._next.value
                self._next.value = n + 1
            if n >= len(self.runs):
                return
            yield self.runs[n]


def seeding_fold(table: Any, scope: Scope) -> Callable[[int, list[tuple[int, int, str, Any]]], tuple]:
    """The fold that gives a stream's insert values for ``table``: ``seed_row`` when the table's columns are the
    ones it makes (and ``row_of`` still makes exactly those), else ``evolve_row`` (the definition, slower)."""
    if seed_row_fits(table):
        return seed_row
    return functools.partial(evolve_row, scope=scope, table=table)


def run_lengths(events_in_scope: int, processes: int) -> list[int]:
    """The events of each run a scope is cut into (``engine_sql.stream_splits``) but the last, which takes the
    rest: ``RUNS_PER_PROCESS`` runs per process, from ``FIRST_RUN`` to ``LAST_RUN`` times their average length."""
    runs = processes * RUNS_PER_PROCESS
    average = events_in_scope / runs
    fall = (FIRST_RUN - LAST_RUN) / max(1, runs - 1)
    return [int(average * (FIRST_RUN - fall * k)) for k in range(runs - 1)]


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def default_workers() -> int:
    """One seeding process per core this process may run on, at most ``MAX_WORKERS``; 1 without ``fork``."""
    if not can_fork():
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


@dataclass
class Folded:
    """What folding a run of a scope's streams gave: its tasks by state, their slots, the last position folded and
    the events of streams that are not tasks."""

    states: Counter[str]
    slots: Counter[str]
    last_position: int = 0
    skipped: int = 0

    def add(self, other: Folded) -> None:
        self.states.update(other.states)
        self.slots.update(other.slots)
        self.last_position = max(self.last_position, other.last_position)
        self.skipped += other.skipped


def seed_scope(log: EventLog, sid: int, scope: Scope, view: Any, counts: Any, batch: int,
               advance: Callable[[int], None], *, workers: int = 1, events_in_scope: int = 0,
               exiting: list[Any] | None = None) -> int:
    """Fold a scope from its first event into the fresh tables, in ``workers`` processes when it has at least
    ``PARALLEL_MIN_EVENTS`` events, and write its count summary. Returns the events of streams that are not tasks.
    ``exiting``: see ``fold_in_parallel``."""
    folded = None
    if workers > 1 and events_in_scope >= PARALLEL_MIN_EVENTS:
        folded = fold_in_parallel(log, sid, scope, view, batch, advance, workers, events_in_scope, exiting)
    if folded is None:
        folded = bulk_fold(log, sid, scope, view, batch, advance)
    if folded.states:
        row: dict[str, Any] = {"scope_id": sid, "position": folded.last_position}
        for s in State:
            row[s.value] = folded.states[s.value]
            row[f"slots_{s.value}"] = folded.slots[s.value]
        with log.writing() as conn:
            conn.execute(insert(counts).values(row))
    return folded.skipped


def bulk_fold(log: EventLog, sid: int, scope: Scope, view: Any, batch: int, advance: Callable[[int], None],
              streams: Run = (None, None),
              write_lock: AbstractContextManager[Any] | None = None, rows_per_write: int | None = None) -> Folded:
    """Fold a scope's streams from their first event into the fresh task view, one stream at a time: all of them,
    or those from ``streams[0]`` (included) to ``streams[1]`` (excluded).

    Each stream's events are gathered as they go by, folded into its row at once (``seeding_fold``: ``seed_row``,
    kept equal to ``evolve`` and ``row_of`` by a property test) and the row written once (no reads of the fresh
    tables, no updates), a page of ``batch`` events per read (with the driver), ``rows_per_write`` rows (by default
    ``batch``) per write transaction (``engine_sql.load_rows``: COPY on PostgreSQL), each taken under ``write_lock``
    when one is given. Memory holds one page, one stream and one batch of rows. Events of a stream before its first
    TaskAdded (not a task's) are counted, and folded into nothing.
    """
    with gc_paused():  # decoded events and folded rows hold no cycles: the collector's passes would find none
        return _bulk_fold(log, sid, scope, view, batch, advance, streams, write_lock, rows_per_write or batch)


def _bulk_fold(log: EventLog, sid: int, scope: Scope, view: Any, batch: int, advance: Callable[[int], None],
               streams: Run, write_lock: AbstractContextManager[Any] | None,
               rows_per_write: int) -> Folded:
    fold_row = seeding_fold(view, scope)
    columns = [c.name for c in view.columns]
    at_state, at_slots = columns.index("state"), columns.index("required_slots")
    out = Folded(Counter(), Counter())
    states, slots = out.states, out.slots
    rows: list[tuple] = []
    last_position = 0

    def write() -> None:
        if rows:
            with write_lock or nullcontext(), log.writing() as conn:
                engine_sql.load_rows(conn, view.name, columns, rows)
            rows.clear()

    for _stream, evs in scope_streams(log, sid, streams=streams, batch=batch, on_page=advance):
        if evs[0][2] != TASK_ADDED:  # events before the stream's first TaskAdded are not a task's: no row
            start = next((i for i, e in enumerate(evs) if e[2] == TASK_ADDED), len(evs))
            out.skipped += start
            if start == len(evs):
                continue
            evs = evs[start:]
        row = fold_row(sid, evs)
        rows.append(row)
        states[row[at_state]] += 1
        slots[row[at_state]] += row[at_slots]
        if evs[-1][0] > last_position:  # a stream's last event is its latest
            last_position = evs[-1][0]
        if len(rows) >= rows_per_write:
            write()
    write()
    out.last_position = last_position
    return out


def fold_in_parallel(log: EventLog, sid: int, scope: Scope, view: Any, batch: int, advance: Callable[[int], None],
                     workers: int, events_in_scope: int, exiting: list[Any] | None = None) -> Folded | None:
    """``bulk_fold`` of the scope cut into ``RUNS_PER_PROCESS`` runs of streams per process, among this process and
    ``workers - 1`` forked ones, each folding its first run and then those it claims (``Claims``). None (fold it
    here) when processes cannot be forked or the scope does not cut. Raises ``SeedingFailed`` when a worker fails
    (and this process's own error when its fold does): the other workers are stopped, and the fresh tables are left
    to the next rebuild, which makes them anew.

    A worker that has reported its runs has committed them; with ``exiting``, the workers are put there once all have
    reported, for the caller to join when it is done, rather than waited for here as they exit (the kernel's
    unmapping of a forked process took 3.5 ms at 10,000 tasks, 8 ms at 200,000: the index builds go on meanwhile).
    Workers an earlier call put there (of another scope) are joined first: they have long exited."""
    while exiting:
        exiting.pop().join()
    if not can_fork() or engine_sql.single_connection(log.engine):
        return None
    with log.reading() as conn:
        cuts = engine_sql.stream_splits(conn, sid, run_lengths(events_in_scope, workers))
    if not cuts:
        return None
    ctx = multiprocessing.get_context("fork")
    watch = Watch()
    lock = None if engine_sql.is_postgresql(log.engine) else SharedLock(ctx, watch)
    reports: Any = ctx.Queue()
    runs = list(zip([None, *cuts], [*cuts, None], strict=True))
    processes = min(workers, len(runs))
    rows_per_turn = events_in_scope // (processes * EVENTS_PER_ROW * TURNS)  # a TURNS-th of a process's share
    turn = None if lock is None else min(batch, max(MIN_TURN_ROWS, rows_per_turn))
    claims = Claims(ctx, runs, processes, watch)
    # This process folds runs too rather than wait for the workers: it does so faster than a fork of it would (no
    # pages copied on first write, its connection warm), and one process fewer is forked.
    procs = {
        i: ctx.Process(target=_run, args=(log, sid, scope, view, batch, claims.of(i), lock, turn, reports, i, watch),
                       daemon=True, name=f"taskstore-seed-{sid}-{i}")
        for i in range(1, processes)
    }
    # SIGTERM waits, in each worker, until ``_run`` has made it end the worker (not the handler of this process).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        for p in procs.values():
            p.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    folded = Folded(Counter(), Counter())
    pending = set(procs)
    reported = False  # every worker has reported its runs done

    def take(report: tuple[str, int, Any]) -> None:
        kind, i, payload = report
        if kind == "progress":
            advance(payload)
        elif kind == "done":
            folded.add(payload)
            pending.discard(i)
        else:
            raise SeedingFailed(f"seeding worker {i} of scope {sid} failed: {payload}")

    def take_reports() -> None:
        while True:  # the workers' reports so far: their progress shown as it comes, a failure raised at once
            try:
                report = reports.get_nowait()
            except queue.Empty:
                return
            take(report)

    def own_progress(n: int) -> None:
        advance(n)
        take_reports()

    def none_gone() -> None:
        """Raise for a worker that ended without reporting its runs done (killed, or died without a word)."""
        take_reports()
        gone = [i for i in pending if procs[i].exitcode is not None]
        if gone and reports.empty():
            raise SeedingFailed(f"seeding worker {gone[0]} of scope {sid} ended with exit code "
                                f"{procs[gone[0]].exitcode} before it reported")

    watch.check = none_gone
    try:
        folded.add(fold_claimed(log, sid, scope, view, batch, own_progress, claims.of(0), lock, turn))
        while pending:
            try:
                report = reports.get(timeout=WAIT)
            except queue.Empty:
                none_gone()
                continue
            take(report)
        reported = True
    finally:
        for p in procs.values():
            if reported and exiting is not None:
                exiting.append(p)
                continue
            if p.exitcode is None and pending:
                p.terminate()
                p.join(STOP_WAIT)
                if p.exitcode is None:  # pragma: no cover - a worker ends on SIGTERM (``_run``)
                    p.kill()
            p.join()
        reports.close()
    return folded


def fold_claimed(log: EventLog, sid: int, scope: Scope, view: Any, batch: int, advance: Callable[[int], None],
                 claims: Iterator[Run], write_lock: Any, rows_per_write: int | None) -> Folded:
    """``bulk_fold`` of each run of ``claims`` (``Claims.of``), one claimed at a time."""
    folded = Folded(Counter(), Counter())
    for run in claims:
        folded.add(bulk_fold(log, sid, scope, view, batch, advance, run, write_lock, rows_per_write))
    return folded


def _parent_alive(parent: int) -> None:
    if os.getppid() != parent:
        raise SeedingFailed(f"the rebuild's process ({parent}) is gone")


def _run(log: EventLog, sid: int, scope: Scope, view: Any, batch: int, claims: Iterator[Run], lock: Any,
         turn: int | None, reports: Any, i: int, watch: Watch) -> None:
    """A seeding worker, in a forked process: its own connections (the parent's are left alone), the runs it claims
    folded.

    The signal handlers the parent had are not the worker's: SIGTERM (``terminate``, when the rebuild fails) ends
    it, and SIGINT raises KeyboardInterrupt. A handler that does not exit (blaxel's SDK installs one for both, to
    flush its telemetry) kept a stopped worker alive, and the parent waited for it without end. The worker is forked
    with SIGTERM blocked, and unblocks it here: one sent before is acted on now.

    While it waits for a shared lock, it gives up when the process it was forked from is gone (its parent is then
    another), rather than wait on a lock that process may have held when it was killed."""
    watch.check = functools.partial(_parent_alive, os.getppid())
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    try:
        # What this process inherited is this process's to keep, not to collect: out of the collector's sight, its
        # objects are neither traversed nor written to (so their pages stay shared with the parent).
        gc.freeze()
        log.engine.dispose(close=False)
        folded = fold_claimed(log, sid, scope, view, batch, lambda n: reports.put(("progress", i, n)), claims, lock,
                              turn)
        reports.put(("done", i, folded))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        reports.put(("error", i, f"{type(exc).__name__}: {exc}"))
    finally:
        reports.close()
        reports.join_thread()
