"""``taskstore credentials create`` and ``taskstore serve``."""

from __future__ import annotations

import json

import pytest

from taskstore.cli import main
from tests.test_api_fixtures import HTTP, ThreadedServer

# The command line takes a URL and opens its default schema, so it runs on a SQLite file here (a PostgreSQL URL goes
# through the same open_store).


def _url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def test_credentials_create_prints_a_working_credential(tmp_path, capsys):
    url = _url(tmp_path)
    assert main(["credentials", "create", "--db", url, "--workspace", "team-1", "--json"]) == 0
    cred = json.loads(capsys.readouterr().out)
    assert set(cred) == {"workspace", "keyId", "secret"} and cred["workspace"] == "team-1"
    assert main(["credentials", "create", "--db", url, "--workspace", "team-1"]) == 0
    text = capsys.readouterr().out
    assert "workspace: team-1" in text and "keyId:" in text and "secret:" in text
    with pytest.raises(SystemExit):
        main(["credentials", "create", "--db", url, "--workspace", "no spaces"])

    # a credential created while the server runs works at once
    from api import create_app
    from taskstore import open_store

    with open_store(url) as store:
        server = ThreadedServer(create_app(store))
        try:
            assert main(["credentials", "create", "--db", url, "--workspace", "team-2", "--json"]) == 0
            late = json.loads(capsys.readouterr().out)
            for c, ws in ((cred, "team-1"), (late, "team-2")):
                r = HTTP.post(
                    f"{server.url}/v1/jobs/j/executions/e/tasks",
                    headers={"Authorization": f"Bearer {c['secret']}"},
                    json={"tasks": [{"id": "t"}]},
                )
                assert r.status_code == 201 and r.json()["tasks"][0]["workspace"] == ws
        finally:
            server.stop()


def test_serve_creates_a_default_credential_once(tmp_path, capsys, monkeypatch):
    url = _url(tmp_path)
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append((app, kw)))
    assert main(["serve", "--db", url, "--port", "9999"]) == 0
    out = capsys.readouterr().out
    assert "workspace: default" in out and "secret:" in out
    app, kw = served[0]
    assert kw["host"] == "127.0.0.1" and kw["port"] == 9999
    assert main(["serve", "--db", url, "--host", "0.0.0.0"]) == 0
    assert "secret:" not in capsys.readouterr().out
    assert served[1][1] == {"host": "0.0.0.0", "port": 8080, "log_level": "info"}
    assert "/batch/jobs/{job_id}/tasks" in app.openapi()["paths"]
