"""Fixtures of the HTTP service's tests: a real uvicorn server on a free 127.0.0.1 port, over a store on SQLite or
PostgreSQL (one server per test module and engine), with credentials for two workspaces.

Test modules import what they use from here: ``from tests.test_api_fixtures import api_server, ...``.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

from tests.conftest import make_database

# Fixed secrets, so that an SDK that reads its key at import (blaxel) can be configured before any server starts.
SECRET_A = base64.b64encode(b"taskstore-test-secret-of-workspace-a").decode()
SECRET_B = base64.b64encode(b"taskstore-test-secret-of-workspace-b").decode()
WS_A = "ws-a"
WS_B = "ws-b"
KEY_A = "TSTESTKEYWORKSPACEA"
KEY_B = "TSTESTKEYWORKSPACEB"


class ThreadedServer:
    """uvicorn serving ``app`` in a daemon thread on a free port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        # uvicorn binds port 0 itself: a socket handed to it (sockets=[...]) leaves Nagle on, and every response then
        # waits out the client's delayed ACK (40 ms).
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class ApiServer:
    engine: str
    url: str
    store: Any
    app: Any
    cred_a: Any
    cred_b: Any

    def unique(self, prefix: str = "job") -> str:
        """A job (or run) id no other test uses."""
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    def unique_run(self) -> str:
        return str(uuid.uuid4().int % 10**17 + 10**17)


def start_api_server(kind: str, tmp_path: Any) -> Iterator[ApiServer]:
    from api import create_app

    gen = make_database(kind, tmp_path)
    database = next(gen)
    store = database.open_store()
    server = None
    try:
        app = create_app(store)
        creds = app.state.credentials
        cred_a = creds.create(WS_A, secret=SECRET_A, key_id=KEY_A)
        cred_b = creds.create(WS_B, secret=SECRET_B, key_id=KEY_B)
        server = ThreadedServer(app)
        yield ApiServer(kind, server.url, store, app, cred_a, cred_b)
    finally:
        if server is not None:
            server.stop()
        store.close()
        next(gen, None)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api_server(request, tmp_path_factory) -> Iterator[ApiServer]:
    """A running server over a fresh store, shared by the tests of one module on one engine."""
    yield from start_api_server(request.param, tmp_path_factory.mktemp(f"api-{request.param}"))


def native_headers(secret: str = SECRET_A, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", **extra}


# One client for the raw requests of every test: an httpx.Client costs ~50 ms to make (its TLS context).
import httpx  # noqa: E402

HTTP = httpx.Client(timeout=30)


# -- clients -----------------------------------------------------------------------------------------------------------


def batch_client(server: ApiServer, workspace: str = WS_A, secret: str = SECRET_A, **kwargs: Any):
    """azure-batch 15.x's BatchClient with SharedKey: the workspace is the account, the secret the key."""
    from azure.batch import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential

    kwargs.setdefault("retry_total", 0)
    return BatchClient(server.url + "/batch", AzureNamedKeyCredential(workspace, secret), **kwargs)


def omics_client(server: ApiServer, key_id: str = KEY_A, secret: str = SECRET_A):
    """boto3's omics client, without the workflows- host prefix."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "omics",
        region_name="us-east-1",
        endpoint_url=server.url + "/omics",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(inject_host_prefix=False, retries={"max_attempts": 1}),
    )


def shared_key_sign(method: str, url: str, account: str, key_b64: str, headers: dict[str, str]) -> dict[str, str]:
    """Sign a raw request as Azure Batch's SharedKey documentation says (for requests no SDK would send)."""
    import hashlib
    import hmac
    from email.utils import formatdate
    from urllib.parse import parse_qs, urlsplit

    out = {k.lower(): v for k, v in headers.items()}
    out.setdefault("ocp-date", formatdate(usegmt=True))
    parts = urlsplit(url)
    names = [
        "content-encoding",
        "content-language",
        "content-length",
        "content-md5",
        "content-type",
        "date",
        "if-modified-since",
        "if-match",
        "if-none-match",
        "if-unmodified-since",
        "range",
    ]
    values = [out.get(n, "") for n in names]
    if method not in ("GET", "HEAD") and not values[2]:
        values[2] = "0"
    text = method + "\n" + "\n".join(values) + "\n"
    text += "".join(f"{k}:{v}\n" for k, v in sorted(out.items()) if k.startswith("ocp-"))
    text += f"/{account}{parts.path}"
    for name, vals in sorted(parse_qs(parts.query).items()):
        text += f"\n{name}:{vals[0]}"
    mac = hmac.new(base64.b64decode(key_b64), text.encode(), hashlib.sha256).digest()
    out["authorization"] = f"SharedKey {account}:{base64.b64encode(mac).decode()}"
    return out
