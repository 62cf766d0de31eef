"""The fast append path on both engines: what the driver-level inserts return, reading and deciding inside the
append's own transaction, and the inline projection starting from the states a command decided from."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import text

from eventstore import ConcurrencyError, EventLog, Expect, NewEvent, Scope, State, StreamAppend, TaskNotFound
from eventstore.task import TASK_TRANSITIONED, fold

SCOPE = Scope("ws", "job")
MARK = "2000-01-01T00:00:00.000000Z"


def stored(engine) -> dict[tuple[str, int], tuple[int, int]]:
    """(stream, version) -> (position, txid) of every event, as the database holds them."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT stream, version, position, txid FROM events")).all()
    return {(r[0], r[1]): (r[2], r[3] or 0) for r in rows}


def test_an_append_returns_the_position_and_txid_each_row_was_stored_with(engine):
    log = EventLog(engine)
    earlier = log.append([StreamAppend(SCOPE, f"s{i}", [NewEvent("E", {"i": i})]) for i in range(5)])
    # Several streams, several events each, in an order unlike the streams' names: positions follow the appends.
    appends = [
        StreamAppend(SCOPE, f"s{i}", [NewEvent("E", {"i": i, "j": j}) for j in range(i % 3 + 1)], 1)
        for i in (3, 0, 4, 1, 2)
    ] + [StreamAppend(SCOPE, "new", [NewEvent("E", {"j": j}) for j in range(3)], Expect.NO_STREAM)]
    result = log.append(appends)
    db = stored(engine)
    assert [(e.stream, e.version) for e in result.events] == [
        (a.stream, (0 if a.stream == "new" else 1) + n) for a in appends for n in range(1, len(a.events) + 1)
    ]
    for e in result.events:
        assert db[(e.stream, e.version)] == (e.position, e.txid)
    positions = [e.position for e in result.events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert min(positions) > earlier.last_position


def test_decide_and_append_writes_nothing_when_decide_raises(engine):
    log = EventLog(engine)
    log.append([StreamAppend(SCOPE, "s", [NewEvent("E", {})])])
    before = stored(engine)

    def decide(conn):
        assert log.read_stream(SCOPE, "s", conn=conn)[-1].version == 1  # reads through the write transaction
        raise TaskNotFound(SCOPE, "other")

    with pytest.raises(TaskNotFound):
        log.decide_and_append(decide)
    assert stored(engine) == before


def test_decide_and_append_checks_the_expected_versions_it_decided(engine):
    log = EventLog(engine)
    log.append([StreamAppend(SCOPE, "s", [NewEvent("E", {}), NewEvent("E", {})])])
    before = stored(engine)
    with pytest.raises(ConcurrencyError) as info:
        log.decide_and_append(lambda conn: ([StreamAppend(SCOPE, "s", [NewEvent("E", {})], 1)], None))
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert stored(engine) == before
    done = log.decide_and_append(lambda conn: ([StreamAppend(SCOPE, "s", [NewEvent("E", {})], 2)], None))
    assert [e.version for e in done.events] == [3]


def test_decide_and_append_with_a_request_id_needs_a_fingerprint_and_is_idempotent(engine):
    log = EventLog(engine)
    calls = []

    def decide(conn):
        calls.append(1)
        return [StreamAppend(SCOPE, "s", [NewEvent("E", {"n": 1})])], None

    with pytest.raises(ValueError):
        log.decide_and_append(decide, request_id="r1")
    first = log.decide_and_append(decide, request_id="r1", fingerprint="f")
    again = log.decide_and_append(decide, request_id="r1", fingerprint="f")
    assert again.deduplicated and [e.position for e in again.events] == [e.position for e in first.events]
    assert len(calls) == 1  # the retry is answered from the recorded request, without deciding again
    assert len(stored(engine)) == 1


def _view_row(store, key: str) -> dict:
    with store.engine.connect() as conn:
        return dict(conn.execute(text("SELECT * FROM task_view WHERE key = :k"), {"k": key}).mappings().one())


def _scope_row(store, scope: Scope, key: str) -> dict:
    sql = ("SELECT t.* FROM task_view t JOIN scopes s ON s.id = t.scope_id "
           "WHERE s.workspace = :w AND s.job = :j AND t.key = :k")
    with store.engine.connect() as conn:
        return dict(conn.execute(text(sql), {"w": scope.workspace, "j": scope.job, "k": key}).mappings().one())


def _start_event(task) -> NewEvent:
    data = {"from": "pending", "to": "starting", "at": "2026-01-01T00:00:00.000000Z", "cause": "transition",
            "retryCount": task.retry_count, "requeueCount": task.requeue_count}
    return NewEvent(TASK_TRANSITIONED, data)


def test_the_task_projection_starts_from_a_decided_state_at_the_version_before(store):
    store.add_tasks(SCOPE, [{"id": "a"}])
    task = store.queries.get_task(SCOPE, "a")
    # A decided state the row does not hold shows whether the projection read the row or took the decided one:
    # the transition makes the state's transition time the previous one.
    marked = replace(task, state_transition_time=MARK)
    result = store.log.append(
        [StreamAppend(SCOPE, "a", [_start_event(task)], task.version)], decided={(SCOPE, "a"): marked}
    )
    row = _view_row(store, "a")
    assert (row["state"], row["version"], row["previous_state_transition_time"]) == ("starting", 2, MARK)
    # The fold it made is handed back (what the commands return): the decided state with the event folded in.
    assert result.states == {(SCOPE, "a"): fold(result.events, marked)}


def test_the_task_projection_reads_the_row_when_a_decided_state_is_not_the_version_before(store):
    store.add_tasks(SCOPE, [{"id": "a"}, {"id": "b"}])
    task = store.queries.get_task(SCOPE, "a")
    b = store.queries.get_task(SCOPE, "b")
    wrong_version = replace(task, state_transition_time=MARK, version=task.version + 1)
    other_scope = replace(b, state_transition_time=MARK, scope=Scope("ws", "other"))
    result = store.log.append(
        [
            StreamAppend(SCOPE, "a", [_start_event(task)], task.version),
            StreamAppend(SCOPE, "b", [_start_event(b)], b.version),
        ],
        decided={(SCOPE, "a"): wrong_version, (SCOPE, "b"): other_scope},
    )
    assert result.states == {}  # nothing was folded from a decided state
    for key, added in (("a", task), ("b", b)):
        row = _view_row(store, key)
        assert (row["state"], row["version"]) == ("starting", 2)
        assert row["previous_state_transition_time"] == added.state_transition_time != MARK
    assert store.audit(SCOPE).ok


def test_one_event_with_a_decided_state_that_is_not_the_version_before_reads_the_row(store):
    """The one-event path of the projection (a transition) takes a decided state only at the version before."""
    store.add_tasks(SCOPE, [{"id": "a"}])
    task = store.queries.get_task(SCOPE, "a")
    stale = replace(task, state_transition_time=MARK, version=task.version + 1)
    result = store.log.append([StreamAppend(SCOPE, "a", [_start_event(task)], task.version)],
                              decided={(SCOPE, "a"): stale})
    row = _view_row(store, "a")
    assert (row["state"], row["version"], row["previous_state_transition_time"]) == (
        "starting", 2, task.state_transition_time)
    assert result.states == {}
    assert store.audit(SCOPE).ok


def test_a_command_reads_decides_and_appends_in_one_transaction(store):
    store.add_tasks(SCOPE, [{"id": "a"}])
    begins = []

    from sqlalchemy import event

    def on_begin(conn):
        begins.append(1)

    event.listen(store.engine, "begin", on_begin)
    try:
        moved = store.transition(SCOPE, "a", "running")
    finally:
        event.remove(store.engine, "begin", on_begin)
    assert len(begins) == 1
    assert moved == store.queries.get_task(SCOPE, "a") == store.get_task(SCOPE, "a")
    assert moved.version == 2 and moved.state.value == "running"


def test_rows_written_column_by_column_equal_the_fold_after_every_kind_of_change(store):
    store.add_tasks(SCOPE, [
        {"id": "a", "maxRetries": 1, "labels": {"stage": "x"}}, {"id": "b", "displayName": "B"}, {"id": "c"},
    ])
    store.transition(SCOPE, "a", "starting", node_info={"nodeId": "n1"})
    store.transition(SCOPE, "a", "pending")  # a requeue
    store.transition(SCOPE, "a", "running", message="going")
    store.transition(SCOPE, "a", "failed", exit_code=3, failure_info={"category": "usererror", "code": "E"})  # retry
    store.transition_many(SCOPE, [("a", "running"), ("b", "running"), ("c", "starting")])
    store.record_condition(SCOPE, "b", {"type": "Ready", "state": "true"})
    store.record_condition(SCOPE, "b", {"type": "Ready", "state": "false"})
    store.transition(SCOPE, "a", "failed", exit_code=4, failure_info={"category": "servererror"})
    store.reactivate(SCOPE, "a")  # clears the end time, exit code, result and failure info
    store.terminate(SCOPE, "c")
    store.transition_many(SCOPE, [("a", "running"), ("b", "succeeded", {"exitCode": 0})])
    # Many rows that change alike: one statement for all of them (arrays on PostgreSQL, executemany on SQLite).
    many = [f"m{i}" for i in range(20)]
    store.add_tasks(SCOPE, [{"id": m, "requiredSlots": 1 + i % 3} for i, m in enumerate(many)])
    for to in ("starting", "running", "succeeded"):
        store.transition_many(SCOPE, [(m, to) for m in many])
    report = store.audit(SCOPE)
    assert report.ok, report.differences
    assert report.tasks == 23
    assert store.queries.counts(SCOPE).succeeded == 21
    a = _view_row(store, "a")
    assert (a["state"], a["retry_count"], a["requeue_count"], a["exit_code"], a["end_time"]) == (
        "running", 0, 1, None, None
    )


def test_rows_of_tasks_just_added_are_the_rows_evolve_and_row_of_make(store):
    """A stream started by its only event of an append gets its row from ``seed_row``; the same tasks added with
    that path turned off (through ``evolve`` and ``row_of``) give the same rows and counts, column by column."""
    projection = next(p for p in store.log.projections if hasattr(p, "_seeds"))
    assert projection._seeds  # the live view is the one seed_row makes
    specs = [
        {"id": "Plain"},
        {"id": "rich", "displayName": "Ré Sumé", "requiredSlots": 3, "labels": {"Stage": "Call", "k": ""},
         "commandLine": "run", "constraints": {"maxTaskRetryCount": 2}, "resources": {"cpus": 2}},
        {"id": "slots", "requiredSlots": 2, "maxRetries": 1, "timeout": "30m"},
    ]
    seeded, folded = Scope("ws", "seeded"), Scope("ws", "folded")
    store.add_tasks(seeded, specs)
    projection._seeds = False
    try:
        store.add_tasks(folded, specs)
    finally:
        projection._seeds = True
    differing = {"scope_id", "number", "position", "created_at", "state_transition_time", "last_modified"}
    for spec in specs:
        a, b = (_scope_row(store, scope, spec["id"].lower()) for scope in (seeded, folded))
        assert {k: v for k, v in a.items() if k not in differing} == {k: v for k, v in b.items() if k not in differing}
    # Label keys in their sorted order, whatever the order given (PostgreSQL's jsonb does not keep it, and a fold of
    # the log must give the same row).
    assert _scope_row(store, seeded, "rich")["search"] == "rich\nré sumé\nstage\ncall\nk\n"
    for scope in (seeded, folded):
        counts = store.queries.counts(scope)
        assert (counts.total, counts.states[State.PENDING], counts.slots[State.PENDING]) == (3, 3, 6)
        report = store.audit(scope)
        assert report.ok, report.differences


def test_a_driver_error_is_raised_as_sqlalchemys_and_undoes_the_append(store):
    from sqlalchemy.exc import IntegrityError

    from eventstore.dialects.base import driver_execute
    from projections import engine_sql
    from projections.tables import scope_counts

    store.add_tasks(SCOPE, [{"id": "a"}])
    before = store.queries.counts(SCOPE, validate=False)
    sid = store.log.scope_id(SCOPE)
    mark = "%s" if store.engine.dialect.name == "postgresql" else "?"
    with pytest.raises(IntegrityError) as info:
        with store.log.writing() as conn:
            engine_sql.add_to_counts(conn, scope_counts, sid, 10**9, [(5, 5)] * 7)
            driver_execute(conn, f"INSERT INTO scope_counts (scope_id) VALUES ({mark})", (sid,))  # it exists
    assert isinstance(info.value.orig, store.engine.dialect.loaded_dbapi.IntegrityError)
    assert store.queries.counts(SCOPE, validate=False) == before


@pytest.mark.parametrize("behind", [0, 2])
def test_a_stream_behind_its_expected_version_among_others_is_named_and_nothing_is_written(engine, behind):
    """Exact expectations are checked by the insert itself (the stream must hold the expected version, the
    unique key refuses a later one): the stream that was behind is named, whatever the others did."""
    log = EventLog(engine)
    log.append([StreamAppend(SCOPE, f"s{i}", [NewEvent("E", {})]) for i in range(3)])
    before = stored(engine)
    appends = [StreamAppend(SCOPE, f"s{i}", [NewEvent("E", {"j": j}) for j in range(3)], 1) for i in range(3)]
    appends[behind] = StreamAppend(SCOPE, f"s{behind}", [NewEvent("E", {"j": j}) for j in range(2)], 4)
    with pytest.raises(ConcurrencyError) as info:
        log.append(appends)
    assert (info.value.key, info.value.expected, info.value.actual) == (f"s{behind}", 4, 1)
    assert stored(engine) == before
    ahead = StreamAppend(SCOPE, "s1", [NewEvent("E", {})], 0)  # 0: no stream yet, but it has one
    with pytest.raises(ConcurrencyError) as info:
        log.append([StreamAppend(SCOPE, "s0", [NewEvent("E", {})], 1), ahead])
    assert (info.value.key, info.value.expected, info.value.actual) == ("s1", 0, 1)
    assert stored(engine) == before
    done = log.append([StreamAppend(SCOPE, f"s{i}", [NewEvent("E", {}), NewEvent("E", {})], 1) for i in range(3)])
    assert [(e.stream, e.version) for e in done.events] == [(f"s{i}", v) for i in range(3) for v in (2, 3)]


def test_concurrent_first_appends_of_a_scope_make_one_count_summary_holding_all_of_them(database):
    """The count summary is an upsert: writers that create a scope's row at the same time each add to it."""
    from tests.test_concurrency import run_threads

    store = database.open_store()
    try:
        new = Scope("ws", "fresh")

        def add(t: int) -> None:
            store.add_tasks(new, [{"id": f"t{t}-{k}", "requiredSlots": 1 + k} for k in range(3)])
            store.transition(new, f"t{t}-0", "running")

        assert run_threads(6, add) == []
        summary = store.queries.counts(new)
        assert (summary.total, summary.running, summary.active) == (18, 6, 12)
        assert summary.slot_counts()["running"] == 6 and summary.slot_counts()["active"] == 6 * (2 + 3)
        assert summary.validation_status == "validated"
    finally:
        store.close()


def _task_lookups(store, monkeypatch, scope: Scope, task_id: str) -> list[tuple[str, tuple]]:
    """The statements (and parameters) with which a transition of ``task_id`` reads its task view row."""
    from projections import engine_sql

    seen: list[tuple[str, tuple]] = []
    real = engine_sql.driver_execute

    def spy(conn, sql, params=()):
        if "FROM task_view WHERE scope_id" in sql and "key" in sql:
            seen.append((sql, tuple(params)))
        return real(conn, sql, params)

    monkeypatch.setattr(engine_sql, "driver_execute", spy)
    store.transition(scope, task_id, "running")
    monkeypatch.setattr(engine_sql, "driver_execute", real)
    return seen


def _plan(store, sql: str, params: tuple) -> str:
    from eventstore.dialects.base import driver_execute

    with store.log.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            return "\n".join(r[0] for r in driver_execute(conn, "EXPLAIN " + sql, params).fetchall())
        return "\n".join(r[-1] for r in driver_execute(conn, "EXPLAIN QUERY PLAN " + sql, params).fetchall())


def _analyze(store) -> None:
    with store.log.engine.begin() as conn:
        conn.execute(text("ANALYZE task_view"))


@pytest.mark.parametrize("rebuilt", [False, True], ids=["migrated", "rebuilt"])
def test_a_task_of_a_job_begun_after_the_last_analyze_is_read_by_its_primary_key(database, monkeypatch, rebuilt):
    """PostgreSQL planned a scope that its statistics did not see as one row, and then looked a task up on the
    ``created`` index (whose trailing key matches too) as readily as on the primary key: every command of a job begun
    since the last ANALYZE walked the whole job. The task view keeps no statistics of its scope_id (the migration
    and the rebuild's fresh tables alike), so the primary key is the only plan."""
    store = database.open_store(snapshot_every=None)
    try:
        seen, new = Scope("ws", "seen"), Scope("ws", "begun-later")
        for b in range(6):
            store.add_tasks(seen, [{"id": f"t-{b}-{i}", "commandLine": "x"} for i in range(100)])
        if rebuilt:
            store.rebuild(workers=1)
        _analyze(store)  # the statistics see one job
        for b in range(6):
            store.add_tasks(new, [{"id": f"t-{b}-{i}", "commandLine": "x"} for i in range(100)])
        lookups = _task_lookups(store, monkeypatch, new, "t-3-7")
        assert lookups, "a transition reads its task's row"
        for sql, params in lookups:
            plan = _plan(store, sql, params)
            if database.engine == "postgresql":
                assert "task_view_pkey" in plan and "Filter" not in plan, plan
                assert "(scope_id = " in plan and "(key)::text = " in plan, plan
            else:
                assert "sqlite_autoindex_task_view_1 (scope_id=? AND key=?)" in plan, plan
        assert store.get_task(new, "t-3-7").state is State.RUNNING
    finally:
        store.close()
