"""Where a direct route's store read runs (api.common.short_read): an unfiltered list page on a SQLite file runs on
the event loop, everything else (a filtered page, counts, PostgreSQL, no idle connection) in the thread pool, and the
answers are the same either way."""

from __future__ import annotations

import threading

import pytest
from starlette.testclient import TestClient

from api.common import loop_reads
from eventstore import Scope
from tests.conftest import make_database
from tests.test_api_direct import _normal, _requests
from tests.test_api_fixtures import SECRET_A, WS_A, native_headers

JOB = "j1"


def _open(kind: str, tmp_path):
    from api import create_app

    gen = make_database(kind, tmp_path)
    store = next(gen).open_store()
    app = create_app(store)
    app.state.credentials.create(WS_A, secret=SECRET_A)
    scope = Scope(WS_A, JOB)
    store.add_tasks(scope, [{"id": f"t{i}", "displayName": f"task {i}", "labels": {"k": str(i % 2)}} for i in range(6)])
    store.transition(scope, "t1", "running")
    store.transition(scope, "t2", "running")
    store.transition(scope, "t2", "failed", exit_code=3, failure_info={"category": "usererror", "code": "E"})
    store.record_condition(scope, "t3", {"type": "Ready", "state": "true"})
    return gen, store, app


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request, tmp_path):
    gen, store, app = _open(request.param, tmp_path)
    threads: list[tuple[str, int]] = []  # ("loop", id) for each request, ("read", id) for each store read

    async def recording(scope, receive, send):
        threads.append(("loop", threading.get_ident()))
        await app(scope, receive, send)

    for name in ("list_tasks", "counts"):
        real = getattr(store.queries, name)

        def traced(*args, _real=real, **kwargs):
            threads.append(("read", threading.get_ident()))
            return _real(*args, **kwargs)

        setattr(store.queries, name, traced)
    try:
        with TestClient(recording) as client:
            yield request.param, store, app, client, threads
    finally:
        store.close()
        next(gen, None)


def _on_the_loop(client, threads, url, headers) -> bool:
    threads.clear()
    r = client.get(url, headers=headers)
    assert r.status_code == 200, r.text
    (where, loop), (what, read) = threads
    assert (where, what) == ("loop", "read")
    return read == loop


def test_short_reads_run_on_the_loop_only_on_a_sqlite_file(served):
    kind, store, app, client, threads = served
    v1 = f"/v1/jobs/{JOB}/executions/default"
    blaxel = f"/blaxel/v0/jobs/{JOB}/executions/default/tasks"
    bx = {"X-Blaxel-Authorization": f"Bearer {SECRET_A}"}
    assert app.state.loop_reads is (kind == "sqlite")
    sqlite = kind == "sqlite"
    assert _on_the_loop(client, threads, f"{v1}/tasks", native_headers()) is sqlite
    assert _on_the_loop(client, threads, f"{v1}/tasks?limit=2&sort=name:asc", native_headers()) is sqlite
    cursor = client.get(f"{v1}/tasks?limit=2", headers=native_headers()).json()["nextCursor"]
    assert _on_the_loop(client, threads, f"{v1}/tasks?limit=2&cursor={cursor}", native_headers()) is sqlite
    assert _on_the_loop(client, threads, blaxel, bx) is sqlite
    # what may scan, and what may recount the job, keeps the thread pool
    assert not _on_the_loop(client, threads, f"{v1}/tasks?q=task", native_headers())
    assert not _on_the_loop(client, threads, f"{v1}/tasks?state=running", native_headers())
    assert not _on_the_loop(client, threads, f"{blaxel}?q=task", bx)
    assert not _on_the_loop(client, threads, f"{v1}/counts", native_headers())


def test_without_an_idle_connection_a_short_read_takes_the_thread_pool(tmp_path, monkeypatch):
    gen, store, app = _open("sqlite", tmp_path)
    try:
        seen: list[int] = []
        real = store.queries.list_tasks

        def traced(*args, **kwargs):
            seen.append(threading.get_ident())
            return real(*args, **kwargs)

        monkeypatch.setattr(store.queries, "list_tasks", traced)
        with TestClient(app) as client:
            url = f"/v1/jobs/{JOB}/executions/default/tasks"
            assert client.get(url, headers=native_headers()).status_code == 200
            monkeypatch.setattr(type(store.engine.pool), "checkedin", lambda self: 0)
            assert client.get(url, headers=native_headers()).status_code == 200
            loop = client.portal.call(threading.get_ident)
        assert seen[0] == loop and seen[1] != loop
    finally:
        store.close()
        next(gen, None)


def test_an_in_memory_database_keeps_the_thread_pool():
    from taskstore import open_store

    store = open_store("sqlite:///:memory:")
    try:
        assert not loop_reads(store.engine)
    finally:
        store.close()


def test_answers_are_the_same_on_the_loop_and_in_the_thread_pool(tmp_path):
    gen, store, app = _open("sqlite", tmp_path)
    try:
        from tests.test_api_fixtures import SECRET_B, WS_B

        app.state.credentials.create(WS_B, secret=SECRET_B)
        with TestClient(app, raise_server_exceptions=False) as client:
            for path, query, headers in _requests(JOB):
                url = path + (f"?{query}" if query else "")
                app.state.loop_reads = True
                a = client.get(url, headers=headers)
                app.state.loop_reads = False
                b = client.get(url, headers=headers)
                assert _normal(a) == _normal(b), url
    finally:
        store.close()
        next(gen, None)
