"""The Azure Batch dialect, driven by the unmodified azure-batch 15.x SDK with SharedKey (and, for what only the
older msrest SDK sends, by raw requests signed the same way)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime

import httpx
import orjson
import pytest
from azure.batch import models as bm
from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotModifiedError,
    ResourceNotFoundError,
)

from tests.test_api_fixtures import (  # noqa: F401 - fixtures
    HTTP,
    SECRET_A,
    SECRET_B,
    WS_A,
    api_server,
    batch_client,
    native_headers,
    shared_key_sign,
)


@pytest.fixture(scope="module")
def client(api_server):
    return batch_client(api_server)


def _task(task_id: str, **kwargs) -> bm.BatchTaskCreateOptions:
    return bm.BatchTaskCreateOptions(id=task_id, command_line=kwargs.pop("command_line", f"echo {task_id}"), **kwargs)


def _fill(client, job: str, n: int, prefix: str = "t") -> list[str]:
    ids = [f"{prefix}-{i:04d}" for i in range(n)]
    for start in range(0, n, 100):
        result = client.create_task_collection(
            job, bm.BatchTaskGroup(task_values=[_task(i) for i in ids[start : start + 100]])
        )
        assert {r.status for r in result.result_values} == {"success"}
    return ids


def _code(exc: HttpResponseError) -> str:
    return exc.error.code if exc.error is not None else ""


def _v1(server, job, path="", **kw):
    return f"{server.url}/v1/jobs/{job}/executions/default/tasks{path}"


# -- add, get ----------------------------------------------------------------------------------------------------------


def test_add_task_and_get_it_back_with_every_field(api_server, client):
    job = api_server.unique()
    spec = _task(
        "Task-1",
        display_name="align sample 1",
        command_line="/bin/sh -c 'align'",
        constraints=bm.BatchTaskConstraints(
            max_wall_clock_time=timedelta(hours=1), retention_time=timedelta(days=2), max_task_retry_count=3
        ),
        environment_settings=[bm.EnvironmentSetting(name="SAMPLE", value="1")],
        resource_files=[bm.ResourceFile(http_url="https://example.org/in.bam", file_path="in.bam")],
        required_slots=2,
        user_identity=bm.UserIdentity(auto_user=bm.AutoUserSpecification(scope="task", elevation_level="admin")),
        container_settings=bm.BatchTaskContainerSettings(image_name="ubuntu", container_run_options="--rm"),
        exit_conditions=bm.ExitConditions(
            exit_code_ranges=[
                bm.ExitCodeRangeMapping(start=2, end=4, exit_options=bm.ExitOptions(job_action="terminate"))
            ]
        ),
        multi_instance_settings=bm.MultiInstanceSettings(number_of_instances=2, coordination_command_line="coord"),
        depends_on=bm.BatchTaskDependencies(task_ids=["other"]),
        application_package_references=[bm.BatchApplicationPackageReference(application_id="app", version="1")],
        affinity_info=bm.BatchAffinityInfo(affinity_id="node-1"),
    )
    assert client.create_task(job, spec) is None
    task = client.get_task(job, "task-1")  # ids are unique without regard to case; case is preserved
    assert task.id == "Task-1"
    assert task.url == f"{api_server.url}/batch/jobs/{job}/tasks/Task-1"
    assert task.state == "active"
    assert task.etag and task.last_modified and task.creation_time
    assert task.creation_time.tzinfo is not None
    assert task.state_transition_time == task.creation_time
    assert task.previous_state is None
    assert task.display_name == "align sample 1"
    assert task.command_line == "/bin/sh -c 'align'"
    assert task.constraints.max_wall_clock_time == timedelta(hours=1)
    assert task.constraints.retention_time == timedelta(days=2)
    assert task.constraints.max_task_retry_count == 3
    assert task.required_slots == 2
    assert task.environment_settings[0].name == "SAMPLE"
    assert task.resource_files[0].http_url == "https://example.org/in.bam"
    assert task.user_identity.auto_user.elevation_level == "admin"
    assert task.container_settings.image_name == "ubuntu"
    assert task.exit_conditions.exit_code_ranges[0].exit_options.job_action == "terminate"
    assert task.multi_instance_settings.number_of_instances == 2
    assert task.depends_on.task_ids == ["other"]
    assert task.application_package_references[0].application_id == "app"
    assert task.affinity_info.affinity_id == "node-1"
    assert task.execution_info.retry_count == 0 and task.execution_info.requeue_count == 0


def test_get_task_headers_and_defaults(api_server, client):
    job = api_server.unique()
    client.create_task(job, _task("plain"))
    url = f"{api_server.url}/batch/jobs/{job}/tasks/plain?api-version=2025-06-01"
    r = HTTP.get(url, headers=shared_key_sign("GET", url, WS_A, SECRET_A, {"client-request-id": "abc-123"}))
    assert r.status_code == 200
    body = r.json()
    assert r.headers["etag"] == body["eTag"]
    assert parsedate_to_datetime(r.headers["last-modified"]) == datetime.fromisoformat(
        body["lastModified"].replace("Z", "+00:00")
    ).replace(microsecond=0)
    assert r.headers["request-id"] and r.headers["client-request-id"] == "abc-123"
    assert r.headers["content-type"].startswith("application/json")
    assert body["constraints"] == {
        "maxWallClockTime": "P10675199DT2H48M5.4775807S",
        "retentionTime": "P7D",
        "maxTaskRetryCount": 0,
    }
    assert body["requiredSlots"] == 1
    assert body["executionInfo"] == {"retryCount": 0, "requeueCount": 0}
    # If-None-Match with the current eTag: 304
    headers = shared_key_sign("GET", url, WS_A, SECRET_A, {"if-none-match": body["eTag"]})
    assert HTTP.get(url, headers=headers).status_code == 304


def test_add_existing_task_is_task_exists(api_server, client):
    job = api_server.unique()
    client.create_task(job, _task("dup"))
    with pytest.raises(ResourceExistsError) as info:
        client.create_task(job, _task("DUP"))
    assert _code(info.value) == "TaskExists"


def test_add_task_retry_with_same_client_request_id_is_idempotent(api_server):
    job = api_server.unique()
    url = f"{api_server.url}/batch/jobs/{job}/tasks?api-version=2025-06-01"
    body = orjson.dumps({"id": "once", "commandLine": "echo"})
    base = {
        "content-type": "application/json; odata=minimalmetadata",
        "client-request-id": "f00d-1",
        "content-length": str(len(body)),
    }
    first = HTTP.post(url, content=body, headers=shared_key_sign("POST", url, WS_A, SECRET_A, base))
    again = HTTP.post(url, content=body, headers=shared_key_sign("POST", url, WS_A, SECRET_A, base))
    assert first.status_code == again.status_code == 201
    assert first.headers["etag"] == again.headers["etag"]
    # the same client-request-id on a different request is no deduplication, and no error either
    other = orjson.dumps({"id": "other", "commandLine": "echo"})
    base["content-length"] = str(len(other))
    r = HTTP.post(url, content=other, headers=shared_key_sign("POST", url, WS_A, SECRET_A, base))
    assert r.status_code == 201
    r = HTTP.post(url, content=other, headers=shared_key_sign("POST", url, WS_A, SECRET_A, base))
    assert r.status_code == 409 and r.json()["code"] == "TaskExists"


def test_add_task_collection_with_partial_task_exists(api_server, client):
    job = api_server.unique()
    client.create_task(job, _task("a-1"))
    result = client.create_task_collection(
        job, bm.BatchTaskGroup(task_values=[_task("a-0"), _task("A-1"), _task("a-2"), _task("a-2")])
    )
    by_status = sorted((r.task_id, r.status, r.error.code if r.error else None) for r in result.result_values)
    assert by_status == [
        ("A-1", "clienterror", "TaskExists"),
        ("a-0", "success", None),
        ("a-2", "clienterror", "TaskExists"),
        ("a-2", "success", None),
    ]
    ok = [r for r in result.result_values if r.status == "success"]
    assert all(r.etag and r.last_modified and r.location.endswith(f"/jobs/{job}/tasks/{r.task_id}") for r in ok)
    # an invalid task is that task's client error only
    result = client.create_task_collection(
        job, bm.BatchTaskGroup(task_values=[_task("b-0"), bm.BatchTaskCreateOptions(id="b 1", command_line="x")])
    )
    statuses = {r.task_id: (r.status, r.error.code if r.error else None) for r in result.result_values}
    assert statuses == {"b-0": ("success", None), "b 1": ("clienterror", "InvalidPropertyValue")}


def test_a_retried_task_collection_gets_its_first_answer(api_server, client):
    """The same Add Task Collection again with its client-request-id (a response lost on the way): the tasks it
    added are successes again with their first eTag, not TaskExists; the other items are answered as the first
    time; nothing is added twice. Another request id adding one of them gets TaskExists."""
    job = api_server.unique()
    client.create_task(job, _task("there-before"))
    url = f"{api_server.url}/batch/jobs/{job}/addtaskcollection?api-version=2025-06-01"
    body = orjson.dumps({"value": [{"id": "c-0", "commandLine": "echo"}, {"id": "there-before", "commandLine": "x"},
                                   {"id": "c 1", "commandLine": "x"}, {"id": "c-2", "commandLine": "echo"}]})

    def post(request_id: str) -> list[tuple]:
        headers = {"content-type": "application/json; odata=minimalmetadata", "client-request-id": request_id,
                   "content-length": str(len(body))}
        r = HTTP.post(url, content=body, headers=shared_key_sign("POST", url, WS_A, SECRET_A, headers))
        assert r.status_code == 200, r.text
        return [(v["taskId"], v["status"], v.get("error", {}).get("code"), v.get("eTag"), v.get("lastModified"))
                for v in r.json()["value"]]

    first = post("coll-1")
    assert [(t, st, code) for t, st, code, _, _ in first] == [
        ("c-0", "success", None), ("there-before", "clienterror", "TaskExists"),
        ("c 1", "clienterror", "InvalidPropertyValue"), ("c-2", "success", None),
    ]
    client.terminate_task(job, "c-0")  # the task moves on; the retry still gets the first answer
    assert post("coll-1") == first
    assert [st for _, st, _, _, _ in post("coll-2")] == ["clienterror"] * 4
    assert len(list(client.list_tasks(job))) == 3


def test_create_tasks_helper_chunks_and_retries_are_safe(api_server, client):
    job = api_server.unique()
    tasks = [_task(f"bulk-{i:03d}") for i in range(230)]
    client.create_tasks(job, tasks[:50])
    client.create_tasks(job, tasks)  # the first 50 come back TaskExists, which the helper counts as success
    assert client.get_job_task_counts(job).task_counts.active == 230


def test_collection_over_one_megabyte_is_halved_by_the_helper(api_server, client):
    job = api_server.unique()
    big = "x" * 15_000
    client.create_tasks(job, [_task(f"big-{i:03d}", command_line=big) for i in range(100)])
    assert client.get_job_task_counts(job).task_counts.active == 100
    with pytest.raises(HttpResponseError) as info:
        client.create_task_collection(job, bm.BatchTaskGroup(task_values=[_task(f"n-{i}") for i in range(101)]))
    assert info.value.status_code == 413 and _code(info.value) == "RequestBodyTooLarge"


# -- list --------------------------------------------------------------------------------------------------------------


def test_list_pages_through_next_links(api_server, client):
    job = api_server.unique()
    ids = _fill(client, job, 25)
    pages = list(client.list_tasks(job, max_results=10).by_page())
    assert [len(list(p)) for p in pages] == [10, 10, 5]
    listed = [t.id for t in client.list_tasks(job, max_results=10)]
    assert listed == ids
    assert [t.id for t in client.list_tasks(job)] == ids  # default maxresults 1000: one page


def test_list_with_filter_and_select_across_pages(api_server, client):
    job = api_server.unique()
    ids = _fill(client, job, 30)
    for task_id in ids[:14]:
        client.terminate_task(job, task_id)
    seen = list(client.list_tasks(job, max_results=4, filter="state eq 'completed'", select=["id", "state"]))
    assert [t.id for t in seen] == ids[:14]
    assert all(t.state == "completed" and t.command_line is None and t.url is None for t in seen)
    assert all(set(t.keys()) == {"id", "state"} for t in seen)
    pages = list(client.list_tasks(job, max_results=4, filter="state eq 'completed'").by_page())
    assert len(pages) >= 3
    # or / and / startswith / parentheses, and the result of a terminated task
    flt = "(startswith(id,'t-001') or id eq 't-0000') and executionInfo/result eq 'failure'"
    assert sorted(t.id for t in client.list_tasks(job, filter=flt)) == ["t-0000"] + [f"t-001{i}" for i in range(4)]
    active = list(client.list_tasks(job, max_results=7, filter="state ne 'completed'", select=["id"]))
    assert [t.id for t in active] == ids[14:]


def test_list_filters_on_times_exit_codes_and_results(api_server, client):
    job = api_server.unique()
    h = native_headers()
    r = HTTP.post(_v1(api_server, job), headers=h, json={"tasks": [{"id": f"e-{i}"} for i in range(6)]})
    assert r.status_code == 201
    created = r.json()["tasks"][0]["createdAt"]
    for i in range(6):
        for to in ("running", "succeeded" if i % 2 == 0 else "failed"):
            body = {"to": to, **({"exitCode": i} if to != "running" else {})}
            assert HTTP.post(_v1(api_server, job, f"/e-{i}/transitions"), headers=h, json=body).status_code == 200

    def ids(flt):
        return sorted(t.id for t in client.list_tasks(job, filter=flt))

    assert ids("executionInfo/exitCode ge 4") == ["e-4", "e-5"]
    assert ids("executionInfo/exitCode ne 0 and executionInfo/result eq 'success'") == ["e-2", "e-4"]
    assert ids("executionInfo/result eq 'failure'") == ["e-1", "e-3", "e-5"]
    assert ids(f"creationTime eq DateTime'{created}'") == [f"e-{i}" for i in range(6)]
    assert ids(f"creationTime lt {created}") == []
    assert ids("executionInfo/endTime gt DateTime'2000-01-01T00:00:00Z' and executionInfo/startTime ge 2000-01-01") == [
        f"e-{i}" for i in range(6)
    ]
    assert ids(
        "lastModifiedTime ge '2000-01-01T00:00:00Z' and stateTransitionTime le DateTime'2999-01-01T00:00:00Z'"
    ) == [f"e-{i}" for i in range(6)]
    assert ids("state eq 'running' or state eq 'preparing' or state eq 'active'") == []


def test_a_task_waiting_to_retry_shows_no_start_time_exit_code_or_failure_info(api_server, client):
    # Seed 000 (List Tasks), the task "waiting to run" after 3383 retries: state active, and executionInfo holds
    # retryCount, lastRetryTime and requeueCount only; exitCode and failureInfo belong to a completed task, startTime
    # to a running or completed one. The store keeps the last attempt's; Batch neither shows nor filters on them.
    job = api_server.unique()
    h = native_headers()
    spec = {"id": "w", "constraints": {"maxTaskRetryCount": 1}}
    assert HTTP.post(_v1(api_server, job), headers=h, json={"tasks": [spec]}).status_code == 201
    failure = {"category": "usererror", "code": "Killed", "message": "OOM"}
    for body in ({"to": "running"}, {"to": "failed", "exitCode": 137, "failureInfo": failure}):
        assert HTTP.post(_v1(api_server, job, "/w/transitions"), headers=h, json=body).status_code == 200
    task = client.get_task(job, "w")
    info = task.execution_info
    assert task.state == "active" and info.retry_count == 1 and info.last_retry_time is not None
    assert (info.start_time, info.exit_code, info.failure_info, info.result) == (None, None, None, None)

    def ids(flt):
        return [t.id for t in client.list_tasks(job, filter=flt)]

    assert ids("executionInfo/exitCode eq 137") == [] and ids("executionInfo/exitCode ne 137") == ["w"]
    assert ids("executionInfo/startTime ge 2000-01-01") == [] and ids("executionInfo/startTime ne 2000-01-01") == ["w"]
    # The next attempt runs: startTime again (this attempt's); it fails for good: exitCode and failureInfo again.
    for body in ({"to": "running"}, {"to": "failed", "exitCode": 1, "failureInfo": failure}):
        assert HTTP.post(_v1(api_server, job, "/w/transitions"), headers=h, json=body).status_code == 200
    info = client.get_task(job, "w").execution_info
    assert info.start_time is not None and (info.exit_code, info.result) == (1, "failure")
    assert info.failure_info.code == "Killed"
    assert ids("executionInfo/exitCode eq 1") == ["w"] and ids("executionInfo/startTime ge 2000-01-01") == ["w"]
    # Reactivated: active again, with nothing of the finished attempt.
    client.reactivate_task(job, "w")
    info = client.get_task(job, "w").execution_info
    assert (info.start_time, info.end_time, info.exit_code, info.failure_info) == (None, None, None, None)


def test_list_errors(api_server, client):
    job = api_server.unique()
    client.create_task(job, _task("x"))
    for flt in ("state eq", "state gt 'active'", "bogus eq 1", "id eq 3", "state eq 'done'", "(id eq 'x'", "id eq 'x"):
        with pytest.raises(HttpResponseError) as info:
            list(client.list_tasks(job, filter=flt))
        assert info.value.status_code == 400 and _code(info.value) == "InvalidQueryParameterValue", flt
    for n in (0, 1001):
        with pytest.raises(HttpResponseError) as info:
            list(client.list_tasks(job, max_results=n))
        assert info.value.status_code == 400 and _code(info.value) == "OutOfRangeQueryParameterValue"
    with pytest.raises(HttpResponseError) as info:
        list(client.list_tasks(job, select=["id", "nope"]))
    assert _code(info.value) == "InvalidQueryParameterValue"
    with pytest.raises(ResourceNotFoundError) as info:
        list(client.list_tasks(api_server.unique()))
    assert _code(info.value) == "JobNotFound"


def test_skiptoken_carries_the_whole_query_and_is_refused_elsewhere(api_server, client):
    job = api_server.unique()
    other = api_server.unique()
    _fill(client, job, 9)
    _fill(client, other, 3)
    url = f"{api_server.url}/batch/jobs/{job}/tasks?api-version=2024-02-01.19.0&maxresults=2&%24select=id%2Cstate&%24filter=startswith%28id%2C%27t-%27%29"
    r = HTTP.get(url, headers=shared_key_sign("GET", url, WS_A, SECRET_A, {}))
    assert r.status_code == 200
    link = r.json()["odata.nextLink"]
    assert link.startswith(f"{api_server.url}/batch/jobs/{job}/tasks?api-version=2024-02-01.19.0&")
    assert "maxresults" not in link and "filter" not in link
    got = [t["id"] for t in r.json()["value"]]
    while link:  # the 14.x SDK follows the link verbatim
        r = HTTP.get(link, headers=shared_key_sign("GET", link, WS_A, SECRET_A, {}))
        assert r.status_code == 200 and all(set(t) == {"id", "state"} for t in r.json()["value"])
        got += [t["id"] for t in r.json()["value"]]
        link = r.json().get("odata.nextLink")
    assert got == [f"t-{i:04d}" for i in range(9)]
    # the token of one job's list is refused on another's
    token = httpx.URL(
        HTTP.get(url, headers=shared_key_sign("GET", url, WS_A, SECRET_A, {})).json()["odata.nextLink"]
    ).params["$skiptoken"]
    bad = f"{api_server.url}/batch/jobs/{other}/tasks?api-version=2025-06-01&$skiptoken={token}"
    r = HTTP.get(bad, headers=shared_key_sign("GET", bad, WS_A, SECRET_A, {}))
    assert r.status_code == 400 and r.json()["code"] == "InvalidQueryParameterValue"
    bad = f"{api_server.url}/batch/jobs/{job}/tasks?api-version=2025-06-01&$skiptoken=garbage"
    r = HTTP.get(bad, headers=shared_key_sign("GET", bad, WS_A, SECRET_A, {}))
    assert r.status_code == 400 and r.json()["code"] == "InvalidQueryParameterValue"
    # beside the token, its own query may be given again, another is refused
    link = HTTP.get(url, headers=shared_key_sign("GET", url, WS_A, SECRET_A, {})).json()["odata.nextLink"]
    same = f"{link}&maxresults=2&$select=id,state&$filter=startswith(id,'t-')"
    r = HTTP.get(same, headers=shared_key_sign("GET", same, WS_A, SECRET_A, {}))
    assert r.status_code == 200 and [t["id"] for t in r.json()["value"]] == ["t-0002", "t-0003"]
    for extra, name in (("$filter=startswith(id,'u-')", "$filter"), ("$select=id", "$select"),
                        ("$expand=stats", "$expand"), ("maxresults=1000", "maxresults")):
        bad = f"{link}&{extra}"
        r = HTTP.get(bad, headers=shared_key_sign("GET", bad, WS_A, SECRET_A, {}))
        assert r.status_code == 400 and r.json()["code"] == "InvalidQueryParameterValue", (extra, r.text)
        assert {v["key"]: v["value"] for v in r.json()["values"]}["QueryParameterName"] == name


def test_msrest_sdk_wire_shape(api_server):
    """What azure-batch 14.x sends: api-version 2024-02-01.19.0, charset in the content type, PT1H durations,
    return-client-request-id false, timeout=30."""
    job = api_server.unique()
    url = f"{api_server.url}/batch/jobs/{job}/tasks?api-version=2024-02-01.19.0&timeout=30"
    body = orjson.dumps({"id": "old", "commandLine": "echo", "constraints": {"maxWallClockTime": "PT1H"}})
    headers = {
        "content-type": "application/json; odata=minimalmetadata; charset=utf-8",
        "accept-language": "en-US",
        "client-request-id": "11111111-2222-3333-4444-555555555555",
        "return-client-request-id": "false",
        "content-length": str(len(body)),
    }
    r = HTTP.post(url, content=body, headers=shared_key_sign("POST", url, WS_A, SECRET_A, headers))
    assert r.status_code == 201, r.text
    assert "client-request-id" not in r.headers and r.headers["request-id"]
    get = f"{api_server.url}/batch/jobs/{job}/tasks/old?api-version=2024-02-01.19.0&timeout=30"
    r = HTTP.get(get, headers=shared_key_sign("GET", get, WS_A, SECRET_A, {}))
    assert r.json()["constraints"]["maxWallClockTime"] == "PT1H"


# -- counts, terminate, reactivate -------------------------------------------------------------------------------------


def test_counts_terminate_and_reactivate(api_server, client):
    job = api_server.unique()
    h = native_headers()
    specs = [{"id": f"c-{i}", "requiredSlots": 2 if i < 2 else 1} for i in range(6)]
    assert HTTP.post(_v1(api_server, job), headers=h, json={"tasks": specs}).status_code == 201
    for task_id, path in {
        "c-0": ["starting"],
        "c-1": ["running"],
        "c-2": ["running", "succeeded"],
        "c-3": ["running", "failed"],
    }.items():
        for to in path:
            assert (
                HTTP.post(_v1(api_server, job, f"/{task_id}/transitions"), headers=h, json={"to": to}).status_code
                == 200
            )
    client.terminate_task(job, "c-4")
    counts = client.get_job_task_counts(job)
    assert counts.task_counts.as_dict() == {"active": 1, "running": 2, "completed": 3, "succeeded": 1, "failed": 2}
    assert counts.task_slot_counts.as_dict() == {"active": 1, "running": 4, "completed": 3, "succeeded": 1, "failed": 2}
    assert counts["validationStatus"] == "validated"
    terminated = client.get_task(job, "c-4")
    assert terminated.state == "completed" and terminated.previous_state == "active"
    assert terminated.execution_info.result == "failure" and terminated.execution_info.end_time
    assert client.get_task(job, "c-0").state == "preparing"
    # terminate a completed task: TaskCompleted
    with pytest.raises(ResourceExistsError) as info:
        client.terminate_task(job, "c-2")
    assert _code(info.value) == "TaskCompleted"
    # reactivate: failed and terminated tasks go back to active with retries reset; others refused
    client.reactivate_task(job, "c-3")
    client.reactivate_task(job, "c-4")
    again = client.get_task(job, "c-4")
    assert again.state == "active" and again.execution_info.retry_count == 0 and again.execution_info.end_time is None
    with pytest.raises(ResourceExistsError) as info:
        client.reactivate_task(job, "c-2")
    assert _code(info.value) == "TaskSucceeded"
    with pytest.raises(ResourceExistsError) as info:
        client.reactivate_task(job, "c-1")
    assert _code(info.value) == "TaskNotCompleted"
    with pytest.raises(ResourceNotFoundError) as info:
        client.terminate_task(job, "missing")
    assert _code(info.value) == "TaskNotFound"
    with pytest.raises(ResourceNotFoundError) as info:
        client.get_job_task_counts(api_server.unique())
    assert _code(info.value) == "JobNotFound"


def test_conditional_terminate(api_server, client):
    job = api_server.unique()
    client.create_task(job, _task("cond"))
    stale = client.get_task(job, "cond").etag
    client.terminate_task(job, "cond")
    client.reactivate_task(job, "cond")
    with pytest.raises(ResourceModifiedError) as info:
        client.terminate_task(job, "cond", etag=stale, match_condition=MatchConditions.IfNotModified)
    assert info.value.status_code == 412 and _code(info.value) == "ConditionNotMet"
    fresh = client.get_task(job, "cond").etag
    client.terminate_task(job, "cond", etag=fresh, match_condition=MatchConditions.IfNotModified)
    assert client.get_task(job, "cond").state == "completed"
    # dates: not modified since a time after the change is a 304 for a read, a 412 for a command
    task = client.get_task(job, "cond")
    later, earlier = task.last_modified + timedelta(seconds=2), task.last_modified - timedelta(seconds=2)
    with pytest.raises((ResourceModifiedError, ResourceNotModifiedError)) as info:  # the SDK maps 304 so
        client.get_task(job, "cond", if_modified_since=later)
    assert info.value.status_code == 304
    assert client.get_task(job, "cond", if_modified_since=earlier).id == "cond"
    with pytest.raises(HttpResponseError) as info:
        client.reactivate_task(job, "cond", if_unmodified_since=earlier)
    assert info.value.status_code == 412 and _code(info.value) == "ConditionNotMet"
    client.reactivate_task(job, "cond", if_unmodified_since=later)
    assert client.get_task(job, "cond").state == "active"


def test_conditional_headers_on_the_wire(api_server, client):
    """What no SDK call above sends: a weak eTag, an eTag that is not one of ours, If-None-Match and
    If-Modified-Since on a command (412, where a read gets 304), and a date header that is not a date (400)."""
    job = api_server.unique()
    client.create_task(job, _task("wire"))
    task = client.get_task(job, "wire")
    base = f"{api_server.url}/batch/jobs/{job}/tasks/wire"

    def call(method: str, suffix: str, headers: dict[str, str]):
        url = f"{base}{suffix}?api-version=2025-06-01"
        extra = {"content-length": "0"} if method == "POST" else {}
        return HTTP.request(method, url, headers=shared_key_sign(method, url, WS_A, SECRET_A, {**extra, **headers}))

    r = call("GET", "", {"If-None-Match": f'W/"{task.etag}"'})
    assert r.status_code == 304 and r.headers["etag"] == task.etag
    later = format_datetime((task.last_modified + timedelta(seconds=2)).astimezone(UTC), usegmt=True)
    for headers in ({"If-Match": '"0xNOTHEX"'}, {"If-Match": '"abc"'}, {"If-None-Match": task.etag},
                    {"If-None-Match": "*"}, {"If-Modified-Since": later}):
        r = call("POST", "/terminate", headers)
        assert (r.status_code, r.json()["code"]) == (412, "ConditionNotMet"), headers
    assert client.get_task(job, "wire").state == "active"  # none of them terminated it
    r = call("GET", "", {"If-Modified-Since": "the day before yesterday"})
    assert (r.status_code, r.json()["code"]) == (400, "InvalidHeaderValue")
    values = {v["key"]: v["value"] for v in r.json()["values"]}
    assert values == {"HeaderName": "If-Modified-Since", "HeaderValue": "the day before yesterday"}
    r = call("POST", "/terminate", {"If-Match": f'W/"{task.etag}", "0x1F"'})  # any of a list may match
    assert r.status_code == 204 and client.get_task(job, "wire").state == "completed"


def test_expand_stats(api_server, client):
    job = api_server.unique()
    client.create_task(job, _task("s"))
    task = client.get_task(job, "s", expand=["stats"])
    assert task.task_statistics.url == task.url and task.task_statistics.wall_clock_time == timedelta(0)
    assert task.task_statistics.read_iops == 0 and task.task_statistics.start_time == task.creation_time
    listed = list(client.list_tasks(job, expand=["stats"], select=["id", "stats"]))
    assert listed[0].task_statistics.last_update_time == task.last_modified
    assert client.get_task(job, "s").task_statistics is None


# -- errors ------------------------------------------------------------------------------------------------------------


def test_not_found_and_bad_bodies(api_server, client):
    job = api_server.unique()
    with pytest.raises(ResourceNotFoundError) as info:
        client.get_task(job, "nothing")
    assert _code(info.value) == "JobNotFound"
    client.create_task(job, _task("here"))
    with pytest.raises(ResourceNotFoundError) as info:
        client.get_task(job, "nothing")
    assert _code(info.value) == "TaskNotFound"
    with pytest.raises(ResourceNotFoundError):
        client.get_task(job, "not a valid id!")
    with pytest.raises(HttpResponseError) as info:
        client.create_task(job, bm.BatchTaskCreateOptions(id="bad id", command_line="x"))
    assert info.value.status_code == 400 and _code(info.value) == "InvalidPropertyValue"
    assert {d.code: d.message for d in info.value.error.details}["PropertyName"] == "id"
    url = f"{api_server.url}/batch/jobs/{job}/tasks?api-version=2025-06-01"
    for body, code in (
        (b"{", "InvalidRequestBody"),
        (b"[]", "InvalidPropertyValue"),
        (b'{"id": "x"}', "MissingRequiredProperty"),
        (b'{"id": "x", "commandLine": "y", "constraints": {"maxWallClockTime": "soon"}}', "InvalidPropertyValue"),
        (b'{"id": "x", "commandLine": "y", "requiredSlots": "two"}', "InvalidPropertyValue"),
    ):
        headers = shared_key_sign(
            "POST", url, WS_A, SECRET_A, {"content-type": "application/json", "content-length": str(len(body))}
        )
        r = HTTP.post(url, content=body, headers=headers)
        assert r.status_code == 400 and r.json()["code"] == code, (body, r.text)
        assert r.json()["message"]["lang"] == "en-US" and r.headers["request-id"]


def test_authentication_failures(api_server):
    job = api_server.unique()
    for client in (batch_client(api_server, secret=SECRET_B), batch_client(api_server, workspace="nobody")):
        with pytest.raises(ClientAuthenticationError) as info:
            client.get_task(job, "x")
        assert _code(info.value) == "AuthenticationFailed"
    with pytest.raises(ClientAuthenticationError):
        batch_client(api_server).get_task(job, "x", ocp_date=datetime.now(UTC) - timedelta(hours=1))
    url = f"{api_server.url}/batch/jobs/{job}/tasks?api-version=2025-06-01"
    r = HTTP.get(url)
    assert r.status_code == 401 and r.json()["code"] == "AuthenticationFailed" and r.headers["request-id"]
    signed = shared_key_sign("GET", url, WS_A, SECRET_A, {})
    r = HTTP.get(url + "&maxresults=5", headers=signed)  # a query the signature does not cover
    assert r.status_code == 401
    nover = f"{api_server.url}/batch/jobs/{job}/tasks"
    r = HTTP.get(nover, headers=shared_key_sign("GET", nover, WS_A, SECRET_A, {}))
    assert r.status_code == 400 and r.json()["code"] == "MissingRequiredQueryParameter"


# -- found in review ---------------------------------------------------------------------------------------------------


def test_filter_and_maxresults_with_numbers_int_cannot_take(api_server, client):
    """An exit code of more digits than Python converts (4,300) was a ValueError and a 500; "1_0" was maxresults 10."""
    job = api_server.unique()
    client.create_task(job, _task("n"))
    for flt in ("executionInfo/exitCode eq " + "1" * 5000, f"executionInfo/exitCode lt '-{'9' * 5000}'"):
        with pytest.raises(HttpResponseError) as info:
            list(client.list_tasks(job, filter=flt))
        assert info.value.status_code == 400 and _code(info.value) == "InvalidQueryParameterValue"
    assert [t.id for t in client.list_tasks(job, filter="executionInfo/exitCode eq -0000000000000000001")] == []
    for value, code in (("1_0", "InvalidQueryParameterValue"), ("\u0663", "InvalidQueryParameterValue"),
                        ("9" * 5000, "OutOfRangeQueryParameterValue")):
        url = f"{api_server.url}/batch/jobs/{job}/tasks?api-version=2025-06-01&maxresults={value}"
        r = HTTP.get(url, headers=shared_key_sign("GET", url, WS_A, SECRET_A, {}))
        assert (r.status_code, r.json()["code"]) == (400, code), value


def test_if_none_match_decides_over_if_modified_since(api_server, client):
    """Beside If-None-Match, If-Modified-Since is ignored (RFC 9110 13.2.2): an eTag that differs shows a change made
    within the second of the Last-Modified the client holds, which the date cannot."""
    job = api_server.unique()
    client.create_task(job, _task("fresh"))
    stale = client.get_task(job, "fresh").etag
    client.terminate_task(job, "fresh")  # a change in the same second, most likely
    task = client.get_task(job, "fresh")
    later = format_datetime((task.last_modified + timedelta(seconds=2)).astimezone(UTC), usegmt=True)
    url = f"{api_server.url}/batch/jobs/{job}/tasks/fresh?api-version=2025-06-01"
    r = HTTP.get(url, headers=shared_key_sign("GET", url, WS_A, SECRET_A, {"If-None-Match": stale,
                                                                          "If-Modified-Since": later}))
    assert r.status_code == 200 and r.json()["state"] == "completed"
    r = HTTP.get(url, headers=shared_key_sign("GET", url, WS_A, SECRET_A, {"If-None-Match": task.etag,
                                                                          "If-Modified-Since": later}))
    assert r.status_code == 304
    r = HTTP.get(url, headers=shared_key_sign("GET", url, WS_A, SECRET_A, {"If-Modified-Since": later}))
    assert r.status_code == 304


def test_retried_conditional_command_gets_the_first_answer(api_server, client):
    """A conditional terminate retried with its client-request-id (its answer lost) finds the eTag it named moved on by
    its own change: it gets the first answer (204), not 412; another request with that eTag is still refused."""
    job = api_server.unique()
    client.create_task(job, _task("once"))
    first_etag = client.get_task(job, "once").etag
    url = f"{api_server.url}/batch/jobs/{job}/tasks/once/terminate?api-version=2025-06-01"

    def terminate(request_id: str, **conditions: str):
        headers = {"content-length": "0", "client-request-id": request_id, **conditions}
        return HTTP.post(url, headers=shared_key_sign("POST", url, WS_A, SECRET_A, headers))

    first = terminate("aaaaaaaa-0000-0000-0000-000000000001", **{"If-Match": first_etag})
    again = terminate("aaaaaaaa-0000-0000-0000-000000000001", **{"If-Match": first_etag})
    assert first.status_code == again.status_code == 204
    assert first.headers["etag"] == again.headers["etag"]
    client.reactivate_task(job, "once")
    for conditions in ({"If-Match": first_etag}, {"If-None-Match": "*"}):
        r = terminate("aaaaaaaa-0000-0000-0000-000000000002", **conditions)
        assert (r.status_code, r.json()["code"]) == (412, "ConditionNotMet"), conditions
    r = HTTP.post(url, headers=shared_key_sign("POST", url, WS_A, SECRET_A, {"content-length": "0",
                                                                            "If-Match": first_etag}))
    assert (r.status_code, r.json()["code"]) == (412, "ConditionNotMet")  # without a client-request-id
    assert client.get_task(job, "once").state == "active"  # none of the refused ones wrote anything
