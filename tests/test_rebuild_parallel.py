"""A rebuild that folds large scopes in several processes (``projections/seeding.py``), on both engines.

- The scope is cut by ``stream_splits`` into runs of streams of about the lengths asked for (equal ones, or
  ``run_lengths``'s, falling from the first run to the last); ``stream_page`` reads a run's events and no other's. A
  stream longer than a run is not cut, and the runs after it are cut as before.
- A log of one scope is cut by the count of the whole events table (the scope's: no count per scope needed).
- A rebuild with 3 seeding processes (the size threshold lowered so that a small job is cut) gives exactly the
  task view and count summaries of the inline projection and of a rebuild in one process, with the same events read
  and skipped, and the audit finds nothing.
- This process folds the first run of each scope, each forked worker the next, and every run after those is folded
  by the process that claims it first: each run exactly once; a worker slowed down leaves the rest to this process.
  The progress callback hears of every event read, the workers' too. Workers that have reported are joined when
  the rebuild is done (those of an earlier scope before the next scope is cut), and none is left behind, also when
  the rebuild fails after seeding.
- A failing worker fails the rebuild with its error (the other workers stopped), and the next rebuild succeeds; so
  does a failure of this process's own run. A worker is stopped by SIGTERM even when the process it was forked from
  handles that signal without exiting (as blaxel's SDK has it do). A worker that dies without a word (killed)
  fails the rebuild with its exit code.
- On SQLite the indexes are built with a larger page cache, and the connection's own is given back after.
- A worker killed while it holds the SQLite write lock fails the rebuild rather than leave this process waiting for
  the lock without end; a worker gives up once the process it was forked from is gone, at its next turn or claim.
  A worker that dies while this process waits for the reports, its own runs folded, fails the rebuild too.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest

import projections.seeding as seeding
from eventstore import NewEvent, Scope, StreamAppend
from eventstore.dialects.base import driver_execute
from projections import engine_sql
from taskstore import open_store
from taskstore.simulate import simulate

from .test_rebuild_audit import tables

JOB = Scope("acme", "parallel")
SMALL = Scope("acme", "small")


def populate(store) -> None:
    simulate(store, JOB, 120, seed=3)
    simulate(store, SMALL, 7, seed=4)
    # Streams that are not tasks, among the job's: counted as skipped whichever run they fall in.
    for name in ("audit-trail", "zz-not-a-task"):
        store.log.append([StreamAppend(JOB, name, [NewEvent("SomethingElse", {"n": 1})])])


@pytest.fixture
def parallel(monkeypatch):
    """Every scope cut among the workers, however small; the runs each worker took, by process id."""
    monkeypatch.setattr(seeding, "PARALLEL_MIN_EVENTS", 0)
    calls = []
    real = seeding.fold_in_parallel

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(seeding, "fold_in_parallel", spy)
    return calls


def _events_of(store, scope: Scope) -> int:
    with store.log.reading() as conn:
        return engine_sql.count_since(conn, store.log.scope_id(scope), None)


def _runs_read(conn, sid: int, cuts: list[str]) -> tuple[list[tuple], list[list[tuple]]]:
    """The runs ``cuts`` make, as seeding makes them, and each run's events as ``stream_page`` reads them."""
    runs = list(zip([None, *cuts], [*cuts, None], strict=True))
    return runs, [engine_sql.stream_page(conn, sid, None if lo is None else (lo, 0), 10_000, hi) for lo, hi in runs]


def test_splits_cut_a_scope_into_runs_of_about_equal_events(store):
    populate(store)
    sid = store.log.scope_id(JOB)
    n = _events_of(store, JOB)
    with store.log.reading() as conn:
        cuts = engine_sql.stream_splits(conn, sid, [n // 3] * 2)
        runs, pages = _runs_read(conn, sid, cuts)
        whole = engine_sql.stream_page(conn, sid, None, 10_000)
    assert len(cuts) == 2 and cuts == sorted(cuts)
    assert [row for page in pages for row in page] == whole  # every event once, in order, no run overlapping
    for page in pages:
        assert abs(len(page) - n / 3) <= 20  # a cut falls on a stream's first event: off by less than a stream
    for (lo, hi), page in zip(runs, pages, strict=True):
        assert all((lo is None or row[1] >= lo) and (hi is None or row[1] < hi) for row in page)


def test_splits_follow_the_lengths_asked_for(store):
    populate(store)
    sid = store.log.scope_id(JOB)
    n = _events_of(store, JOB)
    asked = [n // 2, n // 4, n // 8]
    with store.log.reading() as conn:
        cuts = engine_sql.stream_splits(conn, sid, asked)
        _, pages = _runs_read(conn, sid, cuts)
    assert len(pages) == 4 and sum(len(page) for page in pages) == n
    for want, page in zip([*asked, n - sum(asked)], pages, strict=True):
        assert abs(len(page) - want) <= 20  # off by less than a stream


def test_run_lengths_fall_from_the_first_run_to_the_last():
    n, processes = 1_000_003, 3
    lengths = seeding.run_lengths(n, processes)
    runs = processes * seeding.RUNS_PER_PROCESS
    assert len(lengths) == runs - 1  # the last run is the rest
    average = n / runs
    assert lengths == sorted(lengths, reverse=True) and len(set(lengths)) == len(lengths)
    assert abs(lengths[0] - seeding.FIRST_RUN * average) <= 1
    rest = n - sum(lengths)
    assert abs(rest - seeding.LAST_RUN * average) <= runs  # each length rounded down: the rest a few events longer
    assert rest < lengths[-1]


def test_a_stream_longer_than_a_run_is_not_cut_and_the_runs_after_it_are(store):
    for i in range(40):
        store.add_tasks(JOB, [{"id": f"a-{i:02d}"}])
    store.add_tasks(JOB, [{"id": "m-long"}])
    for n in range(60):  # one stream of 61 events, longer than a run (about a fifth of the scope's 161)
        store.log.append([StreamAppend(JOB, "m-long", [NewEvent("SomethingElse", {"n": n})])])
    for i in range(60):
        store.add_tasks(JOB, [{"id": f"z-{i:02d}"}])
    sid = store.log.scope_id(JOB)
    n = _events_of(store, JOB)
    with store.log.reading() as conn:
        cuts = engine_sql.stream_splits(conn, sid, [n // 5] * 4)
        _, pages = _runs_read(conn, sid, cuts)
    assert cuts == sorted(cuts) and len(set(cuts)) == len(cuts)
    assert sum(len(page) for page in pages) == n
    long_run = next(page for page in pages if any(row[1] == "m-long" for row in page))
    assert sum(row[1] == "m-long" for row in long_run) == 61  # the long stream whole in one run
    assert sum(1 for c in cuts if c > "m-long") >= 1  # and the z- streams after it still cut into runs


def test_a_parallel_rebuild_equals_the_inline_projection_and_a_rebuild_in_one_process(store, parallel, monkeypatch):
    monkeypatch.setattr(seeding, "MIN_TURN_ROWS", 7)  # SQLite: turns of the write lock shorter than the batch
    populate(store)
    live = tables(store)
    one = store.rebuild(workers=1)
    assert tables(store) == live and parallel == []  # workers=1: fold_in_parallel not even tried
    parallel.clear()
    many = store.rebuild(workers=3, batch_size=40)
    assert parallel == [True, True]  # both scopes cut, each among 3 processes
    assert tables(store) == live
    assert (many.events, many.seeded, many.skipped) == (one.events, one.seeded, one.skipped)
    assert many.skipped == 2
    assert store.audit(from_snapshots=False).ok
    # The inline projection goes on in the rebuilt tables.
    store.add_tasks(JOB, [{"id": "after-parallel", "requiredSlots": 2}])
    assert store.queries.counts(JOB).total == 121


def test_a_log_of_one_scope_is_cut_by_the_count_of_the_whole_log(store, parallel, monkeypatch):
    simulate(store, JOB, 60, seed=5)
    live = tables(store)
    cut = []
    real = seeding.run_lengths

    def lengths(events_in_scope, processes):
        cut.append(events_in_scope)
        return real(events_in_scope, processes)

    monkeypatch.setattr(seeding, "run_lengths", lengths)
    result = store.rebuild(workers=2, batch_size=40)
    assert parallel == [True]
    assert cut == [_events_of(store, JOB)]  # the table's count is the scope's
    assert result.seeded == _events_of(store, JOB)
    assert tables(store) == live
    assert store.audit(from_snapshots=False).ok


def _runs_folded(monkeypatch, tmp_path) -> tuple[Callable[..., None], Callable[[], list[list[str]]]]:
    """``seeding.bulk_fold`` noting each run it folds (as a file of its own), and what gives the runs noted so far:
    each as [scope id and first stream, id of the process that folded it]."""
    real = seeding.bulk_fold
    folded = tmp_path / "runs"
    folded.mkdir()

    def fold(log, sid, scope, view, batch, advance, streams=(None, None), write_lock=None, rows_per_write=None):
        (folded / f"{sid}-{streams[0]}-{os.getpid()}").touch()
        return real(log, sid, scope, view, batch, advance, streams, write_lock, rows_per_write)

    monkeypatch.setattr(seeding, "bulk_fold", fold)
    return fold, lambda: [path.name.rsplit("-", 1) for path in folded.iterdir()]


def _cuts_noted(monkeypatch) -> list[list[str]]:
    """The cuts of each scope cut for seeding, noted as ``engine_sql.stream_splits`` returns them."""
    cuts: list[list[str]] = []
    real = engine_sql.stream_splits

    def splits(*args):
        cuts.append(real(*args))
        return cuts[-1]

    monkeypatch.setattr(engine_sql, "stream_splits", splits)
    return cuts


def test_each_process_folds_its_first_run_and_every_run_is_folded_once(store, parallel, monkeypatch, tmp_path):
    populate(store)
    cuts = _cuts_noted(monkeypatch)
    _, runs_folded = _runs_folded(monkeypatch, tmp_path)
    heard = []
    result = store.rebuild(workers=3, batch_size=40, progress=lambda n, total: heard.append(n))
    assert parallel == [True, True]
    folded = runs_folded()
    sids = [store.log.scope_id(JOB), store.log.scope_id(SMALL)]
    every = sorted(f"{sid}-{first}" for sid, scope_cuts in zip(sids, cuts, strict=True)
                   for first in [None, *scope_cuts])
    assert sorted(run for run, _pid in folded) == every  # every run of both scopes folded, and none twice
    by_pid: dict[str, list[str]] = {}
    for run, pid in folded:
        by_pid.setdefault(pid, []).append(run)
    assert sorted(run for run in by_pid[str(os.getpid())] if run.endswith("-None")) == [f"{sid}-None" for sid in sids]
    assert len(by_pid) == 5  # this process and two workers per scope, each folding at least one run
    assert sum(heard) == result.events  # every event read, this process's and the workers'


def test_a_slow_worker_leaves_the_runs_it_has_not_claimed_to_this_process(store, parallel, monkeypatch, tmp_path):
    simulate(store, JOB, 120, seed=3)
    live = tables(store)
    parent = os.getpid()
    done_here = multiprocessing.get_context("fork").Event()
    noted, runs_folded = _runs_folded(monkeypatch, tmp_path)
    real_claimed = seeding.fold_claimed

    def fold(*args):
        if os.getpid() != parent:  # the worker stalls in its first run until this process has folded the rest
            assert done_here.wait(30), "this process never finished its runs"
        return noted(*args)

    def claimed(*args):
        out = real_claimed(*args)
        if os.getpid() == parent:
            done_here.set()
        return out

    cuts = _cuts_noted(monkeypatch)
    monkeypatch.setattr(seeding, "bulk_fold", fold)
    monkeypatch.setattr(seeding, "fold_claimed", claimed)
    store.rebuild(workers=2, batch_size=40)
    folded = runs_folded()
    worker = [run for run, pid in folded if pid != str(parent)]
    assert len(worker) == 1 and not worker[0].endswith("-None")  # its own first run only
    assert len(cuts) == 1 and len(cuts[0]) + 1 > 2  # the scope was cut into more runs than processes
    assert len(folded) == len(cuts[0]) + 1  # and this process folded every other run
    assert tables(store) == live


def test_workers_that_have_reported_are_joined_when_the_rebuild_is_done(store, monkeypatch):
    monkeypatch.setattr(seeding, "PARALLEL_MIN_EVENTS", 0)
    populate(store)
    live = tables(store)
    left: list[list] = []  # what each scope's cut left to join, as its fold_in_parallel returned
    real = seeding.fold_in_parallel

    def spy(*args):
        exiting = args[-1]
        out = real(*args)
        left.append(list(exiting))
        return out

    monkeypatch.setattr(seeding, "fold_in_parallel", spy)
    store.rebuild(workers=3)
    assert [len(procs) for procs in left] == [2, 2]  # each scope's two workers, left to exit on their own
    assert left[0][0] not in left[1]  # the first scope's were joined before the second was cut
    assert all(p.exitcode == 0 for procs in left for p in procs)  # all joined, every one ended well
    assert multiprocessing.active_children() == []
    assert tables(store) == live


def test_a_rebuild_that_fails_after_seeding_has_waited_for_every_worker_it_forked(store, monkeypatch):
    monkeypatch.setattr(seeding, "PARALLEL_MIN_EVENTS", 0)
    populate(store)
    live = tables(store)
    forked: list = []
    real = seeding.fold_in_parallel

    def spy(*args):
        out = real(*args)
        forked.extend(args[-1])  # the workers left to exit on their own, to be joined at the end
        return out

    def failing_indexes(conn, indexes):
        raise OSError("index disk on fire")

    monkeypatch.setattr(seeding, "fold_in_parallel", spy)
    monkeypatch.setattr(engine_sql, "create_indexes", failing_indexes)
    with pytest.raises(OSError, match="index disk on fire"):
        store.rebuild(workers=3)
    assert len(forked) == 4  # two workers for each of the two scopes
    for p in forked:
        # Waited for already (not a zombie, nor running): nothing of this process's children is left to wait for.
        with pytest.raises(ChildProcessError):
            os.waitpid(p.pid, os.WNOHANG)
    assert tables(store) == live


@contextlib.contextmanager
def _fold_failing(where: Callable[[bool, tuple], bool], act: Callable[[], None]) -> Iterator[None]:
    """``seeding.bulk_fold`` that first calls ``act()`` (which raises, or ends the process) in the runs that
    ``where(in_this_process, streams)`` picks, and folds as before in the others."""
    parent, real = os.getpid(), seeding.bulk_fold

    def fold(log, sid, scope, view, batch, advance, streams=(None, None), write_lock=None, rows_per_write=None):
        if where(os.getpid() == parent, streams):
            act()
        return real(log, sid, scope, view, batch, advance, streams, write_lock, rows_per_write)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(seeding, "bulk_fold", fold)
        yield


def _the_next_rebuild_succeeds(store, monkeypatch, live, workers: int) -> None:
    monkeypatch.setattr("projections.rebuild._stale", lambda updated_at: True)  # the failed rebuild's lease
    store.rebuild(workers=workers)
    assert tables(store) == live
    assert store.audit(from_snapshots=False).ok


def test_a_failure_of_this_process_s_own_run_stops_the_workers_and_the_next_rebuild_succeeds(store, parallel,
                                                                                            monkeypatch):
    populate(store)
    live = tables(store)

    def fire() -> None:
        raise OSError("parent disk on fire")

    with _fold_failing(lambda in_parent, streams: in_parent, fire), pytest.raises(OSError, match="parent disk on fire"):
        store.rebuild(workers=3)
    assert multiprocessing.active_children() == []  # the workers were stopped and reaped
    assert tables(store) == live
    _the_next_rebuild_succeeds(store, monkeypatch, live, workers=3)


def test_a_worker_ends_on_sigterm_whatever_handler_the_parent_has(store, parallel, monkeypatch):
    populate(store)
    parent = os.getpid()
    real = seeding.bulk_fold
    stopped = []
    real_terminate = multiprocessing.process.BaseProcess.terminate

    def terminate(self):
        stopped.append(self)
        real_terminate(self)

    def fold(log, sid, scope, view, batch, advance, streams=(None, None), write_lock=None, rows_per_write=None):
        if os.getpid() == parent:
            raise OSError("parent disk on fire")
        time.sleep(60)  # a worker still folding when the rebuild fails
        return real(log, sid, scope, view, batch, advance, streams, write_lock, rows_per_write)

    monkeypatch.setattr(seeding, "bulk_fold", fold)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "terminate", terminate)
    monkeypatch.setattr(seeding, "STOP_WAIT", 20.0)
    before = signal.signal(signal.SIGTERM, lambda signum, frame: None)  # a handler that does not exit
    try:
        with pytest.raises(OSError, match="parent disk on fire"):
            store.rebuild(workers=2)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert len(stopped) == 1
    assert stopped[0].exitcode == -signal.SIGTERM  # ended by the signal, not killed after STOP_WAIT
    assert multiprocessing.active_children() == []


def test_sqlite_indexes_are_built_with_a_larger_page_cache_and_the_connection_s_own_given_back(tmp_path,
                                                                                              monkeypatch):
    seen = []
    real = engine_sql.Index.create

    def create(self, conn, **kw):
        seen.append(driver_execute(conn, "PRAGMA cache_size").fetchone()[0])
        return real(self, conn, **kw)

    with open_store(f"sqlite:///{tmp_path / 'cache.db'}") as store:  # the page cache is SQLite's
        populate(store)
        monkeypatch.setattr(engine_sql.Index, "create", create)
        with store.log.writing() as conn:
            default = driver_execute(conn, "PRAGMA cache_size").fetchone()[0]
        store.rebuild(workers=1)
        assert seen == [-engine_sql.INDEX_CACHE_KIB] * 4  # the task view's four indexes
        with store.log.writing() as conn:
            assert driver_execute(conn, "PRAGMA cache_size").fetchone()[0] == default
        assert store.audit(from_snapshots=False).ok


def test_a_failing_worker_fails_the_rebuild_and_the_next_one_succeeds(store, parallel, monkeypatch):
    populate(store)
    live = tables(store)

    def fire() -> None:
        raise OSError("disk on fire")

    def a_worker_of_a_later_run(in_parent: bool, streams: tuple) -> bool:
        return not in_parent and streams[0] is not None

    with _fold_failing(a_worker_of_a_later_run, fire), pytest.raises(seeding.SeedingFailed, match="disk on fire"):
        store.rebuild(workers=2)
    assert tables(store) == live  # the live tables are untouched
    _the_next_rebuild_succeeds(store, monkeypatch, live, workers=2)


def test_a_worker_that_dies_without_a_word_fails_the_rebuild_with_its_exit_code(store, parallel, monkeypatch):
    """A worker killed outright (by the kernel's out-of-memory killer, say) reports nothing: the rebuild does not
    wait for it forever, it fails saying so, the live tables are untouched, and the next rebuild succeeds."""
    populate(store)
    live = tables(store)

    def die() -> None:
        os._exit(9)  # no exception, no report, no cleanup

    with _fold_failing(lambda in_parent, streams: not in_parent, die), pytest.raises(
            seeding.SeedingFailed, match="ended with exit code 9 before it reported"):
        store.rebuild(workers=2)
    assert tables(store) == live
    _the_next_rebuild_succeeds(store, monkeypatch, live, workers=2)


def test_an_in_memory_sqlite_store_folds_in_its_own_process(parallel):
    with open_store("sqlite://") as store:
        populate(store)
        live = tables(store)
        store.rebuild(workers=4)
        assert tables(store) == live
    assert parallel == [False, False]


@contextlib.contextmanager
def _within(seconds: int) -> Iterator[None]:
    """Fail rather than hang: SIGALRM after ``seconds`` raises in this process."""
    def expire(signum, frame):
        raise TimeoutError(f"still waiting after {seconds} s")

    before = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


def test_a_worker_killed_while_it_holds_the_sqlite_write_lock_fails_the_rebuild_rather_than_hang(tmp_path,
                                                                                                  monkeypatch):
    """SQLite's seeding processes take turns under one lock; a worker killed during its turn (the kernel's
    out-of-memory killer, say) leaves the lock held for good. This process, waiting for its next turn, notices the
    worker gone and fails the rebuild, the live tables untouched; the next rebuild succeeds."""
    monkeypatch.setattr(seeding, "PARALLEL_MIN_EVENTS", 0)
    parent = os.getpid()
    died = multiprocessing.get_context("fork").Event()
    real_load, real_fold = engine_sql.load_rows, seeding.bulk_fold

    def load_rows(*args):
        if os.getpid() != parent:
            died.set()
            os._exit(9)  # in the worker's turn, under the write lock
        return real_load(*args)

    def fold(*args):
        if os.getpid() == parent:  # this process writes only once the worker has died in its turn
            assert died.wait(30), "the worker never took its turn"
        return real_fold(*args)

    with open_store(f"sqlite:///{tmp_path / 'held.db'}") as store:
        populate(store)
        live = tables(store)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(engine_sql, "load_rows", load_rows)
            patch.setattr(seeding, "bulk_fold", fold)
            with _within(60), pytest.raises(seeding.SeedingFailed, match="ended with exit code 9 before it reported"):
                store.rebuild(workers=2)
        assert tables(store) == live
        _the_next_rebuild_succeeds(store, monkeypatch, live, workers=2)


def test_a_worker_waiting_for_a_shared_lock_gives_up_once_the_process_it_was_forked_from_is_gone():
    """The worker's check between its waits (``_run`` sets it): its parent is another process once the rebuild's
    process is gone (a killed process holding the lock would leave it held for good)."""
    seeding._parent_alive(os.getppid())  # the parent this process has: nothing to give up
    with pytest.raises(seeding.SeedingFailed, match="is gone"):
        seeding._parent_alive(os.getppid() + 1)


def test_a_worker_stops_at_its_next_claim_or_turn_once_the_process_it_was_forked_from_is_gone(store, parallel,
                                                                                               monkeypatch):
    """Made to happen by the worker's check finding its parent gone from the start: it folds its first run, stops
    at its first turn of the write lock (SQLite) or its first claim (PostgreSQL), and reports why."""
    populate(store)
    live = tables(store)

    def gone(parent: int) -> None:
        raise seeding.SeedingFailed(f"the rebuild's process ({parent}) is gone")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(seeding, "_parent_alive", gone)  # forked workers inherit it; this process never calls it
        with pytest.raises(seeding.SeedingFailed, match=r"seeding worker 1 of scope \d+ failed: .*is gone"):
            store.rebuild(workers=2)
    assert tables(store) == live
    _the_next_rebuild_succeeds(store, monkeypatch, live, workers=2)


def test_a_worker_that_dies_after_this_process_has_folded_its_runs_fails_the_rebuild(store, parallel, monkeypatch):
    """This process, done with its runs and waiting for the workers' reports, notices a worker that ended without
    one and fails the rebuild with its exit code, the live tables untouched."""
    populate(store)
    live = tables(store)
    parent = os.getpid()
    done_here = multiprocessing.get_context("fork").Event()
    real_claimed = seeding.fold_claimed

    def claimed(*args):
        if os.getpid() != parent:
            assert done_here.wait(30), "this process never finished its runs"
            os._exit(9)  # before it claims or folds anything
        out = real_claimed(*args)
        done_here.set()
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(seeding, "fold_claimed", claimed)
        with _within(30), pytest.raises(seeding.SeedingFailed, match="ended with exit code 9 before it reported"):
            store.rebuild(workers=2)
    assert tables(store) == live
    _the_next_rebuild_succeeds(store, monkeypatch, live, workers=2)
