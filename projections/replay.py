"""Folding events again, outside the inline projection: the events a state lacks, in order and decoded; a scope's
tasks folded from a base state; and the count changes of a run of events (for validation and "as of" counts).

Everything here goes through ``eventstore.task.evolve``, the one definition of what an event does, but for
``seed_row``: the rebuild's seeding fold, which gives the task view row of ``row_of(fold(events))`` without building
a ``Task`` per event, and is kept equal to it by a property test over random histories
(``tests/test_rebuild_fold.py``, on both engines).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Table, select, text, tuple_
from sqlalchemy.engine import Connection, Row

from eventstore import Checkpoint, EventLog, RecordedEvent, Scope, State, Task
from eventstore.log import EVENT_COLUMNS
from eventstore.lifecycle import TERMINAL, Cause
from eventstore.schema import events
from eventstore.task import TASK_ADDED, TASK_CONDITION_RECORDED, TASK_TRANSITIONED, added, evolve

from .engine_sql import SQL_SHAPES, Point, count_since, delta_groups, lacks, lacks_after, stream_page, unseen
from .rows import row_of

COLUMNS = EVENT_COLUMNS


def decode(log: EventLog, conn: Connection, r: Row) -> RecordedEvent:
    """An event row as the log's readers see it (``EventLog.decode``)."""
    return log.decode(conn, r)


def scope_events(
    log: EventLog,
    conn: Connection,
    scope_id: int,
    base: Point | None = None,
    *,
    upto: int | None = None,
    stream: str | None = None,
    batch: int = 5000,
) -> Iterator[RecordedEvent]:
    """The scope's events that ``base`` lacks (all of them without one), in position order, up to ``upto``: read by
    keyset on the position from ``base`` on (``lacks_after``), or, for one ``stream``, on its version through the
    (scope, stream, version) index, so that a task's events cost what they are, not what the scope holds. A page
    (``events_page``) of ``batch`` events at a time, all through ``conn``."""
    after = lacks_after(conn, base) if stream is None else 0
    while True:
        page = events_page(log, conn, scope_id, base, after, batch, upto=upto, stream=stream)
        yield from page
        if len(page) < batch:
            return
        after = page[-1].position if stream is None else page[-1].version


def events_page(log: EventLog, conn: Connection, scope_id: int, base: Point | None, after: int, batch: int, *,
                upto: int | None = None, stream: str | None = None) -> list[RecordedEvent]:
    """A page of ``scope_events``: the first ``batch`` of the scope's events that ``base`` lacks whose key (the
    position, or the version for one ``stream``) is above ``after``, in key order, decoded."""
    cond, params = lacks(conn, "events", base)
    key = events.c.position if stream is None else events.c.version  # a stream's versions grow with its positions
    q = select(*COLUMNS).where(events.c.scope_id == scope_id, key > after, text(cond).bindparams(**params))
    if upto is not None:
        q = q.where(events.c.position <= upto)
    if stream is not None:
        q = q.where(events.c.stream == stream)
    return [decode(log, conn, r) for r in conn.execute(q.order_by(key).limit(batch))]


def scope_streams(
    log: EventLog,
    scope_id: int,
    *,
    conn: Connection | None = None,
    streams: tuple[str | None, str | None] = (None, None),
    batch: int = 5000,
    on_page: Callable[[int], None] | None = None,
) -> Iterator[tuple[str, list[tuple[int, int, str, Any]]]]:
    """The scope's streams, each with its events as ``(position, version, type, data)`` (decoded, upcast), in the
    order of its unique (stream, version) index: all of them, or those from ``streams[0]`` (included) to
    ``streams[1]`` (excluded). A page of ``batch`` events per read, by the driver (``engine_sql.stream_page``),
    through ``conn`` or else each page in a read transaction of its own; ``on_page(n)`` after each. Memory holds
    one page and one stream."""
    upcast = log.upcasters.upcast
    current = dict(log.upcasters.current_versions())  # a dict: looked up once per event
    loads = orjson.loads
    first, before = streams
    after: tuple[str, int] | None = None if first is None else (first, 0)
    stream: str | None = None
    evs: list[tuple[int, int, str, Any]] = []
    while True:
        if conn is None:
            with log.reading() as own:
                page = stream_page(own, scope_id, after, batch, before)
        else:
            page = stream_page(conn, scope_id, after, batch, before)
        # Whether any type's current schema version is above the first (1): else no event of the page is upcast
        # but one whose version is below it, and the lookup of its type's version (a hash of a new string per
        # event) is skipped. Asked again per page: ``current`` is the upcasters' live view.
        lifting = any(v > 1 for v in current.values())
        for position, stream_, version, type_, schema_version, data in page:
            if stream_ != stream:
                if evs:
                    yield stream, evs  # type: ignore[misc]
                stream, evs = stream_, []
            data = loads(data)
            if schema_version < 1 or (lifting and schema_version < current.get(type_, 1)):
                schema_version, data = upcast(type_, schema_version, data)
            evs.append((position, version, type_, data))
        if on_page is not None:
            on_page(len(page))
        if len(page) < batch:
            break
        after = (page[-1][1], page[-1][2])
    if evs:
        yield stream, evs  # type: ignore[misc]


def log_after(
    log: EventLog, conn: Connection, after: Checkpoint, limit: int, *, unseen_in: Point | None = None
) -> list[RecordedEvent]:
    """The next events of the whole log after ``after`` that ``conn`` can see, in the order the log is followed
    ((txid, position) on PostgreSQL), without waiting for the commit horizon: for a reader that sees one fixed
    state, or a writer that holds the tables the events are projected into, so that no transaction it cannot see
    yet can have written to them. With ``unseen_in`` (PostgreSQL), only events of transactions that state did not
    see."""
    q = select(*COLUMNS)
    if log.engine.dialect.name == "postgresql":
        q = q.where(tuple_(events.c.txid, events.c.position) > tuple_(*after.as_tuple()))
        if unseen_in is not None:
            cond, params = unseen("events", unseen_in)
            q = q.where(text(cond).bindparams(**params))
        q = q.order_by(events.c.txid, events.c.position)
    else:
        q = q.where(events.c.position > after.position).order_by(events.c.position)
    return [decode(log, conn, r) for r in conn.execute(q.limit(limit))]


# -- folding a scope ----------------------------------------------------------------------------------------------


@dataclass
class ScopeFold:
    """Tasks of one scope folded from a base (a snapshot's rows, or nothing) by the events after it."""

    scope: Scope
    scope_id: int
    tasks: dict[str, Task] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    events: int = 0
    skipped: int = 0  # events of streams that do not start with TaskAdded: not tasks

    def apply(self, e: RecordedEvent) -> None:
        before = self.tasks.get(e.stream)
        if before is not None and e.version <= before.version:
            return  # already in the base
        if before is None and e.type != TASK_ADDED:
            self.skipped += 1
            return
        self.tasks[e.stream] = evolve(before, e)
        self.positions[e.stream] = e.position
        self.events += 1

    def apply_all(self, evs: Iterable[RecordedEvent]) -> ScopeFold:
        for e in evs:
            self.apply(e)
        return self

    def row(self, key: str) -> dict[str, Any]:
        return row_of(self.tasks[key], self.scope_id, self.positions[key])


def tally(tasks: Iterable[Task]) -> tuple[Counter[State], Counter[State]]:
    states: Counter[State] = Counter()
    slots: Counter[State] = Counter()
    for t in tasks:
        states[t.state] += 1
        slots[t.state] += t.required_slots
    return states, slots


# -- count changes ------------------------------------------------------------------------------------------------


class BudgetExceeded(Exception):
    def __init__(self, events: int, budget: int) -> None:
        super().__init__(f"{events} events to fold, more than the budget of {budget}")
        self.events = events
        self.budget = budget


@dataclass
class Deltas:
    """What a run of events did to a scope's counts: tasks and required slots gained (lost) per state."""

    states: Counter[State] = field(default_factory=Counter)
    slots: Counter[State] = field(default_factory=Counter)
    events: int = 0  # every event of the run, counting ones that change no count

    def move(self, before: State | None, after: State, n: int, slots: int) -> None:
        if before is not None:
            self.states[before] -= n
            self.slots[before] -= slots
        self.states[after] += n
        self.slots[after] += slots

    def added_to(self, states: Mapping[State, int],
                 slots: Mapping[State, int]) -> tuple[dict[State, int], dict[State, int]]:
        return (
            {s: states.get(s, 0) + self.states[s] for s in State},
            {s: slots.get(s, 0) + self.slots[s] for s in State},
        )


def deltas_since(
    log: EventLog,
    conn: Connection,
    scope_id: int,
    base: Point | None,
    *,
    upto: int | None = None,
    budget: int | None = None,
) -> Deltas:
    """The count changes of the scope's events that ``base`` lacks (up to position ``upto``), from the events' own
    from/to states: TaskAdded is one more pending task, TaskTransitioned one less in ``from`` and one more in
    ``to``, each weighted by the task's required slots in its TaskAdded event.

    Counts the events first (an index range) and raises :class:`BudgetExceeded` above ``budget``; then aggregates in
    the database, or, for event shapes the SQL does not know, decodes and upcasts them here.
    """
    n = count_since(conn, scope_id, base, upto)
    if budget is not None and n > budget:
        raise BudgetExceeded(n, budget)
    out = Deltas(events=n)
    if n == 0:
        return out
    groups = delta_groups(conn, scope_id, base, upto)
    if all((g[0], g[1]) in SQL_SHAPES and g[6] == g[7] == 1 for g in groups):
        for type_, _sv, f, t, count, slots, _a, _b in groups:
            if type_ == TASK_ADDED:
                out.move(None, State.PENDING, int(count), int(slots))
            else:
                out.move(State(f), State(t), int(count), int(slots))
        return out
    return _python_deltas(log, conn, scope_id, base, upto, out)


def _python_deltas(
    log: EventLog, conn: Connection, scope_id: int, base: Point | None, upto: int | None, out: Deltas
) -> Deltas:
    moves: list[tuple[str, State, State]] = []
    slots_of: dict[str, int] = {}
    for e in scope_events(log, conn, scope_id, base, upto=upto):
        if e.type == TASK_ADDED:
            t = added(e)
            slots_of[e.stream] = t.required_slots
            out.move(None, t.state, 1, t.required_slots)
        elif e.type == TASK_TRANSITIONED:
            moves.append((e.stream, State(e.data["from"]), State(e.data["to"])))
    missing = sorted({s for s, _, _ in moves if s not in slots_of})
    for i in range(0, len(missing), 500):
        q = select(*COLUMNS).where(
            events.c.scope_id == scope_id, events.c.version == 1, events.c.stream.in_(missing[i : i + 500])
        )
        for r in conn.execute(q):
            e = decode(log, conn, r)
            if e.type == TASK_ADDED:
                slots_of[e.stream] = added(e).required_slots
    for stream, f, t in moves:
        if stream in slots_of:  # a stream without TaskAdded is not a task
            out.move(f, t, 1, slots_of[stream])
    return out


def last_position(conn: Connection, scope_id: int, upto: int | None = None) -> int:
    """The position of the scope's last event (at or before ``upto``) that ``conn`` sees; 0 when none."""
    q = select(events.c.position).where(events.c.scope_id == scope_id)
    if upto is not None:
        q = q.where(events.c.position <= upto)
    found = conn.execute(q.order_by(events.c.position.desc()).limit(1)).scalar()
    return int(found or 0)


# -- the seeding fold ---------------------------------------------------------------------------------------------
#
# A rebuild folds every event of the log once, and ``evolve`` (a new frozen Task per event, then ``row_of`` and the
# row's encoding per task) was most of its time. ``seed_row`` folds one stream into local variables, event after
# event, and makes the row's values once, in the task view's column order, JSON columns encoded as JSON text
# (orjson; ``null`` for None), as ``engine_sql.load_rows`` takes them. It is the same fold as ``evolve`` step by
# step (each branch below is the branch of ``evolve`` of the same name) and the same row as ``row_of``;
# ``tests/test_rebuild_fold.py`` checks both over random histories (hypothesis), in memory and through a rebuild on
# each engine. A change to either must be made here too: the tests fail until it is.

# The task view's columns, in the order ``seed_row`` gives their values (the rebuild checks them against the table
# and against ``row_of``, and folds with ``evolve`` when they differ).
SEED_COLUMNS = (
    "scope_id", "key", "task_id", "number", "state", "previous_state", "version", "position", "created_at",
    "state_transition_time", "previous_state_transition_time", "last_modified", "scheduled_at", "start_time",
    "end_time", "exit_code", "result", "retry_count", "requeue_count", "last_retry_time", "last_requeue_time",
    "required_slots", "display_name", "status_message", "search", "spec", "failure_info", "node_info", "conditions",
)
SEED_STATE = SEED_COLUMNS.index("state")
SEED_SLOTS = SEED_COLUMNS.index("required_slots")


def seed_row_fits(table: Table) -> bool:
    """Whether ``seed_row`` makes ``table``'s rows: its columns are ``SEED_COLUMNS``, and ``row_of`` still makes
    exactly those (else ``seed_row`` is out of date, and a fold must go through ``evolve`` and ``row_of``)."""
    return tuple(c.name for c in table.columns) == SEED_COLUMNS and _row_of_columns() == SEED_COLUMNS


@functools.cache
def _row_of_columns() -> tuple[str, ...]:
    """The keys ``row_of`` makes, of a task folded from one sample TaskAdded."""
    sample = [(1, 1, TASK_ADDED, {"taskId": "t", "at": "2000-01-01T00:00:00.000000Z", "spec": {}})]
    task = fold_events(sample)
    return tuple(row_of(task, 0, 1)) if task is not None else ()


# ``State(value).value`` and ``Cause(value).value`` by a lookup, for the values the log holds (else the enum, and its
# error).
_STATES = {s.value: s.value for s in State}
_CAUSES = {c.value: c.value for c in Cause}
_PENDING, _STARTING, _RUNNING = State.PENDING.value, State.STARTING.value, State.RUNNING.value
_TERMINAL = frozenset(s.value for s in TERMINAL)
_RETRY, _REQUEUE, _REACTIVATE = Cause.RETRY.value, Cause.REQUEUE.value, Cause.REACTIVATE.value
_TRANSITION = Cause.TRANSITION.value


def seed_row(scope_id: int, stream: Sequence[tuple[int, int, str, Any]]) -> tuple:
    """The task view row of ``row_of(fold(events), scope_id, last position)`` as insert values (JSON encoded), in
    ``SEED_COLUMNS`` order, from one stream's events as ``(position, version, type, data)``, data decoded and upcast,
    in version order from a TaskAdded (as ``evolve``, a stream that does not start with one raises ValueError)."""
    dumps = orjson.dumps
    started = False
    for position, version, type_, d in stream:
        if type_ == TASK_ADDED:  # added()
            started = True
            task_id = d["taskId"]
            number = position
            spec = d.get("spec", {})
            state = _PENDING
            ver = version
            created = transition_time = modified = d["at"]
            previous = previous_time = scheduled = start = end = exit_code = result = failure = node = None
            retried = requeued = message = None
            retry_count = requeue_count = 0
            conditions: tuple[Any, ...] = ()
        elif not started:
            raise ValueError(f"a stream does not start with {TASK_ADDED}")
        elif type_ == TASK_TRANSITIONED:
            at = d["at"]
            try:  # lookups inline: two calls per event were a tenth of the seeding fold's instructions
                to = _STATES[d["to"]]
            except (KeyError, TypeError):
                to = State(d["to"]).value
            try:
                cause = _CAUSES[d.get("cause", _TRANSITION)]
            except (KeyError, TypeError):
                cause = Cause(d.get("cause", _TRANSITION)).value
            before = state
            previous, previous_time = state, transition_time
            state = to
            transition_time = modified = at
            ver = version
            retry_count = d.get("retryCount", retry_count)
            requeue_count = d.get("requeueCount", requeue_count)
            if "nodeInfo" in d:
                node = d["nodeInfo"]
            if "message" in d:
                message = d["message"]
            if to == _STARTING:
                scheduled = at
            elif to == _RUNNING:
                start = at
                if before != _STARTING:
                    scheduled = scheduled or at
            if cause == _RETRY:
                retried, exit_code, failure = at, d.get("exitCode"), d.get("failureInfo")
            elif cause == _REQUEUE:
                requeued = at
            elif cause == _REACTIVATE:
                end = exit_code = result = failure = None
            if to in _TERMINAL:
                end, exit_code, result, failure = at, d.get("exitCode"), d.get("result"), d.get("failureInfo")
        elif type_ == TASK_CONDITION_RECORDED:
            at = d["at"]
            cond = d["condition"]
            conditions = tuple(c for c in conditions if c.get("type") != cond.get("type")) + (cond,)
            ver = version
            modified = at
        else:  # an event type this code does not know changes nothing but the version
            ver = version
        last = position
    if not started:
        raise ValueError(f"a stream does not start with {TASK_ADDED}")
    display = spec.get("displayName")
    parts = [task_id, display or ""]
    for k, v in sorted((spec.get("labels") or {}).items()):
        parts += [k, v]
    return (
        scope_id, task_id.lower(), task_id, number, state, previous, ver, last, created, transition_time,
        previous_time, modified, scheduled, start, end, exit_code, result, retry_count, requeue_count, retried,
        requeued, spec.get("requiredSlots") or 1, display, message, "\n".join(parts).lower(),
        dumps(spec).decode(), "null" if failure is None else dumps(failure).decode(),
        "null" if node is None else dumps(node).decode(), dumps(list(conditions)).decode() if conditions else "null",
    )


def evolve_row(scope_id: int, stream: Sequence[tuple[int, int, str, Any]], *, scope: Scope,
               table: Table | None = None) -> tuple:
    """What ``seed_row`` gives, by the definition: the stream folded with ``evolve``, its row made by ``row_of``
    and encoded as ``engine_sql.load_rows`` takes it (JSON columns as JSON text), in the order of ``table``'s
    columns (the task view's by default). The rebuild's seeding folds with this when the task view's columns are
    not ``SEED_COLUMNS`` (``seed_row`` is then out of date); the property test compares the two."""
    from sqlalchemy import JSON

    from .tables import task_view

    columns = [(c.name, isinstance(c.type, JSON)) for c in (task_view if table is None else table).columns]
    task = fold_events(stream, scope, scope_id)
    if task is None:
        raise ValueError(f"a stream does not start with {TASK_ADDED}")
    row = row_of(task, scope_id, stream[-1][0])
    return tuple(orjson.dumps(row[n]).decode() if j else row[n] for n, j in columns)


def fold_events(stream: Iterable[tuple[int, int, str, Any]], scope: Scope = Scope("scope", "of-the-fold"),
                scope_id: int = 0) -> Task | None:
    """One stream's events as ``(position, version, type, data)`` (decoded, upcast) folded with ``evolve``."""
    task: Task | None = None
    for position, version, type_, data in stream:
        task = evolve(task, StreamEvent(position, scope, version, type_, data, scope_id))  # type: ignore[arg-type]
    return task


class StreamEvent:
    """What ``evolve`` reads of a recorded event (the fold of a stream needs no metadata or checkpoint)."""

    __slots__ = ("data", "position", "scope", "scope_id", "stream", "type", "version")

    def __init__(self, position: int, scope: Scope, version: int, type_: str, data: Any, scope_id: int,
                 stream: str = "") -> None:
        self.position = position
        self.scope = scope
        self.stream = stream
        self.version = version
        self.type = type_
        self.data = data
        self.scope_id = scope_id
