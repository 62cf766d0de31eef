"""A hypothesis state machine drives random sequences of commands against the store, on both engines, and against a
plain reference model of the task lifecycle written here from the issue (not from ``eventstore.lifecycle``).

Commands: bulk adds (with ids that repeat in another case, refused wholesale), transitions (legal and illegal, with
exit codes), runs of failures until one is final, terminate, reactivate and record_condition; with and without an
expected version; with request ids, including retries of committed requests and reuse of an id for other content.

After every step: each task's state, version, retryCount and requeueCount equal the model's; a refused command
changed nothing (the log's head is where it was); stream versions have no gaps; positions only grow.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable

import orjson
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text

from eventstore import (
    IdempotencyConflict,
    IllegalTransition,
    Scope,
    TaskExists,
    TaskNotFound,
    ValidationError,
    VersionMismatch,
)

# -- the reference model -----------------------------------------------------------------------------------------
#
# Canonical states, as the issue names them. A task is added pending. It is scheduled (starting, "preparing" in Azure
# Batch) or goes straight to running; a running task finishes (succeeded or failed) or is being stopped (stopping),
# which ends in succeeded, failed or cancelled. Terminate cancels any task that has not finished. A task that was
# starting or running can be sent back to pending (a requeue). A failure while starting or running, with retries
# left, sends it back to pending as a retry instead of failing it (maxTaskRetryCount; -1 is unlimited; Blaxel's
# maxRetries when Azure's is absent; none by default). Failed and cancelled tasks can be reactivated: back to
# pending with the retry count reset. Succeeded is final. Anything else, including "to the state it is in", is
# refused.

UNFINISHED = ("pending", "starting", "running", "stopping")
NEXT = {
    "pending": {"starting", "running", "cancelled"},
    "starting": {"running", "failed", "pending", "cancelled"},
    "running": {"stopping", "succeeded", "failed", "pending", "cancelled"},
    "stopping": {"succeeded", "failed", "cancelled"},
    "succeeded": set(),
    "failed": {"pending"},
    "cancelled": {"pending"},
}
STATES = list(NEXT)


@dataclass(frozen=True)
class ModelTask:
    task_id: str
    state: str
    version: int
    retry_count: int
    requeue_count: int
    max_retries: int


def model_transition(task: ModelTask, to: str) -> ModelTask | None:
    """The task after a request to go to ``to``, or None when the lifecycle refuses it."""
    if to not in NEXT[task.state]:
        return None
    retries, requeues, lands = task.retry_count, task.requeue_count, to
    if to == "failed" and task.state in ("starting", "running") and (
        task.max_retries == -1 or task.retry_count < task.max_retries
    ):
        lands, retries = "pending", retries + 1
    elif to == "pending" and task.state in ("starting", "running"):
        requeues += 1
    elif to == "pending":  # from failed or cancelled: a reactivation
        retries = 0
    return replace(task, state=lands, version=task.version + 1, retry_count=retries, requeue_count=requeues)


def model_reactivate(task: ModelTask) -> ModelTask | None:
    if task.state not in ("failed", "cancelled"):
        return None
    return replace(task, state="pending", version=task.version + 1, retry_count=0)


# -- strategies --------------------------------------------------------------------------------------------------

NAMES = ["a", "b", "task-c", "D_4", "e"]
CASES = {"as added": str, "upper": str.upper, "lower": str.lower, "swapped": str.swapcase}


def case_variants(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from(sorted({f(name) for f in CASES.values()}))


cased = st.sampled_from(NAMES).flatmap(case_variants)
cases = st.sampled_from(list(CASES))
retry_spec = st.sampled_from(
    [
        ({}, 0),
        ({"constraints": {"maxTaskRetryCount": 0}}, 0),
        ({"constraints": {"maxTaskRetryCount": 1}}, 1),
        ({"constraints": {"maxTaskRetryCount": 2}, "maxRetries": 0}, 2),
        ({"constraints": {"maxTaskRetryCount": -1}}, -1),
        ({"maxRetries": 1}, 1),
        ({"maxRetries": -1, "timeout": "30m"}, -1),
        ({"constraints": {"maxWallClockTime": "PT1H"}, "maxRetries": 2}, 2),
    ]
)
# weighted towards commands that can succeed, so that sequences go deep into the lifecycle
request_ids = st.sampled_from([None] * 8 + ["r1", "r2", "r3"])
expectations = st.sampled_from(["none"] * 4 + ["current"] * 3 + ["behind", "ahead"])
exit_codes = st.one_of(st.none(), st.integers(-3, 3), st.just(2**31 - 1))


class LifecycleMachine(RuleBasedStateMachine):
    store: Any = None  # set per engine by the test
    added = Bundle("added")  # ids of tasks added (as added); commands address them in any case

    def __init__(self) -> None:
        super().__init__()
        self.scope = Scope(f"ws-{uuid.uuid4().hex[:12]}", "job", "exec")
        self.tasks: dict[str, ModelTask] = {}  # by lower-cased id
        self.requests: dict[str, tuple[Any, Any]] = {}  # request id -> (content, first result)
        self.last_request: tuple[Callable[[], Any], Any, int] | None = None
        self.head = self._head()

    # -- helpers -------------------------------------------------------------------------------------------------

    def _head(self) -> tuple[int, int]:
        with self.store.engine.connect() as conn:
            count, top = conn.execute(text("SELECT count(*), coalesce(max(position), 0) FROM events")).one()
        return count, top

    def _written(self, n: int) -> None:
        """Exactly ``n`` events were appended since the last step, all after every earlier position."""
        count, top = self._head()
        assert count == self.head[0] + n, f"expected {n} new events, found {count - self.head[0]}"
        if n:
            with self.store.engine.connect() as conn:
                new = conn.execute(
                    text("SELECT min(position) FROM events WHERE position > :p"), {"p": self.head[1]}
                ).scalar_one()
            assert new is not None and top > self.head[1]
        else:
            assert top == self.head[1]
        self.head = (count, top)

    def _expected_version(self, key: str, how: str) -> int | None:
        version = self.tasks[key].version if key in self.tasks else 1
        return {"none": None, "current": version, "behind": version - 1, "ahead": version + 1}[how]

    def _check_task(self, got, want: ModelTask) -> None:
        assert (got.task_id, got.state.value, got.version, got.retry_count, got.requeue_count) == (
            want.task_id, want.state, want.version, want.retry_count, want.requeue_count,
        )

    def _run_command(
        self,
        name: str,
        content: Any,
        request_id: str | None,
        expected: int | None,
        decide: Callable[[ModelTask], ModelTask | None],
        call: Callable[[], Any],
        requested: str,
    ) -> None:
        """Run a one-task command and check its outcome against the model; ``decide`` is the model's answer."""
        key = name.lower()
        if request_id is not None and request_id in self.requests:
            first_content, first_result = self.requests[request_id]
            if first_content == content:  # a retry of a committed request: its first result, nothing written
                self._check_task(call(), first_result)
                self._written(0)
                return
            with pytest.raises(IdempotencyConflict):
                call()
            self._written(0)
            return
        task = self.tasks.get(key)
        if task is None:
            with pytest.raises(TaskNotFound):
                call()
            self._written(0)
            return
        if expected is not None and expected != task.version:
            with pytest.raises(VersionMismatch) as info:
                call()
            assert (info.value.expected, info.value.actual) == (expected, task.version)
            self._written(0)
            return
        after = decide(task)
        if after is None:
            with pytest.raises(IllegalTransition) as info:
                call()
            err = info.value
            assert (err.task_id, err.current, err.requested) == (task.task_id, task.state, requested)
            assert task.task_id in str(err) and task.state in str(err) and requested in str(err)
            self._written(0)
            return
        result = call()
        self._check_task(result, after)
        self._written(1)
        self.tasks[key] = after
        if request_id is not None:
            self.requests[request_id] = (content, after)
            self.last_request = (call, after, 1)

    def _check_last_transition(self, name: str, before: str, exit_code: int | None) -> None:
        last = self.store.history(self.scope, name)[-1]
        now = self.tasks[name.lower()]
        assert (last.type, last.data["from"], last.data["to"], last.version) == (
            "TaskTransitioned", before, now.state, now.version,
        )
        assert last.data.get("exitCode") == exit_code
        assert (last.data["retryCount"], last.data["requeueCount"]) == (now.retry_count, now.requeue_count)

    # -- rules ---------------------------------------------------------------------------------------------------

    @initialize(target=added, names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True),
                retries=retry_spec)
    def add_first_tasks(self, names, retries):
        return self.add_tasks(names, retries, None, False)

    @rule(
        target=added,
        names=st.lists(cased, min_size=1, max_size=3),
        retries=retry_spec,
        request_id=request_ids,
        force_case_duplicate=st.sampled_from([False] * 4 + [True]),
    )
    def add_tasks(self, names, retries, request_id, force_case_duplicate):
        if force_case_duplicate:
            names = names + [names[0].swapcase() if names[0].swapcase() != names[0] else names[0]]
        extra, max_retries = retries
        specs = [{"id": n, "commandLine": f"run {n}", **extra} for n in names]
        content = ("add", orjson.dumps(specs).decode())

        def call():
            return self.store.add_tasks(self.scope, specs, request_id=request_id)

        keys = [n.lower() for n in names]
        if len(set(keys)) < len(keys):  # ids that repeat, whatever their case: the whole add is refused
            with pytest.raises(ValidationError) as info:
                call()
            assert info.value.field.endswith(".id")
            self._written(0)
            return multiple()
        if request_id is not None and request_id in self.requests:
            first_content, first_result = self.requests[request_id]
            if first_content == content:
                assert [t.task_id for t in call()] == first_result
                self._written(0)
            else:
                with pytest.raises(IdempotencyConflict):
                    call()
                self._written(0)
            return multiple()
        if any(k in self.tasks for k in keys):
            with pytest.raises(TaskExists) as info:
                call()
            assert info.value.task_id.lower() in self.tasks
            self._written(0)
            return multiple()
        added = call()
        assert [(t.task_id, t.state.value, t.version) for t in added] == [(n, "pending", 1) for n in names]
        self._written(len(names))
        for n in names:
            self.tasks[n.lower()] = ModelTask(n, "pending", 1, 0, 0, max_retries)
        if request_id is not None:
            self.requests[request_id] = (content, list(names))
        return multiple(*names)

    @rule(
        added=added, case=cases, legal=st.sampled_from([True] * 3 + [False]), data=st.data(), exit_code=exit_codes,
        how=expectations, request_id=request_ids,
    )
    def transition(self, added, case, legal, data, exit_code, how, request_id):
        """Mostly a step the model allows (so runs go deep: retries, requeues, reactivations), else any state."""
        task = self.tasks.get(added.lower())
        options = sorted(NEXT[task.state]) if legal and task is not None and NEXT[task.state] else STATES
        to = data.draw(st.sampled_from(options), label="to")
        self._transition(CASES[case](added), to, exit_code, how, request_id)

    @rule(name=cased, to=st.sampled_from(STATES), how=expectations, request_id=request_ids)
    def transition_any_name(self, name, to, how, request_id):
        """Any name of the pool, added or not (TaskNotFound), in any case."""
        self._transition(name, to, None, how, request_id)

    def _transition(self, name, to, exit_code, how, request_id):
        key = name.lower()
        expected = self._expected_version(key, how)
        before = self.tasks[key].state if key in self.tasks else None
        version_before = self.tasks[key].version if key in self.tasks else None

        def call():
            return self.store.transition(
                self.scope, name, to, exit_code=exit_code, expected_version=expected, request_id=request_id
            )

        self._run_command(name, ("transition", key, to, exit_code), request_id, expected,
                          lambda t: model_transition(t, to), call, to)
        if key in self.tasks and self.tasks[key].version != version_before:
            self._check_last_transition(name, before, exit_code)

    @rule(added=added, case=cases, exit_code=exit_codes, stopping=st.booleans())
    def fail_until_no_retries_are_left(self, added, case, exit_code, stopping):
        """Run one task and fail it, again after each retry, until a failure is final (at most four times: retries
        may be unlimited), now and then through stopping. Random single steps seldom get a task that far: without
        this rule, runs hardly ever reached a final failure, a reactivation of one, or stopping."""
        name = CASES[case](added)
        for _ in range(4):
            state = self.tasks[name.lower()].state
            if state not in UNFINISHED:
                return
            steps = ["running"] if state in ("pending", "starting") else []
            steps += ["stopping"] if stopping and state != "stopping" else []
            for to in [*steps, "failed"]:
                self._transition(name, to, exit_code if to == "failed" else None, "none", None)

    @rule(added=added, case=cases, how=expectations, request_id=request_ids)
    def terminate(self, added, case, how, request_id):
        name = CASES[case](added)
        key = name.lower()
        expected = self._expected_version(key, how)
        version_before = self.tasks[key].version if key in self.tasks else None
        before = self.tasks[key].state if key in self.tasks else None

        def call():
            return self.store.terminate(self.scope, name, expected_version=expected, request_id=request_id)

        def decide(task: ModelTask) -> ModelTask | None:
            return model_transition(task, "cancelled") if task.state in UNFINISHED else None

        # terminate is a transition to cancelled: the same request as transition(to="cancelled")
        self._run_command(name, ("transition", key, "cancelled", None), request_id, expected, decide, call,
                          "cancelled")
        if key in self.tasks and self.tasks[key].version != version_before:
            assert self.tasks[key].state == "cancelled"
            self._check_last_transition(name, before, None)

    @rule(added=added, case=cases, how=expectations, request_id=request_ids)
    def reactivate(self, added, case, how, request_id):
        name = CASES[case](added)
        key = name.lower()
        expected = self._expected_version(key, how)

        def call():
            return self.store.reactivate(self.scope, name, expected_version=expected, request_id=request_id)

        self._run_command(name, ("reactivate", key), request_id, expected, model_reactivate, call, "pending")

    @rule(
        added=added,
        case=cases,
        kind=st.sampled_from(["Ready", "Scheduled"]),
        status=st.sampled_from(["True", "False"]),
        how=expectations,
        request_id=request_ids,
    )
    def record_condition(self, added, case, kind, status, how, request_id):
        name = CASES[case](added)
        key = name.lower()
        expected = self._expected_version(key, how)
        condition = {"type": kind, "state": status}

        def call():
            return self.store.record_condition(
                self.scope, name, condition, expected_version=expected, request_id=request_id
            )

        self._run_command(name, ("condition", key, kind, status), request_id, expected,
                          lambda t: replace(t, version=t.version + 1), call, "condition")

    @rule()
    def retry_the_last_request(self):
        """A client's retry after a timeout: the same request again returns the first result and writes nothing."""
        if self.last_request is None:
            return
        call, first, _ = self.last_request
        self._check_task(call(), first)
        self._written(0)

    # -- invariants ----------------------------------------------------------------------------------------------

    @invariant()
    def tasks_equal_the_model(self):
        for name in NAMES:
            want = self.tasks.get(name.lower())
            if want is None:
                with pytest.raises(TaskNotFound):
                    self.store.get_task(self.scope, name)
            else:
                self._check_task(self.store.get_task(self.scope, name.upper()), want)

    @invariant()
    def the_log_is_where_the_model_says(self):
        assert self._head() == self.head  # nothing was written that a step did not account for
        sid = self.store.log.scope_id(self.scope)
        if sid is None:
            assert not self.tasks
            return
        with self.store.engine.connect() as conn:
            found = conn.execute(
                text(
                    "SELECT stream, count(*), min(version), max(version) FROM events "
                    "WHERE scope_id = :sid GROUP BY stream"
                ),
                {"sid": sid},
            ).all()
            order = conn.execute(
                text("SELECT stream, version, position FROM events WHERE scope_id = :sid ORDER BY stream, version"),
                {"sid": sid},
            ).all()
        # stream versions run 1..n without gaps, and n is the model's version of the task
        assert {s: (n, lo, hi) for s, n, lo, hi in found} == {
            k: (t.version, 1, t.version) for k, t in self.tasks.items()
        }
        # within a stream, later versions have later positions
        for (s1, _v1, p1), (s2, _v2, p2) in zip(order, order[1:]):
            if s1 == s2:
                assert p2 > p1


@pytest.mark.parametrize("examples, steps", [(30, 40)])
def test_the_store_follows_the_reference_model(database, examples, steps):
    store = database.open_store()
    try:
        machine = type("Machine", (LifecycleMachine,), {"store": store})
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=examples,
                stateful_step_count=steps,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                database=None,
            ),
        )
    finally:
        store.close()


def test_the_model_refuses_what_the_issue_refuses():
    """The reference model itself, on the issue's own examples (so a wrong model cannot agree with a wrong store)."""
    t = ModelTask("t", "pending", 1, 0, 0, 0)
    assert model_transition(t, "succeeded") is None and model_transition(t, "pending") is None
    running = model_transition(t, "running")
    assert running.state == "running"
    assert model_transition(running, "failed").state == "failed"  # no retries by default
    unlimited = replace(running, max_retries=-1, retry_count=99)
    assert (model_transition(unlimited, "failed").state, model_transition(unlimited, "failed").retry_count) == (
        "pending", 100)
    starting = model_transition(t, "starting")
    requeued = model_transition(starting, "pending")
    assert (requeued.state, requeued.requeue_count, requeued.retry_count) == ("pending", 1, 0)
    done = model_transition(running, "succeeded")
    assert model_transition(done, "cancelled") is None and model_reactivate(done) is None
    failed = replace(model_transition(running, "failed"), retry_count=3)
    assert (model_reactivate(failed).state, model_reactivate(failed).retry_count) == ("pending", 0)
    assert model_reactivate(running) is None
