"""The native API (/v1), driven with httpx."""

from __future__ import annotations

import httpx
import pytest

from tests.test_api_fixtures import HTTP, SECRET_B, api_server, native_headers  # noqa: F401


@pytest.fixture(scope="module")
def http(api_server):
    with httpx.Client(base_url=api_server.url + "/v1", headers=native_headers(), timeout=30) as c:
        yield c


def _tasks(job: str, execution: str = "default") -> str:
    return f"/jobs/{job}/executions/{execution}/tasks"


def test_add_is_all_or_nothing(api_server, http):
    job = api_server.unique()
    r = http.post(_tasks(job), json={"tasks": [{"id": "a", "labels": {"k": "v"}}, {"id": "b", "requiredSlots": 2}]})
    assert r.status_code == 201
    a, b = r.json()["tasks"]
    assert (a["id"], a["state"], a["version"], a["spec"]) == ("a", "pending", 1, {"labels": {"k": "v"}})
    assert b["number"] > a["number"]
    r = http.post(_tasks(job), json={"tasks": [{"id": "c"}, {"id": "A"}]})
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "task_exists" and err["taskId"] == "A"
    assert http.get(_tasks(job) + "/c").status_code == 404  # nothing of the refused request was written
    r = http.post(_tasks(job), json={"tasks": [{"id": "d"}, {"id": "bad id"}]})
    assert r.status_code == 400 and r.json()["error"]["field"] == "tasks[1].id"
    assert http.get(_tasks(job) + "/d").status_code == 404


def test_transitions_if_match_and_history(api_server, http):
    job = api_server.unique()
    http.post(_tasks(job), json={"tasks": [{"id": "t", "constraints": {"maxTaskRetryCount": 1}}]})
    r = http.get(_tasks(job) + "/t")
    assert r.status_code == 200 and r.headers["etag"] == '"1"'
    r = http.post(_tasks(job) + "/t/transitions", json={"to": "running"}, headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["state"] == "running" and r.headers["etag"] == '"2"'
    r = http.post(_tasks(job) + "/t/transitions", json={"to": "succeeded"}, headers={"If-Match": '"1"'})
    assert r.status_code == 412
    assert r.json()["error"]["code"] == "version_mismatch" and r.json()["error"]["actual"] == 2
    # a failure with a retry left lands in pending
    r = http.post(
        _tasks(job) + "/t/transitions",
        json={"to": "failed", "exitCode": 3, "reason": "crash", "failureInfo": {"category": "usererror", "code": "E"}},
    )
    assert r.status_code == 200 and r.json()["state"] == "pending" and r.json()["retryCount"] == 1
    r = http.post(_tasks(job) + "/t/transitions", json={"to": "stopping"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "illegal_transition"
    assert r.json()["error"]["current"] == "pending"
    for to in ("running", "succeeded"):
        assert (
            http.post(
                _tasks(job) + "/t/transitions", json={"to": to, "exitCode": 0 if to == "succeeded" else None}
            ).status_code
            == 200
        )
    r = http.post(_tasks(job) + "/t/transitions", json={"to": "pending"})
    assert r.status_code == 409
    events = http.get(_tasks(job) + "/t/events").json()["events"]
    assert [e["type"] for e in events] == ["TaskAdded"] + ["TaskTransitioned"] * 4
    assert [e["version"] for e in events] == [1, 2, 3, 4, 5]
    assert events[2]["data"]["cause"] == "retry" and events[2]["data"]["exitCode"] == 3
    assert http.get(_tasks(job) + "/nope/events").status_code == 404


def test_if_match_of_a_version_past_64_bits_is_a_400_not_a_500(api_server, http):
    job = api_server.unique()
    http.post(_tasks(job), json={"tasks": [{"id": "t"}]})
    for value in (f'"{2**64}"', f'"{10**30}"', str(10**19)):  # was a 500: the 412 naming it did not serialise
        r = http.post(_tasks(job) + "/t/transitions", json={"to": "running"}, headers={"If-Match": value})
        assert r.status_code == 400, (value, r.text)
        assert r.json()["error"]["code"] == "invalid" and r.json()["error"]["field"] == "If-Match"
    r = http.post(_tasks(job) + "/t/transitions", json={"to": "running"}, headers={"If-Match": f'"{2**40}"'})
    assert r.status_code == 412 and r.json()["error"]["actual"] == 1
    assert http.get(_tasks(job) + "/t").json()["version"] == 1  # nothing written


def test_idempotency_key(api_server, http):
    job = api_server.unique()
    body = {"tasks": [{"id": "once"}]}
    first = http.post(_tasks(job), json=body, headers={"Idempotency-Key": "k-1"})
    again = http.post(_tasks(job), json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    other = http.post(_tasks(job), json={"tasks": [{"id": "twice"}]}, headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    t1 = http.post(_tasks(job) + "/once/transitions", json={"to": "running"}, headers={"Idempotency-Key": "k-2"})
    t2 = http.post(_tasks(job) + "/once/transitions", json={"to": "running"}, headers={"Idempotency-Key": "k-2"})
    assert t1.status_code == t2.status_code == 200 and t1.json()["version"] == t2.json()["version"] == 2
    events = http.get(_tasks(job) + "/once/events").json()["events"]
    assert len(events) == 2 and events[1]["requestId"] == "k-2"


def test_list_and_counts(api_server, http):
    job = api_server.unique()
    http.post(
        _tasks(job, "e1"), json={"tasks": [{"id": f"n-{i:02d}", "displayName": f"Sample {i}"} for i in range(12)]}
    )
    for i in range(4):
        http.post(_tasks(job, "e1") + f"/n-{i:02d}/transitions", json={"to": "running"})
    seen, cursor = [], None
    while True:
        r = http.get(
            _tasks(job, "e1"), params={"limit": 5, "sort": "name:asc", **({"cursor": cursor} if cursor else {})}
        )
        assert r.status_code == 200
        doc = r.json()
        seen += [t["id"] for t in doc["tasks"]]
        assert doc["total"] == 12
        if not doc["hasMore"]:
            assert doc["nextCursor"] == ""
            break
        cursor = doc["nextCursor"]
    assert seen == [f"n-{i:02d}" for i in range(12)]
    r = http.get(_tasks(job, "e1"), params={"state": "running", "sort": "number:asc"})
    assert [t["id"] for t in r.json()["tasks"]] == [f"n-{i:02d}" for i in range(4)]
    r = http.get(_tasks(job, "e1"), params={"state": "PENDING,active", "q": "sample 1"})  # vendor names work too
    assert sorted(t["id"] for t in r.json()["tasks"]) == ["n-10", "n-11"]
    counts = http.get(f"/jobs/{job}/executions/e1/counts").json()
    assert counts["states"]["running"] == 4 and counts["states"]["pending"] == 8 and counts["total"] == 12
    assert counts["running"] == 4 and counts["active"] == 8 and counts["validationStatus"] == "validated"
    assert http.get(f"/jobs/{job}/executions/other/counts").status_code == 404
    assert http.get(_tasks(job, "other")).status_code == 404


def test_bad_requests_get_native_errors(api_server, http):
    job = api_server.unique()
    http.post(_tasks(job), json={"tasks": [{"id": "x"}]})
    cases = [
        ("post", _tasks(job), {"content": b"{not json"}, 400, "invalid_json"),
        ("post", _tasks(job), {"content": b""}, 400, "invalid_json"),
        ("post", _tasks(job), {"json": []}, 400, "invalid"),
        ("post", _tasks(job), {"json": {"tasks": "x"}}, 400, "invalid"),
        ("post", _tasks(job), {"json": {"tasks": [], "extra": 1}}, 400, "invalid"),
        ("post", _tasks(job), {"json": {"tasks": []}}, 400, "invalid"),
        ("post", _tasks(job), {"json": {"tasks": [{"id": "y", "bogus": 1}]}}, 400, "invalid"),
        ("post", _tasks(job) + "/x/transitions", {"json": {"to": "flying"}}, 400, "invalid"),
        ("post", _tasks(job) + "/x/transitions", {"json": {}}, 400, "invalid"),
        ("post", _tasks(job) + "/x/transitions", {"json": {"to": "running", "exitCode": "1"}}, 400, "invalid"),
        ("post", _tasks(job) + "/x/transitions", {"json": {"to": "running", "nodeInfo": 3}}, 400, "invalid"),
        ("post", _tasks(job) + "/x/transitions", {"json": {"to": "running", "color": "red"}}, 400, "invalid"),
        (
            "post",
            _tasks(job) + "/x/transitions",
            {"json": {"to": "running"}, "headers": {"If-Match": "v1"}},
            400,
            "invalid",
        ),
        ("post", _tasks(job) + "/missing/transitions", {"json": {"to": "running"}}, 404, "task_not_found"),
        ("post", _tasks(job) + "/x/conditions", {"json": {"state": "x"}}, 400, "invalid"),
        ("get", _tasks(job), {"params": {"limit": "many"}}, 400, "invalid"),
        ("get", _tasks(job), {"params": {"limit": "0"}}, 400, "invalid"),
        ("get", _tasks(job), {"params": {"sort": "size:asc"}}, 400, "invalid"),
        ("get", _tasks(job), {"params": {"state": "sleeping"}}, 400, "invalid"),
        ("get", _tasks(job), {"params": {"cursor": "abc"}}, 400, "invalid_cursor"),
        ("get", _tasks(job), {"params": {"q": "x" * 300}}, 400, "invalid"),
        ("get", _tasks(job) + "/bad%20id", {}, 400, "invalid"),
        ("get", "/jobs/bad%20job/executions/default/tasks/x", {}, 400, "invalid"),
        ("get", "/jobs/x", {}, 404, "not_found"),
        ("delete", _tasks(job) + "/x", {}, 405, "method_not_allowed"),
        (
            "post",
            _tasks(job),
            {"json": {"tasks": [{"id": "z"}]}, "headers": {"Idempotency-Key": "k" * 200}},
            400,
            "invalid",
        ),
    ]
    for method, path, kwargs, status, code in cases:
        r = http.request(method.upper(), path, **kwargs)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (method, path, kwargs, r.text)
        assert r.json()["error"]["message"]
    r = HTTP.get(api_server.url + "/v1" + _tasks(job), headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = HTTP.get(api_server.url + "/v1" + _tasks(job), headers={"Authorization": "Basic abc"})
    assert r.status_code == 401
    r = HTTP.post(api_server.url + "/v1" + _tasks(job), content=b"x" * (9 * 1024 * 1024), headers=native_headers())
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def test_docs_and_openapi(api_server):
    assert HTTP.get(api_server.url + "/docs").status_code == 200
    paths = HTTP.get(api_server.url + "/openapi.json").json()["paths"]
    for path in (
        "/batch/jobs/{job_id}/tasks",
        "/omics/run/{run_id}/task",
        "/blaxel/v0/jobs/{job_id}/executions/{execution_id}/tasks",
        "/v1/jobs/{job}/executions/{execution}/tasks/{task}/transitions",
    ):
        assert path in paths


def test_a_list_filtered_in_batch_s_grammar_walks_the_tasks_that_match(api_server, http):
    job = api_server.unique()
    http.post(_tasks(job), json={"tasks": [{"id": f"f-{i:02d}"} for i in range(10)]})
    for i in range(6):
        http.post(f"{_tasks(job)}/f-{i:02d}/transitions", json={"to": "running"})
        http.post(f"{_tasks(job)}/f-{i:02d}/transitions", json={"to": "failed" if i % 2 else "succeeded",
                                                               "exitCode": i})
    text = "state eq 'completed' and executionInfo/exitCode ge 2"
    seen, cursor = [], None
    while True:
        doc = http.get(_tasks(job), params={"filter": text, "limit": 1, "sort": "name:asc",
                                            **({"cursor": cursor} if cursor else {})}).json()
        seen += [t["id"] for t in doc["tasks"]]
        assert doc["total"] == 10  # the scope's, ignoring filters
        if not doc["hasMore"]:
            break
        cursor = doc["nextCursor"]
    assert seen == ["f-02", "f-03", "f-04", "f-05"]
    r = http.get(_tasks(job), params={"filter": text, "state": "failed", "sort": "name:asc"})  # both
    assert [t["id"] for t in r.json()["tasks"]] == ["f-03", "f-05"]
    r = http.get(_tasks(job), params={"filter": "exitCode eq 1"})
    assert (r.status_code, r.json()["error"]["code"], r.json()["error"]["field"]) == (400, "invalid", "filter")
    first = http.get(_tasks(job), params={"filter": text, "limit": 1}).json()
    r = http.get(_tasks(job), params={"filter": "state eq 'active'", "cursor": first["nextCursor"]})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_cursor")


def test_counts_as_of_an_earlier_answer_s_position_give_that_answer_again(api_server, http):
    """Every count summary names the log position it reflects; ``asOf`` that position later gives the same counts
    (folded from the newest snapshot at or before it), which is how a caller audits an answer it was given."""
    job = api_server.unique()
    http.post(_tasks(job), json={"tasks": [{"id": f"t{i}", "requiredSlots": 1 + i % 2} for i in range(6)]})
    for i in range(3):
        http.post(f"{_tasks(job)}/t{i}/transitions", json={"to": "running"})
    then = http.get(f"/jobs/{job}/executions/default/counts").json()
    assert then["position"] > 0 and then["states"]["running"] == 3
    for i in range(3):
        http.post(f"{_tasks(job)}/t{i}/transitions", json={"to": "succeeded", "exitCode": 0})
    http.post(_tasks(job), json={"tasks": [{"id": "late"}]})
    now = http.get(f"/jobs/{job}/executions/default/counts").json()
    assert now["position"] > then["position"] and now["states"]["succeeded"] == 3 and now["total"] == 7
    again = http.get(f"/jobs/{job}/executions/default/counts", params={"asOf": then["position"]}).json()
    for name in ("states", "slots", "total", "active", "running", "completed", "succeeded", "failed", "position"):
        assert again[name] == then[name], name
    assert again["validationStatus"] == "unvalidated" and f"as of position {then['position']}" in (
        again["validationDetail"])
    for bad in ("abc", "-1", "1.5", "9" * 30):
        r = http.get(f"/jobs/{job}/executions/default/counts", params={"asOf": bad})
        assert (r.status_code, r.json()["error"]["code"], r.json()["error"]["field"]) == (400, "invalid", "asOf")
    assert http.get(f"/jobs/{api_server.unique()}/executions/default/counts", params={"asOf": 1}).status_code == 404


def test_a_task_as_of_a_position_is_the_task_as_it_was_then(api_server, http):
    job = api_server.unique()
    http.post(_tasks(job), json={"tasks": [{"id": "t", "displayName": "step"}]})
    added = http.get(f"/jobs/{job}/executions/default/counts").json()["position"]
    running = http.post(f"{_tasks(job)}/t/transitions", json={"to": "running"}).json()
    at_running = http.get(f"/jobs/{job}/executions/default/counts").json()["position"]
    http.post(f"{_tasks(job)}/t/transitions", json={"to": "failed", "exitCode": 3})
    now = http.get(f"{_tasks(job)}/t").json()
    assert now["state"] == "failed"
    r = http.get(f"{_tasks(job)}/t", params={"asOf": at_running})
    assert r.status_code == 200 and r.json() == running and r.headers["etag"] == f'"{running["version"]}"'
    then = http.get(f"{_tasks(job)}/t", params={"asOf": added}).json()
    assert (then["state"], then["version"], then["spec"]["displayName"]) == ("pending", 1, "step")
    r = http.get(f"{_tasks(job)}/t", params={"asOf": added - 1})  # before it was added
    assert r.status_code == 404 and r.json()["error"]["code"] == "task_not_found"
    r = http.get(f"{_tasks(job)}/t", params={"asOf": "yesterday"})
    assert (r.status_code, r.json()["error"]["field"]) == (400, "asOf")
    assert http.get(f"{_tasks(job)}/nobody", params={"asOf": at_running}).status_code == 404


def test_outside_every_dialect_errors_have_the_native_shape_and_healthz_answers(api_server):
    r = HTTP.get(api_server.url + "/nowhere/at/all")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found" and r.json()["error"]["message"]
    r = HTTP.delete(api_server.url + "/healthz")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = HTTP.get(api_server.url + "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_openapi_documents_the_parameters_of_routes_that_read_their_own(api_server):
    """The list and count routes read their parameters from the request (no FastAPI dependency injection): the
    OpenAPI document still names every one of them, where it is read from and whether it is required."""
    paths = HTTP.get(api_server.url + "/openapi.json").json()["paths"]

    def params(path: str) -> dict[tuple[str, str], bool]:
        return {(p["in"], p["name"]): p["required"] for p in paths[path]["get"]["parameters"]}

    assert params("/v1/jobs/{job}/executions/{execution}/tasks") == {
        ("path", "job"): True,
        ("path", "execution"): True,
        **{("query", n): False for n in ("cursor", "limit", "sort", "q", "state", "filter")},
        ("header", "authorization"): False,
    }
    assert params("/v1/jobs/{job}/executions/{execution}/tasks/{task}") == {
        **{("path", n): True for n in ("job", "execution", "task")},
        ("query", "asOf"): False,
        ("header", "authorization"): False,
    }
    assert params("/v1/jobs/{job}/executions/{execution}/counts") == {
        ("path", "job"): True,
        ("path", "execution"): True,
        ("query", "asOf"): False,
        ("header", "authorization"): False,
    }
    assert params("/blaxel/v0/jobs/{job_id}/executions/{execution_id}/tasks") == {
        ("path", "job_id"): True,
        ("path", "execution_id"): True,
        **{("query", n): False for n in ("cursor", "limit", "sort", "q")},
        ("header", "X-Blaxel-Authorization"): False,
        ("header", "X-Blaxel-Workspace"): False,
    }
    assert params("/batch/jobs/{job_id}/taskcounts") == {("path", "job_id"): True, ("query", "api-version"): False}
    sort = next(p for p in paths["/v1/jobs/{job}/executions/{execution}/tasks"]["get"]["parameters"]
                if p["name"] == "sort")
    assert "createdAt:desc" in sort["description"]


def test_digits_that_are_not_ascii_are_refused_not_a_500(api_server, http):
    """``asOf`` and ``If-Match`` take ASCII digits: other characters Python calls digits (``²``, ``١``) are the
    caller's 400, never a 500 from int(), and nothing is recorded."""
    job = api_server.unique()
    assert http.post(_tasks(job), json={"tasks": [{"id": "x"}]}).status_code == 201
    for path in (_tasks(job) + "/x", f"/jobs/{job}/executions/default/counts"):
        for value in ("\u00b2", "1\u00b2", "\u0661"):
            r = http.get(path, params={"asOf": value})
            assert r.status_code == 400, (path, value, r.text)
            assert r.json()["error"] == {
                "code": "invalid", "message": "asOf: must be a log position (a whole number)", "field": "asOf"
            }
    for value in (b'"\xb2"', b"\xb2"):  # a header is bytes: ISO 8859-1 text to the server
        r = http.post(_tasks(job) + "/x/transitions", json={"to": "running"}, headers={"If-Match": value})
        assert r.status_code == 400, (value, r.text)
        assert r.json()["error"]["field"] == "If-Match"
    assert http.get(_tasks(job) + "/x").json()["version"] == 1
