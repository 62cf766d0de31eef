"""A command that loses a race for its task more often than the store retries it (``ConcurrencyError``) is answered
with each dialect's "busy, retry" error, which its client retries: Azure Batch 503 ``ServerBusy`` with Retry-After
(the azure-batch SDK retries it and the call succeeds), the native API 409 ``concurrent_update`` with Retry-After,
and, in the read-only dialects, HealthOmics 429 ``ThrottlingException`` (an error botocore's retry modes retry) and
Blaxel 429 ``busy``. Nothing is written by the refused attempt."""

from __future__ import annotations

import pytest

from api import blaxel, native, omics
from api import batch as batch_dialect
from eventstore import ConcurrencyError, Scope
from tests.test_api_fixtures import HTTP, api_server, batch_client, native_headers  # noqa: F401


def _lost_race(scope: Scope, task_id: str) -> ConcurrencyError:
    return ConcurrencyError(task_id, 1, 2, scope=scope, key=task_id)


def _busy_once(monkeypatch, store, method: str) -> list[str]:
    """``store.<method>`` raises ``ConcurrencyError`` on its first call, then works; returns the calls seen."""
    real = getattr(store, method)
    calls: list[str] = []

    def flaky(scope, task_id, *args, **kwargs):
        calls.append(task_id)
        if len(calls) == 1:
            raise _lost_race(scope, task_id)
        return real(scope, task_id, *args, **kwargs)

    monkeypatch.setattr(store, method, flaky)
    return calls


def test_the_azure_batch_sdk_retries_server_busy_and_the_command_succeeds(api_server, monkeypatch):
    from azure.batch import models as bm

    job = api_server.unique()
    client = batch_client(api_server, retry_total=2, retry_backoff_factor=0.01)
    client.create_task(job, bm.BatchTaskCreateOptions(id="busy", command_line="echo"))
    calls = _busy_once(monkeypatch, api_server.store, "terminate")
    client.terminate_task(job, "busy")
    assert calls == ["busy", "busy"]  # refused once (503), then done on the SDK's retry
    assert client.get_task(job, "busy").state == "completed"
    assert len(api_server.store.history(Scope("ws-a", job), "busy")) == 2  # added, terminated: once


def test_the_native_api_answers_a_lost_race_with_409_and_retry_after(api_server, monkeypatch):
    job = api_server.unique()
    url = f"{api_server.url}/v1/jobs/{job}/executions/default/tasks"
    assert HTTP.post(url, json={"tasks": [{"id": "busy"}]}, headers=native_headers()).status_code == 201
    _busy_once(monkeypatch, api_server.store, "transition")
    r = HTTP.post(f"{url}/busy/transitions", json={"to": "running"}, headers=native_headers())
    assert r.status_code == 409 and r.json()["error"]["code"] == "concurrent_update" and r.headers["retry-after"]
    assert HTTP.get(f"{url}/busy", headers=native_headers()).json()["state"] == "pending"  # nothing written
    r = HTTP.post(f"{url}/busy/transitions", json={"to": "running"}, headers=native_headers())
    assert r.status_code == 200 and r.json()["state"] == "running"


@pytest.mark.parametrize(
    ("dialect", "status", "code"),
    [(omics, 429, "ThrottlingException"), (blaxel, 429, "busy"), (batch_dialect, 503, "ServerBusy"),
     (native, 409, "concurrent_update")],
    ids=["omics", "blaxel", "batch", "native"],
)
def test_each_dialect_answers_a_lost_race_with_its_retryable_error(dialect, status, code):
    err = dialect.translate(_lost_race(Scope("w", "j"), "t"))
    assert (err.status, err.code) == (status, code)
