"""The rebuild's seeding fold (``projections.replay.seed_row``) is ``evolve`` and ``row_of``, over random histories.

``eventstore.task.evolve`` is the one definition of what an event does to a task; seeding folds each stream with a
faster one-pass fold instead. These properties keep the two equal:

- in memory, for any history of a stream (TaskAdded, then transitions to any state with any cause and any optional
  field, conditions, event types this code does not know, and TaskAdded again), ``seed_row`` gives exactly the
  insert values of ``row_of(fold(events))`` (``evolve_row``, the definition);
- through the database, on both engines: after random histories are appended, a rebuild's task view and count
  summaries are exactly the streams folded with ``eventstore.task.fold`` from ``read_stream``, rows made by
  ``row_of`` (no code of the seeding path in the expectation), and the audit finds nothing; whether the rebuild
  folds in this process or cuts every scope, however small, into runs among 2 or 3 processes.
"""

from __future__ import annotations

import string
import uuid
from collections import Counter
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, text

from eventstore import NewEvent, RecordedEvent, Scope, State, StreamAppend
from eventstore.lifecycle import Cause
from eventstore.task import TASK_ADDED, TASK_CONDITION_RECORDED, TASK_TRANSITIONED, fold, stream_key
from projections import seeding
from projections.seeding import seeding_fold
from projections.replay import SEED_COLUMNS, evolve_row, seed_row
from projections.rows import changed_row, row_of
from projections.tables import task_view, task_view_table

SCOPE = Scope("ws", "fold")
_TEXT = string.ascii_letters + string.digits + " -_é"

words = st.text(_TEXT, max_size=6)


def _at(n: int) -> str:
    return f"2026-01-01T00:{n // 60000 % 60:02d}:{n % 60000 / 1000:09.6f}Z"


times = st.integers(0, 10**6).map(_at)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | words,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=3),
    max_leaves=6,
)
json_objects = st.dictionaries(words, json_values, max_size=3)
specs = st.fixed_dictionaries(
    {},
    optional={
        "requiredSlots": st.none() | st.integers(0, 8),
        "displayName": st.none() | words,
        "labels": st.none() | st.dictionaries(words, words, max_size=3),
        "constraints": st.fixed_dictionaries({}, optional={"maxTaskRetryCount": st.none() | st.integers(-1, 3)}),
        "commandLine": words,
        "extra": json_values,
    },
)


def task_added(task_id: str) -> st.SearchStrategy:
    return st.builds(
        lambda spec, at, has_spec, more: (
            TASK_ADDED, {"taskId": task_id, "at": at, **({"spec": spec} if has_spec else {}), **more}
        ),
        specs, times, st.booleans(), st.fixed_dictionaries({}, optional={"note": json_values}),
    )


transitioned = st.fixed_dictionaries(
    {"to": st.sampled_from([s.value for s in State]), "at": times},
    optional={
        "from": st.sampled_from([s.value for s in State]),
        "cause": st.sampled_from([c.value for c in Cause]),
        "retryCount": st.integers(0, 3),  # never null: the task view's columns are not nullable
        "requeueCount": st.integers(0, 3),
        "nodeInfo": st.none() | json_objects,
        "message": st.none() | words,
        "exitCode": st.none() | st.integers(-1, 3),
        "result": st.none() | st.sampled_from(["success", "failure"]),
        "failureInfo": st.none() | json_objects,
    },
).map(lambda d: (TASK_TRANSITIONED, d))
condition = st.fixed_dictionaries(
    {
        "at": times,
        "condition": st.fixed_dictionaries(
            {}, optional={"type": st.sampled_from(["Ready", "Scheduled", "Other"]), "state": words}
        ),
    }
).map(lambda d: (TASK_CONDITION_RECORDED, d))
unknown = st.tuples(st.sampled_from(["TaskNoted", "SomethingElse"]), json_objects)
task_ids = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=10)


@st.composite
def histories(draw, task_id: str | None = None, *, added_again: bool = True) -> list[tuple[str, dict]]:
    """One stream's events as (type, data): a TaskAdded, then anything (with ``added_again``, TaskAdded again:
    the folds start the task over; the inline projection, which the commands never give one, does not take it)."""
    task_id = task_id or draw(task_ids)
    first = draw(task_added(task_id))
    later = [transitioned, transitioned, condition, unknown] + ([task_added(task_id)] if added_again else [])
    n = draw(st.integers(0, 14))  # a list's own size leans to a few events: too few to follow one field far
    history = [first] + draw(st.lists(st.one_of(*later), min_size=n, max_size=n))
    if draw(st.booleans()):
        # Each event at a time of its own: the times drawn are mostly one and the same, and a fold that took a
        # field's time from the wrong event (scheduledAt, a previous transition's time) would then agree.
        history = [(t, {**d, "at": _at(1000 * (i + 1))} if "at" in d else d) for i, (t, d) in enumerate(history)]
    return history


def numbered(history: list[tuple[str, dict]], first_position: int = 1) -> list[tuple[int, int, str, dict]]:
    """(position, version, type, data) as the seeding fold takes them; positions grow, not densely."""
    return [(first_position + 3 * i, i + 1, type_, data) for i, (type_, data) in enumerate(history)]


@settings(max_examples=400, deadline=None)
@given(histories(), st.integers(1, 10**6), st.integers(1, 2**40))
def test_seed_row_is_the_row_of_the_evolve_fold(history, first_position, scope_id):
    stream = numbered(history, first_position)
    assert seed_row(scope_id, stream) == evolve_row(scope_id, stream, scope=SCOPE)


@given(st.lists(st.one_of(transitioned, condition, unknown), min_size=1, max_size=3), histories())
def test_a_stream_that_does_not_start_with_task_added_is_refused_by_both(before, history):
    stream = numbered(before + history)
    with pytest.raises(ValueError, match="does not start with TaskAdded"):
        seed_row(1, stream)
    with pytest.raises(ValueError, match="does not start with TaskAdded"):
        evolve_row(1, stream, scope=SCOPE)


def _recorded(stream: list[tuple[int, int, str, dict]], scope_id: int) -> list[RecordedEvent]:
    return [RecordedEvent(position=p, scope=SCOPE, stream="s", version=v, type=t, schema_version=1, data=d,
                          metadata={}, scope_id=scope_id) for p, v, t, d in stream]


@settings(max_examples=400, deadline=None)
@given(histories(), st.integers(0, 15), st.integers(1, 2**40))
def test_the_update_of_a_changed_row_is_exactly_where_the_two_rows_differ(history, cut, scope_id):
    """The inline projection writes a changed row as ``changed_row`` of the task before and after: for any two
    points of a history, exactly the columns in which ``row_of`` of the two differs, with the later values, and
    the key and position (always set)."""
    events = _recorded(numbered(history), scope_id)
    cut = min(cut, len(events) - 1)
    before, after = fold(events[: cut + 1]), fold(events)
    position = events[-1].position
    old, new = row_of(before, scope_id, position - 1), row_of(after, scope_id, position)
    expected = {"scope_id": scope_id, "key": after.key, "position": position}
    expected |= {n: v for n, v in new.items() if n not in expected and v != old[n]}
    got = changed_row(before, after, scope_id, position)
    assert got == expected
    changed = [n for n in got if n not in ("scope_id", "key", "position")]
    assert changed == [n for n in new if n in changed]  # in the row's column order: one statement text per change


def test_seed_columns_are_the_task_views_and_another_table_is_folded_by_the_definition():
    assert tuple(c.name for c in task_view.columns) == SEED_COLUMNS
    assert seeding_fold(task_view_table("task_view_x", MetaData()), SCOPE) is seed_row
    md = MetaData()
    wider = task_view_table("task_view_y", md)
    wider.append_column(Column("added_later", Integer))
    assert seeding_fold(wider, SCOPE) is not seed_row


# -- through a rebuild, on both engines ----------------------------------------------------------------------------


def _rows_of(store, scope_id: int) -> dict[str, dict]:
    with store.engine.connect() as conn:
        found = conn.execute(text("SELECT * FROM task_view WHERE scope_id = :s"), {"s": scope_id}).mappings().all()
    out = {}
    for r in found:
        row = dict(r)
        for name in ("spec", "failure_info", "node_info", "conditions"):
            if isinstance(row[name], str):  # JSON as text on SQLite, decoded on PostgreSQL
                row[name] = orjson.loads(row[name])
        out[row["key"]] = row
    return out


def _counts_of(store, scope_id: int) -> dict:
    with store.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM scope_counts WHERE scope_id = :s"), {"s": scope_id}).mappings().one()
    return dict(row)


# Each example appends to a database and rebuilds it; shrinking a failure that way takes minutes (the failing
# example is printed unshrunk; the in-memory property above finds the same mistakes small).
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(
    st.lists(task_ids, min_size=1, max_size=6, unique_by=stream_key).flatmap(
        lambda ids: st.tuples(*(histories(task_id, added_again=False) for task_id in ids))
    ),
    st.lists(st.one_of(transitioned, unknown), min_size=1, max_size=2),
    st.sampled_from([1, 2, 3]),
)
def test_a_rebuild_gives_the_evolve_fold_of_every_stream(store, streams, not_a_task, workers):
    scope = Scope("ws", f"fold-{uuid.uuid4().hex[:8]}")
    for history in streams:
        key = stream_key(history[0][1]["taskId"])
        for start in range(0, len(history), 5):  # several appends: positions interleave with other streams'
            chunk = [NewEvent(t, d) for t, d in history[start : start + 5]]
            store.log.append([StreamAppend(scope, key, chunk)])
    # A stream that is not a task's, last: it moves no count, and the count summary's position is the last task's.
    store.log.append([StreamAppend(scope, "not-a-task", [NewEvent(t, d) for t, d in not_a_task])])

    with mock.patch.object(seeding, "PARALLEL_MIN_EVENTS", 0):  # with workers > 1, every scope is cut
        result = store.rebuild(workers=workers)

    sid = store.log.scope_id(scope)
    rows = _rows_of(store, sid)
    expected = {}
    states: Counter[State] = Counter()
    slots: Counter[State] = Counter()
    for history in streams:
        key = stream_key(history[0][1]["taskId"])
        recorded = store.log.read_stream(scope, key)
        task = fold(recorded)
        row = row_of(task, sid, recorded[-1].position)
        row["spec"] = orjson.loads(orjson.dumps(row["spec"]))  # as JSON gives it back
        expected[key] = row
        states[task.state] += 1
        slots[task.state] += task.required_slots
    assert rows == expected
    counts = _counts_of(store, sid)
    for s in State:
        assert (counts[s.value], counts[f"slots_{s.value}"]) == (states[s], slots[s])
    assert result.skipped >= len(not_a_task)
    assert store.audit(scope, from_snapshots=False).ok
