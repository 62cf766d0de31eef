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
    assert main(["credentials", "create", "--db", url, "--workspace", "no spaces"]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and "taskstore credentials: workspace:" in " ".join(printed.err.split())

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



def test_serve_refuses_a_port_that_is_not_one_before_opening_anything(tmp_path, capsys, monkeypatch):
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(kw))
    for port in ("0", "-1", "65536", "99999", "http"):  # 99999: uvicorn listened on another port than it said
        with pytest.raises(SystemExit) as info:
            main(["serve", "--db", _url(tmp_path), "--port", port])
        assert info.value.code == 2 and "argument --port" in capsys.readouterr().err
    assert served == [] and list(tmp_path.iterdir()) == []
    assert main(["serve", "--db", _url(tmp_path), "--port", "65535"]) == 0 and served[0]["port"] == 65535


def test_the_migration_makes_the_credentials_table(database):
    """The api package's migration (version table api_version) creates exactly ``credentials_table``, on both
    engines, and running it again changes nothing."""
    from sqlalchemy import inspect

    from api.credentials import credentials_table, migrate
    from eventstore.engine import current_revision

    engine = database.open_engine()
    try:
        migrate(engine)
        migrate(engine)
        assert current_revision(engine, "api_version") == "a0001"
        columns = {c["name"]: c for c in inspect(engine).get_columns("api_credentials")}
        assert set(columns) == {c.name for c in credentials_table.columns}
        for c in credentials_table.columns:
            assert columns[c.name]["nullable"] == c.nullable, c.name
        indexes = {i["name"]: i for i in inspect(engine).get_indexes("api_credentials")}
        assert indexes["ix_api_credentials_secret_sha256"]["unique"]
    finally:
        engine.dispose()
