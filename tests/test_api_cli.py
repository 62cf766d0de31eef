"""``taskstore credentials create``, ``list`` and ``revoke``, and ``taskstore serve``."""

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


def test_credentials_list_and_revoke_and_a_running_service_refuses_a_revoked_key(tmp_path, capsys, monkeypatch):
    """``list`` shows key ids, workspaces and creation times and never a secret; ``revoke`` deletes one, and a
    service that loaded it refuses it once its table is ``MAX_AGE`` old (shortened here); the others go on."""
    import time

    from api import create_app
    from api.credentials import CredentialStore
    from taskstore import open_store

    monkeypatch.setattr(CredentialStore, "MAX_AGE", 0.3)
    url = _url(tmp_path)
    made = []
    for ws in ("team-1", "team-1", "team-2"):
        assert main(["credentials", "create", "--db", url, "--workspace", ws, "--json"]) == 0
        made.append(json.loads(capsys.readouterr().out))
    assert main(["credentials", "list", "--db", url, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(c["keyId"] for c in listed) == sorted(c["keyId"] for c in made)
    assert all(set(c) == {"workspace", "keyId", "createdAt"} for c in listed)
    assert main(["credentials", "list", "--db", url, "--workspace", "team-2"]) == 0
    text = capsys.readouterr().out
    assert made[2]["keyId"] in text and made[0]["keyId"] not in text and "1 credential" in text
    assert all(c["secret"] not in text for c in made)

    def add(server, cred) -> int:
        return HTTP.post(f"{server.url}/v1/jobs/j/executions/e/tasks", headers={"Authorization": f"Bearer {cred['secret']}"},
                         json={"tasks": [{"id": f"t-{time.monotonic_ns()}"}]}).status_code

    with open_store(url) as store:
        server = ThreadedServer(create_app(store))
        try:
            assert [add(server, c) for c in made] == [201, 201, 201]
            time.sleep(CredentialStore.MAX_AGE + 0.1)  # a reload just before the revocation: the next one refuses it
            assert [add(server, c) for c in made] == [201, 201, 201]
            assert main(["credentials", "revoke", "--db", url, "--key-id", made[0]["keyId"]]) == 0
            assert "revoked " + made[0]["keyId"] in capsys.readouterr().out
            time.sleep(CredentialStore.MAX_AGE + 0.1)
            assert [add(server, c) for c in made] == [401, 201, 201]
        finally:
            server.stop()
    assert main(["credentials", "revoke", "--db", url, "--key-id", made[0]["keyId"]]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and "no credential with key id" in " ".join(printed.err.split())
    assert main(["credentials", "list", "--db", url, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


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
