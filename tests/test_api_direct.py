"""The routes the application answers without FastAPI's router (api.app.DirectRoutes): the same answers as FastAPI's
routing gives, for every outcome; the same handling of an exception; HEAD and other methods still routed."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.exc import OperationalError
from starlette.testclient import TestClient

from api import batch, blaxel, native, omics
from api.app import TELEMETRY, DirectRoutes, direct_routes
from tests.test_api_fixtures import (  # noqa: F401
    HTTP,
    SECRET_A,
    SECRET_B,
    WS_A,
    WS_B,
    api_server,
    native_headers,
    shared_key_sign,
)

MODULES = (native, blaxel, batch, omics)
BATCH_VERSION = "api-version=2025-06-01"


def test_the_direct_routes_are_the_list_and_count_routes():
    assert sorted(prefix + route.path for prefix, route in direct_routes(MODULES)) == [
        "/batch/jobs/{job_id}/taskcounts",
        "/blaxel/v0/jobs/{job_id}/executions/{execution_id}/tasks",
        "/v1/jobs/{job}/executions/{execution}/counts",
        "/v1/jobs/{job}/executions/{execution}/tasks",
    ]


def test_no_other_route_answers_a_get_of_a_direct_route():
    """What makes answering them before FastAPI's routing safe: the mount points do not overlap, and within one no
    other GET route matches a direct route's paths."""
    prefixes = [m.PREFIX for m in MODULES]
    for a in prefixes:
        assert not any(b != a and (b + "/").startswith(a + "/") for b in prefixes), a
    for prefix, route in direct_routes(MODULES):
        module = next(m for m in MODULES if m.PREFIX == prefix)
        for sample in ("x", "a.b", "0", "%20", "with space", "-_~"):
            path = re.sub(r"\{[^}]+\}", sample, route.path)
            assert route.path_regex.match(path), path
            others = [
                r.path for r in module.router.routes
                if r is not route and "GET" in getattr(r, "methods", ()) and r.path_regex.match(path)
            ]
            assert others == [], (path, others)


def _requests(job: str) -> list[tuple[str, str, dict[str, str]]]:
    v1 = f"/v1/jobs/{job}/executions/default"
    bl = f"/blaxel/v0/jobs/{job}/executions/default/tasks"
    bx = {"X-Blaxel-Authorization": f"Bearer {SECRET_A}", "X-Blaxel-Workspace": WS_A}
    out = [
        (f"{v1}/tasks", "", native_headers()),
        (f"{v1}/tasks", "limit=2&sort=name:asc", native_headers()),
        (f"{v1}/tasks", "limit=2&limit=3", native_headers()),  # the last of a repeated parameter
        (f"{v1}/tasks", "state=running,active", native_headers()),
        (f"{v1}/tasks", "filter=state%20eq%20%27active%27&limit=2", native_headers()),
        (f"{v1}/tasks", "filter=nonsense", native_headers()),
        (f"{v1}/tasks", "limit=x", native_headers()),
        (f"{v1}/tasks", "limit=0", native_headers()),
        (f"{v1}/tasks", "sort=nope", native_headers()),
        (f"{v1}/tasks", "state=nope", native_headers()),
        (f"{v1}/tasks", "cursor=abc", native_headers()),
        (f"{v1}/tasks", "q=a%00b", native_headers()),
        (f"{v1}/tasks", "", {}),
        (f"{v1}/tasks", "", {"Authorization": "Basic x"}),
        (f"{v1}/tasks", "", native_headers(SECRET_B)),  # another workspace: not found
        (f"/v1/jobs/{job}/executions/nope/tasks", "", native_headers()),
        (f"{v1}/counts", "", native_headers()),
        (f"{v1}/counts", "asOf=3", native_headers()),
        (f"{v1}/counts", "asOf=x", native_headers()),
        (f"{v1}/counts", "", native_headers("bad")),
        (f"{v1}/counts", "", native_headers(SECRET_B)),
        (bl, "", bx),
        (bl, "limit=2&sort=name:desc", bx),
        (bl, "limit=-1", bx),
        (bl, "sort=number:asc", bx),
        (bl, "cursor=zz", bx),
        (bl, "q=" + "q" * 201, bx),
        (bl, "", {**bx, "X-Blaxel-Workspace": WS_B}),
        (bl, "", {"Authorization": f"Bearer {SECRET_A}"}),
        (bl, "", {}),
        (f"/blaxel/v0/jobs/{job}/executions/nope/tasks", "", bx),
    ]
    counts = f"/batch/jobs/{job}/taskcounts"
    for query in (BATCH_VERSION, "", "api-version=bad", f"{BATCH_VERSION}&x=a%00"):
        url = counts + (f"?{query}" if query else "")
        out.append((counts, query, shared_key_sign("GET", url, WS_A, SECRET_A, {})))
    out.append((counts, BATCH_VERSION, shared_key_sign("GET", f"{counts}?{BATCH_VERSION}", WS_B, SECRET_B, {})))
    out.append((counts, BATCH_VERSION, {"ocp-date": "Mon, 01 Jan 2024 00:00:00 GMT", "authorization": "SharedKey a:b"}))
    out.append((counts, BATCH_VERSION, {}))
    return out


_VARYING = re.compile(r"RequestId:[^\\]*\\nTime:[^\"]*")  # Batch error messages carry the request id and time


_DETAIL = re.compile(r'"validationDetail":"[^"]*"')  # how a count was validated depends on the counts before it


def _normal(r) -> tuple[int, dict[str, str], bytes]:
    headers = {k: v for k, v in r.headers.items() if k not in ("request-id", "date", "content-length")}
    return r.status_code, headers, _DETAIL.sub("", _VARYING.sub("", r.content.decode())).encode()


@pytest.fixture(scope="module")
def two_apps(tmp_path_factory):
    """The application as create_app makes it, and the same application without DirectRoutes, over one store."""
    from api import create_app
    from eventstore import Scope
    from tests.conftest import make_database

    gen = make_database("sqlite", tmp_path_factory.mktemp("direct"))
    store = next(gen).open_store()
    issued = int(store.queries.cursors.clock())
    store.queries.cursors.clock = lambda: issued  # a cursor carries its issue time: both apps issue in one second
    try:
        direct = create_app(store)
        creds = direct.state.credentials
        creds.create(WS_A, secret=SECRET_A)
        creds.create(WS_B, secret=SECRET_B)
        routed = create_app(store, credentials=creds)
        routed.user_middleware = [m for m in routed.user_middleware if m.cls is not DirectRoutes]
        assert any(m.cls is DirectRoutes for m in direct.user_middleware)
        job = "j1"
        store.add_tasks(Scope(WS_A, job), [{"id": f"t{i}", "displayName": f"task {i}"} for i in range(5)])
        store.transition(Scope(WS_A, job), "t1", "running")
        with TestClient(direct, raise_server_exceptions=False) as a:
            with TestClient(routed, raise_server_exceptions=False) as b:
                yield store, job, a, b
    finally:
        store.close()
        next(gen, None)


def test_direct_answers_are_the_routed_answers(two_apps):
    store, job, direct, routed = two_apps
    statuses = set()
    for path, query, headers in _requests(job):
        url = path + (f"?{query}" if query else "")
        a, b = direct.get(url, headers=headers), routed.get(url, headers=headers)
        assert _normal(a) == _normal(b), url
        assert ("request-id" in a.headers) == ("request-id" in b.headers) == path.startswith("/batch")
        statuses.add(a.status_code)
    assert statuses >= {200, 400, 401, 403, 404}


def test_an_exception_in_a_direct_route_gets_the_same_answer(two_apps, monkeypatch):
    store, job, direct, routed = two_apps

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    def unavailable(*args, **kwargs):
        raise OperationalError("SELECT", {}, Exception("the database is gone"))

    cases = [
        (f"/v1/jobs/{job}/executions/default/tasks", native_headers(), 500, "list_tasks", broken),
        (f"/v1/jobs/{job}/executions/default/counts", native_headers(), 503, "counts", unavailable),
        (
            f"/blaxel/v0/jobs/{job}/executions/default/tasks",
            {"X-Blaxel-Authorization": f"Bearer {SECRET_A}"},
            500,
            "list_tasks",
            broken,
        ),
    ]
    for url, headers, status, name, fail in cases:
        with monkeypatch.context() as m:
            m.setattr(store.queries, name, fail)
            a, b = direct.get(url, headers=headers), routed.get(url, headers=headers)
        assert a.status_code == status and _normal(a) == _normal(b), url
    url = f"/batch/jobs/{job}/taskcounts?{BATCH_VERSION}"
    with monkeypatch.context() as m:
        m.setattr(store.queries, "counts", broken)
        a = direct.get(url, headers=shared_key_sign("GET", url, WS_A, SECRET_A, {}))
        b = routed.get(url, headers=shared_key_sign("GET", url, WS_A, SECRET_A, {}))
    assert a.status_code == 500 and a.json()["code"] == "InternalError" and _normal(a) == _normal(b)
    assert a.headers["request-id"]


def test_other_methods_on_a_direct_route_are_routed(api_server):
    """Only a GET is answered directly: HEAD and PUT get FastAPI's routing and the dialect's 405 (FastAPI's GET
    routes do not answer HEAD), POST adds tasks."""
    job = api_server.unique()
    base = f"{api_server.url}/v1/jobs/{job}/executions/default"
    assert HTTP.post(f"{base}/tasks", json={"tasks": [{"id": "a"}]}, headers=native_headers()).status_code == 201
    for path in ("tasks", "counts"):
        assert HTTP.head(f"{base}/{path}", headers=native_headers()).status_code == 405
    r = HTTP.put(f"{base}/counts", headers=native_headers())
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    # and a GET keeps answering on the same keep-alive connection after an error
    assert HTTP.get(f"{base}/tasks", params={"limit": "x"}, headers=native_headers()).status_code == 400
    r = HTTP.get(f"{base}/tasks", headers=native_headers())
    assert r.status_code == 200 and [t["id"] for t in r.json()["tasks"]] == ["a"]


def test_with_fastapis_instrumentation_on_every_request_goes_through_fastapi(two_apps):
    """FastAPI's OpenTelemetry instrumentation names each span's route as its router selects it: while it is on
    (its key is in the scope), a direct route is left to FastAPI."""
    store, job, direct, routed = two_apps
    app = direct.app
    scopes: list[dict] = []

    def instrumented(on: bool):
        async def outer(scope, receive, send):
            if scope["type"] == "http":
                if on:
                    scope[TELEMETRY] = object()  # what FastAPI ignores unless it is its own request telemetry
                scopes.append(scope)
            await app(scope, receive, send)
        return outer

    url = f"/v1/jobs/{job}/executions/default/tasks"
    answers = []
    for on in (False, True):
        with TestClient(instrumented(on)) as client:
            answers.append(client.get(url, headers=native_headers()))
    assert [a.status_code for a in answers] == [200, 200] and answers[0].json() == answers[1].json()
    assert "fastapi" not in scopes[0] and "fastapi" in scopes[1]  # FastAPI's router keeps its state under "fastapi"
