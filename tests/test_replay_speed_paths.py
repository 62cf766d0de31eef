"""The whole log's fast read path gives exactly the events of the Core path, on both engines.

``EventLog.read_all``/``iter_all`` read with the driver (``Dialect.read_log``) and decode the rows themselves
(``EventLog.decode_rows``); every other reader goes through SQLAlchemy Core and ``EventLog.decode``. For random
data, metadata, scopes, and events written in older shapes (upcast when read), both give the same events, in the
same order, with the same checkpoints. And a rebuild's seeding read (``projections.replay.scope_streams``) gives
each stream's events as the Core path decodes them.
"""

from __future__ import annotations

import string
import uuid

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from eventstore import START, EventLog, NewEvent, Scope, StreamAppend, Upcasters
from eventstore.log import EVENT_COLUMNS
from eventstore.schema import events

_TEXT = string.ascii_letters + string.digits + " é€\"\\\n"
words = st.text(_TEXT, max_size=6)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | words,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=3),
    max_leaves=8,
)
datas = st.dictionaries(words, json_values, max_size=4)


def _upcasters() -> Upcasters:
    registry = Upcasters()

    @registry.register("Renamed", 1)
    def _v1_to_v2(data):
        return {"fullName": data.pop("name", None), **data}

    @registry.register("Renamed", 2)
    def _v2_to_v3(data):
        return {**data, "tags": data.get("tags", [])}

    registry.declare("Plain", 1)
    return registry


def _core_read(log: EventLog) -> list:
    """The whole log through Core and ``EventLog.decode``, in the order a follower reads it."""
    order = (events.c.txid, events.c.position) if log.engine.dialect.name == "postgresql" else (events.c.position,)
    with log.reading() as conn:
        return [log.decode(conn, r) for r in conn.execute(select(*EVENT_COLUMNS).order_by(*order))]


def _settle(log: EventLog) -> None:
    import time

    deadline = time.monotonic() + 30
    while log.lag(START)["held_back"] and time.monotonic() < deadline:
        time.sleep(0.01)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),  # the scope
            st.sampled_from(["s1", "s2", "s3"]),  # the stream
            st.lists(st.tuples(st.sampled_from(["Plain", "Renamed", "Other"]), st.integers(1, 3), datas),
                     min_size=1, max_size=4),
            st.none() | st.dictionaries(st.sampled_from(["actor", "note"]), json_values, max_size=2),
        ),
        min_size=1,
        max_size=6,
    ),
    st.integers(1, 7),
)
def test_read_all_gives_the_events_of_the_core_path(engine, appends, batch_size):
    log = EventLog(engine, upcasters=_upcasters())
    run = uuid.uuid4().hex[:8]
    for scope_name, stream, evs, metadata in appends:
        scope = Scope("ws", f"{scope_name}-{run}")
        log.append([StreamAppend(scope, stream, [NewEvent(t, d, schema_version=v) for t, v, d in evs])],
                   metadata=metadata)
    _settle(log)
    expected = _core_read(log)
    fresh = EventLog(engine, upcasters=_upcasters())  # no scope known yet: read_all looks them up
    assert list(fresh.iter_all(batch_size=batch_size)) == expected
    batch = fresh.read_all(limit=len(expected) + 1)
    assert batch.events == expected and batch.checkpoint == expected[-1].checkpoint
    renamed = [e for e in expected if e.type == "Renamed"]
    assert all(e.schema_version == 3 for e in renamed)  # every one brought to the current shape


def test_read_all_continues_from_a_checkpoint_and_reads_json_the_database_holds(engine):
    """Rows written by another tool (JSON text as the database normalises it) decode as through Core."""
    log = EventLog(engine, upcasters=_upcasters())
    scope = Scope("ws", "raw")
    log.append([StreamAppend(scope, "s", [NewEvent("Plain", {"x": 1}), NewEvent("Plain", {"x": 2})])])
    sid = log.scope_id(scope)
    pg = engine.dialect.name == "postgresql"
    cast = (lambda p: f"CAST({p} AS JSONB)") if pg else (lambda p: p)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO events (scope_id, stream, version, type, schema_version, data, metadata) "
                 f"VALUES (:sid, 's', 3, 'Renamed', 1, {cast(':d')}, {cast(':m')})"),
            {"sid": sid, "d": '{ "name" : "Ada",  "n": 1.5e3 }', "m": orjson.dumps({"recordedAt": "x"}).decode()},
        )
    _settle(log)
    expected = _core_read(log)
    first = log.read_all(limit=1)
    rest = log.read_all(first.checkpoint, limit=10)
    assert first.events + rest.events == expected
    assert dict(expected[-1].data) == {"fullName": "Ada", "n": 1500.0, "tags": []}


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["s1", "s2", "s3"]),
            st.lists(st.tuples(st.sampled_from(["Plain", "Renamed", "Other"]), st.integers(1, 3), datas),
                     min_size=1, max_size=4),
        ),
        min_size=1,
        max_size=6,
    ),
    st.integers(1, 7),
    st.booleans(),
)
def test_a_scopes_streams_give_the_events_of_the_core_path(engine, appends, batch_size, lifting):
    """``replay.scope_streams`` (a rebuild's seeding read): each stream's events as (position, version, type, data),
    decoded and upcast as ``EventLog.decode`` does, in (stream, version) order, a page of ``batch_size`` at a time;
    with upcasters that lift a type, and with none that do (where it skips looking each event's type up)."""
    from projections.replay import scope_streams

    registry = _upcasters() if lifting else Upcasters()
    log = EventLog(engine, upcasters=registry)
    scope = Scope("ws", f"streams-{uuid.uuid4().hex[:8]}")
    for stream, evs in appends:
        log.append([StreamAppend(scope, stream, [NewEvent(t, d, schema_version=v) for t, v, d in evs])])
    sid = log.scope_id(scope)
    with log.reading() as conn:
        rows = conn.execute(select(*EVENT_COLUMNS).where(events.c.scope_id == sid)
                            .order_by(events.c.stream, events.c.version)).all()
        decoded = [log.decode(conn, r) for r in rows]
    expected: dict[str, list] = {}
    for e in decoded:
        expected.setdefault(e.stream, []).append((e.position, e.version, e.type, dict(e.data)))
    got = {stream: [(p, v, t, dict(d)) for p, v, t, d in evs]
           for stream, evs in scope_streams(log, sid, batch=batch_size)}
    assert got == expected
    if lifting:
        assert all(e.schema_version == 3 for e in decoded if e.type == "Renamed")
