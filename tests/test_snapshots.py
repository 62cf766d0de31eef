"""Snapshots, on both engines: snapshot plus tail equals full replay (hypothesis), the cadence, snapshots of another
code version ignored, count validation above the recount limit from the last verified snapshot (and unvalidated
beyond its budget), "as of" reads (also of a log holding an event shape the database's delta aggregate does not read),
and ``taskstore snapshot``.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from dataclasses import replace

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, text

from eventstore import IllegalTransition, Scope, State, TaskNotFound
from projections import engine_sql
from projections.as_of import counts_as_of, task_as_of
from projections.engine_sql import consistent
from projections.replay import ScopeFold, last_position, scope_events, tally
from projections.snapshots import COUNTS, FULL, StaleProjection
from projections.version import FINGERPRINT, PROJECTION_VERSION, code_fingerprint
from taskstore.simulate import simulate
from tests.conftest import make_database

JOB = Scope("acme", "render")


def test_projection_version_guards_the_projection_code():
    assert code_fingerprint() == FINGERPRINT, (
        "evolve, the row layout or the task view changed: bump projections.version.PROJECTION_VERSION (snapshots "
        "of the old code are then ignored) and record the new FINGERPRINT"
    )


def live_counts(store, scope: Scope) -> tuple[dict, dict]:
    s = store.queries.counts(scope, validate=False)
    return dict(s.states), dict(s.slots)


def full_replay(store, scope: Scope, upto: int | None = None) -> ScopeFold:
    with consistent(store.log) as conn:
        sid = store.log.scope_id(scope, conn)
        return ScopeFold(scope, sid).apply_all(scope_events(store.log, conn, sid, upto=upto))


def from_snapshot(store, scope: Scope, snap) -> ScopeFold:
    with consistent(store.log) as conn:
        sid = store.log.scope_id(scope, conn)
        fold = ScopeFold(scope, sid)
        for key, (task, position) in store.snapshots.task_rows(conn, snap, scope).items():
            fold.tasks[key] = task
            fold.positions[key] = position
        return fold.apply_all(scope_events(store.log, conn, sid, snap.point))


def rows(fold: ScopeFold) -> dict:
    return {k: fold.row(k) for k in fold.tasks}


# -- snapshot plus tail equals full replay -----------------------------------------------------------------------

STEP = st.one_of(
    st.tuples(st.just("add"), st.integers(1, 3), st.integers(1, 4)),  # tasks, required slots
    st.tuples(st.just("move"), st.integers(0, 11), st.sampled_from(list(State))),
    st.tuples(st.just("snap"), st.sampled_from([FULL, COUNTS])),
)
_examples = itertools.count()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, min_size=1, max_size=18))
def test_snapshot_plus_tail_equals_full_replay(store, steps):
    scope = Scope("prop", f"job-{next(_examples)}")  # a fresh scope per example, one store per test
    ids: list[str] = []
    snaps = []
    for step in steps:
        if step[0] == "add":
            _, n, slots = step
            new = [f"t{len(ids) + i}" for i in range(n)]
            store.add_tasks(scope, [{"id": t, "requiredSlots": slots, "maxRetries": 1} for t in new])
            ids += new
        elif step[0] == "move" and ids:
            try:
                store.transition(scope, ids[step[1] % len(ids)], step[2], exit_code=step[1] % 3)
            except IllegalTransition:
                pass
        elif step[0] == "snap":
            snap = store.snapshot(scope, step[1])
            if snap is not None:
                assert snap.verified, snap.detail
                snaps.append(snap)
    if not ids:
        return
    full = full_replay(store, scope)
    assert tally(full.tasks.values()) == tuple(Counter(d) for d in live_counts(store, scope))
    kept = {s.id for s in store.snapshots.list(scope)}  # older ones were pruned
    assert kept and kept <= {s.id for s in snaps} or not snaps
    for snap in (s for s in snaps if s.id in kept):
        if snap.kind == FULL:
            assert rows(from_snapshot(store, scope, snap)) == rows(full)
        # As of the snapshot's position: the fold of the events up to it.
        then = full_replay(store, scope, upto=snap.position)
        as_of = store.queries.counts_as_of(scope, snap.position)
        states, slots = tally(then.tasks.values())
        assert ({s: as_of.states[s] for s in State}, {s: as_of.slots[s] for s in State}) == (
            {s: states[s] for s in State}, {s: slots[s] for s in State})
    # As of every position of the scope's events, from its first event (no snapshot: the aggregate that covers
    # the scope from its start, with the tasks added after the position left out): the fold of the events up to it.
    with consistent(store.log) as conn:
        positions = [e.position for e in scope_events(store.log, conn, store.log.scope_id(scope, conn))]
    for position in positions:
        states, slots = tally(full_replay(store, scope, upto=position).tasks.values())
        as_of = counts_as_of(store.log, None, scope, position)
        assert "first event" in as_of.validation_detail
        assert ({s: as_of.states[s] for s in State}, {s: as_of.slots[s] for s in State}) == (
            {s: states[s] for s in State}, {s: slots[s] for s in State}), position
    end = last_event(store, scope)
    for task in full.tasks.values():
        assert store.queries.task_as_of(scope, task.task_id, end) == task
    store.queries.recount_limit = 0  # validate through the snapshot path
    try:
        summary = store.queries.counts(scope)
        if any(s.verified for s in snaps):
            assert summary.validation_status == "validated", summary.validation_detail
    finally:
        store.queries.recount_limit = 200_000


def last_event(store, scope: Scope) -> int:
    with store.log.reading() as conn:
        return last_position(conn, store.log.scope_id(scope, conn))


# -- cadence -----------------------------------------------------------------------------------------------------


@pytest.fixture
def every10(database):
    s = database.open_store(snapshot_every=10, background_snapshots=False)
    try:
        yield s
    finally:
        s.close()


def test_snapshots_fall_due_every_n_events_of_a_scope(every10):
    store = every10
    other = Scope("acme", "other")
    store.add_tasks(JOB, [{"id": f"t{i}"} for i in range(9)])
    store.add_tasks(other, [{"id": "x"}])
    assert store.snapshots.due() == []
    store.add_tasks(JOB, [{"id": f"t{i}"} for i in range(9, 20)])
    sid = store.log.scope_id(JOB)
    assert store.snapshots.due() == [sid]
    first = store.snapshots.take_due()
    assert [(s.scope_id, s.kind, s.verified, s.tasks) for s in first] == [(sid, FULL, True, 20)]
    assert store.snapshots.due() == []
    # Then counts snapshots, until the events since the last full one reach the scope's size (20 tasks).
    store.transition_many(JOB, [(f"t{i}", "running") for i in range(10)])
    second = store.snapshots.take_due()
    assert [(s.kind, s.verified) for s in second] == [(COUNTS, True)]
    store.transition_many(JOB, [(f"t{i}", "succeeded") for i in range(10)])
    third = store.snapshots.take_due()
    assert [(s.kind, s.verified) for s in third] == [(FULL, True)]
    store.queries.recount_limit = 0
    assert store.queries.counts(JOB).validation_status == "validated"


def test_a_background_thread_takes_due_snapshots(database):
    store = database.open_store(snapshot_every=10)
    try:
        store.add_tasks(JOB, [{"id": f"t{i}"} for i in range(12)])
        store.snapshots.worker.wait(30)
        (snap,) = store.snapshots.list(JOB)
        assert (snap.kind, snap.tasks, snap.verified) == (FULL, 12, True)
        assert not store.snapshots.worker.errors
    finally:
        store.close()


def test_a_failed_background_snapshot_is_recorded_and_the_thread_takes_the_next(database, monkeypatch):
    store = database.open_store(snapshot_every=10)
    try:
        real = store.snapshots.take_claimed
        calls = []

        def first_fails(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("the disk is full")
            return real(*args, **kwargs)

        monkeypatch.setattr(store.snapshots, "take_claimed", first_fails)
        store.add_tasks(JOB, [{"id": f"t{i}"} for i in range(12)])
        store.snapshots.worker.wait(30)
        assert [str(e) for e in store.snapshots.worker.errors] == ["the disk is full"]
        assert store.snapshots.list(JOB) == []
        store.add_tasks(JOB, [{"id": f"u{i}"} for i in range(12)])  # due again: the same thread takes it
        store.snapshots.worker.wait(30)
        (snap,) = store.snapshots.list(JOB)
        assert (snap.kind, snap.tasks, snap.verified) == (FULL, 24, True)
    finally:
        store.close()


def test_a_due_snapshot_of_a_stale_task_view_is_not_taken(every10, caplog):
    store = every10
    store.add_tasks(JOB, [{"id": f"t{i}"} for i in range(12)])
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE projection_checkpoints SET projection_version = 0 WHERE name = 'tasks'"))
    assert store.snapshots.take_due() == []
    assert store.snapshots.list(JOB, all_versions=True) == []
    assert "run `taskstore rebuild` before taking snapshots" in caplog.text


def test_a_chunked_snapshot_cancelled_half_way_leaves_nothing(tmp_path):
    """SQLite only: PostgreSQL copies a snapshot in one transaction, and has no half-made one to cancel."""
    store = next(make_database("sqlite", tmp_path)).open_store(background_snapshots=False)
    try:
        store.snapshots.chunk = 4  # 15 tasks are copied 4 rows per write transaction
        simulate(store, JOB, 15, seed=5)
        looks = []

        def after_two_chunks() -> bool:
            looks.append(1)
            return len(looks) >= 2

        assert store.snapshots.take(JOB, FULL, cancelled=after_two_chunks) is None
        assert len(looks) == 2
        assert store.snapshots.list(JOB, all_versions=True) == []
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM snapshot_tasks")).scalar_one() == 0
            assert conn.execute(text("SELECT count(*) FROM scope_snapshots")).scalar_one() == 0
        snap = store.snapshots.take(JOB, FULL, cancelled=lambda: False)
        assert snap.verified and snap.tasks == 15
    finally:
        store.close()


def test_a_large_scope_is_copied_in_chunks_and_old_snapshots_are_pruned(store):
    store.snapshots.chunk = 7  # SQLite: 30 tasks are copied 7 rows per write transaction
    simulate(store, JOB, 30, seed=3)
    taken = [store.snapshot(JOB) for _ in range(3)]
    assert all(s.verified and s.tasks == 30 for s in taken)
    with consistent(store.log) as conn:
        assert len(store.snapshots.task_rows(conn, taken[-1], JOB)) == 30
        n = conn.execute(text("SELECT count(*) FROM snapshot_tasks")).scalar_one()
    assert [s.id for s in store.snapshots.list(JOB)] == [s.id for s in taken[1:]]  # keep_full = 2
    assert n == 60
    # A snapshot whose taker died half-way is pruned once it is old enough.
    with store.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO scope_snapshots (scope_id, projection_version, kind, position, tasks, counts, verified, "
            "detail, complete, created_at) SELECT scope_id, projection_version, kind, position, tasks, counts, "
            "false, '', false, '2000-01-01T00:00:00.000000Z' FROM scope_snapshots WHERE id = :id"), {"id": taken[-1].id})
    store.snapshot(JOB, COUNTS)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM scope_snapshots WHERE NOT complete")).scalar_one() == 0
    assert rows(from_snapshot(store, JOB, taken[-1])) == rows(full_replay(store, JOB))


def test_a_large_scope_copied_while_appends_go_on_is_the_scope_at_the_snapshots_position(store):
    """On SQLite a large scope is copied chunk by chunk, and appends go on between the chunks: tasks added before
    and after the copied keys, tasks moved in chunks already copied and in chunks still to come. The snapshot is
    still exactly the scope at its position (on PostgreSQL it is one statement, and nothing runs in between)."""
    store.snapshots.chunk = 7
    simulate(store, JOB, 30, seed=4)
    start = full_replay(store, JOB)
    unfinished = sorted(t.task_id for t in start.tasks.values() if t.state not in (State.SUCCEEDED, State.FAILED,
                                                                                    State.CANCELLED))
    assert len(unfinished) >= 2  # one in the first chunk, one in a later one
    calls = itertools.count()

    def meanwhile() -> bool:
        i = next(calls)
        store.add_tasks(JOB, [{"id": f"a-{i}"}, {"id": f"z-{i}"}])  # keys before and after every task's
        if i:
            store.transition_many(JOB, [(f"a-{i - 1}", "running"), (f"z-{i - 1}", "running")])
        if unfinished:
            store.terminate(JOB, unfinished.pop(0 if i % 2 else -1))
        return False

    snap = store.snapshots.take(JOB, FULL, cancelled=meanwhile)
    copied_between = next(calls)
    if store.engine.dialect.name == "sqlite":
        assert copied_between >= 4  # 30 tasks and more, 7 per chunk
    with consistent(store.log) as conn:
        sid = store.log.scope_id(JOB, conn)
        assert snap.position == last_position(conn, sid)
        at_snapshot = ScopeFold(JOB, sid)
        for key, (task, position) in store.snapshots.task_rows(conn, snap, JOB).items():
            at_snapshot.tasks[key] = task
            at_snapshot.positions[key] = position
    replayed = full_replay(store, JOB, upto=snap.position)
    assert rows(at_snapshot) == rows(replayed)
    assert snap.verified and snap.tasks == len(replayed.tasks) == 30 + 2 * copied_between
    assert {s: n for s, n in snap.states.items() if n} == dict(+tally(replayed.tasks.values())[0])


# -- versions ----------------------------------------------------------------------------------------------------


def test_a_snapshot_of_an_older_code_version_is_ignored_and_replaced(store):
    store.queries.recount_limit = 3
    simulate(store, JOB, 20, seed=5)
    old = store.snapshot(JOB)
    # Made by an older version of the code: its rows and counts mean something else now.
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE scope_snapshots SET projection_version = :v WHERE id = :id"),
                     {"v": PROJECTION_VERSION - 1, "id": old.id})
        conn.execute(text("UPDATE snapshot_tasks SET state = 'cancelled', version = 99 WHERE snapshot_id = :id"),
                     {"id": old.id})
    store.queries.validator.forget()
    assert store.snapshots.list(JOB) == []
    summary = store.queries.counts(JOB)
    assert summary.validation_status == "unvalidated" and "no verified snapshot" in summary.validation_detail
    fold = full_replay(store, JOB)
    some = next(iter(fold.tasks.values()))
    assert store.queries.task_as_of(JOB, some.task_id, 10**9) == some
    states, _ = tally(fold.tasks.values())
    assert dict(store.queries.counts_as_of(JOB, 10**9).states) == {s: states[s] for s in State}
    result = store.rebuild(from_snapshots=True)
    assert (result.scopes_from_snapshots, result.scopes_from_log) == (0, 1)
    assert store.audit().ok
    # The next snapshot replaces it.
    new = store.snapshot(JOB)
    assert new.projection_version == PROJECTION_VERSION
    assert [s.id for s in store.snapshots.list(JOB, all_versions=True)] == [new.id]
    assert store.queries.counts(JOB).validation_status == "validated"


def test_a_task_view_built_by_other_code_is_not_snapshotted_until_rebuilt(store, taskstore_cli):
    store.queries.recount_limit = 3
    simulate(store, JOB, 10, seed=1)
    store.snapshot(JOB)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE projection_checkpoints SET projection_version = 0 WHERE name = 'tasks'"))
    with pytest.raises(StaleProjection):
        store.snapshot(JOB)
    code, out, err = taskstore_cli("snapshot", "--workspace", JOB.workspace, "--job", JOB.job)
    assert code == 2 and out == "" and "run `taskstore rebuild` before taking snapshots" in " ".join(err.split())
    summary = store.queries.counts(JOB)
    assert summary.validation_status == "unvalidated" and "projection version 0" in summary.validation_detail
    assert "projection version 0" in store.audit().notes[0]
    store.rebuild()
    assert store.snapshot(JOB).verified
    assert store.queries.counts(JOB).validation_status == "validated"


# -- validation above the recount limit --------------------------------------------------------------------------


def test_counts_are_validated_from_the_last_verified_snapshot_above_the_recount_limit(store):
    store.queries.recount_limit = 5
    simulate(store, JOB, 30, seed=2)
    summary = store.queries.counts(JOB)
    assert summary.total == 30 and summary.validation_status == "unvalidated"
    snap = store.snapshot(JOB)
    summary = store.queries.counts(JOB)
    assert summary.validation_status == "validated"
    assert f"snapshot #{snap.id}" in summary.validation_detail
    # Events after the snapshot: checked by their from/to deltas.
    store.add_tasks(JOB, [{"id": "late-1", "requiredSlots": 4}, {"id": "late-2"}])
    store.transition(JOB, "late-1", "running")
    store.terminate(JOB, "late-2")
    summary = store.queries.counts(JOB)
    assert summary.validation_status == "validated" and summary.total == 32
    # A count summary that disagrees with the log is caught.
    sid = store.log.scope_id(JOB)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE scope_counts SET slots_running = slots_running + 1 WHERE scope_id = :s"), {"s": sid})
    summary = store.queries.counts(JOB)
    assert summary.validation_status == "unvalidated" and "disagrees" in summary.validation_detail
    store.queries.validator.forget()
    assert store.queries.counts(JOB).validation_status == "unvalidated"


def test_counts_are_unvalidated_when_the_check_exceeds_its_budget(store):
    store.queries.recount_limit = 5
    store.queries.validator.budget = 10
    simulate(store, JOB, 12, seed=4)
    store.snapshot(JOB)
    store.add_tasks(JOB, [{"id": f"more-{i}"} for i in range(11)])
    store.terminate(JOB, "more-0")
    summary = store.queries.counts(JOB)
    assert summary.validation_status == "unvalidated"
    assert "more than the budget of 10" in summary.validation_detail
    store.snapshot(JOB, COUNTS)  # a counts snapshot, chained from the full one, brings it back within budget
    assert store.queries.counts(JOB).validation_status == "validated"


def test_a_verified_point_too_far_behind_gives_way_to_a_newer_snapshot(store):
    store.queries.recount_limit = 5
    store.queries.validator.budget = 10
    simulate(store, JOB, 12, seed=5)
    store.snapshot(JOB)
    first = store.queries.counts(JOB)
    assert first.validation_status == "validated"
    again = store.queries.counts(JOB)  # nothing happened since: the point this process verified answers
    assert again.validation_status == "validated" and again.validation_detail.startswith("a check at position")
    assert again.validation_detail.endswith("plus the 0 events after it agree")
    store.add_tasks(JOB, [{"id": f"more-{i}"} for i in range(11)])
    behind = store.queries.counts(JOB)
    assert behind.validation_status == "unvalidated"
    assert "more than the budget of 10" in behind.validation_detail and "a check at position" in behind.validation_detail
    snap = store.snapshot(JOB)
    after = store.queries.counts(JOB)
    assert after.validation_status == "validated" and f"snapshot #{snap.id}" in after.validation_detail
    assert after.total == 23


def test_validated_counts_of_an_unchanged_scope_are_one_statement(store, monkeypatch):
    simulate(store, JOB, 12, seed=6)
    first = store.queries.counts(JOB)  # the whole check: it becomes the verified point
    assert first.validation_status == "validated"
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement)

    def driver(conn, sql, params=(), _real=engine_sql.driver_execute):  # reads sent to the driver directly
        statements.append(sql)
        return _real(conn, sql, params)

    event.listen(store.engine, "before_cursor_execute", seen)
    monkeypatch.setattr(engine_sql, "driver_execute", driver)
    try:
        again = store.queries.counts(JOB)
    finally:
        monkeypatch.undo()
        event.remove(store.engine, "before_cursor_execute", seen)
    assert again == replace(first, validation_detail=again.validation_detail)
    assert again.validation_detail.endswith("plus the 0 events after it agree")
    assert len(statements) == 1, statements
    # After an event, the whole check runs again (and finds the new task).
    store.add_tasks(JOB, [{"id": "one-more", "requiredSlots": 3}])
    later = store.queries.counts(JOB)
    assert later.validation_status == "validated" and later.total == 13
    assert later.validation_detail.endswith("plus the 1 events after it agree")


def test_a_late_commit_below_a_snapshots_position_is_in_its_tail(postgresql_database):
    """PostgreSQL: an append that commits after a snapshot, with a position below it, is not lost."""
    store = postgresql_database.open_store(background_snapshots=False)
    try:
        store.queries.recount_limit = 0
        store.add_tasks(JOB, [{"id": "first"}])
        gate = _Gate()
        store.log.projections.insert(0, gate)
        gate.armed = True
        slow = threading.Thread(target=lambda: store.add_tasks(JOB, [{"id": "slow", "requiredSlots": 2}]))
        slow.start()
        assert gate.entered.wait(10)  # "slow" has its position and has not committed
        store.add_tasks(JOB, [{"id": "fast"}])
        snap = store.snapshot(JOB)
        assert snap.tasks == 2
        gate.release.set()
        slow.join(10)
        slow_task = store.queries.get_task(JOB, "slow")
        assert slow_task.number < snap.position  # committed later, below the snapshot's position
        assert rows(from_snapshot(store, JOB, snap)) == rows(full_replay(store, JOB))
        summary = store.queries.counts(JOB)
        assert summary.validation_status == "validated" and summary.total == 3
        assert store.queries.counts_as_of(JOB, snap.position).total == 3
        assert store.audit().ok
    finally:
        store.close()


def test_a_rebuild_swaps_under_an_append_in_flight(postgresql_database):
    """PostgreSQL: an append that has its events but not yet its projection when the swap happens writes to the
    rebuilt tables."""
    store = postgresql_database.open_store(background_snapshots=False)
    try:
        simulate(store, JOB, 10, seed=1)
        gate = _Gate()
        store.log.projections.insert(0, gate)
        gate.armed = True
        slow = threading.Thread(target=lambda: store.add_tasks(JOB, [{"id": "in-flight"}]))
        slow.start()
        assert gate.entered.wait(10)
        store.rebuild()
        gate.release.set()
        slow.join(10)
        assert store.queries.get_task(JOB, "in-flight").state is State.PENDING
        assert store.audit().ok
    finally:
        store.close()


class _Gate:
    """An inline projection that holds one append's transaction open until released."""

    name = "gate"

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def apply(self, conn, events) -> None:
        if self.armed:
            self.armed = False
            self.entered.set()
            self.release.wait(10)


# -- as of -------------------------------------------------------------------------------------------------------


def test_as_of_reads(store):
    history = []  # (position, counts, tasks) after each step

    def record():
        end = last_event(store, JOB)
        tasks = {t.task_id: t for t in store.queries.list_tasks(JOB, limit=200).items}
        history.append((end, live_counts(store, JOB), tasks))

    store.add_tasks(JOB, [{"id": "a", "requiredSlots": 2}, {"id": "b"}])
    record()
    store.transition(JOB, "a", "running")
    record()
    snap = store.snapshot(JOB)
    store.transition(JOB, "a", "succeeded", exit_code=0)
    store.add_tasks(JOB, [{"id": "c"}])
    record()
    store.terminate(JOB, "b")
    record()
    for position, (states, slots), tasks in history:
        as_of = store.queries.counts_as_of(JOB, position)
        assert (dict(as_of.states), dict(as_of.slots)) == (states, slots)
        assert as_of.position == position
        for task_id, task in tasks.items():
            assert store.queries.task_as_of(JOB, task_id, position) == task
    assert "snapshot" in store.queries.counts_as_of(JOB, history[-1][0]).validation_detail
    assert "first event" in store.queries.counts_as_of(JOB, history[0][0]).validation_detail
    with pytest.raises(TaskNotFound):
        store.queries.task_as_of(JOB, "c", history[1][0])
    assert store.queries.counts_as_of(JOB, 0).total == 0
    assert snap.position == history[1][0]


def test_a_task_as_of_a_stream_that_became_a_task_later_is_its_fold_from_its_task_added(store):
    """A stream whose first events are not a task's may become one with a later TaskAdded (the view folds it from
    there, ``tests/test_projection_streams.py``): the task as of a position skips the events before it, with or
    without a snapshot, and a stream that is not (yet) a task is not found, never a ValueError of ``evolve``."""
    from eventstore import Expect, NewEvent, StreamAppend, fold

    store.add_task(JOB, {"id": "a"})
    store.log.append([StreamAppend(JOB, "late", [NewEvent("Note", {"text": "first"})], Expect.NO_STREAM)])
    noted = last_event(store, JOB)
    with pytest.raises(TaskNotFound):
        store.queries.task_as_of(JOB, "late", noted)
    store.log.append([StreamAppend(JOB, "late", [NewEvent("TaskAdded", {
        "taskId": "late", "at": "2026-01-01T00:00:00.000000Z", "spec": {"id": "late", "requiredSlots": 3}})], 1)])
    store.transition(JOB, "late", "running")
    end = last_event(store, JOB)
    want = fold(store.log.read_stream(JOB, "late")[1:])
    assert store.queries.task_as_of(JOB, "late", end) == want == store.queries.get_task(JOB, "late")
    store.snapshot(JOB)  # the task in the snapshot's rows, and the stream's Note before it in no tail
    store.transition(JOB, "late", "succeeded", exit_code=0)
    assert store.queries.task_as_of(JOB, "late", last_event(store, JOB)) == store.queries.get_task(JOB, "late")
    assert store.queries.task_as_of(JOB, "late", end) == want
    with pytest.raises(TaskNotFound):
        store.queries.task_as_of(JOB, "late", noted)


def test_counts_as_of_and_their_validation_fold_events_of_a_shape_the_aggregate_does_not_read(store, monkeypatch):
    """The count changes after a snapshot (or from a scope's first event) are summed in the database for the event
    shapes it knows (``engine_sql.SQL_SHAPES``: version 1 of TaskAdded and TaskTransitioned); a log that also holds
    another version (here TaskTransitioned at version 2, as after an upgrade of its shape with an upcaster from 1)
    is folded in Python instead (``replay._python_deltas``). Counts as of every position, from the first event and
    from a snapshot, and the count validation through the snapshot, still equal the fold of the log."""
    import eventstore.tasks as tasks_module
    import projections.replay as replay_module
    from eventstore import NewEvent
    from eventstore.task import TASK_TRANSITIONED

    folded_in_python = []
    python_deltas = replay_module._python_deltas
    monkeypatch.setattr(replay_module, "_python_deltas",
                        lambda *a, **kw: folded_in_python.append(1) or python_deltas(*a, **kw))
    simulate(store, JOB, 12, seed=3)
    snap = store.snapshot(JOB)
    assert snap is not None and snap.verified
    # The upgrade: TaskTransitioned is now at version 2 (the same keys), older events are lifted on reading, and the
    # commands write version 2.
    store.log.upcasters.register(TASK_TRANSITIONED, 1)(dict)
    monkeypatch.setattr(tasks_module, "NewEvent", lambda type_, data, schema_version=1: NewEvent(
        type_, data, store.log.upcasters.current_version(type_)))
    store.add_tasks(JOB, [{"id": "late-1", "requiredSlots": 3}, {"id": "late-2"}])
    pending = [t.task_id for t in store.queries.list_tasks(JOB, limit=200).items if t.state is State.PENDING]
    for task_id in pending[:3]:
        store.transition(JOB, task_id, "running")
    store.transition(JOB, "late-1", "failed", exit_code=2)
    with consistent(store.log) as conn:
        evs = list(scope_events(store.log, conn, store.log.scope_id(JOB, conn)))
    assert {e.schema_version for e in evs if e.type == TASK_TRANSITIONED} == {2}  # lifted on reading, or written so
    with store.engine.connect() as conn:
        written = {v for (v,) in conn.execute(text("SELECT DISTINCT schema_version FROM events WHERE type = :t"),
                                              {"t": TASK_TRANSITIONED})}
    assert written == {1, 2}
    for e in evs:
        states, slots = tally(full_replay(store, JOB, upto=e.position).tasks.values())
        want = ({s: states[s] for s in State}, {s: slots[s] for s in State})
        for base in (None, store.snapshots) if e.position >= snap.position else (None,):
            as_of = counts_as_of(store.log, base, JOB, e.position)
            assert ({s: as_of.states[s] for s in State}, {s: as_of.slots[s] for s in State}) == want, e.position
    assert folded_in_python
    store.queries.recount_limit = 0  # validate through the snapshot and the events after it
    try:
        summary = store.queries.counts(JOB)
    finally:
        store.queries.recount_limit = 200_000
    assert summary.validation_status == "validated", summary.validation_detail
    assert (summary.total, summary.states[State.FAILED]) == (14, live_counts(store, JOB)[0][State.FAILED])


def test_a_scope_s_events_read_a_page_at_a_time_are_the_same_whatever_the_page(store):
    """``replay.scope_events`` (audits, as-of reads, the Python deltas) reads a page of ``batch`` events at a time:
    from the first event, after a snapshot, up to a position and of one stream, pages of 1, 2, 7 and 5,000 events
    give the same events in the same order, whether a page ends on the last event or not."""
    simulate(store, JOB, 9, seed=4)
    snap = store.snapshot(JOB)
    store.add_tasks(JOB, [{"id": "after-1"}, {"id": "after-2"}])
    store.transition_many(JOB, [("after-1", "running"), ("after-2", "cancelled")])
    with consistent(store.log) as conn:
        sid = store.log.scope_id(JOB, conn)
        every = list(scope_events(store.log, conn, sid, batch=5000))
        stream = every[0].stream
        middle = every[len(every) // 2].position
        reads = {
            "all": lambda b: scope_events(store.log, conn, sid, batch=b),
            "after the snapshot": lambda b: scope_events(store.log, conn, sid, snap.point, batch=b),
            "up to the middle": lambda b: scope_events(store.log, conn, sid, upto=middle, batch=b),
            "one stream": lambda b: scope_events(store.log, conn, sid, stream=stream, batch=b),
        }
        for name, read in reads.items():
            whole = [(e.position, e.stream, e.version) for e in read(5000)]
            assert whole, name
            for batch in (1, 2, 7, len(whole)):
                assert [(e.position, e.stream, e.version) for e in read(batch)] == whole, (name, batch)
        after = [e.position for e in reads["after the snapshot"](3)]
        one = [(e.position, e.version) for e in reads["one stream"](1)]
    positions = [e.position for e in every]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert after == [p for p in positions if p > snap.position] and after
    assert one == [(e.position, e.version) for e in every if e.stream == stream]
    assert [v for _, v in one] == list(range(1, len(one) + 1))


# -- the command -------------------------------------------------------------------------------------------------


def _sqlite_steps(store, read) -> int:
    """SQLite virtual-machine instructions (in tens) that ``read()`` runs through the store's connections: the work
    its statements do, whatever they return, and whatever else the machine is doing."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    def watch(conn, *_args) -> None:
        conn.connection.driver_connection.set_progress_handler(count, 10)

    event.listen(store.engine, "before_cursor_execute", watch)
    try:
        read()
    finally:
        event.remove(store.engine, "before_cursor_execute", watch)
        with store.engine.connect() as conn:  # the pooled connection the read used: no handler left behind
            conn.connection.driver_connection.set_progress_handler(None, 10)
    return steps


def test_reads_after_a_snapshot_and_of_one_task_cost_what_they_read_not_the_scope(tmp_path):
    """SQLite: a task as of a position reads that task's events (through the (scope, stream, version) index), and the
    events after a snapshot are read from the snapshot on (``lacks_after``), whatever the scope held before it: the
    work grows with what they read, not with the scope. (Before, each walked the scope's every event before the
    snapshot: 100 ms at 200,000 tasks for a task as of the head.)"""
    store = next(make_database("sqlite", tmp_path)).open_store(background_snapshots=False)
    try:
        store.add_tasks(JOB, [{"id": "t0"}, {"id": "t1"}])
        store.transition(JOB, "t0", "running")

        def task_read() -> int:
            head = last_event(store, JOB)
            return _sqlite_steps(store, lambda: (store.queries.task_as_of(JOB, "t0", head),
                                                 task_as_of(store.log, None, JOB, "t0", head)))

        def tail_read() -> int:
            snap = store.snapshot(JOB, FULL)
            store.add_tasks(JOB, [{"id": f"tail-{snap.position}-{i}"} for i in range(5)])  # the same tail each time

            def read() -> None:
                with consistent(store.log) as conn:
                    assert len(list(scope_events(store.log, conn, store.log.scope_id(JOB, conn), snap.point))) == 5

            return _sqlite_steps(store, read)

        small_task, small_tail = task_read(), tail_read()
        for n in range(3):  # 3,000 more tasks
            store.add_tasks(JOB, [{"id": f"more-{n}-{i}"} for i in range(1000)])
        large_task, large_tail = task_read(), tail_read()
        assert large_task < small_task * 1.5 + 10, (small_task, large_task)
        assert large_tail < small_tail * 1.5 + 10, (small_tail, large_tail)
    finally:
        store.close()


def test_snapshot_command(store, taskstore_cli):
    simulate(store, JOB, 15, seed=9)
    code, out, err = taskstore_cli("snapshot", "--workspace", JOB.workspace, "--job", JOB.job, "--json")
    assert code == 0, err
    (doc,) = orjson.loads(out)
    assert doc["kind"] == FULL and doc["tasks"] == 15 and doc["verified"]
    code, out, _ = taskstore_cli("snapshot", "--workspace", JOB.workspace, "--job", JOB.job, "--kind", "counts")
    assert code == 0
    assert "(counts)" in out and "verified" in out and "NOT verified" not in out
    code, out, _ = taskstore_cli("snapshot", "--due")
    assert code == 0 and "no snapshot taken" in out


@pytest.mark.parametrize("args", [[], ["--workspace", JOB.workspace], ["--job", JOB.job]])
def test_snapshot_command_without_a_scope_or_due_exits_2_with_the_reason_and_takes_nothing(store, taskstore_cli, args):
    simulate(store, JOB, 5, seed=9)
    before = store.snapshots.list(JOB, all_versions=True)
    code, out, err = taskstore_cli("snapshot", *args)
    assert code == 2 and out == ""
    assert "give --workspace and --job, or --due" in " ".join(err.split())
    assert store.snapshots.list(JOB, all_versions=True) == before
