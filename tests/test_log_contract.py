"""The contract of the event log, one suite run against each engine (the ``database`` fixture: sqlite, postgresql).

Appends with expected versions, all-or-nothing multi-stream appends, gap-free stream versions, growing positions,
idempotent appends, the three ways to read, metadata, and upcasting of events written in an older shape.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from sqlalchemy import text

from eventstore import (
    START,
    Checkpoint,
    ConcurrencyError,
    EventLog,
    Expect,
    IdempotencyConflict,
    NewEvent,
    Scope,
    StreamAppend,
    Upcasters,
    ValidationError,
)
from eventstore.errors import EventStoreError


@pytest.fixture
def log(engine):
    return EventLog(engine)


def scope(job: str = "job") -> Scope:
    return Scope("ws", job, "run-1")


def ev(n: int | str, type: str = "Happened") -> NewEvent:
    return NewEvent(type, {"n": n})


def rows(engine) -> list[tuple]:
    """Every row of ``events`` as the database holds it, in position order."""
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text("SELECT position, scope_id, stream, version, type, schema_version FROM events ORDER BY position")
            )
        ]


def settle(log: EventLog) -> None:
    """On PostgreSQL, wait (bounded) until no transaction anywhere on the server holds readers of the whole log back.

    Readers stop below the oldest running transaction of the whole server, so a test that runs beside other clients
    may briefly see fewer events than are committed; this is not a timing assertion, only patience.
    """
    deadline = time.monotonic() + 30
    while log.lag(START)["held_back"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.lag(START)["held_back"] == 0


def insert_raw(engine, scope_id: int, stream: str, version: int, type: str, schema_version: int, data: dict) -> None:
    """Insert one event with raw SQL, as an older taskstore (or another tool) would have written it."""
    pg = engine.dialect.name == "postgresql"
    cast = (lambda p: f"CAST({p} AS JSONB)") if pg else (lambda p: p)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO events (scope_id, stream, version, type, schema_version, data, metadata) "
                f"VALUES (:sid, :stream, :version, :type, :sv, {cast(':data')}, {cast(':meta')})"
            ),
            {
                "sid": scope_id,
                "stream": stream,
                "version": version,
                "type": type,
                "sv": schema_version,
                "data": orjson.dumps(data).decode(),
                "meta": orjson.dumps({"recordedAt": "2024-01-01T00:00:00.000000Z"}).decode(),
            },
        )


# -- expected versions -------------------------------------------------------------------------------------------


def test_append_any_creates_then_extends_a_stream(log, engine):
    first = log.append([StreamAppend(scope(), "s", [ev(1), ev(2)], Expect.ANY)])
    second = log.append([StreamAppend(scope(), "s", [ev(3)])])  # ANY is the default
    assert [e.version for e in first.events] == [1, 2]
    assert [e.version for e in second.events] == [3]
    assert [e.data["n"] for e in log.read_stream(scope(), "s")] == [1, 2, 3]
    assert log.stream_version(scope(), "s") == 3


def test_append_no_stream_creates_a_stream_and_is_refused_once_it_exists(log, engine):
    created = log.append([StreamAppend(scope(), "s", [ev(1)], Expect.NO_STREAM)])
    assert [e.version for e in created.events] == [1]
    before = rows(engine)
    with pytest.raises(ConcurrencyError) as info:
        log.append([StreamAppend(scope(), "s", [ev(2)], Expect.NO_STREAM)])
    err = info.value
    assert err.key == "s" and err.scope == scope()
    assert err.expected is Expect.NO_STREAM
    assert err.actual == 1
    message = str(err)
    assert "ws/job/run-1/s" in message and "no stream yet" in message and "version 1" in message
    assert rows(engine) == before


def test_append_with_exact_version(log, engine):
    log.append([StreamAppend(scope(), "s", [ev(1)], 0)])  # 0: the stream must not exist yet
    log.append([StreamAppend(scope(), "s", [ev(2), ev(3)], 1)])
    appended = log.append([StreamAppend(scope(), "s", [ev(4)], 3)])
    assert [e.version for e in appended.events] == [4]
    assert [e.version for e in log.read_stream(scope(), "s")] == [1, 2, 3, 4]


@pytest.mark.parametrize("expected", [0, 1, 3, 5])
def test_exact_version_mismatch_names_stream_expected_and_actual_and_writes_nothing(log, engine, expected):
    log.append([StreamAppend(scope(), "s", [ev(1), ev(2), ev(3), ev(4)])])
    before = rows(engine)
    with pytest.raises(ConcurrencyError) as info:
        log.append([StreamAppend(scope(), "s", [ev("late")], expected)])
    err = info.value
    assert (err.expected, err.actual, err.key) == (expected, 4, "s")
    assert re.search(rf"'ws/job/run-1/s'.*expected version {expected}\b.*version 4", str(err))
    assert rows(engine) == before


def test_exact_version_on_a_stream_that_does_not_exist(log, engine):
    log.append([StreamAppend(scope(), "other", [ev(0)])])
    before = rows(engine)
    with pytest.raises(ConcurrencyError) as info:
        log.append([StreamAppend(scope(), "s", [ev(1)], 2)])
    assert info.value.actual is None
    assert "expected version 2" in str(info.value) and "no stream" in str(info.value)
    assert rows(engine) == before


def test_streams_of_different_scopes_are_different_streams(log):
    log.append([StreamAppend(scope("a"), "s", [ev(1)], Expect.NO_STREAM)])
    again = log.append([StreamAppend(scope("b"), "s", [ev(2)], Expect.NO_STREAM)])
    assert again.events[0].version == 1 and again.events[0].scope == scope("b")
    assert [e.data["n"] for e in log.read_stream(scope("a"), "s")] == [1]
    assert [e.data["n"] for e in log.read_stream(scope("b"), "s")] == [2]


# -- all or nothing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("conflict_at", [0, 57, 99])
def test_append_to_100_streams_is_all_or_nothing(log, engine, conflict_at):
    log.append([StreamAppend(scope(), f"task-{conflict_at}", [ev("exists")])])
    before = rows(engine)
    appends = [StreamAppend(scope(), f"task-{i}", [ev(i)], Expect.NO_STREAM) for i in range(100)]
    with pytest.raises(ConcurrencyError) as info:
        log.append(appends)
    assert info.value.key == f"task-{conflict_at}"
    assert rows(engine) == before
    assert log.read_stream(scope(), "task-1" if conflict_at != 1 else "task-2") == []


def test_an_exact_version_mismatch_in_one_of_many_streams_writes_none(log, engine):
    log.append([StreamAppend(scope(), f"s{i}", [ev(i)]) for i in range(10)])
    before = rows(engine)
    appends = [StreamAppend(scope(), f"s{i}", [ev(f"{i}b")], 1) for i in range(10)]
    appends[6] = StreamAppend(scope(), "s6", [ev("6b")], 2)
    with pytest.raises(ConcurrencyError) as info:
        log.append(appends)
    assert (info.value.key, info.value.expected, info.value.actual) == ("s6", 2, 1)
    assert rows(engine) == before


def test_append_to_100_new_streams_writes_all_in_one_transaction(log, engine):
    result = log.append([StreamAppend(scope(), f"task-{i}", [ev(i)], Expect.NO_STREAM) for i in range(100)])
    assert len(result.events) == 100
    assert {e.stream for e in result.events} == {f"task-{i}" for i in range(100)}
    assert all(e.version == 1 for e in result.events)
    assert len(rows(engine)) == 100
    assert len({e.txid for e in result.events}) == 1  # one transaction (always 0 on SQLite)


def test_invalid_appends_are_refused_before_anything_is_written(log, engine):
    with pytest.raises(ValidationError):
        log.append([])
    with pytest.raises(ValidationError):
        log.append([StreamAppend(scope(), "s", [])])
    with pytest.raises(ValidationError) as info:
        log.append([StreamAppend(scope(), "x" * 65, [ev(1)])])
    assert info.value.field == "stream"
    with pytest.raises(ValidationError):
        log.append([StreamAppend(scope(), "s", [ev(1)]), StreamAppend(scope(), "s", [ev(2)])])
    with pytest.raises(ValidationError):
        log.append([StreamAppend(scope(), "s", [ev(1)], -1)])
    for beyond in (2**31 - 1, 2**31, 2**63):  # a version the column cannot hold: the same answer on both engines
        with pytest.raises(ValidationError) as info:
            log.append([StreamAppend(scope(), "s", [ev(1)], beyond)])
        assert info.value.field == "expected"
    assert rows(engine) == []


# -- versions and positions --------------------------------------------------------------------------------------


def test_stream_versions_run_from_1_without_gaps_and_positions_only_grow(log, engine):
    last = 0
    for round_ in range(6):
        result = log.append(
            [StreamAppend(scope(), f"s{i}", [ev(f"{round_}.{k}") for k in range(i % 3 + 1)]) for i in range(5)]
        )
        positions = [e.position for e in result.events]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        assert min(positions) > last
        last = max(positions)
    by_stream: dict[str, list[tuple[int, int]]] = {}
    for position, _sid, stream, version, _t, _sv in rows(engine):
        by_stream.setdefault(stream, []).append((version, position))
    for i in range(5):
        found = by_stream[f"s{i}"]
        assert [v for v, _ in found] == list(range(1, 6 * (i % 3 + 1) + 1))
        assert [p for _, p in found] == sorted(p for _, p in found)


def test_positions_keep_growing_after_a_refused_append(log, engine):
    first = log.append([StreamAppend(scope(), "s", [ev(1)])])
    with pytest.raises(ConcurrencyError):
        log.append([StreamAppend(scope(), "t", [ev(2)]), StreamAppend(scope(), "s", [ev(3)], Expect.NO_STREAM)])
    later = log.append([StreamAppend(scope(), "t", [ev(4)])])
    assert later.events[0].position > first.events[0].position
    assert later.events[0].version == 1


# -- idempotent appends ------------------------------------------------------------------------------------------


def test_a_retried_request_returns_the_first_result_and_writes_nothing(log, engine):
    appends = [StreamAppend(scope(), "a", [ev(1)], Expect.NO_STREAM), StreamAppend(scope(), "b", [ev(2), ev(3)])]
    first = log.append(appends, request_id="req-1")
    assert not first.deduplicated and first.request_id == "req-1"
    before = rows(engine)
    again = log.append(appends, request_id="req-1")  # NO_STREAM would now conflict: the retry must not re-append
    assert again.deduplicated and again.request_id == "req-1"
    assert [(e.position, e.stream, e.version, dict(e.data)) for e in again.events] == [
        (e.position, e.stream, e.version, dict(e.data)) for e in first.events
    ]
    assert rows(engine) == before


def test_a_request_id_reused_for_other_content_is_refused(log, engine):
    log.append([StreamAppend(scope(), "a", [ev(1)])], request_id="req-1")
    before = rows(engine)
    with pytest.raises(IdempotencyConflict) as info:
        log.append([StreamAppend(scope(), "a", [ev(2)])], request_id="req-1")
    assert info.value.request_id == "req-1" and "req-1" in str(info.value)
    with pytest.raises(IdempotencyConflict):
        log.append([StreamAppend(scope(), "other", [ev(1)])], request_id="req-1")
    assert rows(engine) == before


def test_request_ids_are_kept_per_namespace(log, engine):
    one = log.append([StreamAppend(scope(), "a", [ev(1)])], request_id="r", namespace="w1")
    two = log.append([StreamAppend(scope(), "a", [ev(1)])], request_id="r", namespace="w2")
    assert not two.deduplicated
    assert two.events[0].version == one.events[0].version + 1
    assert len(rows(engine)) == 2


def test_a_refused_append_does_not_record_its_request_id(log, engine):
    log.append([StreamAppend(scope(), "a", [ev(1)])])
    with pytest.raises(ConcurrencyError):
        log.append([StreamAppend(scope(), "a", [ev(2)], Expect.NO_STREAM)], request_id="r")
    assert log.find_request("", "r") is None
    done = log.append([StreamAppend(scope(), "a", [ev(2)], 1)], request_id="r")
    assert not done.deduplicated and done.events[0].version == 2


def test_find_request_returns_the_recorded_append(log):
    first = log.append([StreamAppend(scope(), "a", [ev(1), ev(2)])], request_id="r", namespace="ns")
    found = log.find_request("ns", "r")
    assert found is not None and found.deduplicated
    assert [e.position for e in found.events] == [e.position for e in first.events]
    assert log.find_request("other", "r") is None


# -- metadata ----------------------------------------------------------------------------------------------------


def test_metadata_holds_request_id_and_utc_recording_time(engine):
    moment = datetime(2025, 3, 4, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    log = EventLog(engine, clock=lambda: moment)
    log.append([StreamAppend(scope(), "a", [ev(1)])], request_id="req-9", metadata={"actor": "tester"})
    log.append([StreamAppend(scope(), "a", [ev(2)])])
    with_id, without_id = log.read_stream(scope(), "a")
    assert with_id.metadata["requestId"] == "req-9" and with_id.request_id == "req-9"
    assert with_id.metadata["actor"] == "tester"
    assert without_id.request_id is None and "requestId" not in without_id.metadata
    for e in (with_id, without_id):
        assert e.recorded_at == "2025-03-04T05:08:09.123456Z"
        assert datetime.fromisoformat(e.recorded_at).utcoffset() == timedelta(0)


def test_recorded_at_is_the_current_utc_time_by_default(log):
    before = datetime.now(UTC)
    log.append([StreamAppend(scope(), "a", [ev(1)])])
    after = datetime.now(UTC)
    (e,) = log.read_stream(scope(), "a")
    assert e.recorded_at.endswith("Z")
    recorded = datetime.fromisoformat(e.recorded_at)
    assert before - timedelta(seconds=1) <= recorded <= after + timedelta(seconds=1)


# -- reads -------------------------------------------------------------------------------------------------------


def test_read_stream_in_version_order_with_from_and_to(log):
    for i in range(1, 8):
        log.append([StreamAppend(scope(), "s", [ev(i)]), StreamAppend(scope(), "noise", [ev(-i)])])
    whole = log.read_stream(scope(), "s")
    assert [e.version for e in whole] == list(range(1, 8))
    assert [e.data["n"] for e in whole] == list(range(1, 8))
    assert all(e.stream == "s" and e.scope == scope() for e in whole)
    assert [e.version for e in log.read_stream(scope(), "s", from_version=3)] == [3, 4, 5, 6, 7]
    assert [e.version for e in log.read_stream(scope(), "s", to_version=2)] == [1, 2]
    assert [e.version for e in log.read_stream(scope(), "s", from_version=3, to_version=5)] == [3, 4, 5]
    assert log.read_stream(scope(), "missing") == []
    assert log.read_stream(scope("never-used"), "s") == []


def test_read_streams_reads_several_streams_of_one_scope(log):
    log.append([StreamAppend(scope(), "a", [ev(1), ev(2)]), StreamAppend(scope(), "b", [ev(3)])])
    log.append([StreamAppend(scope(), "a", [ev(4)]), StreamAppend(scope("other"), "b", [ev(5)])])
    found = log.read_streams(scope(), ["a", "b", "c"])
    assert {k: [e.data["n"] for e in v] for k, v in found.items()} == {"a": [1, 2, 4], "b": [3], "c": []}
    assert log.read_streams(scope("never-used"), ["a"]) == {"a": []}


def test_read_scope_in_batches(log):
    for i in range(10):
        log.append([StreamAppend(scope(), f"s{i % 3}", [ev(i)]), StreamAppend(scope("other"), "x", [ev(100 + i)])])
    seen = []
    after = 0
    while True:
        batch = log.read_scope(scope(), after=after, limit=3)
        assert len(batch) <= 3
        seen.extend(batch)
        if len(batch) < 3:
            break
        after = batch[-1].position
    assert [e.data["n"] for e in seen] == list(range(10))
    assert all(e.scope == scope() for e in seen)
    positions = [e.position for e in seen]
    assert positions == sorted(positions)
    assert [e.data["n"] for e in log.iter_scope(scope(), batch_size=4)] == list(range(10))
    assert [e.data["n"] for e in log.iter_scope(scope(), batch_size=5)] == list(range(10))  # exact multiple
    assert log.read_scope(scope("never-used")) == []


def test_read_all_in_batches_with_checkpoints(log, engine):
    for i in range(11):
        log.append([StreamAppend(scope(f"j{i % 2}"), f"s{i % 4}", [ev(i)])])
    settle(log)
    expected = [r[0] for r in rows(engine)]
    checkpoint = START
    seen = []
    while True:
        batch = log.read_all(checkpoint, limit=4)
        assert len(batch.events) <= 4
        if batch.events:
            assert batch.checkpoint == batch.events[-1].checkpoint
        else:
            assert batch.checkpoint == checkpoint
        seen.extend(batch.events)
        checkpoint = batch.checkpoint
        if not batch.events:
            break
    assert [e.position for e in seen] == expected
    assert [e.data["n"] for e in seen] == list(range(11))
    assert checkpoint == log.head()
    # continuing from the checkpoint later finds exactly the new events
    log.append([StreamAppend(scope(), "late", [ev("late")])])
    settle(log)
    later = log.read_all(checkpoint)
    assert [e.data["n"] for e in later.events] == ["late"]
    assert [e.data["n"] for e in log.iter_all(batch_size=3)] == list(range(11)) + ["late"]
    assert [e.data["n"] for e in log.iter_all(batch_size=4)] == list(range(11)) + ["late"]  # exact multiple
    assert [e.data["n"] for e in log.iter_all(seen[4].checkpoint)] == list(range(5, 11)) + ["late"]


def test_iter_all_of_a_log_opened_afresh_names_every_scope_and_equals_read_all(log, engine):
    """``iter_all`` decodes each event as it is taken, after its batch's read transaction has ended: a log object
    that has not met the scopes yet (a new process) finds them while the transaction is open."""
    for i in range(9):
        log.append([StreamAppend(scope(f"j{i % 3}"), f"s{i % 2}", [ev(i)], Expect.ANY)])
    settle(log)
    fresh = EventLog(engine)
    assert fresh._scopes == {}
    lazily = list(fresh.iter_all(batch_size=2))
    assert lazily == log.read_all(limit=100).events
    assert [e.scope for e in lazily] == [scope(f"j{i % 3}") for i in range(9)]


def test_read_all_of_an_empty_log(log):
    batch = log.read_all()
    assert batch.events == [] and batch.checkpoint == START
    assert log.head() == START
    assert log.lag(START) == {"readable": 0, "held_back": 0}


def test_lag_counts_the_events_a_reader_has_not_read(log):
    log.append([StreamAppend(scope(), "s", [ev(i) for i in range(5)])])
    settle(log)
    assert log.lag(START) == {"readable": 5, "held_back": 0}
    batch = log.read_all(limit=2)
    assert log.lag(batch.checkpoint)["readable"] == 3
    assert log.lag(log.head())["readable"] == 0


def test_checkpoints_carry_the_transaction_id_on_postgresql_only(log, engine):
    result = log.append([StreamAppend(scope(), "s", [ev(1)])])
    (e,) = result.events
    if engine.dialect.name == "postgresql":
        assert e.txid > 0
    else:
        assert e.txid == 0
    assert e.checkpoint == Checkpoint(e.txid, e.position)


# -- upcasting ---------------------------------------------------------------------------------------------------


def _upcasters() -> Upcasters:
    registry = Upcasters()

    @registry.register("Renamed", 1)
    def _v1_to_v2(data):
        return {"fullName": data.pop("name"), **data}

    @registry.register("Renamed", 2)
    def _v2_to_v3(data):
        return {**data, "tags": data.get("tags", [])}

    registry.declare("Plain", 1)
    return registry


def test_an_event_written_in_an_older_shape_is_upcast_when_read(engine):
    log = EventLog(engine, upcasters=_upcasters())
    assert log.upcasters.current_version("Renamed") == 3
    log.append([StreamAppend(scope(), "s", [NewEvent("Plain", {"x": 1})])])
    sid = log.scope_id(scope())
    insert_raw(engine, sid, "s", 2, "Renamed", 1, {"name": "Ada", "age": 36})
    insert_raw(engine, sid, "s", 3, "Renamed", 2, {"fullName": "Grace", "tags": ["navy"]})
    settle(log)

    def check(found):
        assert [(e.type, e.schema_version, dict(e.data)) for e in found] == [
            ("Plain", 1, {"x": 1}),
            ("Renamed", 3, {"fullName": "Ada", "age": 36, "tags": []}),
            ("Renamed", 3, {"fullName": "Grace", "tags": ["navy"]}),
        ]

    check(log.read_stream(scope(), "s"))
    check(log.read_scope(scope()))
    check(log.read_all().events)
    check(log.read_streams(scope(), ["s"])["s"])
    # the log itself is not rewritten
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT schema_version FROM events ORDER BY position")).scalars().all()
    assert stored == [1, 1, 2]


def test_an_append_with_an_older_schema_version_is_upcast_when_read(engine):
    log = EventLog(engine, upcasters=_upcasters())
    first = log.append([StreamAppend(scope(), "s", [NewEvent("Renamed", {"name": "Ada"}, schema_version=1)])],
                       request_id="r")
    (e,) = log.read_stream(scope(), "s")
    assert (e.schema_version, dict(e.data)) == (3, {"fullName": "Ada", "tags": []})
    again = log.append([StreamAppend(scope(), "s", [NewEvent("Renamed", {"name": "Ada"}, schema_version=1)])],
                       request_id="r")
    assert again.deduplicated and again.events[0].position == first.events[0].position
    assert (again.events[0].schema_version, dict(again.events[0].data)) == (3, {"fullName": "Ada", "tags": []})


def test_an_event_with_no_upcaster_for_its_version_is_an_error_not_silently_passed_through(engine):
    registry = Upcasters()
    registry.declare("Gapped", 3)

    @registry.register("Gapped", 2)
    def _v2_to_v3(data):
        return data

    log = EventLog(engine, upcasters=registry)
    log.append([StreamAppend(scope(), "s", [NewEvent("Gapped", {"a": 1}, schema_version=1)])])
    with pytest.raises(EventStoreError, match="Gapped"):
        log.read_stream(scope(), "s")


def test_events_of_the_current_or_a_newer_version_pass_unchanged(engine):
    log = EventLog(engine, upcasters=_upcasters())
    log.append([StreamAppend(scope(), "s", [NewEvent("Renamed", {"fullName": "A", "tags": []}, schema_version=3)])])
    log.append([StreamAppend(scope(), "s", [NewEvent("Unknown", {"z": 1}, schema_version=7)])])
    found = log.read_stream(scope(), "s")
    assert [(e.type, e.schema_version, dict(e.data)) for e in found] == [
        ("Renamed", 3, {"fullName": "A", "tags": []}),
        ("Unknown", 7, {"z": 1}),
    ]


def test_data_round_trips_as_json(log):
    data = {"text": "héllo ✓", "n": 2**40, "f": 1.5, "none": None, "list": [1, "two", {"three": 3}], "t": True}
    log.append([StreamAppend(scope(), "s", [NewEvent("Data", data)])])
    (e,) = log.read_stream(scope(), "s")
    assert dict(e.data) == data


def test_a_second_log_on_the_same_database_sees_the_same_events(engine):
    one = EventLog(engine)
    one.append([StreamAppend(scope(), "s", [ev(1)])])
    two = EventLog(engine)
    assert [e.data["n"] for e in two.read_stream(scope(), "s")] == [1]
    with pytest.raises(ConcurrencyError):
        two.append([StreamAppend(scope(), "s", [ev(2)], Expect.NO_STREAM)])
    two.append([StreamAppend(scope(), "s", [ev(2)], 1)])
    assert one.stream_version(scope(), "s") == 2
