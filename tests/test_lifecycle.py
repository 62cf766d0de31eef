"""The task lifecycle (eventstore/lifecycle.py) and the task specification (eventstore/spec.py).

Pure unit tests of the state vocabularies, ``states_for`` and ``plan``, and of spec validation; then the same rules
through :class:`TaskService` on both engines (retries, requeues, terminate, reactivate, task id uniqueness).
"""

from __future__ import annotations

import pytest

from eventstore import IllegalTransition, Scope, State, TaskExists, TaskNotFound, ValidationError, states_for
from eventstore.lifecycle import (
    AZURE_BATCH,
    AZURE_BATCH_RESULT,
    BLAXEL,
    HEALTHOMICS,
    TERMINAL,
    VOCABULARIES,
    Cause,
    plan,
    retries_left,
)
from eventstore.spec import parse_spec
from eventstore.task import max_retries

P, ST, R, SP = State.PENDING, State.STARTING, State.RUNNING, State.STOPPING
OK, FAIL, CANC = State.SUCCEEDED, State.FAILED, State.CANCELLED

# The table of the issue (and the README): one value per canonical state in each vendor's vocabulary.
TABLE = {
    #            Azure Batch   result       HealthOmics   Blaxel
    P: ("active", None, "PENDING", "pending"),
    ST: ("preparing", None, "STARTING", "reconciling"),
    R: ("running", None, "RUNNING", "running"),
    SP: ("running", None, "STOPPING", "running"),
    OK: ("completed", "success", "COMPLETED", "succeeded"),
    FAIL: ("completed", "failure", "FAILED", "failed"),
    CANC: ("completed", "failure", "CANCELLED", "cancelled"),
}
VENDOR_VALUES = {
    "batch": {"active", "preparing", "running", "completed"},
    "omics": {"PENDING", "STARTING", "RUNNING", "STOPPING", "COMPLETED", "CANCELLED", "FAILED"},
    "blaxel": {"pending", "reconciling", "running", "succeeded", "failed", "cancelled"},
}


# -- vocabularies ------------------------------------------------------------------------------------------------


def test_the_canonical_states_are_the_seven_of_the_issue():
    assert [s.value for s in State] == [
        "pending", "starting", "running", "stopping", "succeeded", "failed", "cancelled"
    ]
    assert TERMINAL == {OK, FAIL, CANC}


@pytest.mark.parametrize("state", list(State))
def test_each_canonical_state_maps_to_exactly_one_value_per_vocabulary(state):
    batch, result, omics, blaxel = TABLE[state]
    assert AZURE_BATCH[state] == batch
    assert AZURE_BATCH_RESULT.get(state) == result
    assert HEALTHOMICS[state] == omics
    assert BLAXEL[state] == blaxel
    for name, vocabulary in VOCABULARIES.items():
        assert isinstance(vocabulary[state], str)
        assert vocabulary[state] in VENDOR_VALUES[name]


def test_every_vendor_value_is_used_and_vocabularies_cover_every_state():
    for name, vocabulary in VOCABULARIES.items():
        assert set(vocabulary) == set(State), name
        assert set(vocabulary.values()) == VENDOR_VALUES[name], name
    assert set(AZURE_BATCH_RESULT) == TERMINAL


def test_healthomics_tells_every_state_apart():
    assert len(set(HEALTHOMICS.values())) == len(State)


@pytest.mark.parametrize(
    "value, dialect, expected",
    [
        ("completed", "batch", {OK, FAIL, CANC}),
        ("active", "batch", {P}),
        ("preparing", "batch", {ST}),
        ("running", "batch", {R, SP}),
        ("COMPLETED", "omics", {OK}),
        ("STOPPING", "omics", {SP}),
        ("CANCELLED", "omics", {CANC}),
        ("reconciling", "blaxel", {ST}),
        ("running", "blaxel", {R, SP}),
        ("failed", "blaxel", {FAIL}),
        # without a dialect, a canonical name means itself ...
        ("running", None, {R}),
        ("pending", None, {P}),
        ("cancelled", None, {CANC}),
        # ... and any other value means what it means in the vocabulary that has it
        ("completed", None, {OK, FAIL, CANC}),
        ("active", None, {P}),
        ("preparing", None, {ST}),
        ("reconciling", None, {ST}),
        ("COMPLETED", None, {OK}),
        ("STOPPING", None, {SP}),
    ],
)
def test_states_for(value, dialect, expected):
    assert states_for(value, dialect) == expected


@pytest.mark.parametrize("value, dialect", [("nope", None), ("active", "omics"), ("PENDING", "batch"),
                                            ("stopping", "blaxel"), ("Running", None)])
def test_states_for_an_unknown_value_raises_key_error(value, dialect):
    with pytest.raises(KeyError):
        states_for(value, dialect)


def test_states_for_round_trips_every_vocabulary():
    for name, vocabulary in VOCABULARIES.items():
        for state, value in vocabulary.items():
            assert state in states_for(value, name)


# -- plan --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "current, requested, landing",
    [
        (P, ST, (ST, Cause.TRANSITION)),
        (P, R, (R, Cause.TRANSITION)),
        (ST, R, (R, Cause.TRANSITION)),
        (R, SP, (SP, Cause.TRANSITION)),
        (R, OK, (OK, Cause.TRANSITION)),
        (SP, OK, (OK, Cause.TRANSITION)),
        (SP, FAIL, (FAIL, Cause.TRANSITION)),
        (ST, P, (P, Cause.REQUEUE)),
        (R, P, (P, Cause.REQUEUE)),
        (P, CANC, (CANC, Cause.TERMINATE)),
        (ST, CANC, (CANC, Cause.TERMINATE)),
        (R, CANC, (CANC, Cause.TERMINATE)),
        (SP, CANC, (CANC, Cause.TERMINATE)),
        (FAIL, P, (P, Cause.REACTIVATE)),
        (CANC, P, (P, Cause.REACTIVATE)),
    ],
)
def test_plan_of_legal_transitions(current, requested, landing):
    assert plan(current, requested, 0, 0) == landing


@pytest.mark.parametrize(
    "current, requested",
    [(P, P), (R, R), (P, OK), (P, FAIL), (P, SP), (ST, OK), (ST, SP), (SP, P), (SP, R), (FAIL, R), (CANC, ST)]
    + [(OK, s) for s in State]
    + [(s, CANC) for s in (OK, FAIL, CANC)],
)
def test_plan_refuses_illegal_transitions_with_a_reason(current, requested):
    why = plan(current, requested, 0, 0)
    assert isinstance(why, str) and why


def test_plan_refuses_to_terminate_a_finished_task():
    for finished in TERMINAL:
        assert isinstance(plan(finished, CANC, 0, 0), str)


@pytest.mark.parametrize("source", [ST, R])
def test_failure_with_retries_left_goes_back_to_pending(source):
    assert plan(source, FAIL, 0, 1) == (P, Cause.RETRY)
    assert plan(source, FAIL, 2, 3) == (P, Cause.RETRY)
    assert plan(source, FAIL, 3, 3) == (FAIL, Cause.TRANSITION)
    assert plan(source, FAIL, 0, 0) == (FAIL, Cause.TRANSITION)  # 0: no retries, the default


@pytest.mark.parametrize("retry_count", [0, 1, 1000, 10**9])
def test_max_retries_minus_one_means_unlimited(retry_count):
    assert retries_left(retry_count, -1)
    assert plan(R, FAIL, retry_count, -1) == (P, Cause.RETRY)


def test_a_failure_while_stopping_is_final():
    assert plan(SP, FAIL, 0, -1) == (FAIL, Cause.TRANSITION)


def test_retry_limits_come_from_max_task_retry_count_then_blaxel_max_retries_else_zero():
    assert max_retries({}) == 0
    assert max_retries({"constraints": {}}) == 0
    assert max_retries({"constraints": {"maxTaskRetryCount": -1}}) == -1
    assert max_retries({"constraints": {"maxTaskRetryCount": 0}, "maxRetries": 5}) == 0
    assert max_retries({"constraints": {"maxTaskRetryCount": 2}, "maxRetries": 5}) == 2
    assert max_retries({"maxRetries": 3}) == 3
    assert max_retries({"constraints": {"maxWallClockTime": "PT1H"}, "maxRetries": -1}) == -1


# -- the specification -------------------------------------------------------------------------------------------

SEED_EXAMPLES = [
    {"id": "task1", "commandLine": "cmd /c echo task1"},
    {
        "id": "taskId",
        "commandLine": "bash -c 'echo hello'",
        "containerSettings": {"imageName": "ubuntu", "containerHostBatchBindMounts": [
            {"source": "Task", "isReadOnly": True}]},
        "userIdentity": {"autoUser": {"scope": "task", "elevationLevel": "nonadmin"}},
    },
    {
        "id": "taskId",
        "commandLine": "bash -c 'echo hello'",
        "containerSettings": {"imageName": "ubuntu", "containerRunOptions": "--rm"},
        "userIdentity": {"autoUser": {"scope": "task", "elevationLevel": "nonadmin"}},
    },
    {
        "id": "taskId",
        "commandLine": "cmd /c exit 3",
        "exitConditions": {"exitCodeRanges": [{"start": 2, "end": 4, "exitOptions": {"jobAction": "terminate"}}]},
        "userIdentity": {"autoUser": {"scope": "task", "elevationLevel": "nonadmin"}},
    },
    {"id": "task1", "requiredSlots": 2, "commandLine": "cmd /c echo task1"},
]

FULL_SPEC = {
    "id": "Full_Task-1",
    "displayName": "a task with everything",
    "commandLine": "/bin/sh -c 'exit 0'",
    "constraints": {"maxWallClockTime": "PT1H", "retentionTime": "P7D", "maxTaskRetryCount": 3},
    "dependsOn": {"taskIds": ["a", "b"], "taskIdRanges": [{"start": 1, "end": 10}]},
    "exitConditions": {
        "exitCodes": [{"code": 1, "exitOptions": {"jobAction": "none", "dependencyAction": "block"}}],
        "exitCodeRanges": [{"start": 2, "end": 4, "exitOptions": {"jobAction": "terminate"}}],
        "preProcessingError": {"jobAction": "disable"},
        "fileUploadError": {"dependencyAction": "satisfy"},
        "default": {"jobAction": "none"},
    },
    "environmentSettings": [{"name": "A", "value": "1"}, {"name": "B"}],
    "resourceFiles": [{"httpUrl": "https://example.invalid/x", "filePath": "x"}, {"blobSource": "b", "filePath": "y"}],
    "outputFiles": [{
        "filePattern": "*.txt",
        "destination": {"container": {"containerUrl": "https://example.invalid/c", "path": "out"}},
        "uploadOptions": {"uploadCondition": "tasksuccess"},
    }],
    "requiredSlots": 2,
    "containerSettings": {"imageName": "ubuntu", "workingDirectory": "taskWorkingDirectory",
                          "registry": {"registryServer": "r", "username": "u", "password": "p"}},
    "userIdentity": {"username": "someone"},
    "multiInstanceSettings": {"numberOfInstances": 2, "coordinationCommandLine": "c", "commonResourceFiles": []},
    "applicationPackageReferences": [{"applicationId": "app", "version": "1"}],
    "affinityInfo": {"affinityId": "node-1"},
    "authenticationTokenSettings": {"access": ["job"]},
    "maxRetries": 2,
    "timeout": "30m",
    "resources": {"cpus": 2, "memory": 4, "gpus": 0, "instanceType": "omics.c.large"},
    "labels": {"team": "genomics", "tier": ""},
}


@pytest.mark.parametrize("spec", SEED_EXAMPLES + [FULL_SPEC])
def test_the_seed_examples_and_a_full_specification_are_accepted(spec):
    parsed = parse_spec(spec)
    assert parsed.id == spec["id"]
    assert parsed.to_data() == {k: v for k, v in spec.items() if k != "id"}


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"colour": "blue"}, "colour"),
        ({"constraints": {"maxTaskRetryCount": "3"}}, "constraints.maxTaskRetryCount"),
        ({"constraints": {"maxTaskRetryCount": -2}}, "constraints.maxTaskRetryCount"),
        ({"constraints": {"maxTaskRetryCount": 1.5}}, "constraints.maxTaskRetryCount"),
        ({"constraints": {"maxTaskRetryCount": True}}, "constraints.maxTaskRetryCount"),
        ({"constraints": {"retries": 3}}, "constraints.retries"),
        ({"constraints": {"maxWallClockTime": "1 hour"}}, "constraints.maxWallClockTime"),
        ({"constraints": {"retentionTime": 3600}}, "constraints.retentionTime"),
        ({"resourceFiles": [{"filePath": 5}]}, "resourceFiles[0].filePath"),
        ({"resourceFiles": [{"filePath": "a"}, {"path": "b"}]}, "resourceFiles[1].path"),
        ({"resourceFiles": {"filePath": "a"}}, "resourceFiles"),
        ({"environmentSettings": [{"name": "A", "value": 1}]}, "environmentSettings[0].value"),
        ({"outputFiles": [{"filePattern": "*", "destination": {"container": {}},
                           "uploadOptions": {"uploadCondition": "tasksuccess"}}]},
         "outputFiles[0].destination.container.containerUrl"),
        ({"exitConditions": {"exitCodes": [{"code": 1, "exitOptions": {"jobAction": "explode"}}]}},
         "exitConditions.exitCodes[0].exitOptions.jobAction"),
        ({"dependsOn": {"taskIds": ["ok", "not ok"]}}, "dependsOn.taskIds[1]"),
        ({"containerSettings": {"imageName": "ubuntu", "containerHostBatchBindMounts": [
            {"source": "Task", "isReadOnly": True}, {"source": "Task", "isReadOnly": True}]}},
         "containerSettings.containerHostBatchBindMounts"),
        ({"containerSettings": {"containerRunOptions": "--rm"}}, "containerSettings.imageName"),
        ({"userIdentity": {"autoUser": {"scope": "everywhere"}}}, "userIdentity.autoUser.scope"),
        ({"requiredSlots": 0}, "requiredSlots"),
        ({"maxRetries": "2"}, "maxRetries"),
        ({"maxRetries": -5}, "maxRetries"),
        ({"timeout": "soon"}, "timeout"),
        ({"resources": {"cpus": -1}}, "resources.cpus"),
        ({"resources": {"cpus": 2**64}}, "resources.cpus"),  # beyond the JSON encoder: was a TypeError
        ({"resources": {"memory": 2**63}}, "resources.memory"),
        ({"resources": {"gpus": 2**31}}, "resources.gpus"),
        ({"resources": {"disk": 10}}, "resources.disk"),
        ({"labels": {"team": 7}}, "labels.team"),
        ({"displayName": "x" * 1025}, "displayName"),
        ({"commandLine": ["echo", "hi"]}, "commandLine"),
        ({"authenticationTokenSettings": {"access": ["pool"]}}, "authenticationTokenSettings.access[0]"),
    ],
)
def test_unknown_or_malformed_fields_are_refused_naming_the_field(patch, field):
    with pytest.raises(ValidationError) as info:
        parse_spec({"id": "t1", **patch})
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_an_unknown_field_says_so():
    with pytest.raises(ValidationError, match="colour: unknown field"):
        parse_spec({"id": "t1", "colour": "blue"})


def test_errors_in_a_bulk_add_name_the_task_by_index(store):
    scope = Scope("ws", "bulk")
    with pytest.raises(ValidationError) as info:
        store.add_tasks(scope, [{"id": "a"}, {"id": "b", "constraints": {"maxTaskRetryCount": "x"}}])
    assert info.value.field == "tasks[1].constraints.maxTaskRetryCount"
    with pytest.raises(TaskNotFound):
        store.get_task(scope, "a")


def test_a_spec_is_recorded_without_its_null_fields_and_in_one_field_order(store):
    given = {
        "labels": {"b": "2", "a": "1"},
        "resources": {"memory": 4, "cpus": None, "instanceType": None},
        "displayName": None,
        "environmentSettings": [{"name": "A", "value": None}, {"value": "v", "name": "B"}],
        "id": "t-nulls",
        "commandLine": "run",
    }
    spec = parse_spec(given)
    assert spec.id == "t-nulls"
    assert spec.to_data() == {
        "commandLine": "run",
        "environmentSettings": [{"name": "A"}, {"name": "B", "value": "v"}],
        "resources": {"memory": 4},
        "labels": {"b": "2", "a": "1"},
    }
    # The field order is the specification's, whatever the order given (label keys are the caller's).
    assert list(spec.to_data()) == ["commandLine", "environmentSettings", "resources", "labels"]
    assert list(spec.to_data()["environmentSettings"][1]) == ["name", "value"]
    task = store.add_task(SCOPE, given)
    assert task.spec == spec.to_data()
    assert store.log.read_stream(SCOPE, "t-nulls")[0].data["spec"] == spec.to_data()


def test_a_validated_spec_is_taken_as_it_is(store):
    spec = parse_spec({"id": "t-parsed", "commandLine": "run"})
    assert parse_spec(spec) is spec
    assert store.add_tasks(SCOPE, [spec])[0].spec == {"commandLine": "run"}


@pytest.mark.parametrize("duration", ["PT1H", "PT01H00M00S", "P10675199DT2H48M5.4775807S", "P7D", "PT0.5S", "P1W"])
def test_iso_8601_durations_are_accepted_and_kept_as_written(duration):
    spec = parse_spec({"id": "t", "constraints": {"maxWallClockTime": duration, "retentionTime": duration}})
    assert spec.to_data()["constraints"] == {"maxWallClockTime": duration, "retentionTime": duration}


@pytest.mark.parametrize("duration", ["30m", "1h30m", "45s", "1.5h", "500ms"])
def test_blaxel_durations_are_accepted(duration):
    assert parse_spec({"id": "t", "timeout": duration}).to_data()["timeout"] == duration


@pytest.mark.parametrize("duration", ["9" * 30 + "h", "9" * 400 + "h", "P" + "9" * 400 + "D", "PT" + "9" * 400 + "S"])
def test_durations_beyond_the_longest_are_unlimited_not_an_error(duration):
    from eventstore.durations import UNLIMITED, parse_duration

    assert parse_duration(duration) == UNLIMITED  # was an OverflowError for the Go-style ones
    assert parse_spec({"id": "t", "timeout": duration}).to_data()["timeout"] == duration


@pytest.mark.parametrize("duration", ["", "P", "PT", "1 hour", "PT1X", "30", "m30", "-PT1H", "30M", "PT1H\n", "30m\n"])
def test_malformed_durations_are_refused(duration):
    with pytest.raises(ValidationError) as info:
        parse_spec({"id": "t", "timeout": duration})
    assert info.value.field == "timeout"


@pytest.mark.parametrize("task_id", ["a", "A", "0", "_", "-", "task-1_B", "x" * 64, "a" * 63 + "Z"])
def test_valid_task_ids(task_id):
    assert parse_spec({"id": task_id}).id == task_id


@pytest.mark.parametrize("task_id", ["", "x" * 65, "a b", "a.b", "a/b", "tâche", "a:b", "a\n", 5, None])
def test_invalid_task_ids_are_refused(task_id):
    with pytest.raises(ValidationError) as info:
        parse_spec({"id": task_id})
    assert info.value.field == "id"


@pytest.mark.parametrize("part", ["", "a b", "-a", "a/b", "a\n", "x" * 129])
def test_malformed_scope_parts_are_refused(part):
    for fields in ((part, "job", "e"), ("ws", part, "e"), ("ws", "job", part)):
        with pytest.raises(ValidationError):
            Scope(*fields)


def test_a_missing_id_is_refused():
    with pytest.raises(ValidationError, match="id: is required"):
        parse_spec({"commandLine": "x"})


def test_a_task_that_is_not_an_object_is_refused():
    with pytest.raises(ValidationError):
        parse_spec(["id", "t"])  # type: ignore[arg-type]


# -- through the task service, on both engines -------------------------------------------------------------------

SCOPE = Scope("ws", "job", "e1")


def test_task_ids_are_unique_without_regard_to_case_and_keep_their_case(store):
    store.add_tasks(SCOPE, [{"id": "Task-A"}])
    for clash in ("task-a", "TASK-A", "Task-A"):
        with pytest.raises(TaskExists) as info:
            store.add_tasks(SCOPE, [{"id": "other"}, {"id": clash}])
        assert info.value.task_id == clash
        with pytest.raises(TaskNotFound):
            store.get_task(SCOPE, "other")
    task = store.get_task(SCOPE, "tAsK-a")
    assert task.task_id == "Task-A" and task.version == 1
    # the same id in another scope is another task
    other_scope = Scope("ws", "job", "e2")
    assert store.add_tasks(other_scope, [{"id": "task-a"}])[0].task_id == "task-a"
    assert store.get_task(SCOPE, "task-a").task_id == "Task-A"


def test_ids_that_differ_only_in_case_in_one_bulk_add_refuse_the_whole_add(store):
    with pytest.raises(ValidationError) as info:
        store.add_tasks(SCOPE, [{"id": "x1"}, {"id": "Dup"}, {"id": "dUP"}])
    assert info.value.field == "tasks[2].id"
    for task_id in ("x1", "Dup"):
        with pytest.raises(TaskNotFound):
            store.get_task(SCOPE, task_id)


def test_commands_refuse_malformed_task_ids(store):
    with pytest.raises(ValidationError) as info:
        store.transition(SCOPE, "not an id", "running")
    assert info.value.field == "taskId"
    with pytest.raises(ValidationError):
        store.get_task(SCOPE, "x" * 65)


@pytest.mark.parametrize(
    "spec, outcomes",
    [
        ({"id": "t"}, ["failed"]),  # 0 retries by default
        ({"id": "t", "constraints": {"maxTaskRetryCount": 0}}, ["failed"]),
        ({"id": "t", "constraints": {"maxTaskRetryCount": 2}}, ["pending", "pending", "failed"]),
        ({"id": "t", "maxRetries": 1}, ["pending", "failed"]),  # Blaxel
        ({"id": "t", "constraints": {"maxTaskRetryCount": 1}, "maxRetries": 5}, ["pending", "failed"]),
        ({"id": "t", "constraints": {"maxTaskRetryCount": -1}}, ["pending"] * 6),  # unlimited
    ],
)
def test_failures_are_retried_while_retries_are_left(store, spec, outcomes):
    store.add_task(SCOPE, spec)
    for attempt, expected in enumerate(outcomes, 1):
        store.transition(SCOPE, "t", "running")
        task = store.transition(SCOPE, "t", "failed", exit_code=attempt)
        assert task.state.value == expected
        retried = outcomes[:attempt].count("pending")
        assert task.retry_count == retried
        last = store.history(SCOPE, "t")[-1].data
        assert (last["from"], last["to"], last["exitCode"], last["retryCount"]) == ("running", expected, attempt,
                                                                                   retried)
    assert task.requeue_count == 0


def test_requeue_from_starting_counts_a_requeue_not_a_retry(store):
    store.add_task(SCOPE, {"id": "t", "constraints": {"maxTaskRetryCount": 3}})
    store.transition(SCOPE, "t", "starting")
    task = store.transition(SCOPE, "t", "pending")
    assert (task.state, task.requeue_count, task.retry_count) == (P, 1, 0)
    store.transition(SCOPE, "t", "starting")
    task = store.transition(SCOPE, "t", "pending")
    assert task.requeue_count == 2 and task.last_requeue_time is not None
    assert store.history(SCOPE, "t")[-1].data["cause"] == "requeue"


def test_terminate_cancels_an_unfinished_task_and_is_refused_for_a_finished_one(store):
    store.add_tasks(SCOPE, [{"id": f"t{i}"} for i in range(4)])
    store.transition(SCOPE, "t1", "starting")
    store.transition(SCOPE, "t2", "running")
    store.transition(SCOPE, "t3", "running")
    store.transition(SCOPE, "t3", "stopping")
    for i in range(4):
        task = store.terminate(SCOPE, f"t{i}", reason="user")
        assert task.state is CANC and task.result == "failure"
    store.add_task(SCOPE, {"id": "done"})
    store.transition(SCOPE, "done", "running")
    store.transition(SCOPE, "done", "succeeded", exit_code=0)
    for task_id, current in (("done", "succeeded"), ("t0", "cancelled")):
        before = store.get_task(SCOPE, task_id)
        with pytest.raises(IllegalTransition) as info:
            store.terminate(SCOPE, task_id)
        assert (info.value.task_id, info.value.current, info.value.requested) == (task_id, current, "cancelled")
        assert store.get_task(SCOPE, task_id).version == before.version


@pytest.mark.parametrize("finish", ["failed", "cancelled"])
def test_reactivate_puts_a_failed_or_cancelled_task_back_to_pending_with_retries_reset(store, finish):
    store.add_task(SCOPE, {"id": "t", "constraints": {"maxTaskRetryCount": 1}})
    store.transition(SCOPE, "t", "running")
    assert store.transition(SCOPE, "t", "failed").retry_count == 1  # retried
    store.transition(SCOPE, "t", "running")
    task = store.transition(SCOPE, "t", finish)
    assert task.state.value == finish and task.retry_count == 1
    task = store.reactivate(SCOPE, "t")
    assert (task.state, task.retry_count, task.end_time, task.result) == (P, 0, None, None)
    assert store.history(SCOPE, "t")[-1].data["cause"] == "reactivate"
    store.transition(SCOPE, "t", "running")
    assert store.transition(SCOPE, "t", "failed").state is P  # the retry budget is back


def test_reactivate_of_a_succeeded_or_unfinished_task_is_refused(store):
    store.add_tasks(SCOPE, [{"id": "ok"}, {"id": "run"}])
    store.transition(SCOPE, "ok", "running")
    store.transition(SCOPE, "ok", "succeeded")
    store.transition(SCOPE, "run", "running")
    for task_id, state, version in (("ok", "succeeded", 3), ("run", "running", 2)):
        with pytest.raises(IllegalTransition) as info:
            store.reactivate(SCOPE, task_id)
        assert (info.value.current, info.value.requested) == (state, "pending")
        assert store.get_task(SCOPE, task_id).version == version


def test_an_illegal_transition_names_task_current_and_requested_state_and_writes_nothing(store):
    store.add_task(SCOPE, {"id": "My-Task"})
    before = store.history(SCOPE, "my-task")
    with pytest.raises(IllegalTransition) as info:
        store.transition(SCOPE, "my-task", "succeeded")
    err = info.value
    assert (err.task_id, err.current, err.requested) == ("My-Task", "pending", "succeeded")
    message = str(err)
    assert "'My-Task'" in message and "pending" in message and "succeeded" in message
    assert store.history(SCOPE, "my-task") == before


def test_transition_events_record_from_to_time_and_details(store):
    store.add_task(SCOPE, {"id": "t"})
    store.transition(SCOPE, "t", "running", node_info={"nodeId": "n1", "poolId": "p"})
    store.transition(
        SCOPE, "t", "failed", exit_code=3,
        failure_info={"category": "usererror", "code": "E", "message": "boom"},
    )
    added, started, failed = store.history(SCOPE, "t")
    assert started.data["from"] == "pending" and started.data["to"] == "running"
    assert started.data["nodeInfo"] == {"nodeId": "n1", "poolId": "p"}
    assert failed.data["from"] == "running" and failed.data["to"] == "failed"
    assert failed.data["exitCode"] == 3 and failed.data["result"] == "failure"
    assert failed.data["failureInfo"]["code"] == "E"
    assert failed.data["retryCount"] == 0 and failed.data["requeueCount"] == 0
    assert all(e.data["at"].endswith("Z") for e in (added, started, failed))


def test_malformed_transition_details_are_refused_naming_the_field(store):
    store.add_task(SCOPE, {"id": "t"})
    with pytest.raises(ValidationError) as info:
        store.transition(SCOPE, "t", "running", failure_info={"category": "oops"})
    assert info.value.field == "failureInfo.category"
    with pytest.raises(ValidationError) as info:
        store.transition(SCOPE, "t", "running", node_info={"nodeId": "n", "rack": 1})
    assert info.value.field == "nodeInfo.rack"
    with pytest.raises(ValidationError) as info:
        store.transition(SCOPE, "t", "running", exit_code=2**31)
    assert info.value.field == "exitCode"
    with pytest.raises(ValidationError) as info:
        store.transition(SCOPE, "t", "finished")
    assert info.value.field == "to"
    assert store.get_task(SCOPE, "t").version == 1


def test_blaxel_conditions_are_recorded_and_replaced_by_type(store):
    store.add_task(SCOPE, {"id": "t"})
    store.record_condition(SCOPE, "t", {"type": "Ready", "state": "False", "reason": "Pulling"})
    store.record_condition(SCOPE, "t", {"type": "Scheduled", "state": "True"})
    task = store.record_condition(SCOPE, "t", {"type": "Ready", "state": "True"})
    assert task.version == 4 and task.state is P
    assert list(task.conditions) == [{"type": "Scheduled", "state": "True"}, {"type": "Ready", "state": "True"}]
    with pytest.raises(ValidationError) as info:
        store.record_condition(SCOPE, "t", {"type": "Ready", "colour": "red"})
    assert info.value.field == "condition.colour"


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"displayName": "a\x00b"}, "displayName"),
        ({"commandLine": "\x00"}, "commandLine"),
        ({"labels": {"stage": "x\x00"}}, "labels.stage"),
        ({"resourceFiles": [{"filePath": "in\x00.txt"}]}, "resourceFiles[0].filePath"),
    ],
)
def test_nul_characters_are_refused_on_both_engines_alike(store, patch, field):
    with pytest.raises(ValidationError) as info:
        store.add_task(SCOPE, {"id": "t", **patch})
    assert info.value.field == field and "NUL" in str(info.value)
    with pytest.raises(TaskNotFound):
        store.get_task(SCOPE, "t")


def test_nul_characters_in_transition_details_and_request_ids_are_refused(store):
    store.add_task(SCOPE, {"id": "t"})
    with pytest.raises(ValidationError) as info:
        store.transition(SCOPE, "t", "running", message="half\x00way")
    assert info.value.field == "message"
    with pytest.raises(ValidationError) as info:
        store.transition(SCOPE, "t", "running", request_id="r\x00")
    assert info.value.field == "requestId"
    assert store.get_task(SCOPE, "t").version == 1


def test_lone_surrogates_in_transition_details_and_request_ids_are_refused(store):
    store.add_task(SCOPE, {"id": "t"})
    for kwargs, field in [
        ({"reason": "half\ud800way"}, "reason"),
        ({"message": "\udfff"}, "message"),
        ({"request_id": "r-\ud800"}, "requestId"),
    ]:
        with pytest.raises(ValidationError) as info:  # was a TypeError (UnicodeEncodeError) from the encoder
            store.transition(SCOPE, "t", "running", **kwargs)
        assert info.value.field == field
    with pytest.raises(ValidationError) as info:
        store.transition_many(SCOPE, [("t", "running", {"message": "\ud800"})])
    assert info.value.field == "changes[0].message"
    with pytest.raises(ValidationError) as info:
        store.add_task(SCOPE, {"id": "u"}, request_id="\udc00")
    assert info.value.field == "requestId"
    assert store.get_task(SCOPE, "t").version == 1 and store.log.head().position == 1
    assert store.transition(SCOPE, "t", "running", message="déjà vu ✓", request_id="r-é").status_message == "déjà vu ✓"


# -- several transitions at once ----------------------------------------------------------------------------------


def _everything(store) -> tuple:
    """The scope's tasks (every field) and count summary: what a refused call must leave as it was."""
    tasks = {t.task_id: t for t in store.queries.list_tasks(SCOPE, limit=200).items}
    summary = store.queries.counts(SCOPE, validate=False)
    return tasks, dict(summary.states), dict(summary.slots), store.log.head()


@pytest.mark.parametrize(
    ("changes", "error", "field"),
    [
        ([], ValidationError, "changes"),
        ([("a", "running"), ("A", "starting")], ValidationError, "changes[1]"),  # the same task, however spelt
        ([("a", "running"), ("b", "flying")], ValidationError, "changes[1].to"),
        ([("a", "running"), ("b", "running", {"exitCode": 1, "colour": "red"})], ValidationError, "changes[1].colour"),
        ([("a", "running"), ("b", "running", {"exitCode": "one"})], ValidationError, "changes[1].exitCode"),
        ([("a", "running"), ("no-such-task", "running")], TaskNotFound, None),
        ([("a", "running"), ("b", "succeeded")], IllegalTransition, None),  # pending cannot succeed
    ],
    ids=["none", "twice", "not-a-state", "unknown-detail", "bad-detail", "unknown-task", "illegal"],
)
def test_transition_many_refuses_bad_input_as_a_whole_and_writes_nothing(store, changes, error, field):
    store.add_tasks(SCOPE, [{"id": "a"}, {"id": "b", "requiredSlots": 2}])
    before = _everything(store)
    with pytest.raises(error) as info:
        store.transition_many(SCOPE, changes)
    if field is not None:
        assert info.value.field == field
    assert _everything(store) == before  # not even the valid first change


def test_transition_many_with_a_request_id_is_applied_once(store):
    from eventstore import IdempotencyConflict

    store.add_tasks(SCOPE, [{"id": "a"}, {"id": "b"}])
    changes = [("a", "running"), ("b", "starting", {"message": "placed"})]
    first = store.transition_many(SCOPE, changes, request_id="move-1")
    after = _everything(store)
    again = store.transition_many(SCOPE, changes, request_id="move-1")  # a retry of a call whose answer was lost
    assert again == first and [t.state for t in again] == [R, ST]
    assert _everything(store) == after
    with pytest.raises(IdempotencyConflict):  # the same request id for other changes
        store.transition_many(SCOPE, [("a", "succeeded")], request_id="move-1")
    assert _everything(store) == after
