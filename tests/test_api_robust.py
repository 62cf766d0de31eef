"""No input gets a 500: malformed paths, queries, bodies and tokens get each dialect's own error with a 4xx."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import json

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_api_fixtures import HTTP, KEY_A, SECRET_A, WS_A, api_server, native_headers, shared_key_sign  # noqa: F401


def _dumps(value) -> bytes:
    return json.dumps(value).encode()


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def seeded(api_server):
    job = api_server.unique_run()
    r = HTTP.post(
        f"{api_server.url}/v1/jobs/{job}/executions/default/tasks",
        headers=native_headers(),
        json={"tasks": [{"id": f"t-{i}"} for i in range(3)]},
    )
    assert r.status_code == 201
    return job


def batch_call(
    server,
    method: str,
    path: str,
    query: dict | str | None = None,
    body: bytes | None = None,
    headers: dict | None = None,
) -> httpx.Response:
    q = query if isinstance(query, str) else urlencode({"api-version": "2025-06-01", **(query or {})}, quote_via=quote)
    url = f"{server.url}/batch{path}?{q}"
    h = {**(headers or {})}
    if body is not None:
        h.setdefault("content-type", "application/json; odata=minimalmetadata")
        h["content-length"] = str(len(body))
    return HTTP.request(method, url, content=body, headers=shared_key_sign(method, url, WS_A, SECRET_A, h))


def omics_call(server, path: str, query: dict | None = None) -> httpx.Response:
    url = f"{server.url}/omics{path}" + (f"?{urlencode(query, quote_via=quote)}" if query else "")
    req = AWSRequest(method="GET", url=url)
    SigV4Auth(Credentials(KEY_A, SECRET_A), "omics", "us-east-1").add_auth(req)
    return HTTP.get(url, headers=dict(req.headers.items()))


def blaxel_call(server, path: str, query: dict | None = None) -> httpx.Response:
    return HTTP.get(
        f"{server.url}/blaxel/v0{path}",
        params=query,
        headers={"X-Blaxel-Authorization": f"Bearer {SECRET_A}", "X-Blaxel-Workspace": WS_A},
    )


def assert_batch_error(r: httpx.Response) -> None:
    assert 400 <= r.status_code < 500, r.text
    body = r.json()
    assert body["code"] and body["message"]["lang"] == "en-US" and body["message"]["value"]
    assert r.headers["request-id"]


def assert_omics_error(r: httpx.Response) -> None:
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["x-amzn-ErrorType"] and set(r.json()) == {"message"}


def assert_blaxel_error(r: httpx.Response) -> None:
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["code"] == r.status_code and r.json()["error"]


def assert_native_error(r: httpx.Response) -> None:
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["code"] and r.json()["error"]["message"]


def test_batch_bad_inputs(api_server, seeded):
    job = seeded
    long = "j" * 200
    cases = [
        ("GET", f"/jobs/{long}/tasks", None, None),
        ("GET", "/jobs/%20/tasks", None, None),
        ("GET", "/jobs/j%C3%A9/tasks/x", None, None),
        ("GET", f"/jobs/{job}/tasks/{'t' * 65}", None, None),
        ("GET", f"/jobs/{job}/tasks/a.b", None, None),
        ("POST", f"/jobs/{job}/tasks/..%2F..%2Fx/terminate", None, b""),
        ("GET", f"/jobs/{job}/tasks", {"maxresults": "abc"}, None),
        ("GET", f"/jobs/{job}/tasks", {"maxresults": "1e3"}, None),
        ("GET", f"/jobs/{job}/tasks", {"maxresults": "-1"}, None),
        ("GET", f"/jobs/{job}/tasks", {"$select": ",,nope"}, None),
        ("GET", f"/jobs/{job}/tasks", {"$expand": "everything"}, None),
        ("GET", f"/jobs/{job}/tasks", {"$skiptoken": "a.b"}, None),
        ("GET", f"/jobs/{job}/tasks", {"$filter": "id eq '\u00e9\u0000'x"}, None),
        ("GET", f"/jobs/{job}/tasks/t-0", {"$select": "secret"}, None),
        ("GET", f"/jobs/{job}/tasks", "api-version=1999", None),
        ("POST", f"/jobs/{job}/tasks", None, b"\xff\xfe"),
        ("POST", f"/jobs/{job}/tasks", None, b"[" * 5000),
        ("POST", f"/jobs/{job}/tasks", None, b"null"),
        ("POST", f"/jobs/{job}/tasks", None, b'{"id": null, "commandLine": "x"}'),
        ("POST", f"/jobs/{job}/tasks", None, b'{"id": "x", "commandLine": "y", "requiredSlots": 1e400}'),
        (
            "POST",
            f"/jobs/{job}/tasks",
            None,
            b'{"id": "x", "commandLine": "y", "requiredSlots": 99999999999999999999999}',
        ),
        ("POST", f"/jobs/{job}/tasks", None, b'{"id": "x", "commandLine": "y", "constraints": "soon"}'),
        (
            "POST",
            f"/jobs/{job}/tasks",
            None,
            b'{"id": "x", "commandLine": "y", "constraints": {"maxWallClockTime": 5}}',
        ),
        ("POST", f"/jobs/{job}/tasks", None, b'{"id": "x", "commandLine": "y", "environmentSettings": [{"value": 1}]}'),
        ("POST", f"/jobs/{job}/tasks", None, b'{"id": "\xc3\xa9", "commandLine": "y"}'),
        ("POST", f"/jobs/{long}/tasks", None, b'{"id": "x", "commandLine": "y"}'),
        ("POST", f"/jobs/{job}/addtaskcollection", None, b'{"value": "x"}'),
        ("POST", f"/jobs/{job}/addtaskcollection", None, b'{"value": []}'),
        ("POST", f"/jobs/{job}/addtaskcollection", None, b"{}"),
        ("POST", f"/jobs/{job}/addtaskcollection", None, b"x" * (1024 * 1024 + 1)),
        ("POST", f"/jobs/{job}/tasks/t-0/terminate", None, None),  # no body at all is fine: 204 ...
        ("GET", f"/jobs/{job}/nothing", None, None),
        ("DELETE", f"/jobs/{job}/tasks/t-0", None, None),
    ]
    for method, path, query, body in cases:
        r = batch_call(api_server, method, path, query, body)
        if r.status_code == 204:
            continue
        assert_batch_error(r)
    # an addtaskcollection of mixed garbage answers per task
    r = batch_call(
        api_server,
        "POST",
        f"/jobs/{job}/addtaskcollection",
        None,
        _dumps({"value": [1, "a", None, {}, {"id": "ok-1", "commandLine": "x"}, {"id": 5}]}),
    )
    assert r.status_code == 200
    assert [v["status"] for v in r.json()["value"]] == ["clienterror"] * 4 + ["success", "clienterror"]


@FUZZ
@given(
    flt=st.text(max_size=40), select=st.text(max_size=20), maxresults=st.text(max_size=6), token=st.text(max_size=30)
)
def test_batch_list_fuzz(api_server, seeded, flt, select, maxresults, token):
    query = {"$filter": flt, "$select": select, "maxresults": maxresults}
    if token:
        query["$skiptoken"] = token
    r = batch_call(api_server, "GET", f"/jobs/{seeded}/tasks", query)
    if r.status_code != 200:
        assert_batch_error(r)


@FUZZ
@given(body=JSON)
def test_batch_add_fuzz(api_server, seeded, body):
    r = batch_call(api_server, "POST", f"/jobs/{seeded}/tasks", None, _dumps(body))
    if r.status_code != 201:
        assert_batch_error(r)
    r = batch_call(api_server, "POST", f"/jobs/{seeded}/addtaskcollection", None, _dumps({"value": [body]}))
    assert r.status_code < 500, r.text


def test_omics_bad_inputs(api_server, seeded):
    for path, query in [
        ("/run/" + "1" * 19 + "/task", None),
        ("/run/12a/task", None),
        (f"/run/{seeded}/task/" + "9" * 19, None),
        (f"/run/{seeded}/task/-1", None),
        (f"/run/{seeded}/task", {"maxResults": "x"}),
        (f"/run/{seeded}/task", {"maxResults": "0"}),
        (f"/run/{seeded}/task", {"status": ""}),
        (f"/run/{seeded}/task", {"status": "completed"}),
        (f"/run/{seeded}/task", {"startingToken": "a" * 200}),
        (f"/run/{seeded}/task", {"startingToken": "\u00e9\u00e9"}),
        (f"/run/{seeded}", None),
    ]:
        assert_omics_error(omics_call(api_server, path, query))


@FUZZ
@given(status=st.text(max_size=10), max_results=st.text(max_size=5), token=st.text(min_size=1, max_size=40))
def test_omics_list_fuzz(api_server, seeded, status, max_results, token):
    r = omics_call(
        api_server, f"/run/{seeded}/task", {"status": status, "maxResults": max_results, "startingToken": token}
    )
    assert_omics_error(r)


def test_blaxel_bad_inputs(api_server, seeded):
    path = f"/jobs/{seeded}/executions/default/tasks"
    for query in [
        {"limit": "-5"},
        {"limit": "1.5"},
        {"sort": "createdAt"},
        {"cursor": "x.y"},
        {"cursor": "e30.AAAAAAAAAAAAAAAAAAAAAA"},
        {"q": "\u00e9" * 201},
    ]:
        assert_blaxel_error(blaxel_call(api_server, path, query))
    assert_blaxel_error(blaxel_call(api_server, "/jobs/a%20b/executions/c/tasks"))
    assert_blaxel_error(blaxel_call(api_server, "/jobs/x"))


@FUZZ
@given(cursor=st.text(max_size=40), limit=st.text(max_size=5), sort=st.text(max_size=15), q=st.text(max_size=30))
def test_blaxel_fuzz(api_server, seeded, cursor, limit, sort, q):
    r = blaxel_call(
        api_server, f"/jobs/{seeded}/executions/default/tasks", {"cursor": cursor, "limit": limit, "sort": sort, "q": q}
    )
    if r.status_code != 200:
        assert_blaxel_error(r)


@FUZZ
@given(tasks=JSON, transition=JSON, condition=JSON)
def test_native_fuzz(api_server, seeded, tasks, transition, condition):
    base = f"{api_server.url}/v1/jobs/{seeded}/executions/default/tasks"
    h = native_headers()
    for url, body in (
        (base, {"tasks": [tasks]}),
        (base, tasks),
        (f"{base}/t-1/transitions", transition),
        (f"{base}/t-2/conditions", condition),
    ):
        r = HTTP.post(url, headers=h, content=_dumps(body))
        if r.status_code >= 300:
            assert_native_error(r)


def test_nul_characters_and_odd_bytes_are_refused_not_stored(api_server, seeded):
    """PostgreSQL cannot store NUL characters: every dialect refuses them with a 400, on both engines alike."""
    base = f"{api_server.url}/v1/jobs/{seeded}/executions/default/tasks"
    h = native_headers()
    for url, body in (
        (base, {"tasks": [{"id": "n1", "labels": {"a": "b\x00"}}]}),
        (base, {"tasks": [{"id": "n2", "displayName": "\x00"}]}),
        (f"{base}/t-1/transitions", {"to": "running", "message": "x\x00y"}),
        (f"{base}/t-1/conditions", {"type": "Ready\x00"}),
    ):
        assert_native_error(HTTP.post(url, headers=h, content=_dumps(body)))
    for params in ({"q": "ab\x00"}, {"cursor": "\x00"}, {"state": "running\x00"}, {"q": "%ff%fe"}):
        r = HTTP.get(base, headers=h, params=params)
        assert r.status_code == 200 or r.status_code < 500 and r.json()["error"]["code"], r.text
    assert (
        HTTP.post(base, headers={**h, "Idempotency-Key": "a\x01b"}, json={"tasks": [{"id": "n3"}]}).status_code == 400
    )
    assert_batch_error(batch_call(api_server, "GET", f"/jobs/{seeded}/tasks", {"$filter": "id eq 'a\x00b'"}))
    assert_batch_error(
        batch_call(api_server, "POST", f"/jobs/{seeded}/tasks", None, _dumps({"id": "n4", "commandLine": "a\x00"}))
    )
    r = batch_call(
        api_server,
        "POST",
        f"/jobs/{seeded}/addtaskcollection",
        None,
        _dumps({"value": [{"id": "n5", "commandLine": "a\x00"}]}),
    )
    assert r.status_code < 500
    assert_omics_error(omics_call(api_server, f"/run/{seeded}/task", {"status": "RUNNING\x00"}))
    assert_blaxel_error(blaxel_call(api_server, f"/jobs/{seeded}/executions/default/tasks", {"q": "ab\x00"}))
    # the connection that carried them still serves
    assert HTTP.get(f"{base}/t-1", headers=h).status_code == 200
