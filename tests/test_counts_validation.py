"""validationStatus at or below the recount limit: a verified point plus the events since, else a recount."""

import sqlite3
from collections import Counter

import orjson
from sqlalchemy import event, text

from eventstore import Scope
from projections.engine_sql import Point, count_since, delta_groups, lacks_after
from tests.conftest import make_database

SCOPE = Scope("ws", "job-validate")


def _corrupt_pending(store, by: int) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE scope_counts SET pending = pending + :by"), {"by": by})


def test_counts_stay_validated_as_tasks_move_and_say_so_after_the_summary_is_corrupted(store):
    store.add_tasks(SCOPE, [{"id": f"t{i}", "requiredSlots": 1 + i % 3} for i in range(30)])
    first = store.queries.counts(SCOPE)
    assert first.validation_status == "validated" and first.total == 30
    store.transition_many(SCOPE, [(f"t{i}", "running") for i in range(10)])
    moved = store.queries.counts(SCOPE)
    assert moved.validation_status == "validated"
    assert (moved.active, moved.running) == (20, 10)
    _corrupt_pending(store, 1)
    broken = store.queries.counts(SCOPE)
    assert broken.validation_status == "unvalidated"
    assert "disagrees" in broken.validation_detail
    _corrupt_pending(store, -1)
    assert store.queries.counts(SCOPE).validation_status == "validated"


def _plan(store, statement: str, parameters: dict, analyze: bool = False) -> dict:
    with store.engine.connect() as conn, conn.connection.driver_connection.cursor() as cur:
        cur.execute(f"EXPLAIN ({'ANALYZE, ' if analyze else ''}VERBOSE, FORMAT JSON) " + statement, parameters)
        return cur.fetchone()[0][0]["Plan"]


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _delta_groups_captured(store, bases: list) -> tuple[list[list[tuple]], list[tuple[str, dict]]]:
    """``engine_sql.delta_groups`` of ``SCOPE`` after each of ``bases`` (None: from the first event), with the
    aggregate statements it sent (statement, parameters), in order."""
    seen: list[tuple[str, dict]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "GROUP BY" in statement:
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        with store.log.reading() as conn:
            sid = store.log.scope_id(SCOPE, conn)
            groups = [delta_groups(conn, sid, base) for base in bases]
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    return groups, seen


def test_the_delta_aggregate_on_postgresql_reads_a_tail_from_the_tail_and_groups_narrow_rows(postgresql_database):
    """``engine_sql.delta_groups`` on PostgreSQL, on an events table no ANALYZE has seen: after a snapshot, only the
    tail's events look up their TaskAdded events (not the scope's every TaskAdded event, whatever the planner's
    statistics); from the first event, the rows that reach the grouping carry the values it groups and sums, not the
    two joined events' whole data documents (which a sort-based grouping would write to temporary files)."""
    store = postgresql_database.open_store()
    try:
        store.add_tasks(SCOPE, [{"id": f"t{i}", "requiredSlots": 1 + i % 3} for i in range(300)])
        snap = store.snapshot(SCOPE, "full")
        store.transition_many(SCOPE, [(f"t{i}", "running") for i in range(3)])
        (whole, tail), seen = _delta_groups_captured(store, [None, snap.point])
        slots = sum(1 + i % 3 for i in range(3))
        assert sorted((g[0], g[2], g[3], g[4], g[5]) for g in whole) == [
            ("TaskAdded", None, None, 300, sum(1 + i % 3 for i in range(300))),
            ("TaskTransitioned", "pending", "running", 3, slots),
        ]
        assert [(g[0], g[2], g[3], g[4], g[5]) for g in tail] == [("TaskTransitioned", "pending", "running", 3, slots)]
        (whole_sql, whole_params), (tail_sql, tail_params) = seen

        plan = _plan(store, tail_sql, tail_params, analyze=True)
        added_rows = sum(n["Actual Rows"] * n["Actual Loops"] for n in _nodes(plan) if n.get("Alias") == "a")
        assert added_rows == 3, added_rows  # the tail's three tasks, not the scope's 300

        plan = _plan(store, whole_sql, whole_params)
        assert plan["Node Type"] == "Aggregate"
        below = plan["Plans"][0]
        outputs = below["Output"] + (below["Plans"][0]["Output"] if below["Node Type"] == "Sort" else [])
        assert outputs and not {"e.data", "a.data"} & set(outputs), outputs  # values read off them are fine
    finally:
        store.close()


def _sorted_records_carry(program: list, table_cursors: set[int], column: int) -> list[int]:
    """Registers of ``column``, read through one of ``table_cursors``, in the records an EXPLAINed SQLite program
    hands its sorter (``MakeRecord`` of registers p1 to p1 + p2 - 1 into p3, then ``SorterInsert`` of p3)."""
    loaded = {p3 for _a, op, p1, p2, p3, *_ in program if op == "Column" and p1 in table_cursors and p2 == column}
    made = {p3: range(p1, p1 + p2) for _a, op, p1, p2, p3, *_ in program if op == "MakeRecord"}
    sorted_records = [made[p2] for _a, op, _p1, p2, *_ in program if op == "SorterInsert"]
    assert sorted_records, "the grouping sorts no records"
    return sorted(r for record in sorted_records for r in record if r in loaded)


def test_the_delta_aggregate_on_sqlite_sorts_narrow_rows(tmp_path):
    """``engine_sql.delta_groups`` on SQLite, from the first event: the records its sorter groups hold the values it
    groups and sums, not the two joined events' whole data documents (which the sorter writes to temporary files
    once they outgrow its memory: 845 MiB at 200,000 tasks)."""
    store = next(make_database("sqlite", tmp_path)).open_store()
    try:
        store.add_tasks(SCOPE, [{"id": f"t{i}", "requiredSlots": 1 + i % 3} for i in range(30)])
        store.transition_many(SCOPE, [(f"t{i}", "running") for i in range(3)])
        (whole,), seen = _delta_groups_captured(store, [None])
        assert sorted((g[0], g[2], g[3], g[4], g[5]) for g in whole) == [
            ("TaskAdded", None, None, 30, sum(1 + i % 3 for i in range(30))),
            ("TaskTransitioned", "pending", "running", 3, sum(1 + i % 3 for i in range(3))),
        ]
        ((statement, parameters),) = seen
        with store.engine.connect() as conn:
            program = [tuple(r) for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters)]
            data = next(r.cid for r in conn.exec_driver_sql("PRAGMA table_info(events)") if r.name == "data")
            root = conn.exec_driver_sql("SELECT rootpage FROM sqlite_master WHERE name = 'events'").scalar_one()
        events_cursors = {p1 for _a, op, p1, p2, *_ in program if op == "OpenRead" and p2 == root}
        assert len(events_cursors) == 2, program  # the event and its TaskAdded event, each read from the table
        assert _sorted_records_carry(program, events_cursors, data) == []
    finally:
        store.close()


def test_the_delta_aggregate_on_sqlite_from_the_first_event_reads_each_tasks_slots_once(tmp_path):
    """``engine_sql.delta_groups`` on SQLite, from the first event: the join is driven from the scope's TaskAdded
    events, so each task's required slots are read off its TaskAdded document once, not again for each of the task's
    events (SQLite parses the JSON text at every ``json_extract``). Counted by running the statement it sent with a
    ``json_extract`` of the test's own, which SQLite lets an application define over its built-in one."""
    store = next(make_database("sqlite", tmp_path)).open_store()
    try:
        store.add_tasks(SCOPE, [{"id": f"t{i}", "requiredSlots": 1 + i % 3} for i in range(30)])
        store.transition_many(SCOPE, [(f"t{i}", "running") for i in range(30)])
        store.transition_many(SCOPE, [(f"t{i}", "succeeded") for i in range(10)])
        (whole,), ((statement, parameters),) = _delta_groups_captured(store, [None])
    finally:
        store.close()
    assert sorted((g[0], g[2], g[3], g[4], g[5]) for g in whole) == [
        ("TaskAdded", None, None, 30, sum(1 + i % 3 for i in range(30))),
        ("TaskTransitioned", "pending", "running", 30, sum(1 + i % 3 for i in range(30))),
        ("TaskTransitioned", "running", "succeeded", 10, sum(1 + i % 3 for i in range(10))),
    ]
    paths: Counter[str] = Counter()

    def json_extract(doc: str, path: str):
        paths[path] += 1
        value = orjson.loads(doc)
        for key in path.removeprefix("$.").split("."):
            value = value.get(key) if isinstance(value, dict) else None
        return value

    conn = sqlite3.connect(tmp_path / "taskstore.db")
    try:
        conn.create_function("json_extract", 2, json_extract, deterministic=True)
        assert sorted(conn.execute(statement, parameters).fetchall()) == sorted(whole)
    finally:
        conn.close()
    assert paths["$.to"] == 70  # every event of the scope was joined
    assert paths["$.spec.requiredSlots"] == 30  # and each task's TaskAdded document read once, not 70 times


def test_the_probe_for_events_a_snapshot_did_not_see_reads_the_txid_index_on_postgresql(postgresql_database):
    """PostgreSQL, on an events table no ANALYZE has seen: the probes for the events at or below a state's position
    that its snapshot did not see (``lacks``'s sub-select, ``lacks_after``) read the (txid, position) index, never the
    whole events table (a one-sided range on the transaction id is taken for a third of the table without
    statistics; ``min(position)`` would walk the positions' index until a row matched)."""
    store = postgresql_database.open_store(background_snapshots=False)
    try:
        store.add_tasks(SCOPE, [{"id": f"t{i}"} for i in range(2000)])
        seen: list[tuple[str, dict]] = []

        def capture(conn, cursor, statement, parameters, context, executemany):
            seen.append((statement, parameters))

        with store.log.reading() as conn:
            sid = store.log.scope_id(SCOPE, conn)
            top, head = conn.execute(text("SELECT max(txid), max(position) FROM events")).one()
            base = Point(head - 5, top + 1, f"{top + 1}:{top + 1}:")  # a state that saw every transaction so far
            event.listen(store.engine, "before_cursor_execute", capture)
            try:
                assert lacks_after(conn, base) == head - 5
                assert count_since(conn, sid, base) == 5
            finally:
                event.remove(store.engine, "before_cursor_execute", capture)
        assert len(seen) == 2
        for statement, parameters in seen:
            nodes = list(_nodes(_plan(store, statement, parameters)))
            assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], statement
            assert any(n.get("Index Name") == "ix_events_txid_position" for n in nodes), statement
    finally:
        store.close()
