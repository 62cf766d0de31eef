"""PostgreSQL's pooled connections (eventstore.dialects.postgresql.ping_when_idle): a connection that sat idle longer
than PING_AFTER is pinged before it is handed out, and replaced when its server process is gone; one handed out
again sooner is not pinged (no round trip before a busy pool's statements)."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from eventstore import Scope
from eventstore.dialects import postgresql as pg_dialect
from eventstore.lifecycle import State
from tests.conftest import PG_URL

SCOPE = Scope("ws", "job")


def _backend_pid(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(pid: int) -> None:
    with psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0] is True
        # pg_terminate_backend only signals: wait until the process is gone.
        admin.execute(
            "DO $$ BEGIN FOR i IN 1..500 LOOP EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = "
            f"{int(pid)}); PERFORM pg_sleep(0.01); END LOOP; END $$"
        )


@pytest.fixture
def pg_store(postgresql_database):
    s = postgresql_database.open_store(background_snapshots=False)
    try:
        yield s
    finally:
        s.close()


def test_a_connection_idle_past_the_limit_whose_server_process_died_is_replaced(pg_store, monkeypatch):
    pg_store.add_tasks(SCOPE, [{"id": "a"}, {"id": "b"}])
    pid = _backend_pid(pg_store.engine)
    assert _backend_pid(pg_store.engine) == pid  # the pool hands the one connection out again
    _terminate(pid)
    monkeypatch.setattr(pg_dialect, "PING_AFTER", -1.0)  # every checkout counts as idle past the limit
    # Every kind of read and a write succeed on a fresh connection, none sees the dead one.
    assert pg_store.queries.counts(SCOPE, validate=False).total == 2
    assert pg_store.queries.counts(SCOPE).validation_status == "validated"
    assert [t.task_id for t in pg_store.queries.list_tasks(SCOPE).items] == ["b", "a"]
    pg_store.transition(SCOPE, "a", "running")
    assert pg_store.queries.counts(SCOPE).states[State.RUNNING] == 1
    assert _backend_pid(pg_store.engine) != pid


def test_a_connection_handed_out_again_within_the_limit_is_not_pinged(pg_store, monkeypatch):
    pg_store.add_tasks(SCOPE, [{"id": "a"}])
    pings: list[object] = []
    dialect = pg_store.engine.dialect
    real = dialect.do_ping

    def counted(dbapi_conn):
        pings.append(dbapi_conn)
        return real(dbapi_conn)

    monkeypatch.setattr(dialect, "do_ping", counted)
    monkeypatch.setattr(pg_dialect, "PING_AFTER", 3600.0)
    for _ in range(5):
        pg_store.queries.counts(SCOPE)
        pg_store.queries.list_tasks(SCOPE)
    assert pings == []
    monkeypatch.setattr(pg_dialect, "PING_AFTER", -1.0)
    pg_store.queries.counts(SCOPE, validate=False)
    assert len(pings) == 1


def test_without_the_ping_a_dead_connection_would_have_been_handed_out(pg_store, monkeypatch):
    """What the first test relies on: the pool really does keep a connection whose server process is gone."""
    pg_store.add_tasks(SCOPE, [{"id": "a"}])
    pid = _backend_pid(pg_store.engine)
    _terminate(pid)
    monkeypatch.setattr(pg_dialect, "PING_AFTER", 3600.0)
    with pytest.raises(OperationalError) as got:
        pg_store.queries.counts(SCOPE, validate=False)
    assert got.value.connection_invalidated
    # SQLAlchemy invalidated it on the error: the next read gets a new connection.
    assert pg_store.queries.counts(SCOPE, validate=False).total == 1
