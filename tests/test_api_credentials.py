"""Credentials and the request-handling middleware: a credential made by another process (``taskstore credentials
create`` while the server runs) is usable at once, a workspace's name is matched exactly, and a request that breaks
off or carries an odd Content-Length gets the dialect's 4xx, never a 500 or an error logged with a traceback."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from api.credentials import CredentialStore
from tests.test_api_fixtures import (  # noqa: F401 - fixtures
    HTTP,
    SECRET_A,
    WS_A,
    api_server,
    native_headers,
    omics_client,
    shared_key_sign,
)

API_VERSION = "2025-06-01"


def _other_process_creates(server, workspace: str):
    """A credential created as ``taskstore credentials create`` creates it: through another CredentialStore over the
    same database, which the server's in-memory index knows nothing of; then past the reload rate limit."""
    cred = CredentialStore(server.store.engine).create(workspace)
    time.sleep(CredentialStore.RELOAD_INTERVAL + 0.1)
    return cred


def _batch_get(server, path: str, account: str, secret: str):
    url = f"{server.url}/batch{path}?api-version={API_VERSION}"
    return HTTP.get(url, headers=shared_key_sign("GET", url, account, secret, {}))


def test_a_credential_created_by_another_process_for_a_new_workspace_is_usable(api_server):
    ws = f"ws-c-{uuid.uuid4().hex[:8]}"
    cred = _other_process_creates(api_server, ws)
    job = api_server.unique()
    r = HTTP.post(
        f"{api_server.url}/v1/jobs/{job}/executions/default/tasks",
        headers=native_headers(cred.secret),
        json={"tasks": [{"id": "t-1"}]},
    )
    assert r.status_code == 201, r.text
    r = _batch_get(api_server, f"/jobs/{job}/tasks/t-1", ws, cred.secret)
    assert r.status_code == 200, r.text
    with pytest.raises(ClientError) as info:  # authenticated, and the run is not there
        omics_client(api_server, cred.key_id, cred.secret).list_run_tasks(id=api_server.unique_run())
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_a_second_credential_of_a_workspace_created_by_another_process_passes_shared_key(api_server):
    """A rotation: the workspace has a key already, another process adds one. A signature no known key matches
    reloads the table (at most once a second), so the new key is let in at once, or a second later when the table
    was just reloaded for something else."""
    cred = _other_process_creates(api_server, WS_A)
    for _ in range(2):
        r = _batch_get(api_server, f"/jobs/{api_server.unique()}/tasks", WS_A, cred.secret)
        if r.status_code != 401:
            break
        time.sleep(CredentialStore.RELOAD_INTERVAL + 0.1)
    assert r.status_code == 404 and r.json()["code"] == "JobNotFound", r.text


def test_workspace_names_differing_in_case_are_different_workspaces(api_server):
    job = api_server.unique()
    r = HTTP.post(
        f"{api_server.url}/v1/jobs/{job}/executions/default/tasks",
        headers=native_headers(),
        json={"tasks": [{"id": "t-1"}]},
    )
    assert r.status_code == 201
    upper = api_server.app.state.credentials.create(WS_A.upper())
    r = HTTP.get(f"{api_server.url}/v1/jobs/{job}/executions/default/tasks/t-1", headers=native_headers(upper.secret))
    assert r.status_code == 404
    r = _batch_get(api_server, f"/jobs/{job}/tasks/t-1", WS_A.upper(), upper.secret)
    assert r.status_code == 404 and r.json()["code"] == "JobNotFound"


def _break_off(server, head: bytes) -> None:
    """Send a request head announcing a 1,000-byte body, a few bytes of it, and hang up."""
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as s:
        s.sendall(head + b'{"ta')
        time.sleep(0.2)


def test_a_client_that_hangs_up_mid_body_is_not_logged_as_an_internal_error(api_server, caplog):
    caplog.set_level(logging.DEBUG, logger="taskstore.api")
    job = api_server.unique()
    path = f"/v1/jobs/{job}/executions/default/tasks"
    _break_off(
        api_server,
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET_A}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n".encode(),
    )
    url = f"{api_server.url}/batch/jobs/{job}/tasks?api-version={API_VERSION}"
    signed = shared_key_sign(
        "POST", url, WS_A, SECRET_A, {"content-type": "application/json; odata=minimalmetadata", "content-length": "1000"}
    )
    head = f"POST /batch/jobs/{job}/tasks?api-version={API_VERSION} HTTP/1.1\r\nHost: x\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in signed.items()) + "\r\n"
    _break_off(api_server, head.encode())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        seen = [r for r in caplog.records if "disconnected" in r.getMessage() or r.levelno >= logging.ERROR]
        if len(seen) >= 2:
            break
        time.sleep(0.05)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors
    assert sum("disconnected" in r.getMessage() for r in caplog.records) == 2
    # nothing was written
    r = HTTP.get(f"{api_server.url}/v1/jobs/{job}/executions/default/tasks", headers=native_headers())
    assert r.status_code == 404


def test_a_content_length_of_non_ascii_digits_is_no_500(api_server):
    """'²' is a digit to str.isdigit() but not to int(): a server that passes such a header on (uvicorn refuses it,
    another ASGI server or an in-process client may not) got a 500 from the body limit's check."""
    job = api_server.unique()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"/v1/jobs/{job}/executions/default/tasks",
        "raw_path": f"/v1/jobs/{job}/executions/default/tasks".encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"x"),
            (b"authorization", f"Bearer {SECRET_A}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"\xb2"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict] = []

    async def call() -> None:
        messages = [{"type": "http.request", "body": b"{}", "more_body": False}]

        async def receive() -> dict:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        await api_server.app(scope, receive, send)

    asyncio.run(call())
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 400, body
    assert b'"field":"tasks"' in body


@pytest.mark.parametrize("key_id", ["TSÉTÉ", "TS\uff21\uff22", "TS-1"])
def test_a_key_id_is_ascii_letters_and_digits(api_server, key_id):
    """A SigV4 key id arrives as latin-1 header text: a key id outside ASCII could never be matched."""
    with pytest.raises(ValueError, match="letters and digits"):
        api_server.app.state.credentials.create(WS_A, key_id=key_id)
