"""The Blaxel dialect, driven by the blaxel SDK's generated ``list_job_execution_tasks`` (BL_API_KEY and
BL_WORKSPACE are set before blaxel is imported, as its users do)."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.test_api_fixtures import HTTP, SECRET_A, SECRET_B, WS_A, WS_B, api_server, native_headers  # noqa: F401

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ["BL_API_KEY"] = SECRET_A
os.environ["BL_WORKSPACE"] = WS_A

from blaxel.core.client import client as bl_client  # noqa: E402
from blaxel.core.client.api.jobs import list_job_execution_tasks as api  # noqa: E402
from blaxel.core.client.client import Client  # noqa: E402
from blaxel.core.client.models.list_job_execution_tasks_sort import ListJobExecutionTasksSort as Sort  # noqa: E402

SORTS = ("createdAt:asc", "createdAt:desc", "name:asc", "name:desc")


@pytest.fixture(scope="module")
def client(api_server):
    return bl_client.with_base_url(api_server.url + "/blaxel/v0")


def _seed(server, job: str, execution: str, n: int) -> list[dict]:
    out = []
    url = f"{server.url}/v1/jobs/{job}/executions/{execution}/tasks"
    for start in range(0, n, 7):  # several requests, so that creation times differ
        specs = [
            {
                "id": f"task-{i:02d}",
                "displayName": f"{'Align' if i % 3 == 0 else 'merge'} part {i}",
                "maxRetries": 2,
                "timeout": "30m",
                "labels": {"stage": "prep" if i % 2 else "report"},
            }
            for i in range(start, min(start + 7, n))
        ]
        r = HTTP.post(url, headers=native_headers(), json={"tasks": specs})
        assert r.status_code == 201, r.text
        out += r.json()["tasks"]
    return out


def _all(client, job, execution, **kwargs):
    """Every page, as the SDK's users page: on while hasMore and nextCursor."""
    names, cursor, pages = [], None, 0
    while True:
        page = api.sync(job, execution, client=client, cursor=cursor, **kwargs)
        assert page is not None
        pages += 1
        names += [t.metadata.name for t in page.data]
        if not (page.meta.has_more and page.meta.next_cursor):
            return names, pages, page.meta.total
        cursor = page.meta.next_cursor


def test_all_four_sorts_page_to_the_end(api_server, client):
    job, execution = api_server.unique(), "exec-1"
    tasks = _seed(api_server, job, execution, 23)
    by_created = [t["id"] for t in sorted(tasks, key=lambda t: (t["createdAt"], t["id"].lower()))]
    expected = {
        "createdAt:asc": by_created,
        "createdAt:desc": by_created[::-1],
        "name:asc": sorted(t["id"] for t in tasks),
        "name:desc": sorted((t["id"] for t in tasks), reverse=True),
    }
    for sort in SORTS:
        names, pages, total = _all(client, job, execution, limit=5, sort=Sort(sort))
        assert names == expected[sort], sort
        assert pages == 5 and total == 23
    names, pages, _ = _all(client, job, execution)  # defaults: createdAt:desc, 50
    assert names == expected["createdAt:desc"] and pages == 1


def test_task_shape(api_server, client):
    job, execution = api_server.unique(), "e"
    _seed(api_server, job, execution, 2)
    base = f"{api_server.url}/v1/jobs/{job}/executions/{execution}/tasks/task-00"
    for to in ("starting", "running", "succeeded"):
        assert HTTP.post(base + "/transitions", headers=native_headers(), json={"to": to}).status_code == 200
    cond = {
        "type": "Ready",
        "state": "true",
        "reason": "Done",
        "message": "ok",
        "severity": "info",
        "executionReason": "completed",
    }
    done = HTTP.post(base + "/conditions", headers=native_headers(), json=cond)
    assert done.status_code == 200, done.text
    page = api.sync(job, execution, client=client, sort=Sort("name:asc"))
    task, pending = page.data
    assert task.status == "succeeded" and pending.status == "pending"
    m = task.metadata
    doc = done.json()
    assert (m.name, m.created_at, m.updated_at, m.scheduled_at, m.started_at, m.completed_at) == (
        "task-00",
        doc["createdAt"],
        doc["lastModified"],
        doc["scheduledAt"],
        doc["startTime"],
        doc["endTime"],
    )
    assert task.spec.max_retries == 2 and task.spec.timeout == "30m"
    c = task.conditions[0]
    assert (c.type_, c.state, c.reason, c.message, c.severity, c.execution_reason) == (
        "Ready",
        "true",
        "Done",
        "ok",
        "info",
        "completed",
    )


def test_search(api_server, client):
    job, execution = api_server.unique(), "e"
    _seed(api_server, job, execution, 12)
    names, _, total = _all(client, job, execution, q="  ALIGN ", limit=2, sort=Sort("name:asc"))
    assert names == ["task-00", "task-03", "task-06", "task-09"] and total == 12  # total ignores q
    names, _, _ = _all(client, job, execution, q="report", sort=Sort("name:asc"))
    assert names == [f"task-{i:02d}" for i in range(0, 12, 2)]
    names, _, _ = _all(client, job, execution, q="a")  # shorter than 2 characters: no search
    assert len(names) == 12


def test_a_cursor_of_another_query_is_refused(api_server, client):
    job, execution = api_server.unique(), "e"
    _seed(api_server, job, execution, 6)
    first = api.sync(job, execution, client=client, limit=2, sort=Sort("name:asc"))
    cursor = first.meta.next_cursor
    assert first.meta.has_more and cursor
    for kwargs in ({"sort": Sort("name:desc")}, {"sort": Sort("name:asc"), "q": "align"}):
        r = api.sync_detailed(job, execution, client=client, limit=2, cursor=cursor, **kwargs)
        assert r.status_code == 400 and r.parsed is None
        body = httpx.Response(400, content=r.content).json()
        assert body["code"] == 400 and "cursor" in body["error"]
    other = api_server.unique()
    _seed(api_server, other, execution, 3)
    r = api.sync_detailed(other, execution, client=client, limit=2, cursor=cursor, sort=Sort("name:asc"))
    assert r.status_code == 400
    r = api.sync_detailed(job, execution, client=client, cursor="forged.cursor")
    assert r.status_code == 400
    # the same query goes on
    second = api.sync(job, execution, client=client, limit=2, sort=Sort("name:asc"), cursor=cursor)
    assert [t.metadata.name for t in second.data] == ["task-02", "task-03"]


def test_limits_and_errors(api_server, client):
    job, execution = api_server.unique(), "e"
    _seed(api_server, job, execution, 3)
    assert len(api.sync(job, execution, client=client, limit=500).data) == 3  # clamped to 200, not refused
    r = api.sync_detailed(job, execution, client=client, limit=0)
    assert r.status_code == 400
    r = api.sync_detailed(api_server.unique(), execution, client=client)
    assert r.status_code == 404 and httpx.Response(404, content=r.content).json() == {
        "error": "job or execution not found",
        "code": 404,
    }
    r = api.sync_detailed(job, "other-execution", client=client)
    assert r.status_code == 404
    url = f"{api_server.url}/blaxel/v0/jobs/{job}/executions/{execution}/tasks"
    assert HTTP.get(url, params={"sort": "id:asc"}, headers=_headers()).status_code == 400
    assert HTTP.get(url, params={"q": "x" * 201}, headers=_headers()).status_code == 400
    assert HTTP.get(url, params={"limit": "ten"}, headers=_headers()).status_code == 400
    r = HTTP.get(url)
    assert r.status_code == 401 and r.json()["code"] == 401
    r = HTTP.get(url, headers=_headers(SECRET_B, WS_A))  # B's key naming A's workspace
    assert r.status_code == 403 and r.json()["code"] == 403
    stranger = Client(base_url=api_server.url + "/blaxel/v0", headers=_headers(SECRET_B, WS_B))
    r = api.sync_detailed(job, execution, client=stranger)
    assert r.status_code == 404  # another workspace's job does not exist


def _headers(secret: str = SECRET_A, workspace: str = WS_A) -> dict[str, str]:
    return {
        "X-Blaxel-Authorization": f"Bearer {secret}",
        "X-Blaxel-Workspace": workspace,
        "Blaxel-Version": "2026-09-22",
    }
