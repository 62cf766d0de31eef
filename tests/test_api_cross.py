"""One store behind every mount point: a task written through /v1 reads the same through Azure Batch, HealthOmics
and Blaxel; and a credential of one workspace sees nothing of another's through any dialect."""

from __future__ import annotations

import os
from datetime import datetime

import pytest
from azure.batch import models as bm
from azure.core.exceptions import ResourceNotFoundError
from botocore.exceptions import ClientError

from tests.test_api_fixtures import (  # noqa: F401 - fixtures
    HTTP,
    KEY_B,
    SECRET_A,
    SECRET_B,
    WS_A,
    WS_B,
    api_server,
    batch_client,
    native_headers,
    omics_client,
)

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("BL_API_KEY", SECRET_A)
os.environ.setdefault("BL_WORKSPACE", WS_A)

from blaxel.core.client.api.jobs import list_job_execution_tasks as blaxel_list  # noqa: E402
from blaxel.core.client.client import Client as BlaxelClient  # noqa: E402


def _t(iso: str | None) -> datetime | None:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")) if iso else None


def _blaxel(server, secret: str, workspace: str) -> BlaxelClient:
    return BlaxelClient(
        base_url=server.url + "/blaxel/v0",
        headers={
            "X-Blaxel-Authorization": f"Bearer {secret}",
            "X-Blaxel-Workspace": workspace,
            "Blaxel-Version": "2026-09-22",
        },
    )


def _write(server, job: str, headers: dict) -> dict[str, dict]:
    base = f"{server.url}/v1/jobs/{job}/executions/default/tasks"
    specs = [
        {
            "id": "done",
            "displayName": "align",
            "resources": {"cpus": 2, "memory": 8},
            "requiredSlots": 2,
            "constraints": {"maxTaskRetryCount": 0},
        },
        {"id": "broke", "displayName": "merge"},
        {"id": "busy"},
        {"id": "waiting"},
    ]
    assert HTTP.post(base, headers=headers, json={"tasks": specs}).status_code == 201
    moves = {
        "done": [
            {"to": "starting", "nodeInfo": {"nodeId": "node-7", "poolId": "pool"}},
            {"to": "running"},
            {"to": "succeeded", "exitCode": 0},
        ],
        "broke": [
            {"to": "running"},
            {
                "to": "failed",
                "exitCode": 137,
                "failureInfo": {"category": "usererror", "code": "Killed", "message": "OOM"},
            },
        ],
        "busy": [{"to": "running"}],
    }
    out = {}
    for task, steps in moves.items():
        for step in steps:
            r = HTTP.post(f"{base}/{task}/transitions", headers=headers, json=step)
            assert r.status_code == 200, r.text
        out[task] = r.json()
    out["waiting"] = HTTP.get(f"{base}/waiting", headers=headers).json()
    return out


def test_a_task_written_through_v1_reads_the_same_everywhere(api_server):
    job = api_server.unique_run()  # digits: a Batch job, a HealthOmics run and a Blaxel job at once
    tasks = _write(api_server, job, native_headers())
    done, broke = tasks["done"], tasks["broke"]

    batch = batch_client(api_server)
    b = batch.get_task(job, "done")
    assert b.state == "completed" and b.previous_state == "running"
    assert b.creation_time == _t(done["createdAt"])
    assert b.state_transition_time == _t(done["stateTransitionTime"])
    assert b.previous_state_transition_time == _t(done["previousStateTransitionTime"])
    assert b.last_modified == _t(done["lastModified"])
    info = b.execution_info
    assert (info.start_time, info.end_time) == (_t(done["startTime"]), _t(done["endTime"]))
    assert (info.exit_code, info.result, info.retry_count) == (0, "success", 0)
    assert b.node_info.node_id == "node-7" and b.required_slots == 2
    f = batch.get_task(job, "broke")
    assert f.execution_info.exit_code == 137 and f.execution_info.result == "failure"
    assert f.execution_info.failure_info.code == "Killed"
    listed = {t.id: t.state for t in batch.list_tasks(job, max_results=2)}
    assert listed == {"done": "completed", "broke": "completed", "busy": "running", "waiting": "active"}
    counts = batch.get_job_task_counts(job).task_counts
    assert (counts.active, counts.running, counts.completed, counts.succeeded, counts.failed) == (1, 1, 2, 1, 1)

    omics = omics_client(api_server)
    o = omics.get_run_task(id=job, taskId=str(done["number"]))
    assert o["status"] == "COMPLETED" and o["name"] == "align" and (o["cpus"], o["memory"]) == (2, 8)
    assert o["creationTime"] == _t(done["createdAt"])
    assert (o["startTime"], o["stopTime"]) == (_t(done["startTime"]), _t(done["endTime"]))
    assert omics.get_run_task(id=job, taskId=str(broke["number"]))["failureReason"] == "OOM"
    items = omics.list_run_tasks(id=job)["items"]
    assert {i["taskId"]: i["status"] for i in items} == {
        str(tasks[n]["number"]): s
        for n, s in (("done", "COMPLETED"), ("broke", "FAILED"), ("busy", "RUNNING"), ("waiting", "PENDING"))
    }

    page = blaxel_list.sync(job, "default", client=_blaxel(api_server, SECRET_A, WS_A))
    by_name = {t.metadata.name: t for t in page.data}
    assert {n: t.status for n, t in by_name.items()} == {
        "done": "succeeded",
        "broke": "failed",
        "busy": "running",
        "waiting": "pending",
    }
    m = by_name["done"].metadata
    assert (m.created_at, m.updated_at, m.scheduled_at, m.started_at, m.completed_at) == (
        done["createdAt"],
        done["lastModified"],
        done["scheduledAt"],
        done["startTime"],
        done["endTime"],
    )
    assert page.meta.total == 4


def test_a_workspace_sees_nothing_of_another(api_server):
    job = api_server.unique_run()
    tasks = _write(api_server, job, native_headers(SECRET_A))
    number = str(tasks["done"]["number"])

    # Azure Batch
    b = batch_client(api_server, workspace=WS_B, secret=SECRET_B)
    for call in (
        lambda: b.get_task(job, "done"),
        lambda: list(b.list_tasks(job)),
        lambda: b.get_job_task_counts(job),
        lambda: b.terminate_task(job, "busy"),
        lambda: b.reactivate_task(job, "broke"),
    ):
        with pytest.raises(ResourceNotFoundError) as info:
            call()
        assert info.value.error.code == "JobNotFound"
    # HealthOmics
    o = omics_client(api_server, key_id=KEY_B, secret=SECRET_B)
    for call in (lambda: o.list_run_tasks(id=job), lambda: o.get_run_task(id=job, taskId=number)):
        with pytest.raises(ClientError) as info:
            call()
        assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
    # Blaxel
    r = blaxel_list.sync_detailed(job, "default", client=_blaxel(api_server, SECRET_B, WS_B))
    assert r.status_code == 404
    # native
    base = f"{api_server.url}/v1/jobs/{job}/executions/default"
    hb = native_headers(SECRET_B)
    for method, path, body in (
        ("GET", "/tasks/done", None),
        ("GET", "/tasks/done/events", None),
        ("GET", "/tasks", None),
        ("GET", "/counts", None),
        ("POST", "/tasks/busy/transitions", {"to": "succeeded"}),
    ):
        r = HTTP.request(method, base + path, headers=hb, json=body)
        assert r.status_code == 404, (method, path, r.text)

    # B writing the same job id makes B's own job; A's is untouched and neither sees the other's tasks
    b.create_task(job, bm.BatchTaskCreateOptions(id="done", command_line="b's own"))
    assert [t.id for t in b.list_tasks(job)] == ["done"]
    assert b.get_task(job, "done").state == "active"
    mine = [i["taskId"] for i in o.list_run_tasks(id=job)["items"]]
    assert len(mine) == 1 and mine != [number]  # B's own task alone, none of A's
    a = batch_client(api_server)
    assert a.get_task(job, "done").state == "completed" and a.get_task(job, "busy").state == "running"
    assert len(list(a.list_tasks(job))) == 4
    with pytest.raises(ClientError):
        o.get_run_task(id=job, taskId=number)
    # a cursor of A's list is not B's
    first = blaxel_list.sync(job, "default", client=_blaxel(api_server, SECRET_A, WS_A), limit=1)
    r = blaxel_list.sync_detailed(
        job, "default", client=_blaxel(api_server, SECRET_B, WS_B), limit=1, cursor=first.meta.next_cursor
    )
    assert r.status_code == 400
