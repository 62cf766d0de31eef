"""Schema migrations: a store made by an older version (revision 0001 only) is upgraded in place when opened, keeps
its events and gains idempotent appends; the tables the migrations create match ``eventstore/schema.py``."""

from __future__ import annotations

import orjson
import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from eventstore import ConcurrencyError, EventLog, Expect, NewEvent, Scope, StreamAppend, task_upcasters
from eventstore.dialects import dialect_for
from eventstore.engine import HEAD, _json_dumps, current_revision, upgrade
from eventstore.schema import metadata
from eventstore.tasks import TaskService

SCOPE = Scope("ws", "job", "exec")


def bare_engine(database):
    """An engine on the test's database configured like open_engine's, but without its automatic upgrade."""
    if database.engine == "sqlite":
        engine = create_engine(
            database.url, json_serializer=_json_dumps, json_deserializer=orjson.loads,
            connect_args={"check_same_thread": False},
        )
    else:
        engine = create_engine(
            database.url, json_serializer=_json_dumps, json_deserializer=orjson.loads,
            connect_args={"options": f"-c search_path={database.schema}"},
        )
    dialect_for(engine).configure(engine, schema=database.schema)
    return engine


def _json(engine, param: str) -> str:
    return f"CAST({param} AS JSONB)" if engine.dialect.name == "postgresql" else param


def write_0001_events(engine) -> list[tuple]:
    """Events as taskstore at revision 0001 wrote them, with raw SQL: a task added and started, and another event."""
    added = {"taskId": "Task-1", "spec": {"commandLine": "echo hi"}, "at": "2024-01-01T00:00:00.000000Z"}
    moved = {
        "from": "pending", "to": "running", "at": "2024-01-01T00:00:01.000000Z", "cause": "transition",
        "retryCount": 0, "requeueCount": 0,
    }
    meta = {"recordedAt": "2024-01-01T00:00:00.000000Z"}
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO scopes (workspace, job, execution) VALUES (:w, :j, :e)"),
            {"w": SCOPE.workspace, "j": SCOPE.job, "e": SCOPE.execution},
        )
        sid = conn.execute(text("SELECT id FROM scopes")).scalar_one()
        for stream, version, type_, data in (
            ("task-1", 1, "TaskAdded", added),
            ("task-1", 2, "TaskTransitioned", moved),
            ("other", 1, "Something", {"n": 1}),
        ):
            conn.execute(
                text(
                    "INSERT INTO events (scope_id, stream, version, type, schema_version, data, metadata) "
                    f"VALUES (:sid, :stream, :v, :type, 1, {_json(engine, ':data')}, {_json(engine, ':meta')})"
                ),
                {"sid": sid, "stream": stream, "v": version, "type": type_,
                 "data": orjson.dumps(data).decode(), "meta": orjson.dumps(meta).decode()},
            )
    return event_rows(engine)


def event_rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            (r.position, r.stream, r.version, r.type, r.schema_version, _loads(r.data), _loads(r.metadata))
            for r in conn.execute(text("SELECT * FROM events ORDER BY position"))
        ]


def _loads(value):
    return orjson.loads(value) if isinstance(value, (str, bytes)) else value


def tables(engine) -> set[str]:
    return set(inspect(engine).get_table_names())


@pytest.fixture
def old_database(database):
    """The test's database at revision 0001, holding three events written with raw SQL."""
    engine = bare_engine(database)
    try:
        upgrade(engine, "0001")
        assert current_revision(engine) == "0001"
        assert "requests" not in tables(engine) and {"events", "scopes"} <= tables(engine)
        old = write_0001_events(engine)
    finally:
        engine.dispose()
    return database, old


def test_opening_an_old_store_upgrades_it_in_place_and_keeps_its_events(old_database):
    database, old = old_database
    engine = database.open_engine()
    try:
        assert current_revision(engine) == HEAD == "0003"
        assert "requests" in tables(engine)
        assert event_rows(engine) == old
        with pytest.raises(DBAPIError, match="scopes are append-only"):  # 0003: its scopes are protected too
            with engine.begin() as conn:
                conn.execute(text("UPDATE scopes SET workspace = 'elsewhere'"))
        log = EventLog(engine)
        assert [(e.version, e.type) for e in log.read_stream(SCOPE, "task-1")] == [(1, "TaskAdded"),
                                                                                  (2, "TaskTransitioned")]
    finally:
        engine.dispose()


def test_an_upgraded_store_supports_idempotent_appends_and_continues_the_old_streams(old_database):
    database, old = old_database
    engine = database.open_engine()
    try:
        log = EventLog(engine)
        appends = [StreamAppend(SCOPE, "other", [NewEvent("Something", {"n": 2})], 1)]
        first = log.append(appends, request_id="req-1", namespace=SCOPE.workspace)
        assert first.events[0].version == 2
        assert first.events[0].position > max(r[0] for r in old)
        again = log.append(appends, request_id="req-1", namespace=SCOPE.workspace)
        assert again.deduplicated and again.events[0].position == first.events[0].position
        assert len(event_rows(engine)) == len(old) + 1
        with pytest.raises(ConcurrencyError):
            log.append([StreamAppend(SCOPE, "task-1", [NewEvent("X", {})], Expect.NO_STREAM)])
    finally:
        engine.dispose()


def test_the_task_service_reads_and_extends_tasks_of_an_upgraded_store(old_database):
    database, _old = old_database
    engine = database.open_engine()
    try:
        tasks = TaskService(EventLog(engine, upcasters=task_upcasters()))
        task = tasks.get_task(SCOPE, "TASK-1")
        assert (task.task_id, task.state.value, task.version) == ("Task-1", "running", 2)
        done = tasks.transition(SCOPE, "task-1", "succeeded", exit_code=0, request_id="done-1")
        assert (done.state.value, done.version) == ("succeeded", 3)
        again = tasks.transition(SCOPE, "task-1", "succeeded", exit_code=0, request_id="done-1")
        assert again.version == 3 and len(tasks.history(SCOPE, "task-1")) == 3
    finally:
        engine.dispose()


def test_open_store_upgrades_an_old_store(old_database):
    database, old = old_database
    store = database.open_store()
    try:
        assert current_revision(store.engine) == HEAD == "0003"
        assert store.get_task(SCOPE, "task-1").version == 2
        assert event_rows(store.engine)[: len(old)] == old
    finally:
        store.close()


def test_opening_an_up_to_date_store_again_changes_nothing(database):
    engine = database.open_engine()
    try:
        EventLog(engine).append([StreamAppend(SCOPE, "s", [NewEvent("A", {"n": 1})])], request_id="r")
        before = event_rows(engine)
    finally:
        engine.dispose()
    engine = database.open_engine()
    try:
        assert current_revision(engine) == HEAD == "0003"
        assert event_rows(engine) == before
        assert EventLog(engine).find_request("", "r") is not None
    finally:
        engine.dispose()


# -- the migrated tables match schema.py -------------------------------------------------------------------------


def _type(engine, type_) -> str:
    """A column type as this engine spells it (variants resolved), normalised for comparison."""
    compiled = type_.compile(dialect=engine.dialect).upper()
    return {"BIGSERIAL": "BIGINT", "SERIAL": "INTEGER"}.get(compiled, compiled)


def test_migrated_tables_match_the_schema_metadata(database):
    engine = database.open_engine()
    try:
        insp = inspect(engine)
        assert set(metadata.tables) <= set(insp.get_table_names())
        for name, table in metadata.tables.items():
            reflected = {c["name"]: c for c in insp.get_columns(name)}
            assert list(reflected) == [c.name for c in table.columns], name
            for column in table.columns:
                found = reflected[column.name]
                assert _type(engine, found["type"]) == _type(engine, column.type), (name, column.name)
                assert found["nullable"] == column.nullable, (name, column.name)
            pk = insp.get_pk_constraint(name)["constrained_columns"]
            assert pk == [c.name for c in table.primary_key.columns], name
            uniques = {
                tuple(u["column_names"])
                for u in insp.get_unique_constraints(name)
            }
            declared = {
                tuple(c.name for c in con.columns)
                for con in table.constraints
                if con.__class__.__name__ == "UniqueConstraint"
            }
            assert uniques == declared, name
            indexes = {i["name"]: tuple(i["column_names"]) for i in insp.get_indexes(name) if not i.get("unique")}
            declared_ix = {
                ix.name: tuple(c.name for c in ix.columns)
                for ix in table.indexes
                if _index_applies(ix, engine.dialect.name)
            }
            assert indexes == declared_ix, name
    finally:
        engine.dispose()


def _index_applies(index, dialect_name: str) -> bool:
    ddl_if = getattr(index, "_ddl_if", None)
    return ddl_if is None or ddl_if.dialect is None or ddl_if.dialect == dialect_name


def test_positions_are_assigned_by_the_database(database):
    """The position column is the engine's auto-increment key (SQLite rowid, a PostgreSQL identity or sequence)."""
    engine = database.open_engine()
    try:
        insp = inspect(engine)
        position = {c["name"]: c for c in insp.get_columns("events")}["position"]
        if database.engine == "sqlite":
            with engine.connect() as conn:
                ddl = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'events'")).scalar_one()
            assert "position INTEGER NOT NULL" in ddl and "PRIMARY KEY (position)" in ddl
        else:
            assert position.get("autoincrement") is True or position.get("default", "").startswith("nextval")
            txid = {c["name"]: c for c in insp.get_columns("events")}["txid"]
            assert "pg_current_xact_id" in (txid.get("default") or "")
    finally:
        engine.dispose()


def test_upgrading_a_store_clears_the_statistics_it_gathered_of_the_task_views_scopes(postgresql_database):
    """Revision p0003 of the projections (PostgreSQL; on SQLite it does nothing): statistics already gathered of
    task_view.scope_id are cleared and none are gathered again, so that a job ANALYZE did not see is not planned as
    one row (see tests/test_append_path.py for the plan itself, on both engines)."""
    database = postgresql_database
    from alembic import command

    import projections
    from eventstore.engine import alembic_config, write_transaction

    def scope_statistics(engine) -> int:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE task_view"))
            return conn.execute(text("SELECT count(*) FROM pg_stats WHERE schemaname = current_schema() "
                                     "AND tablename = 'task_view' AND attname = 'scope_id'")).scalar_one()

    def migrate(engine, how, revision: str) -> None:
        cfg = alembic_config(projections.VERSIONS, projections.VERSION_TABLE)
        with write_transaction(engine) as conn:
            cfg.attributes["connection"] = conn
            how(cfg, revision)

    store = database.open_store(snapshot_every=None)
    try:
        store.add_tasks(Scope("ws", "job"), [{"id": f"t{i}", "commandLine": "x"} for i in range(50)])
        engine = store.log.engine
        assert scope_statistics(engine) == 0
        migrate(engine, command.downgrade, "p0002")  # a store of the release before, which gathered them
        assert scope_statistics(engine) == 1
        migrate(engine, command.upgrade, "head")
        assert scope_statistics(engine) == 0
        assert current_revision(engine, projections.VERSION_TABLE) == "p0003"
    finally:
        store.close()


def _migrate_projections(engine, how, revision: str) -> None:
    import projections
    from eventstore.engine import alembic_config, write_transaction

    cfg = alembic_config(projections.VERSIONS, projections.VERSION_TABLE)
    with write_transaction(engine) as conn:
        cfg.attributes["connection"] = conn
        how(cfg, revision)


@pytest.mark.parametrize("package", ["eventstore", "projections", "api"])
def test_each_package_names_its_newest_migration_as_its_head(package):
    """``upgrade`` skips Alembic for a database whose version table names ``head``: a ``HEAD`` left behind by a new
    migration would leave databases at the revision before it."""
    from alembic.script import ScriptDirectory

    import api.credentials
    import eventstore.engine
    import projections
    from eventstore.engine import alembic_config

    versions, table, head = {
        "eventstore": (eventstore.engine.MIGRATIONS / "versions", "eventstore_version", eventstore.engine.HEAD),
        "projections": (projections.VERSIONS, projections.VERSION_TABLE, projections.HEAD),
        "api": (api.credentials.MIGRATIONS, api.credentials.VERSION_TABLE, api.credentials.HEAD),
    }[package]
    assert ScriptDirectory.from_config(alembic_config(versions, table)).get_heads() == [head]


def test_opening_a_store_at_the_newest_schema_does_not_load_alembic(database):
    import subprocess
    import sys

    from api.credentials import migrate

    store = database.open_store(snapshot_every=None)  # made: Alembic creates every package's tables
    migrate(store.log.engine)
    store.close()
    code = (
        "import sys\n"
        "from taskstore import open_store\n"
        "from api.credentials import migrate\n"
        "store = open_store(sys.argv[1], schema=sys.argv[2] or None, snapshot_every=None)\n"
        "migrate(store.log.engine)\n"
        "store.close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, database.url, database.schema or ""], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_store_a_revision_behind_is_upgraded_when_opened(database):
    """The check that spares a store at the newest revision Alembic does not spare one a revision behind."""
    from alembic import command

    import projections

    store = database.open_store(snapshot_every=None)
    try:
        _migrate_projections(store.log.engine, command.downgrade, "p0002")
        assert current_revision(store.log.engine, projections.VERSION_TABLE) == "p0002"
    finally:
        store.close()
    store = database.open_store(snapshot_every=None)
    try:
        assert current_revision(store.log.engine, projections.VERSION_TABLE) == projections.HEAD == "p0003"
    finally:
        store.close()
