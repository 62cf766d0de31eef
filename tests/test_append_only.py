"""The database itself refuses to change or remove events: raw SQL UPDATE and DELETE (and TRUNCATE on PostgreSQL)
fail on both engines, and the rows are unchanged afterwards. So for the scopes the events are keyed by: a scope row
names the workspace, job and execution of its events, and changing it would move them to another workspace."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from eventstore import EventLog, NewEvent, Scope, StreamAppend

SCOPE = Scope("ws", "job")


@pytest.fixture
def engine(database):
    eng = database.open_engine()
    try:
        log = EventLog(eng)
        log.append([StreamAppend(SCOPE, "s", [NewEvent("A", {"n": 1}), NewEvent("B", {"n": 2})])])
        log.append([StreamAppend(SCOPE, "t", [NewEvent("C", {"n": 3})])])
        yield eng
    finally:
        eng.dispose()


def snapshot(engine, table: str = "events") -> list[tuple]:
    order = "position" if table == "events" else "id"
    with engine.connect() as conn:
        return [tuple(str(v) for v in r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET type = 'Rewritten' WHERE stream = 's' AND version = 1",
        "UPDATE events SET version = version + 10",
        "UPDATE events SET position = position + 100 WHERE stream = 't'",
        "DELETE FROM events WHERE stream = 's' AND version = 2",
        "DELETE FROM events",
    ],
)
def test_update_and_delete_are_refused_by_the_database(engine, statement):
    before = snapshot(engine)
    assert len(before) == 3
    with pytest.raises(DBAPIError, match="append-only"):
        with engine.begin() as conn:
            conn.execute(text(statement))
    assert snapshot(engine) == before


def test_an_update_that_sets_a_column_to_its_own_value_is_refused_too(engine):
    before = snapshot(engine)
    with pytest.raises(DBAPIError, match="append-only"):
        with engine.begin() as conn:
            conn.execute(text("UPDATE events SET stream = stream"))
    assert snapshot(engine) == before


def test_the_refusal_holds_in_autocommit_mode(engine):
    before = snapshot(engine)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        with pytest.raises(DBAPIError, match="append-only"):
            conn.execute(text("DELETE FROM events WHERE stream = 't'"))
    assert snapshot(engine) == before


def test_truncate_is_refused_on_postgresql(postgresql_database):
    engine = postgresql_database.open_engine()
    try:
        EventLog(engine).append([StreamAppend(SCOPE, "s", [NewEvent("A", {"n": 1})])])
        before = snapshot(engine)
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(text("TRUNCATE events"))
        assert snapshot(engine) == before and len(before) == 1
    finally:
        engine.dispose()


def test_appends_still_work_after_a_refused_change(engine):
    with pytest.raises(DBAPIError, match="append-only"):
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM events"))
    log = EventLog(engine)
    result = log.append([StreamAppend(SCOPE, "s", [NewEvent("D", {"n": 4})], 2)])
    assert result.events[0].version == 3
    assert len(snapshot(engine)) == 4


# Statements that would take an existing event's key and so change or remove that event: SQLite's REPLACE deletes
# the rows in its way (firing the DELETE trigger only with recursive triggers on), an upsert updates one.
_TAKING_A_KEY = {
    "sqlite": [
        "REPLACE INTO events (position, scope_id, stream, version, type, schema_version, data, metadata) "
        "SELECT position, scope_id, stream, version, 'Forged', schema_version, '{}', metadata FROM events "
        "WHERE stream = 's' AND version = 1",
        "INSERT OR REPLACE INTO events (position, scope_id, stream, version, type, schema_version, data, metadata) "
        "SELECT 1000, scope_id, stream, version, 'Forged', schema_version, '{}', metadata FROM events "
        "WHERE stream = 's' AND version = 2",
        "INSERT INTO events (position, scope_id, stream, version, type, schema_version, data, metadata) "
        "SELECT position, scope_id, stream, 99, type, schema_version, data, metadata FROM events WHERE stream = 't' "
        "ON CONFLICT DO UPDATE SET type = 'Forged'",
    ],
    "postgresql": [
        "INSERT INTO events (position, scope_id, stream, version, type, schema_version, data, metadata) "
        "SELECT position, scope_id, stream, version, type, schema_version, data, metadata FROM events "
        "WHERE stream = 't' ON CONFLICT (position) DO UPDATE SET type = 'Forged'",
        "INSERT INTO events (scope_id, stream, version, type, schema_version, data, metadata) "
        "SELECT scope_id, stream, version, type, schema_version, data, metadata FROM events "
        "WHERE stream = 's' ON CONFLICT (scope_id, stream, version) DO UPDATE SET data = '{}'",
    ],
}


def test_replace_and_upserts_cannot_change_an_event(database, engine):
    before = snapshot(engine)
    for statement in _TAKING_A_KEY[database.engine]:
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(text(statement))
        assert snapshot(engine) == before, statement


_CHANGING_A_SCOPE = {
    "sqlite": [
        "UPDATE scopes SET workspace = 'other'",
        "DELETE FROM scopes",
        "REPLACE INTO scopes (id, workspace, job, execution) SELECT id, 'other', job, execution FROM scopes",
    ],
    "postgresql": [
        "UPDATE scopes SET workspace = 'other'",
        "DELETE FROM scopes",
        "TRUNCATE scopes",
        "INSERT INTO scopes (id, workspace, job, execution) SELECT id, workspace, job, execution FROM scopes "
        "ON CONFLICT (id) DO UPDATE SET workspace = 'other'",
    ],
}


def test_the_scopes_of_events_cannot_be_changed_or_removed(database, engine):
    """Moving a scope to another workspace would move its events there: refused like a change of the events."""
    before = snapshot(engine, "scopes")
    assert [row[1:] for row in before] == [(SCOPE.workspace, SCOPE.job, SCOPE.execution)]
    for statement in _CHANGING_A_SCOPE[database.engine]:
        with pytest.raises(DBAPIError, match="scopes are append-only"):
            with engine.begin() as conn:
                conn.execute(text(statement))
        assert snapshot(engine, "scopes") == before, statement
    log = EventLog(engine)  # and a new scope is still added with its first event
    log.append([StreamAppend(Scope("ws", "other"), "u", [NewEvent("E", {"n": 5})])])
    assert len(snapshot(engine, "scopes")) == 2
