"""Rebuilds and audits, on both engines.

- A rebuild (from the log's start, or from snapshots plus the events after them) yields exactly the tables the
  inline projection keeps, also when appends go on during it, and the inline projection keeps working on the
  swapped tables afterwards. An interrupted rebuild resumes from its stored checkpoint.
- The audit agrees with a clean store (exit 0) and names the scope, task, field, live and folded values of any
  difference made with raw SQL in the task view, the count summaries or a snapshot (exit 1).
"""

from __future__ import annotations

import itertools
import threading

import orjson
import pytest
from sqlalchemy import inspect, text

import projections.rebuild as rebuild_module
from eventstore import NewEvent, Scope, State, StreamAppend
from projections.rebuild import RebuildInProgress
from taskstore.simulate import simulate

JOB = Scope("acme", "nightly")
OTHER = Scope("acme", "weekly", "run-2")


def tables(store) -> tuple[list[dict], list[dict]]:
    """Every row of the live task view and count summaries, in key order."""
    with store.engine.connect() as conn:
        view = [dict(r) for r in conn.execute(text("SELECT * FROM task_view ORDER BY scope_id, key")).mappings()]
        counts = [dict(r) for r in conn.execute(text("SELECT * FROM scope_counts ORDER BY scope_id")).mappings()]
    for row in view:  # JSON columns come back as text on SQLite and as objects on PostgreSQL
        for name in ("spec", "failure_info", "node_info", "conditions"):
            if isinstance(row[name], str):
                row[name] = orjson.loads(row[name])
    return view, counts


def populate(store) -> None:
    simulate(store, JOB, 60, seed=7)
    simulate(store, OTHER, 25, seed=8)


# -- rebuild -----------------------------------------------------------------------------------------------------


def test_rebuild_equals_the_live_projection_and_the_inline_projection_goes_on(store):
    populate(store)
    live = tables(store)
    result = store.rebuild(batch_size=100)
    assert tables(store) == live
    assert result.events >= sum(len(store.history(s, t.task_id)) for s in (JOB, OTHER)
                                for t in store.queries.list_tasks(s, limit=200).items)
    assert result.scopes_from_log == 2 and result.skipped == 0
    # The inline projection writes to the swapped tables.
    store.add_tasks(JOB, [{"id": "after-rebuild", "requiredSlots": 3}])
    store.transition(JOB, "after-rebuild", "running")
    assert store.queries.get_task(JOB, "after-rebuild").state is State.RUNNING
    assert store.queries.counts(JOB).validation_status == "validated"
    # And again. On SQLite, where indexes cannot be renamed, the rebuilt tables keep their index names and the next
    # rebuild fills the other generation of fresh tables; on PostgreSQL the swap renames them to the live names.
    live = tables(store)
    second = store.rebuild()
    assert tables(store) == live
    indexes = {ix["name"] for ix in inspect(store.engine).get_indexes("task_view")}
    if store.engine.dialect.name == "sqlite":
        assert second.tables != result.tables
        assert all(name.startswith(f"ix_{second.tables[0]}_") for name in indexes)
    else:
        assert indexes == {"ix_task_view_created", "ix_task_view_state_created", "ix_task_view_number",
                           "ix_task_view_state_number"}
    assert set(inspect(store.engine).get_table_names()) >= {"task_view", "scope_counts"}
    assert not {"task_view_a", "task_view_b", "task_view_retired"} & set(inspect(store.engine).get_table_names())
    assert store.audit().ok
    # A third fills the first generation again (on SQLite), through the same table objects: they are made once per
    # process, so that their statements are compiled once.
    from projections.tables import rebuild_tables

    live = tables(store)
    third = store.rebuild()
    assert tables(store) == live and store.audit().ok
    if store.engine.dialect.name == "sqlite":
        assert third.tables == result.tables
    assert rebuild_tables(*third.tables) is rebuild_tables(*result.tables)


def test_rebuild_from_snapshots_reads_only_what_they_lack(store):
    populate(store)
    snap = store.snapshot(JOB)
    assert snap is not None and snap.verified
    store.add_tasks(JOB, [{"id": f"late-{i}"} for i in range(5)])
    store.transition_many(JOB, [(f"late-{i}", "running") for i in range(3)])
    live = tables(store)
    result = store.rebuild(from_snapshots=True)
    assert tables(store) == live
    assert (result.scopes_from_snapshots, result.scopes_from_log) == (1, 1)
    other_events = sum(len(store.history(OTHER, t.task_id)) for t in store.queries.list_tasks(OTHER, limit=200).items)
    assert result.seeded == other_events + 8  # the other scope from its first event, this one's 8 events since
    assert store.audit().ok


def test_appends_during_a_rebuild_are_in_the_swapped_tables(store):
    populate(store)
    tick = itertools.count()

    def progress(n: int, total: int | None) -> None:  # between the rebuild's transactions: append more
        i = next(tick)
        store.add_tasks(JOB, [{"id": f"during-{i}", "requiredSlots": 1 + i % 3}])
        if i:
            store.transition(JOB, f"during-{i - 1}", "running")

    store.rebuild(batch_size=40, progress=progress)
    n = next(tick)
    assert n > 3
    assert store.queries.get_task(JOB, f"during-{n - 2}").state is State.RUNNING
    report = store.audit()
    assert report.ok, report.differences[:5]
    live = tables(store)
    store.rebuild()
    assert tables(store) == live


def test_a_writer_thread_goes_on_through_a_rebuild(store):
    populate(store)
    stop = threading.Event()
    errors: list[BaseException] = []
    written = []

    def writer() -> None:
        try:
            for i in itertools.count():
                if stop.is_set() and i > 5:
                    return
                store.add_tasks(OTHER, [{"id": f"w-{i}"}])
                written.append(i)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    try:
        store.rebuild(batch_size=50)
    finally:
        stop.set()
        t.join(30)
    assert not errors
    assert written
    assert store.queries.counts(OTHER).total == 25 + len(written)
    assert store.audit().ok


def test_a_long_transaction_elsewhere_does_not_make_a_rebuild_read_the_log_twice(postgresql_database):
    """PostgreSQL: the log's head stops below the commit horizon, which a transaction open anywhere in the database
    holds back. A rebuild then starts its catch-up below every event; it still reads each event once (the seeding
    read all that were visible when it began), and ends with the live tables."""
    from sqlalchemy import create_engine

    from tests.conftest import PG_URL

    other = create_engine(PG_URL)
    with other.connect() as long_tx, postgresql_database.open_store() as store:
        long_tx.execute(text("SELECT pg_current_xact_id()"))  # a transaction id, held until the end of the test
        populate(store)
        assert store.log.head().position == 0  # every event is above the horizon
        live = tables(store)
        with store.log.reading() as conn:
            logged = conn.execute(text("SELECT count(*) FROM events")).scalar_one()
        for workers in (1, 2):
            result = store.rebuild(workers=workers)
            assert (result.events, result.seeded) == (logged, logged)
            assert tables(store) == live
        store.add_tasks(JOB, [{"id": "after-the-rebuild"}])  # appends still reach the swapped tables
        assert store.queries.get_task(JOB, "after-the-rebuild") is not None
        long_tx.rollback()
    other.dispose()


def test_an_interrupted_rebuild_resumes_from_its_checkpoint(store, monkeypatch):
    populate(store)
    live = tables(store)

    def crash(*args, **kwargs):
        raise RuntimeError("the process died before the swap")

    monkeypatch.setattr(rebuild_module, "_swap", crash)
    with pytest.raises(RuntimeError, match="the process died before the swap"):
        store.rebuild(batch_size=50)
    monkeypatch.undo()
    assert tables(store) == live  # nothing swapped
    with pytest.raises(RebuildInProgress):
        store.rebuild()  # its lease has not run out
    store.add_tasks(JOB, [{"id": "while-down"}])
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE projection_checkpoints SET updated_at = '2000-01-01T00:00:00.000000Z' "
                          "WHERE name = 'tasks:rebuild'"))
    result = store.rebuild()
    assert result.resumed and result.scopes_from_log == 0  # no scope folded again
    if store.engine.dialect.name == "sqlite":
        # Only what came after its checkpoint. (On PostgreSQL the checkpoint is held below the commit horizon,
        # which other sessions' open transactions may hold back: it may read more, and skip it by version.)
        assert result.events < 50
    assert store.queries.get_task(JOB, "while-down").state is State.PENDING
    assert store.audit().ok


def test_rebuild_command_prints_a_summary(store, taskstore_cli):
    populate(store)
    live = tables(store)
    ran = taskstore_cli("rebuild", "--json")
    assert ran.code == 0, ran.err
    doc = orjson.loads(ran.out)
    assert doc["events"] > 85 and doc["scopesFromLog"] == 2
    assert tables(store) == live
    ran = taskstore_cli("rebuild", "--from-snapshots")
    assert ran.code == 0 and "rebuilt the task view" in ran.out


def test_rebuild_command_refuses_while_another_rebuild_holds_its_lease(store, taskstore_cli, monkeypatch, capsys):
    populate(store)
    live = tables(store)

    def crash(*args, **kwargs):
        raise RuntimeError("the process died before the swap")

    with monkeypatch.context() as patch:
        patch.setattr(rebuild_module, "_swap", crash)
        with pytest.raises(RuntimeError, match="the process died before the swap"):
            store.rebuild()
    code, out, err = taskstore_cli("rebuild")
    assert code == 2 and out == ""
    assert "another rebuild is catching-up" in " ".join(err.split())
    assert tables(store) == live
    with pytest.raises(SystemExit) as info:  # argparse's refusal: usage and the reason on stderr
        taskstore_cli("rebuild", "--workers", "0")
    assert info.value.code == 2 and "must be 1 or more, not 0" in capsys.readouterr().err
    for bad in ("0", "-5"):  # was an IndexError (0) after taking the rebuild's lease, refusing rebuilds for 5 minutes
        with pytest.raises(SystemExit) as info:
            taskstore_cli("rebuild", "--batch-size", bad)
        assert info.value.code == 2 and f"must be 1 or more, not {bad}" in capsys.readouterr().err


# -- audit -------------------------------------------------------------------------------------------------------


def test_audit_of_a_clean_store_exits_0(store, taskstore_cli):
    populate(store)
    store.snapshot(JOB)
    pending = [t.task_id for t in store.queries.list_tasks(JOB, limit=200).items if t.state is State.PENDING]
    store.transition_many(JOB, [(task_id, "cancelled") for task_id in pending[:2]])
    report = store.audit()
    assert report.ok and report.scopes == 2 and report.tasks == 85 and report.snapshots >= 1
    ran = taskstore_cli("audit")
    assert ran.code == 0 and "agree with the log" in ran.out
    assert f"2 scopes, 85 tasks, {report.events} events" in " ".join(ran.out.split())
    one = taskstore_cli("audit", "--workspace", JOB.workspace, "--job", JOB.job, "--execution", JOB.execution)
    assert one.code == 0 and " ".join(one.out.split()).startswith("1 scope, ")



def test_audit_command_refuses_a_negative_limit(store, taskstore_cli, capsys):
    with pytest.raises(SystemExit) as info:  # was taken as 0: the differences counted, none listed
        taskstore_cli("audit", "--limit", "-1")
    assert info.value.code == 2 and "must be 0 or more, not -1" in capsys.readouterr().err


def _some_task(store, scope: Scope, state: State):
    return next(t for t in store.queries.list_tasks(scope, limit=200).items if t.state is state)


def test_audit_names_a_corrupted_task_row(store, taskstore_cli):
    populate(store)
    victim = _some_task(store, JOB, State.SUCCEEDED)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE task_view SET state = 'failed', exit_code = 99 WHERE key = :k"),
                     {"k": victim.key})
    report = store.audit()
    found = {(d.task, d.field, d.live, d.folded, d.source) for d in report.differences}
    assert (victim.task_id, "state", "failed", "succeeded", "log") in found
    assert (victim.task_id, "exit_code", 99, victim.exit_code, "log") in found
    assert all(d.scope == str(JOB) for d in report.differences)
    code, out, _ = taskstore_cli("audit")
    assert code == 1
    assert victim.task_id in out and "exit_code" in out and "99" in out
    # Only the other scope: nothing wrong there.
    assert taskstore_cli("audit", "--workspace", OTHER.workspace, "--job", OTHER.job).code == 0
    # A rebuild repairs it.
    store.rebuild()
    assert taskstore_cli("audit").code == 0


def test_audit_names_a_corrupted_count_summary(store, taskstore_cli):
    populate(store)
    sid = store.log.scope_id(OTHER)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE scope_counts SET running = running + 5 WHERE scope_id = :s"), {"s": sid})
    report = store.audit()
    d = next(d for d in report.differences if d.field == "running" and d.source == "log")
    assert d.scope == str(OTHER) and d.task is None and d.live == d.folded + 5
    code, out, _ = taskstore_cli("audit", "--json")
    assert code == 1
    doc = orjson.loads(out)
    assert not doc["ok"] and any(x["field"] == "running" and x["task"] is None for x in doc["differences"])


def test_the_audit_of_a_scope_whose_last_event_is_not_a_task_finds_nothing(store):
    populate(store)
    store.log.append([StreamAppend(JOB, "not-a-task", [NewEvent("SomethingElse", {"n": 1})])])
    report = store.audit(JOB, from_snapshots=False)
    assert report.ok
    assert report.notes == [f"{JOB}: 1 event of streams that do not start with TaskAdded (not tasks)"]
    assert store.audit(JOB).ok


def test_a_rebuild_from_a_snapshot_whose_last_event_is_not_a_task_keeps_the_summary_s_position(store):
    """A count summary's position is its tasks' last event (events of streams that are not tasks move no count). A
    rebuild from a snapshot taken after such an event seeds the summary at that position too, not the snapshot's."""
    populate(store)
    store.log.append([StreamAppend(JOB, "not-a-task", [NewEvent("SomethingElse", {"n": 1})])])
    snap = store.snapshot(JOB)
    before = tables(store)
    assert snap.position > store.queries.counts(JOB).position
    result = store.rebuild(from_snapshots=True, workers=1)
    assert result.scopes_from_snapshots == 1
    assert tables(store) == before
    assert store.audit(JOB).ok


def test_audit_finds_rows_missing_from_either_side(store):
    store.add_tasks(JOB, [{"id": f"t{i}"} for i in range(4)])
    sid = store.log.scope_id(JOB)
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM task_view WHERE key = 't1'"))
        conn.execute(text(
            "INSERT INTO task_view SELECT scope_id, 'ghost', 'ghost', number + 1000, state, previous_state, version, "
            "position, created_at, state_transition_time, previous_state_transition_time, last_modified, scheduled_at, "
            "start_time, end_time, exit_code, result, retry_count, requeue_count, last_retry_time, last_requeue_time, "
            "required_slots, display_name, status_message, search, spec, failure_info, node_info, conditions "
            "FROM task_view WHERE key = 't2'"
        ))
    found = {(d.task, d.field, d.live, d.folded) for d in store.audit(JOB).differences}
    assert ("t1", "row", "missing", "present") in found
    assert ("ghost", "row", "present", "missing") in found
    assert sid is not None


@pytest.mark.parametrize(
    ("corruption", "expected"),
    [
        ("UPDATE scope_counts SET slots_succeeded = slots_succeeded + 3 WHERE scope_id = :s",
         lambda live: ("slots_succeeded", live.slots[State.SUCCEEDED] + 3, live.slots[State.SUCCEEDED])),
        ("UPDATE scope_counts SET position = 1 WHERE scope_id = :s", lambda live: ("position", 1, live.position)),
        ("DELETE FROM scope_counts WHERE scope_id = :s", lambda live: ("row", "missing", "present")),
    ],
    ids=["slots", "position", "no-row"],
)
def test_audit_names_each_kind_of_count_summary_difference(store, corruption, expected):
    populate(store)
    live = store.queries.counts(JOB, validate=False)
    sid = store.log.scope_id(JOB)
    with store.engine.begin() as conn:
        conn.execute(text(corruption), {"s": sid})
    found = [(d.field, d.live, d.folded) for d in store.audit(JOB, from_snapshots=False).differences]
    assert found == [expected(live)]
    assert store.audit(OTHER, from_snapshots=False).ok  # the other scope is untouched


def test_audit_from_snapshots_names_a_corrupted_snapshot(store):
    populate(store)
    snap = store.snapshot(JOB)
    victim = _some_task(store, JOB, State.FAILED)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE snapshot_tasks SET retry_count = 42 WHERE snapshot_id = :s AND key = :k"),
                     {"s": snap.id, "k": victim.key})
    report = store.audit(JOB)
    assert [(d.task, d.field, d.live, d.folded, d.source) for d in report.differences] == [
        (victim.task_id, "retry_count", victim.retry_count, 42, f"snapshot #{snap.id} at position {snap.position}")
    ]
    assert store.audit(JOB, from_snapshots=False).ok


def test_audit_reports_its_progress_in_tasks_compared(store):
    """The progress callback hears of every task as it is compared, against the tasks expected: each scope's live
    total once for the fold from the log and once for the snapshots (a scope without a full snapshot counted done at
    once), the same expected total in every call."""
    populate(store)
    store.snapshot(JOB)
    for from_snapshots, folds in ((True, 2), (False, 1)):
        heard: list[tuple[int, int | None]] = []
        report = store.audit(from_snapshots=from_snapshots, progress=lambda n, total: heard.append((n, total)))
        assert report.ok and report.tasks == 85
        assert {total for _, total in heard} == {85 * folds}
        assert sum(n for n, _ in heard) == 85 * folds and all(n > 0 for n, _ in heard)
    assert store.audit(JOB, from_snapshots=True, progress=None).ok


def test_audit_and_rebuild_commands_show_progress_bars_on_a_terminal(store, taskstore_cli, monkeypatch):
    import io

    from rich.console import Console

    from taskstore import replay_cli

    populate(store)
    screen = io.StringIO()
    monkeypatch.setattr(replay_cli, "console", Console(file=screen, force_terminal=True, color_system=None, width=120))
    assert taskstore_cli("audit", "--no-snapshots").code == 0
    assert "audit" in screen.getvalue() and "85/85 tasks" in screen.getvalue()
    assert taskstore_cli("rebuild").code == 0
    assert "rebuild" in screen.getvalue() and "events" in screen.getvalue()


def test_the_audit_command_counts_one_difference_as_one(store, taskstore_cli):
    populate(store)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE scope_counts SET running = running + 1 WHERE scope_id = :s"),
                     {"s": store.log.scope_id(OTHER)})
    ran = taskstore_cli("audit", "--no-snapshots")
    assert ran.code == 1
    assert " ".join(ran.out.split()).endswith(": 1 difference")


def test_a_store_written_before_it_had_projections_gets_them_when_opened(database):
    """Events appended through a bare event log (as taskstore did before projections existed) are folded into the
    task view the first time the store is opened with them."""
    from eventstore import EventLog, TaskService, task_upcasters

    engine = database.open_engine()
    try:
        tasks = TaskService(EventLog(engine, upcasters=task_upcasters()))
        tasks.add_tasks(JOB, [{"id": f"old-{i}", "requiredSlots": 2} for i in range(5)])
        tasks.transition(JOB, "old-1", "running")
    finally:
        engine.dispose()
    store = database.open_store()
    try:
        assert store.queries.get_task(JOB, "old-1").state is State.RUNNING
        summary = store.queries.counts(JOB)
        assert (summary.total, summary.running, summary.validation_status) == (5, 1, "validated")
        store.transition(JOB, "old-2", "running")  # commands decide from the task view
        assert store.audit().ok
    finally:
        store.close()
