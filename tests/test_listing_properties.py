"""Property tests of task lists, cursors, count summaries and the task view (issue 3, "Verification"), on both engines.

Each test opens one store; each example writes a random history (adds with random ids, display names, labels and
required slots; random legal transitions, one at a time or several in one transaction) into a scope of its own, and
checks the read side against a fold of the log computed here in Python.
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from eventstore import Scope, State, Task
from eventstore.lifecycle import ALLOWED
from projections import And, Cmp, CursorError, Or
from projections.filters import Expr
from projections.listing import SCAN_BUDGET

from .test_listing import (
    ALL_SORTS,
    T0,
    ManualClock,
    folded_scope,
    ids,
    in_order,
    matches,
    q_matches,
    sort_key,
    walk,
)

SETTINGS: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
}
_scopes = itertools.count()


def fresh_scope() -> Scope:
    return Scope("props", f"job-{next(_scopes)}", "e")


@pytest.fixture
def pstore(database):
    """One store for all the examples of a test; each example writes into a scope of its own."""
    clock = ManualClock()
    store = database.open_store(clock=clock)
    try:
        yield store, clock
    finally:
        store.close()


# -- histories -------------------------------------------------------------------------------------------------

ID_ALPHABET = "abAB01-_"
TEXT_ALPHABET = "abAB01-_ xé"
task_ids = st.text(ID_ALPHABET, min_size=1, max_size=6)


@st.composite
def specs(draw, task_id: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"id": task_id}
    if draw(st.booleans()):
        spec["displayName"] = draw(st.text(TEXT_ALPHABET, max_size=8))
    # label keys have letters of their own, so that a search that finds one finds it in a key
    label_maps = st.dictionaries(st.text("kKlL", min_size=1, max_size=4), st.text(TEXT_ALPHABET, max_size=5), max_size=2)
    labels = draw(st.none() | label_maps)
    if labels is not None:
        spec["labels"] = labels
    slots = draw(st.none() | st.integers(1, 4))
    if slots is not None:
        spec["requiredSlots"] = slots
    retries = draw(st.none() | st.integers(-1, 2))
    if retries is not None:
        spec["maxRetries"] = retries
    return spec


moves = st.tuples(
    st.just("move"),
    st.lists(st.tuples(st.integers(0, 63), st.integers(0, 7)), min_size=1, max_size=6),  # (task, target) picks
    st.booleans(),  # True: one transition_many; False: one transition per task
    st.none() | st.integers(-2, 3),  # the exit code of a finishing transition
    st.integers(0, 3),  # microseconds on the clock before it
)
conditions = st.tuples(st.just("condition"), st.integers(0, 63), st.sampled_from(["Ready", "Scheduled"]),
                       st.integers(0, 3))


@st.composite
def histories(draw, min_tasks: int = 2, max_tasks: int = 16) -> list[tuple]:
    """Batches of adds, each followed by a few rounds of legal transitions (and the odd condition)."""
    all_ids = draw(st.lists(task_ids, min_size=min_tasks, max_size=max_tasks, unique_by=str.lower))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(all_ids))), max_size=3))))
    bounds = [0, *[c for c in cuts if c < len(all_ids)], len(all_ids)]
    ops: list[tuple] = []
    for lo, hi in itertools.pairwise(bounds):
        if hi > lo:
            ops.append(("add", [draw(specs(i)) for i in all_ids[lo:hi]], draw(st.integers(0, 3))))
            ops += draw(st.lists(moves | conditions, max_size=3))
    ops += draw(st.lists(moves, min_size=1, max_size=3))
    return ops


def apply(store, clock: ManualClock, scope: Scope, ops: list[tuple]) -> None:
    clock.now = T0
    states: dict[str, State] = {}
    order: list[str] = []
    for op in ops:
        clock.advance(microseconds=op[-1])
        if op[0] == "add":
            for t in store.add_tasks(scope, op[1]):
                states[t.task_id] = t.state
                order.append(t.task_id)
        elif op[0] == "condition":
            store.record_condition(scope, order[op[1] % len(order)], {"type": op[2], "state": "True"})
        else:
            _, picks, many, exit_code, _ = op
            changes: dict[str, State] = {}
            for index, choice in picks:
                task_id = order[index % len(order)]
                allowed = sorted(ALLOWED[states[task_id]])
                if task_id not in changes and allowed:
                    changes[task_id] = allowed[choice % len(allowed)]
            if not changes:
                continue
            if many:
                for t in store.transition_many(scope, list(changes.items())):
                    states[t.task_id] = t.state
            else:
                for task_id, to in changes.items():
                    finishing = to in (State.SUCCEEDED, State.FAILED)
                    t = store.transition(scope, task_id, to, exit_code=exit_code if finishing else None)
                    states[task_id] = t.state


# -- queries ---------------------------------------------------------------------------------------------------

DATETIME_FIELDS = ["createdAt", "stateTransitionTime", "lastModified", "startTime", "endTime"]
DATETIME_ATTRS = ["created_at", "state_transition_time", "last_modified", "start_time", "end_time"]
COMPARISONS = ["eq", "ne", "lt", "le", "gt", "ge"]


def spellings(moment: datetime) -> st.SearchStrategy[str]:
    """One instant written in UTC with a ``Z``, or with an offset, or without a zone (UTC)."""
    return st.sampled_from([
        moment.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        moment.astimezone(timezone(timedelta(hours=-3, minutes=-30))).isoformat(),
        moment.replace(tzinfo=None).isoformat(),
    ])


def filters_for(tasks: list[Task]) -> st.SearchStrategy[Expr]:
    """Filter trees whose values are mostly taken from the tasks (their ids and prefixes, their times, their exit
    codes), so that equalities and boundaries are hit, and sometimes made up."""
    id_values = st.text(ID_ALPHABET, max_size=3)
    moments = st.integers(0, 60).map(lambda us: T0 + timedelta(microseconds=us))
    codes = st.integers(-2, 3)
    if tasks:
        names = sorted({t.task_id for t in tasks})
        id_values = id_values | st.sampled_from(names) | st.tuples(st.sampled_from(names), st.integers(1, 6)).map(
            lambda p: p[0][: p[1]].swapcase() if p[1] % 2 else p[0][: p[1]]
        )
        stamps = sorted({getattr(t, a) for t in tasks for a in DATETIME_ATTRS if getattr(t, a)})
        moments = moments | st.sampled_from(stamps).map(datetime.fromisoformat)
        codes = codes | st.sampled_from(sorted({t.exit_code for t in tasks if t.exit_code is not None} or {0}))
    state_leaves = st.builds(
        Cmp, st.just("state"), st.sampled_from(["eq", "ne"]), st.frozensets(st.sampled_from(list(State)))
    )
    leaves = st.one_of(
        state_leaves,
        st.builds(Cmp, st.just("id"), st.sampled_from([*COMPARISONS, "startswith"]), id_values),
        st.builds(Cmp, st.sampled_from(DATETIME_FIELDS), st.sampled_from(COMPARISONS), moments.flatmap(spellings)),
        st.builds(Cmp, st.just("exitCode"), st.sampled_from(COMPARISONS), codes),
        st.builds(Cmp, st.just("result"), st.sampled_from(["eq", "ne"]), st.sampled_from(["success", "failure"])),
    )
    trees = st.recursive(
        leaves,
        lambda kids: st.one_of(
            st.builds(And, st.lists(kids, max_size=3).map(tuple)),
            st.builds(Or, st.lists(kids, max_size=3).map(tuple)),
        ),
        max_leaves=4,
    )
    state_trees = st.recursive(  # what lists may answer with one seek per state
        state_leaves,
        lambda kids: st.one_of(
            st.builds(And, st.lists(kids, min_size=1, max_size=3).map(tuple)),
            st.builds(Or, st.lists(kids, min_size=1, max_size=3).map(tuple)),
        ),
        max_leaves=3,
    )
    state_pairs = st.tuples(state_leaves, state_leaves).flatmap(lambda p: st.sampled_from([And(p), Or(p)]))
    return st.one_of(leaves, trees, state_trees, state_pairs)


def searches_for(tasks: list[Task]) -> st.SearchStrategy[str]:
    """Searches that are mostly pieces of the tasks' ids, display names and labels, in any case; sometimes made up
    (with the LIKE wildcards "%" and "_" among the characters)."""
    made_up = st.text(TEXT_ALPHABET + "%", max_size=4)
    fields = sorted({f for t in tasks for f in (t.task_id, t.display_name or "", *t.labels, *t.labels.values()) if f})
    if not fields:
        return made_up

    def piece(p: tuple[str, int, int, bool]) -> str:
        text, start, size, upper = p
        found = text[start : start + size]
        return found.upper() if upper else found

    pieces = st.tuples(st.sampled_from(fields), st.integers(0, 6), st.integers(1, 4), st.booleans()).map(piece)
    wildcards = st.tuples(pieces, st.sampled_from("_%")).map(lambda p: p[0][:1] + p[1] + p[0][2:])  # literal
    return st.one_of(pieces, pieces.map(lambda x: f" {x} "), wildcards, made_up)


def normalised(q: str | None) -> str | None:
    q = (q or "").strip()
    return q.lower() if len(q) >= 2 else None  # its length as given, before lower-casing


def state_only(expr) -> bool:
    if isinstance(expr, Cmp):
        return expr.field == "state"
    if isinstance(expr, (And, Or)):
        return bool(expr.items) and all(state_only(e) for e in expr.items)
    return False


def assert_exact(pages, n: int, limit: int) -> None:
    assert len(pages) == max(1, -(-n // limit))
    assert all(len(p.items) == limit and p.has_more and p.next_cursor for p in pages[:-1])


# -- properties ------------------------------------------------------------------------------------------------


@settings(max_examples=20, **SETTINGS)
@given(
    history=histories(),
    limit=st.integers(1, 5),
    budget=st.sampled_from([1, 3, SCAN_BUDGET]),
    data=st.data(),
)
def test_every_page_of_every_sort_yields_each_matching_task_once_in_order(pstore, history, limit, budget, data):
    store, clock = pstore
    scope = fresh_scope()
    apply(store, clock, scope, history)
    tasks = list(folded_scope(store, scope).values())
    wheres = [data.draw(filters_for(tasks), label=f"where {i}") for i in range(3)]
    qs = [data.draw(searches_for(tasks), label=f"q {i}") for i in range(2)]
    store.queries.scan_budget = budget
    try:
        for w, qq in ((None, None), *[(w, None) for w in wheres], (None, qs[0]), (wheres[0], qs[1])):
            expected_set = [t for t in tasks if matches(w, t) and q_matches(qq, t)]
            for sort in ALL_SORTS:
                got, pages = walk(store.queries, scope, sort=sort, limit=limit, where=w, q=qq,
                                  max_pages=len(tasks) + 2)
                expected = in_order(expected_set, sort)

                assert ids(got) == ids(expected), (sort, w, qq)
                assert pages[-1].next_cursor == "" and pages[-1].has_more is False
                assert all(p.total == len(tasks) for p in pages)
                # hasMore is exact wherever the list seeks: unfiltered, state filters on the sorts with a state
                # index, and any list whose walk covers the scope
                seeks = (w is None and normalised(qq) is None) or (
                    normalised(qq) is None and state_only(w) and not sort.startswith("name")
                )
                if seeks or budget > len(tasks):
                    assert_exact(pages, len(expected), limit)
    finally:
        store.queries.scan_budget = SCAN_BUDGET


@settings(max_examples=20, **SETTINGS)
@given(
    history=histories(min_tasks=3, max_tasks=10),
    sort=st.sampled_from(ALL_SORTS),
    limit=st.integers(1, 2),
    budget=st.sampled_from([2, SCAN_BUDGET]),
    # id prefixes of the tasks added in each of the first five gaps between pages, and microseconds on the clock
    arrivals=st.lists(st.tuples(st.lists(st.text(ID_ALPHABET, max_size=4), min_size=1, max_size=3),
                                st.integers(0, 2)), min_size=5, max_size=5),
    data=st.data(),
)
def test_tasks_added_between_pages_are_never_returned_twice_and_never_cause_a_skip(
    pstore, history, sort, limit, budget, arrivals, data
):
    store, clock = pstore
    scope = fresh_scope()
    apply(store, clock, scope, history)
    before = {t.key: t for t in folded_scope(store, scope).values()}
    where = data.draw(st.none() | filters_for(list(before.values())), label="where")
    q = data.draw(st.none() | searches_for(list(before.values())), label="q")
    wanted = {k for k, t in before.items() if matches(where, t) and q_matches(q, t)}
    store.queries.scan_budget = budget
    try:
        seen = []
        cursor = None
        pending_arrivals = list(arrivals)
        while True:
            page = store.queries.list_tasks(scope, sort=sort, limit=limit, cursor=cursor, where=where, q=q)
            seen += page.items
            if not page.next_cursor:
                break
            cursor = page.next_cursor
            if pending_arrivals:
                gap = len(arrivals) - len(pending_arrivals)
                prefixes, micros = pending_arrivals.pop(0)
                # Always new tasks: each id ends in letters no earlier id has (not in ID_ALPHABET), unique to its
                # gap and place, and sorts by its prefix among, before or after the tasks listed so far.
                fresh = [f"{prefix}{'CDEFG'[gap]}{'xyz'[j]}" for j, prefix in enumerate(prefixes)]
                clock.advance(microseconds=micros)
                store.add_tasks(scope, [{"id": i} for i in fresh])
            assert len(seen) < 100, "the walk does not end"
    finally:
        store.queries.scan_budget = SCAN_BUDGET

    keys = [t.key for t in seen]
    assert len(keys) == len(set(keys)), "a task was listed twice"
    assert wanted <= set(keys), "a task that matched before the first page was skipped"
    after = folded_scope(store, scope)
    assert all(matches(where, after[k]) and q_matches(q, after[k]) for k in keys), "a listed task does not match"
    assert [sort_key(sort)(t) for t in seen] == [sort_key(sort)(t) for t in in_order(seen, sort)], "out of order"


@settings(max_examples=15, **SETTINGS)
@given(history=histories(max_tasks=6), sort=st.sampled_from(ALL_SORTS), data=st.data())
def test_a_cursor_of_one_query_is_refused_by_another(pstore, history, sort, data):
    store, clock = pstore
    scope = fresh_scope()
    apply(store, clock, scope, history)
    tasks = list(folded_scope(store, scope).values())
    wheres = st.none() | filters_for(tasks)
    searches = st.none() | searches_for(tasks)
    where, q = data.draw(wheres, label="where"), data.draw(searches, label="q")
    store.queries.scan_budget = 1  # a filtered first page then ends after one task, with a cursor
    try:
        page = store.queries.list_tasks(scope, sort=sort, limit=1, where=where, q=q)
    finally:
        store.queries.scan_budget = SCAN_BUDGET
    assume(page.next_cursor)
    # the query it belongs to takes it, at any page size
    store.queries.list_tasks(scope, sort=sort, limit=3, where=where, q=q, cursor=page.next_cursor)

    for change in ("sort", "q", "where", "workspace", "job", "execution"):
        other = {"scope": scope, "sort": sort, "where": where, "q": q}
        if change == "sort":
            other["sort"] = data.draw(st.sampled_from([s for s in ALL_SORTS if s != sort]))
        elif change == "q":
            other["q"] = data.draw(searches.filter(lambda x: normalised(x) != normalised(q)), label="other q")
        elif change == "where":
            other["where"] = data.draw(wheres.filter(lambda w: w != where), label="other where")
        else:
            parts = {"workspace": scope.workspace, "job": scope.job, "execution": scope.execution}
            parts[change] += "-other"
            other["scope"] = Scope(**parts)
            store.add_tasks(other["scope"], [{"id": t.task_id} for t in tasks])  # the same ids live there
        with pytest.raises(CursorError, match="another query"):
            store.queries.list_tasks(other.pop("scope"), limit=1, cursor=page.next_cursor, **other)


@settings(max_examples=20, **SETTINGS)
@given(history=histories())
def test_counts_equal_a_recount_of_the_folded_log_and_are_validated(pstore, history):
    store, clock = pstore
    scope = fresh_scope()
    apply(store, clock, scope, history)
    tasks = folded_scope(store, scope).values()
    states = Counter(t.state for t in tasks)
    slots: Counter[State] = Counter()
    for t in tasks:
        slots[t.state] += t.required_slots

    summary = store.queries.counts(scope)

    assert {s: summary.states[s] for s in State} == {s: states[s] for s in State}
    assert {s: summary.slots[s] for s in State} == {s: slots[s] for s in State}
    assert summary.total == len(tasks)
    assert summary.validation_status == "validated"
    assert summary.task_counts() == {
        "active": states[State.PENDING],
        "running": states[State.STARTING] + states[State.RUNNING] + states[State.STOPPING],
        "completed": states[State.SUCCEEDED] + states[State.FAILED] + states[State.CANCELLED],
        "succeeded": states[State.SUCCEEDED],
        "failed": states[State.FAILED] + states[State.CANCELLED],
    }


@settings(max_examples=15, **SETTINGS)
@given(history=histories())
def test_every_task_view_row_equals_the_fold_of_its_stream(pstore, history):
    store, clock = pstore
    scope = fresh_scope()
    apply(store, clock, scope, history)
    folded = folded_scope(store, scope)

    for task in folded.values():
        assert store.queries.get_task(scope, task.task_id) == task
        assert store.get_task(scope, task.task_id) == task
        assert store.queries.get_by_number(scope, task.number) == task
    listed, _ = walk(store.queries, scope, sort="number:asc", limit=200)
    assert listed == in_order(folded.values(), "number:asc")
