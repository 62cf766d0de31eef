"""Fixtures shared by every test: each storage test runs on SQLite and on PostgreSQL.

PostgreSQL is taken from ``TASKSTORE_PG_URL`` (default: the local server at 127.0.0.1:5432, database ``test``). Each
test gets a schema of its own, dropped afterwards. Without a server the PostgreSQL variants skip with the reason;
with ``TASKSTORE_REQUIRE_PG=1`` (as in CI) they fail instead.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

import pytest
from sqlalchemy import create_engine, text

PG_URL = os.environ.get("TASKSTORE_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("TASKSTORE_REQUIRE_PG") == "1"

_pg_state: dict[str, str | None] = {}


def pg_unavailable() -> str | None:
    """None when PostgreSQL answers, else why not (checked once per run)."""
    if "reason" not in _pg_state:
        try:
            engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
            _pg_state["reason"] = None
        except Exception as exc:  # noqa: BLE001 - any failure to connect means "no server here"
            _pg_state["reason"] = f"PostgreSQL at {PG_URL} is not reachable: {exc.__class__.__name__}: {exc}"
    return _pg_state["reason"]


@dataclass(frozen=True)
class Database:
    """Where one test's store lives: a URL and, on PostgreSQL, a schema of its own."""

    engine: str  # "sqlite" or "postgresql"
    url: str
    schema: str | None = None

    def open_engine(self, **kwargs):
        from eventstore import open_engine

        return open_engine(self.url, schema=self.schema, **kwargs)

    def open_store(self, **kwargs):
        from taskstore import open_store

        return open_store(self.url, schema=self.schema, **kwargs)


def _drop_schema(schema: str) -> None:
    engine = create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def make_database(kind: str, tmp_path) -> Iterator[Database]:
    if kind == "sqlite":
        yield Database("sqlite", f"sqlite:///{tmp_path / 'taskstore.db'}")
        return
    reason = pg_unavailable()
    if reason:
        if REQUIRE_PG:
            pytest.fail(f"TASKSTORE_REQUIRE_PG=1 but {reason}")
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        yield Database("postgresql", PG_URL, schema)
    finally:
        _drop_schema(schema)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> Iterator[Database]:
    """A fresh, empty database on each engine."""
    yield from make_database(request.param, tmp_path)


@pytest.fixture
def postgresql_database(tmp_path) -> Iterator[Database]:
    """A fresh PostgreSQL schema, for the tests of PostgreSQL-only behaviour."""
    yield from make_database("postgresql", tmp_path)


@pytest.fixture
def engine(database):
    """A SQLAlchemy engine on a fresh, empty database of each engine."""
    eng = database.open_engine()
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def store(database):
    s = database.open_store()
    try:
        yield s
    finally:
        s.close()


class CliRun(NamedTuple):
    """What a ``taskstore`` command did: its exit code and what it printed."""

    code: int
    out: str
    err: str


@pytest.fixture
def taskstore_cli(database, capsys) -> Callable[..., CliRun]:
    """Run ``taskstore COMMAND --db URL ARGS...`` against the test's database (on PostgreSQL: its own schema, which a
    URL cannot name) and return what it did. The commands' ``open_store`` is pointed at the database for the call
    alone, whatever the test patches or undoes, and the URL they are given opens nothing: a command that reached
    past the patch would fail rather than write to a database shared with others."""
    from taskstore import cli, replay_cli

    def run(command: str, *args: str) -> CliRun:
        with pytest.MonkeyPatch.context() as patch:
            for module in (cli, replay_cli):
                patch.setattr(module, "open_store", lambda url, **kw: database.open_store(**kw))
            capsys.readouterr()  # what the test printed before is not the command's
            code = cli.main([command, "--db", "unused://", *args])
            printed = capsys.readouterr()
        return CliRun(code, printed.out, printed.err)

    return run
