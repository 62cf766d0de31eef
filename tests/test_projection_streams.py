"""The task projection next to streams that are not tasks, and event types it does not know."""

from eventstore import Expect, NewEvent, Scope, StreamAppend, fold

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
