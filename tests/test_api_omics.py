"""The HealthOmics dialect, driven by boto3's unmodified omics client (SigV4, Config(inject_host_prefix=False))."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote, urlencode

import httpx
import pytest
from botocore.exceptions import ClientError, ParamValidationError

from tests.test_api_fixtures import (  # noqa: F401 - fixtures
    HTTP,
    KEY_A,
    SECRET_A,
    SECRET_B,
    api_server,
    native_headers,
    omics_client,
)


@pytest.fixture(scope="module")
def omics(api_server):
    return omics_client(api_server)


def _add(server, run: str, n: int) -> list[dict]:
    specs = [
        {
            "id": f"task-{i:03d}",
            "displayName": f"call variants {i}",
            "resources": {"cpus": 4, "memory": 16, "gpus": 1 if i == 0 else 0, "instanceType": "omics.c.xlarge"},
            "containerSettings": {"imageName": "ecr/caller:1"},
        }
        for i in range(n)
    ]
    r = HTTP.post(
        f"{server.url}/v1/jobs/{run}/executions/default/tasks", headers=native_headers(), json={"tasks": specs}
    )
    assert r.status_code == 201, r.text
    return r.json()["tasks"]


def _move(server, run: str, task: str, *path: str, **extra) -> dict:
    body = {}
    for to in path:
        body = {"to": to, **(extra if to == path[-1] else {})}
        r = HTTP.post(
            f"{server.url}/v1/jobs/{run}/executions/default/tasks/{task}/transitions",
            headers=native_headers(),
            json=body,
        )
        assert r.status_code == 200, r.text
    return r.json()


def omics_call(server, path: str, query: dict) -> httpx.Response:
    """A SigV4-signed GET of what no boto3 call would send."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{server.url}/omics{path}?{urlencode(query, quote_via=quote)}"
    req = AWSRequest(method="GET", url=url)
    SigV4Auth(Credentials(KEY_A, SECRET_A), "omics", "us-east-1").add_auth(req)
    return HTTP.get(url, headers=dict(req.headers.items()))


def _error(exc: ClientError) -> tuple[int, str]:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]


def test_list_run_tasks_across_pages(api_server, omics):
    run = api_server.unique_run()
    added = _add(api_server, run, 23)
    pages = list(omics.get_paginator("list_run_tasks").paginate(id=run, PaginationConfig={"PageSize": 5}))
    assert [len(p["items"]) for p in pages] == [5, 5, 5, 5, 3]
    assert all(len(p["NextToken" if "NextToken" in p else "nextToken"]) <= 128 for p in pages[:-1])
    assert "nextToken" not in pages[-1]
    items = [i for p in pages for i in p["items"]]
    assert [i["taskId"] for i in items] == [str(t["number"]) for t in added]
    first = items[0]
    assert first["status"] == "PENDING" and first["name"] == "call variants 0"
    assert (first["cpus"], first["memory"], first["gpus"], first["instanceType"]) == (4, 16, 1, "omics.c.xlarge")
    assert first["cacheHit"] is False and first["uuid"]
    assert first["creationTime"].isoformat().startswith(added[0]["createdAt"][:19])
    one = omics.list_run_tasks(id=run, maxResults=100)
    assert len(one["items"]) == 23 and "nextToken" not in one


def test_status_filter_and_get(api_server, omics):
    run = api_server.unique_run()
    added = _add(api_server, run, 8)
    _move(api_server, run, "task-001", "running")
    _move(api_server, run, "task-002", "starting", "running", "succeeded", exitCode=0)
    failed = _move(
        api_server,
        run,
        "task-003",
        "running",
        "failed",
        exitCode=2,
        failureInfo={"category": "usererror", "code": "OOM", "message": "out of memory"},
    )
    _move(api_server, run, "task-004", "cancelled")
    _move(api_server, run, "task-005", "running", "stopping", message="draining")
    statuses = {}
    for status in ("PENDING", "STARTING", "RUNNING", "STOPPING", "COMPLETED", "CANCELLED", "FAILED"):
        pages = omics.get_paginator("list_run_tasks").paginate(id=run, status=status, PaginationConfig={"PageSize": 2})
        statuses[status] = sorted(i["taskId"] for p in pages for i in p["items"])
    num = {t["id"]: str(t["number"]) for t in added}
    assert statuses == {
        "PENDING": sorted(num[f"task-{i:03d}"] for i in (0, 6, 7)),
        "STARTING": [],
        "RUNNING": [num["task-001"]],
        "STOPPING": [num["task-005"]],
        "COMPLETED": [num["task-002"]],
        "CANCELLED": [num["task-004"]],
        "FAILED": [num["task-003"]],
    }
    got = omics.get_run_task(id=run, taskId=num["task-003"])
    assert got["status"] == "FAILED" and got["failureReason"] == "out of memory"
    assert got["imageDetails"]["image"] == "ecr/caller:1"
    assert got["stopTime"].isoformat().startswith(failed["endTime"][:19])
    assert omics.get_run_task(id=run, taskId=num["task-005"])["statusMessage"] == "draining"


def test_errors(api_server, omics):
    run = api_server.unique_run()
    added = _add(api_server, run, 3)
    cases = [
        (lambda: omics.list_run_tasks(id=run, maxResults=101), 400, "ValidationException"),
        (lambda: omics.list_run_tasks(id=run, status="DONE"), 400, "ValidationException"),
        (lambda: omics.list_run_tasks(id=run, startingToken="not-a-token"), 400, "ValidationException"),
        (lambda: omics.list_run_tasks(id="abc"), 400, "ValidationException"),
        (lambda: omics.list_run_tasks(id=api_server.unique_run()), 404, "ResourceNotFoundException"),
        (lambda: omics.get_run_task(id=run, taskId="999999999999"), 404, "ResourceNotFoundException"),
        (lambda: omics.get_run_task(id=run, taskId="x1"), 400, "ValidationException"),
        (
            lambda: omics.get_run_task(id=api_server.unique_run(), taskId=str(added[0]["number"])),
            404,
            "ResourceNotFoundException",
        ),
    ]
    for call, status, code in cases:
        with pytest.raises(ClientError) as info:
            call()
        assert _error(info.value) == (status, code)
        assert info.value.response["Error"]["Message"]
    with pytest.raises(ParamValidationError):  # the client itself checks maxResults >= 1
        omics.list_run_tasks(id=run, maxResults=0)
    # a token of one query (status filter) is refused by another
    first = omics.list_run_tasks(id=run, maxResults=1)
    with pytest.raises(ClientError) as info:
        omics.list_run_tasks(id=run, maxResults=1, status="PENDING", startingToken=first["nextToken"])
    assert _error(info.value) == (400, "ValidationException")
    # a task of another run of the same workspace is not this run's
    other = api_server.unique_run()
    other_task = _add(api_server, other, 1)[0]
    with pytest.raises(ClientError) as info:
        omics.get_run_task(id=run, taskId=str(other_task["number"]))
    assert _error(info.value) == (404, "ResourceNotFoundException")


def test_signature_checks(api_server):
    run = api_server.unique_run()
    _add(api_server, run, 1)
    for client in (omics_client(api_server, secret=SECRET_B), omics_client(api_server, key_id="TSUNKNOWN")):
        with pytest.raises(ClientError) as info:
            client.list_run_tasks(id=run)
        assert _error(info.value)[0] == 403
    r = HTTP.get(f"{api_server.url}/omics/run/{run}/task")
    assert r.status_code == 403 and r.headers["x-amzn-ErrorType"] == "AccessDeniedException"
    assert set(r.json()) == {"message"}
    # a well-formed signature over a stale date is refused
    stamp, day = "20200101T000000Z", "20200101"
    host = api_server.url.removeprefix("http://")
    canonical = f"GET\n/omics/run/{run}/task\n\nhost:{host}\nx-amz-date:{stamp}\n\nhost;x-amz-date\n{hashlib.sha256(b'').hexdigest()}"
    scope = f"{day}/us-east-1/omics/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = f"AWS4{SECRET_A}".encode()
    for part in (day, "us-east-1", "omics", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    auth = f"AWS4-HMAC-SHA256 Credential={KEY_A}/{scope}, SignedHeaders=host;x-amz-date, Signature={sig}"
    r = HTTP.get(f"{api_server.url}/omics/run/{run}/task", headers={"Authorization": auth, "X-Amz-Date": stamp})
    assert r.status_code == 403 and "15 minutes" in r.json()["message"]


def test_ids_with_a_trailing_newline_are_refused(api_server, omics):
    """The id pattern is [0-9]+ over the whole value: "5\\n" is not task 5 (nor run R\\n a malformed *job*)."""
    run = api_server.unique_run()
    number = str(_add(api_server, run, 1)[0]["number"])
    for call, name in (
        (lambda: omics.get_run_task(id=run, taskId=number + "\n"), "taskId"),
        (lambda: omics.list_run_tasks(id=run + "\n"), "id"),
        (lambda: omics.get_run_task(id=run + "\n", taskId=number), "id"),
    ):
        with pytest.raises(ClientError) as info:
            call()
        assert _error(info.value) == (400, "ValidationException")
        assert f"at '{name}' failed to satisfy constraint" in info.value.response["Error"]["Message"]
    assert omics.get_run_task(id=run, taskId=number)["taskId"] == number


def test_validation_messages_are_worded_as_aws_words_them(api_server, omics):
    run = api_server.unique_run()
    _add(api_server, run, 1)
    prefix = "failed to satisfy constraint: Member must"
    enum = "[PENDING, STARTING, RUNNING, STOPPING, COMPLETED, CANCELLED, FAILED]"
    cases = [
        (
            {"maxResults": 101},
            f"1 validation error detected: Value '101' at 'maxResults' {prefix} have value less than or equal to 100",
        ),
        (
            {"status": "DONE"},
            f"1 validation error detected: Value 'DONE' at 'status' {prefix} satisfy enum value set: {enum}",
        ),
        (
            {"maxResults": 500, "status": "done"},
            f"2 validation errors detected: Value '500' at 'maxResults' {prefix} have value less than or equal to "
            f"100; Value 'done' at 'status' {prefix} satisfy enum value set: {enum}",
        ),
        (
            {"startingToken": "t" * 129},
            f"1 validation error detected: Value '{'t' * 129}' at 'startingToken' {prefix} have length less than "
            "or equal to 128",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(ClientError) as info:
            omics.list_run_tasks(id=run, **kwargs)
        assert _error(info.value) == (400, "ValidationException")
        assert info.value.response["Error"]["Message"] == message
    long_id = "1" * 19
    with pytest.raises(ClientError) as info:
        omics.get_run_task(id=run, taskId=long_id)
    assert info.value.response["Error"]["Message"] == (
        f"1 validation error detected: Value '{long_id}' at 'taskId' {prefix} have length less than or equal to 18"
    )
    with pytest.raises(ClientError) as info:
        omics.get_run_task(id="r1", taskId="t1")
    assert info.value.response["Error"]["Message"].startswith("2 validation errors detected: Value 'r1' at 'id'")
    # maxResults is an integer written in ASCII digits, nothing more
    for raw in (" 5", "5_0", "+5", "1" * 5000):
        r = omics_call(api_server, f"/run/{run}/task", {"maxResults": raw})
        assert r.status_code == 400 and r.headers["x-amzn-ErrorType"] == "ValidationException", raw
        assert "at 'maxResults' failed to satisfy constraint: Member must be an integer" in r.json()["message"]
