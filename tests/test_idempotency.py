"""Idempotent commands under races, on both engines: a retry whose first attempt commits while the retry is already
under way returns the first result (and writes nothing), whatever the task's state has become meanwhile."""

from __future__ import annotations

import threading

import pytest

from eventstore import IdempotencyConflict, Scope, State

SCOPE = Scope("ws", "job")


def _first_commits_after_the_retry_looked(store, first):
    """Make ``first()`` (the first attempt) commit just after the retry last looked for its request id and found
    nothing, before its write transaction begins: the moment a retry sent while the first attempt is in flight meets."""
    writing = store.log.writing
    raced: list[bool] = []

    def racing():
        if not raced:
            raced.append(True)
            first()
        return writing()

    store.log.writing = racing


@pytest.mark.parametrize(
    "command",
    [
        lambda s: s.transition(SCOPE, "t", "running", request_id="r-1"),
        lambda s: s.terminate(SCOPE, "t", request_id="r-1"),
        lambda s: s.transition_many(SCOPE, [("t", "running")], request_id="r-1")[0],
    ],
    ids=["transition", "terminate", "transition_many"],
)
def test_a_retry_racing_its_first_attempt_returns_the_first_result(store, command):
    store.add_task(SCOPE, {"id": "t"})
    firsts = []
    _first_commits_after_the_retry_looked(store, lambda: firsts.append(command(store)))
    again = command(store)  # the first attempt commits while this one runs: its answer is the first's
    assert again == firsts[0] and again.version == 2
    assert [e.version for e in store.history(SCOPE, "t")] == [1, 2]
    del store.log.writing
    with pytest.raises(IdempotencyConflict):  # the same request id for another command is still refused
        store.transition(SCOPE, "t", "succeeded", request_id="r-1")


def test_the_same_request_from_two_threads_at_once_is_applied_once(store):
    store.add_tasks(SCOPE, [{"id": f"t{i}"} for i in range(20)])
    results: dict[int, list] = {i: [] for i in range(20)}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def send() -> None:
        try:
            barrier.wait()
            for i in range(20):
                results[i].append(store.transition(SCOPE, f"t{i}", "running", request_id=f"go-{i}"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i in range(20):
        a, b = results[i]
        assert a == b and a.state is State.RUNNING and a.version == 2
        assert len(store.history(SCOPE, f"t{i}")) == 2
    assert store.queries.counts(SCOPE, validate=False).states["running"] == 20


def test_the_same_bulk_add_from_two_threads_at_once_is_applied_once_per_workspace(store):
    specs = [{"id": f"t{i}", "requiredSlots": 2} for i in range(50)]
    other = Scope("ws-2", "job")  # the same request id in another workspace is another request
    results: list = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def send(scope: Scope) -> None:
        try:
            barrier.wait()
            results.append((scope, store.add_tasks(scope, specs, request_id="add-1")))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(s,)) for s in (SCOPE, SCOPE, other, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for scope in (SCOPE, other):
        mine = [tasks for s, tasks in results if s == scope]
        assert len(mine) == 2 and mine[0] == mine[1]
        summary = store.queries.counts(scope, validate=False)
        assert summary.states["pending"] == 50 and summary.slots["pending"] == 100
        assert len(store.log.read_scope(scope, limit=1000)) == 50
