"""The task projection next to streams that are not tasks, and event types it does not know."""

from eventstore import Expect, NewEvent, Scope, State, StreamAppend, fold

SCOPE = Scope("ws", "job-streams")


def test_a_stream_that_is_not_a_task_is_appended_and_left_out_of_the_view(store):
    store.add_task(SCOPE, {"id": "t1"})
    store.log.append([StreamAppend(SCOPE, "audit-trail", [NewEvent("Note", {"text": "hello"})], Expect.NO_STREAM)])
    assert [e.type for e in store.log.read_stream(SCOPE, "audit-trail")] == ["Note"]
    page = store.queries.list_tasks(SCOPE)
    assert [t.task_id for t in page.items] == ["t1"] and page.total == 1
    assert store.queries.counts(SCOPE).total == 1


def test_an_unknown_event_type_on_a_task_stream_is_folded_as_the_log_folds_it(store):
    store.add_task(SCOPE, {"id": "t2"})
    store.log.append([StreamAppend(SCOPE, "t2", [NewEvent("FutureThing", {"x": 1})], 1)])
    view = store.queries.get_task(SCOPE, "t2")
    folded = fold(store.log.read_stream(SCOPE, "t2"))
    assert view == folded and view.version == 2
    report = store.audit(SCOPE)
    assert report.ok, report


def _added(task_id: str, slots: int) -> NewEvent:
    return NewEvent("TaskAdded", {"taskId": task_id, "at": "2026-01-01T00:00:00.000000Z",
                                  "spec": {"id": task_id, "requiredSlots": slots}})


def test_a_task_added_again_to_its_stream_is_refused_and_nothing_is_written(store):
    import pytest

    from eventstore import TaskNotFound, ValidationError

    store.add_task(SCOPE, {"id": "t3", "requiredSlots": 2})
    store.transition(SCOPE, "t3", "running")
    head, before = store.log.head(), store.queries.counts(SCOPE)
    with pytest.raises(ValidationError, match="already holds task 't3'"):
        store.log.append([
            StreamAppend(SCOPE, "t4", [_added("t4", 1)], Expect.NO_STREAM),  # refused with the rest
            StreamAppend(SCOPE, "t3", [_added("t3", 4)], 2),
        ])
    assert store.log.head() == head and len(store.log.read_stream(SCOPE, "t3")) == 2
    with pytest.raises(TaskNotFound):
        store.queries.get_task(SCOPE, "t4")
    after = store.queries.counts(SCOPE)
    assert (after.total, after.running) == (before.total, before.running) == (1, 1)


def test_a_stream_that_was_not_a_task_becomes_one_with_a_later_task_added(store):
    store.log.append([StreamAppend(SCOPE, "t5", [NewEvent("Note", {"text": "first"})], Expect.NO_STREAM)])
    store.log.append([StreamAppend(SCOPE, "t5", [_added("t5", 3)], 1)])
    view = store.queries.get_task(SCOPE, "t5")
    assert view == fold(store.log.read_stream(SCOPE, "t5")[1:]) and view.required_slots == 3
    assert store.queries.counts(SCOPE).total == 1
    assert store.audit(SCOPE, from_snapshots=False).ok


def test_catching_up_on_a_task_added_again_starts_it_over_as_the_fold_does(database):
    """A log written without the projection may hold a second TaskAdded on a stream; the catch-up projector (as
    the rebuild's seeding and the audit's fold) starts the task over, and its counts move with it."""
    from eventstore import EventLog, TaskService, task_upcasters
    from projections.tables import scope_counts, task_view
    from projections.task_view import TaskProjection

    engine = database.open_engine()
    try:
        bare = EventLog(engine, upcasters=task_upcasters())
        TaskService(bare).add_tasks(SCOPE, [{"id": "t6", "requiredSlots": 2}, {"id": "t7"}])
        TaskService(bare).transition(SCOPE, "t6", "running")
        store = database.open_store()  # folds the log into the empty task view
        try:
            assert store.queries.counts(SCOPE).running == 1
            again = bare.append([StreamAppend(SCOPE, "t6", [_added("t6", 5)], 2)]).events
            with store.log.writing() as conn:  # what the catch-up projector does with it
                TaskProjection(store.log, task_view, scope_counts, catch_up=True).apply(conn, again)
            folded = fold(store.log.read_stream(SCOPE, "t6")[2:])
            assert store.queries.get_task(SCOPE, "t6") == folded and folded.required_slots == 5
            summary = store.queries.counts(SCOPE, validate=False)
            assert (summary.total, summary.running, summary.active) == (2, 0, 2)
            assert summary.slots[State.PENDING] == 6 and summary.slots[State.RUNNING] == 0  # t6's 5 and t7's 1
            assert store.audit(SCOPE, from_snapshots=False).ok
            store.rebuild()  # the seeding fold agrees
            assert store.queries.get_task(SCOPE, "t6") == folded
            assert store.audit(SCOPE, from_snapshots=False).ok
        finally:
            store.close()
    finally:
        engine.dispose()
