"""Task lists, cursors and count summaries (issue 3, "Listing" and the pages/cursors/counts bullet of "Verification").

Every test runs on SQLite and on PostgreSQL. Expected orders and matches are computed in Python from tasks folded from
the log (``store.get_task``), never from the projection under test; the filter cases also spell out their expected
task ids by hand.
"""

from __future__ import annotations

import base64
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any, Callable, Iterable

import orjson
import pytest

from eventstore import Scope, State, Task, TaskNotFound, ValidationError
from eventstore.task import fold
from projections import And, Cmp, CursorCodec, CursorError, FilterError, Or, TaskQueries
from projections.cursor import store_key
from projections.filters import Expr
from projections.listing import _SEEKABLE_BY_STATE, SORTS

ALL_SORTS = list(SORTS)
T0 = datetime(2024, 1, 1, tzinfo=UTC)


# -- helpers shared with test_listing_properties.py --------------------------------------------------------------


class ManualClock:
    """The store's clock, moved by hand, so that many tasks can share one createdAt."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def walk(queries: TaskQueries, scope: Scope, *, cursor: str | None = None, max_pages: int = 10_000, **kwargs: Any):
    """Every page of one query from ``cursor``, following nextCursor; returns (tasks in order, pages).

    Fails at once when a task comes back a second time (a walk that stopped advancing would otherwise loop)."""
    pages = []
    seen: set[str] = set()
    while True:
        page = queries.list_tasks(scope, cursor=cursor, **kwargs)
        pages.append(page)
        for t in page.items:
            assert t.key not in seen, f"{t.task_id} listed twice"
            seen.add(t.key)
        if not page.next_cursor:
            return [t for p in pages for t in p.items], pages
        cursor = page.next_cursor
        assert len(pages) < max_pages, "the walk does not end"


def sort_key(sort: str) -> Callable[[Task], Any]:
    if sort.startswith("createdAt"):
        return lambda t: (t.created_at, t.key)
    if sort.startswith("name"):
        return lambda t: t.key
    assert sort == "number:asc"
    return lambda t: t.number


def in_order(tasks: Iterable[Task], sort: str) -> list[Task]:
    """The reference order of ``sort``: its key, then the task id (folded to lower case), in one direction."""
    return sorted(tasks, key=sort_key(sort), reverse=sort.endswith(":desc"))


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_DATETIME_ATTR = {
    "createdAt": "created_at",
    "stateTransitionTime": "state_transition_time",
    "lastModified": "last_modified",
    "startTime": "start_time",
    "endTime": "end_time",
}
_COMPARE = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}


def matches(expr: Expr | None, task: Task) -> bool:
    """The reference meaning of a filter: OData's (a missing value equals nothing, so only ``ne`` admits it); ids
    compare without regard to case; times compare as instants."""
    if expr is None:
        return True
    if isinstance(expr, And):
        return all(matches(e, task) for e in expr.items)
    if isinstance(expr, Or):
        return any(matches(e, task) for e in expr.items)
    if expr.field == "state":
        return (task.state in expr.value) == (expr.op == "eq")
    if expr.field == "id":
        actual, wanted = task.key, expr.value.lower()
        if expr.op == "startswith":
            return actual.startswith(wanted)
    elif expr.field in _DATETIME_ATTR:
        raw = getattr(task, _DATETIME_ATTR[expr.field])
        actual, wanted = (None if raw is None else _moment(raw)), _moment(expr.value)
    elif expr.field == "exitCode":
        actual, wanted = task.exit_code, expr.value
    else:
        assert expr.field == "result"
        actual, wanted = task.result, expr.value
    if actual is None:
        return expr.op == "ne"
    return _COMPARE[expr.op](actual, wanted)


def q_matches(q: str | None, task: Task) -> bool:
    """The reference meaning of ``q``: trimmed; under 2 characters no search; else a case-insensitive substring of
    the id, the display name, or a label key or value."""
    needle = (q or "").strip()
    if len(needle) < 2:  # its length as given: lower-casing may lengthen it ("İ")
        return True
    needle = needle.lower()
    fields = [task.task_id, task.display_name or "", *task.labels.keys(), *task.labels.values()]
    return any(needle in f.lower() for f in fields)


def folded_scope(store, scope: Scope) -> dict[str, Task]:
    """Every task of a scope, folded from the log alone (not from the projections): key -> task."""
    streams: dict[str, list] = {}
    for e in store.log.iter_scope(scope):
        streams.setdefault(e.stream, []).append(e)
    return {key: fold(events) for key, events in streams.items()}


def ids(tasks: Iterable[Task]) -> list[str]:
    return [t.task_id for t in tasks]


# -- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def tstore(database, clock):
    s = database.open_store(clock=clock)
    try:
        yield s
    finally:
        s.close()


SCOPE = Scope("ws-1", "job-1", "exec-1")


def check_every_sort(store, scope: Scope, expected_ids: set[str], *, limit: int = 2, **kwargs: Any) -> None:
    """Every sort, walked page by page, returns exactly ``expected_ids``, each once, in the reference order."""
    tasks = [store.get_task(scope, i) for i in expected_ids]
    for sort in ALL_SORTS:
        got, _ = walk(store.queries, scope, sort=sort, limit=limit, **kwargs)
        assert ids(got) == ids(in_order(tasks, sort)), (sort, kwargs)


# -- sorts -----------------------------------------------------------------------------------------------------


def _tie_heavy_scope(store, clock: ManualClock, scope: Scope = SCOPE) -> list[str]:
    """30 tasks in batches: many share one createdAt, ids are mixed in case and not added in id order."""
    rng = random.Random(7)
    all_ids = [f"{p}{n}" for p in ("task-", "Task_", "B", "a-", "z") for n in range(6)]
    rng.shuffle(all_ids)
    batches = [all_ids[:10], all_ids[10:15], all_ids[15:16], all_ids[16:24], all_ids[24:]]
    for i, batch in enumerate(batches):
        if i in (1, 3):
            clock.advance(microseconds=1)
        # one batch at a time, in shuffled order, and single adds at the same instant
        if i == 2:
            store.add_task(scope, {"id": batch[0]})
        else:
            store.add_tasks(scope, [{"id": x} for x in batch])
    return all_ids


@pytest.mark.parametrize("sort", ALL_SORTS)
def test_every_sort_orders_by_its_key_with_the_task_id_as_tie_breaker(tstore, clock, sort):
    all_ids = _tie_heavy_scope(tstore, clock)
    tasks = [tstore.get_task(SCOPE, i) for i in all_ids]
    assert max(Counter(t.created_at for t in tasks).values()) >= 10  # the tie-breaker has work to do

    got, pages = walk(tstore.queries, SCOPE, sort=sort, limit=4)

    assert ids(got) == ids(in_order(tasks, sort))
    assert len(pages) == 8


def test_created_at_sorts_break_ties_by_task_id_in_the_sort_direction(tstore, clock):
    tstore.add_tasks(SCOPE, [{"id": "b"}, {"id": "C"}, {"id": "a"}])  # one instant
    clock.advance(seconds=1)
    tstore.add_tasks(SCOPE, [{"id": "y"}, {"id": "X"}])

    up, _ = walk(tstore.queries, SCOPE, sort="createdAt:asc", limit=2)
    down, _ = walk(tstore.queries, SCOPE, sort="createdAt:desc", limit=2)

    assert ids(up) == ["a", "b", "C", "X", "y"]
    assert ids(down) == ["y", "X", "C", "b", "a"]


def test_name_sorts_order_by_task_id_without_regard_to_case(tstore):
    tstore.add_tasks(SCOPE, [{"id": x} for x in ("beta", "Alpha", "gamma", "ALPHA-2", "Beta_3", "a-b", "a_b", "a0")])

    up, _ = walk(tstore.queries, SCOPE, sort="name:asc", limit=3)
    down, _ = walk(tstore.queries, SCOPE, sort="name:desc", limit=3)

    # code point order of the ids folded to lower case ("-" < digits < "_" < letters), the same on both engines
    expected = ["a-b", "a0", "a_b", "Alpha", "ALPHA-2", "beta", "Beta_3", "gamma"]
    assert ids(up) == expected
    assert ids(down) == expected[::-1]


def test_number_sort_lists_tasks_in_the_order_they_were_added(tstore):
    for batch in (["zeta", "alpha"], ["mu"], ["Beta", "omega", "delta"]):
        tstore.add_tasks(SCOPE, [{"id": x} for x in batch])

    got, _ = walk(tstore.queries, SCOPE, sort="number:asc", limit=2)

    assert ids(got) == ["zeta", "alpha", "mu", "Beta", "omega", "delta"]
    assert [t.number for t in got] == sorted(t.number for t in got)


def test_default_sort_is_created_at_descending(tstore, clock):
    _tie_heavy_scope(tstore, clock)

    default, _ = walk(tstore.queries, SCOPE, limit=7)
    explicit, _ = walk(tstore.queries, SCOPE, sort="createdAt:desc", limit=7)

    assert ids(default) == ids(explicit)


@pytest.mark.parametrize("sort", SORTS)
def test_page_items_are_the_tasks_the_fold_of_the_log_gives(tstore, clock, sort):
    """A page's tasks are made from its statement's rows by position (``rows.task_builder``); each equals the fold
    of its stream, whatever fields it has set: retries, requeues, node info, failures, results, conditions."""
    specs = [{"id": f"t-{i:02d}", "displayName": f"Task {i}", "requiredSlots": 1 + i % 3,
              "labels": {"stage": "s"}} for i in range(12)]
    tstore.add_tasks(SCOPE, specs)
    steps = [("starting", {}), ("running", {"node_info": {"nodeId": "n1"}, "message": "up"})]
    for i in range(12):
        clock.advance(seconds=1)
        for to, details in steps[: i % 3]:
            tstore.transition(SCOPE, f"t-{i:02d}", to, **details)
    tstore.transition(SCOPE, "t-02", "failed", exit_code=3, failure_info={"category": "usererror"})
    tstore.transition(SCOPE, "t-05", "succeeded", exit_code=0)
    tstore.record_condition(SCOPE, "t-07", {"type": "Ready", "state": "True", "reason": "ok"})
    want = folded_scope(tstore, SCOPE)
    got, _pages = walk(tstore.queries, SCOPE, sort=sort, limit=5)
    assert len(got) == 12
    for task in got:
        assert task == want[task.key]
    assert any(t.conditions for t in got) and any(t.previous_state for t in got) and any(t.failure_info for t in got)


@pytest.mark.parametrize("sort", ["createdAt", "name", "createdAt:DESC", "id:asc", ""])
def test_an_unknown_sort_is_refused(tstore, sort):
    tstore.add_task(SCOPE, {"id": "t"})
    with pytest.raises(ValidationError) as err:
        tstore.queries.list_tasks(SCOPE, sort=sort)
    assert err.value.field == "sort"


# -- page size -------------------------------------------------------------------------------------------------


def test_the_page_size_defaults_to_50(tstore):
    tstore.add_tasks(SCOPE, [{"id": f"t{i:03}"} for i in range(51)])

    page = tstore.queries.list_tasks(SCOPE)

    assert len(page.items) == 50
    assert page.has_more and page.next_cursor


def test_the_page_size_is_clamped_to_1_through_200(tstore):
    tstore.add_tasks(SCOPE, [{"id": f"t{i:03}"} for i in range(205)])

    for asked, given in [(-5, 1), (0, 1), (1, 1), (199, 199), (200, 200), (201, 200), (10_000, 200)]:
        page = tstore.queries.list_tasks(SCOPE, limit=asked)
        assert len(page.items) == given, asked
        assert page.has_more


@pytest.mark.parametrize("limit", ["10", 2.5, True, None])
def test_a_page_size_that_is_not_an_integer_is_refused(tstore, limit):
    tstore.add_task(SCOPE, {"id": "t"})
    with pytest.raises(ValidationError) as err:
        tstore.queries.list_tasks(SCOPE, limit=limit)
    assert err.value.field == "limit"


def test_the_page_size_may_change_from_page_to_page(tstore):
    tstore.add_tasks(SCOPE, [{"id": f"t{i:02}"} for i in range(10)])
    q = tstore.queries
    first = q.list_tasks(SCOPE, sort="name:asc", limit=3)
    second = q.list_tasks(SCOPE, sort="name:asc", limit=5, cursor=first.next_cursor)
    third = q.list_tasks(SCOPE, sort="name:asc", limit=50, cursor=second.next_cursor)

    assert ids(first.items + second.items + third.items) == [f"t{i:02}" for i in range(10)]
    assert (len(second.items), len(third.items)) == (5, 2)
    assert not third.has_more and third.next_cursor == ""


# -- page metadata ---------------------------------------------------------------------------------------------


def _assert_exact_pages(pages, n_matches: int, limit: int) -> None:
    """hasMore is true exactly on the pages after which another match exists; the last page carries no cursor."""
    assert len(pages) == max(1, -(-n_matches // limit))
    for page in pages[:-1]:
        assert len(page.items) == limit
        assert page.has_more is True and page.next_cursor != ""
    assert pages[-1].has_more is False and pages[-1].next_cursor == ""
    assert sum(len(p.items) for p in pages) == n_matches


@pytest.mark.parametrize("sort", ALL_SORTS)
def test_has_more_is_true_only_when_another_task_exists_on_unfiltered_lists(tstore, clock, sort):
    for i in range(6):
        tstore.add_task(SCOPE, {"id": f"t{i}"})
        if i % 2:
            clock.advance(seconds=1)

    for limit in (1, 2, 3, 5, 6, 7):
        _, pages = walk(tstore.queries, SCOPE, sort=sort, limit=limit)
        _assert_exact_pages(pages, 6, limit)


def _states_scope(store, scope: Scope = SCOPE) -> dict[str, State]:
    """Tasks in every canonical state (two or three of most)."""
    plan = {
        "p1": [], "p2": [], "p3": [],
        "s1": ["starting"], "s2": ["starting"],
        "r1": ["running"], "r2": ["starting", "running"], "r3": ["running"],
        "x1": ["running", "stopping"],
        "ok1": ["running", "succeeded"], "ok2": ["running", "succeeded"],
        "f1": ["running", "failed"],
        "c1": ["cancelled"], "c2": ["running", "cancelled"],
    }
    store.add_tasks(scope, [{"id": i} for i in plan])
    for task_id, steps in plan.items():
        for to in steps:
            store.transition(scope, task_id, to)
    return {i: store.get_task(scope, i).state for i in plan}


STATE_FILTERS = [
    Cmp("state", "eq", frozenset({State.PENDING})),
    Cmp("state", "eq", frozenset({State.RUNNING, State.STARTING, State.STOPPING})),
    Cmp("state", "eq", frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})),
    Cmp("state", "ne", frozenset({State.PENDING})),
    Or((Cmp("state", "eq", frozenset({State.FAILED})), Cmp("state", "eq", frozenset({State.CANCELLED})))),
    And((Cmp("state", "ne", frozenset({State.PENDING})), Cmp("state", "ne", frozenset({State.RUNNING})))),
]


@pytest.mark.parametrize("sort", ALL_SORTS)
def test_has_more_is_true_only_when_another_task_exists_on_state_filtered_lists(tstore, sort):
    states = _states_scope(tstore)

    for where in STATE_FILTERS:
        wanted = {i for i, s in states.items() if matches(where, tstore.get_task(SCOPE, i))}
        for limit in (1, 2, 3, len(wanted)):
            got, pages = walk(tstore.queries, SCOPE, sort=sort, limit=limit, where=where)
            assert set(ids(got)) == wanted
            _assert_exact_pages(pages, len(wanted), limit)


def test_a_state_filter_that_admits_no_state_lists_nothing(tstore):
    _states_scope(tstore)
    for sort in ALL_SORTS:
        page = tstore.queries.list_tasks(SCOPE, sort=sort, where=Cmp("state", "eq", frozenset()))
        assert (page.items, page.has_more, page.next_cursor, page.total) == ([], False, "", 14)


def test_next_cursor_is_empty_on_the_last_page_and_only_there(tstore):
    tstore.add_tasks(SCOPE, [{"id": f"t{i}"} for i in range(5)])
    q = tstore.queries

    first = q.list_tasks(SCOPE, limit=2)
    second = q.list_tasks(SCOPE, limit=2, cursor=first.next_cursor)
    last = q.list_tasks(SCOPE, limit=2, cursor=second.next_cursor)
    whole = q.list_tasks(SCOPE, limit=5)

    assert first.next_cursor and second.next_cursor
    assert len(last.items) == 1 and last.next_cursor == "" and last.has_more is False
    assert whole.next_cursor == "" and whole.has_more is False


def test_an_unfiltered_page_carries_the_total_also_when_it_is_empty(tstore):
    """The page and its total are one statement; a page with no row (a cursor past the last task) reads the total
    on its own."""
    tstore.add_tasks(SCOPE, [{"id": f"t{i}"} for i in range(3)])
    q = tstore.queries
    for sort in ALL_SORTS:
        names = SORTS[sort][0]
        full = q.list_tasks(SCOPE, sort=sort, limit=3)
        assert len(full.items) == 3 and full.total == 3
        last = full.items[-1]
        key = [{"created_at": last.created_at, "key": last.key, "number": last.number}[n] for n in names]
        fp = q.query_fingerprint(SCOPE, sort, None, None)
        past = q.list_tasks(SCOPE, sort=sort, cursor=q.cursors.encode({"k": key}, fp))
        assert (past.items, past.has_more, past.next_cursor, past.total) == ([], False, "", 3), sort


def test_an_empty_or_unknown_scope_lists_nothing(tstore):
    tstore.add_task(SCOPE, {"id": "elsewhere"})
    for scope in (Scope("ws-1", "job-1", "other"), Scope("nobody", "nothing")):
        page = tstore.queries.list_tasks(scope)
        assert (page.items, page.has_more, page.next_cursor, page.total) == ([], False, "", 0)


def test_total_counts_the_tasks_of_the_scope_ignoring_filters_q_and_paging(tstore):
    _states_scope(tstore)
    tstore.add_tasks(Scope("ws-1", "job-1", "exec-2"), [{"id": f"o{i}"} for i in range(3)])
    tstore.add_tasks(Scope("ws-2", "job-1", "exec-1"), [{"id": "p1"}])
    q = tstore.queries

    for kwargs in (
        {},
        {"limit": 1},
        {"where": Cmp("state", "eq", frozenset({State.SUCCEEDED}))},
        {"where": Cmp("id", "startswith", "zzz")},
        {"q": "nothing-matches-this"},
        {"q": "r1", "sort": "name:desc"},
    ):
        first = q.list_tasks(SCOPE, **kwargs)
        assert first.total == 14, kwargs
        if first.next_cursor:
            assert q.list_tasks(SCOPE, cursor=first.next_cursor, **kwargs).total == 14
    assert q.list_tasks(Scope("ws-1", "job-1", "exec-2")).total == 3
    assert q.list_tasks(Scope("ws-2", "job-1", "exec-1")).total == 1


def test_a_page_renders_as_the_blaxel_document(tstore):
    tstore.add_tasks(SCOPE, [{"id": "a"}, {"id": "b"}])

    doc = tstore.queries.list_tasks(SCOPE, sort="name:asc", limit=1).to_dict()

    assert set(doc) == {"data", "meta"}
    assert [t["id"] for t in doc["data"]] == ["a"]
    assert doc["meta"]["hasMore"] is True and doc["meta"]["total"] == 2
    assert isinstance(doc["meta"]["nextCursor"], str) and doc["meta"]["nextCursor"]


# -- q ---------------------------------------------------------------------------------------------------------


def _search_scope(store) -> None:
    store.add_tasks(
        SCOPE,
        [
            {"id": "Align-Reads", "displayName": "BWA mem"},
            {"id": "sort_bam", "displayName": "Samtools sort"},
            {"id": "QC-1", "displayName": "Mark DUPLICATES", "labels": {"Sample": "NA12878"}},
            {"id": "call", "labels": {"pipeline": "GATK", "stage": "Variant-Calling"}},
            {"id": "abc"},
            {"id": "plain"},
        ],
    )


@pytest.mark.parametrize(
    "q, expected",
    [
        ("align", {"Align-Reads"}),  # the id
        ("READS", {"Align-Reads"}),
        ("duplic", {"QC-1"}),  # the display name
        ("bwa M", {"Align-Reads"}),
        ("sample", {"QC-1"}),  # a label key
        ("PIPE", {"call"}),
        ("na128", {"QC-1"}),  # a label value
        ("variant-call", {"call"}),
        ("sort", {"sort_bam"}),  # id and display name of one task: listed once
        ("  qc-1  ", {"QC-1"}),  # trimmed
        ("_b", {"sort_bam"}),  # "_" is a character, not a wildcard ("abc" has no "_b")
        ("%%", set()),  # "%" is a character, not a wildcard
        ("no such thing", set()),
    ],
)
def test_q_is_a_case_insensitive_substring_of_id_display_name_and_labels(tstore, q, expected):
    _search_scope(tstore)

    check_every_sort(tstore, SCOPE, expected, q=q)
    assert {t.task_id for t in folded_scope(tstore, SCOPE).values() if q_matches(q, t)} == expected


@pytest.mark.parametrize("q", ["", " ", "a", "Q", "%", "_", "  b  ", None])
def test_q_shorter_than_two_characters_lists_unfiltered(tstore, q):
    _search_scope(tstore)

    check_every_sort(tstore, SCOPE, {"Align-Reads", "sort_bam", "QC-1", "call", "abc", "plain"}, q=q)


@pytest.mark.parametrize("q", ["İ", " İ "])
def test_q_of_one_character_that_lower_casing_lengthens_lists_unfiltered(tstore, q):
    # "İ".lower() is two characters ("i" and a combining dot): the search is still one character long.
    _search_scope(tstore)
    tstore.add_task(SCOPE, {"id": "ist", "displayName": "İstanbul"})

    check_every_sort(tstore, SCOPE, {"Align-Reads", "sort_bam", "QC-1", "call", "abc", "plain", "ist"}, q=q)
    check_every_sort(tstore, SCOPE, {"ist"}, q="İs")


@pytest.mark.parametrize("q", ["ab\x00", "\x00", "\x00\x00"])
def test_q_with_a_nul_character_is_refused_on_both_engines(tstore, q):
    _search_scope(tstore)
    with pytest.raises(ValidationError) as err:
        tstore.queries.list_tasks(SCOPE, q=q)
    assert err.value.field == "q"


def test_q_combines_with_a_filter(tstore):
    _search_scope(tstore)
    tstore.transition(SCOPE, "QC-1", "running")
    tstore.transition(SCOPE, "call", "running")

    running = Cmp("state", "eq", frozenset({State.RUNNING}))
    check_every_sort(tstore, SCOPE, {"QC-1", "call"}, where=running)
    check_every_sort(tstore, SCOPE, {"call"}, where=running, q="gatk")
    check_every_sort(tstore, SCOPE, set(), where=running, q="bwa")


def test_q_longer_than_200_characters_is_refused(tstore):
    _search_scope(tstore)
    tstore.queries.list_tasks(SCOPE, q="x" * 200)
    with pytest.raises(ValidationError) as err:
        tstore.queries.list_tasks(SCOPE, q="x" * 201)
    assert err.value.field == "q"


# -- filters ---------------------------------------------------------------------------------------------------


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def _filter_scope(store, clock: ManualClock) -> None:
    """Seven tasks with known times (seconds after T0), exit codes and results.

    ============  =========  =======  =====  =====  ====  =======  ==========
    task          state      created  start  end    exit  result   transition
    ============  =========  =======  =====  =====  ====  =======  ==========
    alpha-1       succeeded  0        10     20     0     success  20
    Alpha_2       failed     0        15     30     3     failure  30
    beta-1        cancelled  5        -      6      -     failure  6
    beta-2        pending    5        -      -      -     -        5
    gamma         running    5        12     -      -     -        12
    ab            pending    5        -      -      -     -        5
    a_b           failed     5        40     42     -1    failure  42
    ============  =========  =======  =====  =====  ====  =======  ==========
    """

    def moment(seconds: float) -> None:
        clock.now = T0 + timedelta(seconds=seconds)

    moment(0)
    store.add_tasks(SCOPE, [{"id": "alpha-1"}, {"id": "Alpha_2", "maxRetries": 0}])
    moment(5)
    store.add_tasks(SCOPE, [{"id": x} for x in ("beta-1", "beta-2", "gamma", "ab", "a_b")])
    moment(6)
    store.terminate(SCOPE, "beta-1")
    moment(10)
    store.transition(SCOPE, "alpha-1", "running")
    store.transition(SCOPE, "Alpha_2", "starting")
    moment(12)
    store.transition(SCOPE, "gamma", "running")
    moment(15)
    store.transition(SCOPE, "Alpha_2", "running")
    moment(20)
    store.transition(SCOPE, "alpha-1", "succeeded", exit_code=0)
    moment(30)
    store.transition(SCOPE, "Alpha_2", "failed", exit_code=3)
    moment(40)
    store.transition(SCOPE, "a_b", "running")
    moment(41)
    store.transition(SCOPE, "a_b", "stopping")
    moment(42)
    store.transition(SCOPE, "a_b", "failed", exit_code=-1)


EVERY = {"alpha-1", "Alpha_2", "beta-1", "beta-2", "gamma", "ab", "a_b"}


def _check_filters(store, clock, cases) -> None:
    _filter_scope(store, clock)
    tasks = folded_scope(store, SCOPE).values()
    for where, expected in cases:
        # the hand-written expectation agrees with the reference meaning, and the store agrees with both
        assert {t.task_id for t in tasks if matches(where, t)} == expected, where
        check_every_sort(store, SCOPE, expected, where=where)


def test_state_filters_admit_sets_of_canonical_states(tstore, clock):
    S = State
    _check_filters(tstore, clock, [
        (Cmp("state", "eq", frozenset({S.SUCCEEDED})), {"alpha-1"}),
        (Cmp("state", "eq", frozenset({S.FAILED, S.CANCELLED})), {"Alpha_2", "beta-1", "a_b"}),
        (Cmp("state", "eq", frozenset({S.PENDING, S.RUNNING})), {"beta-2", "ab", "gamma"}),
        (Cmp("state", "eq", frozenset({S.STOPPING, S.STARTING})), set()),
        (Cmp("state", "ne", frozenset({S.PENDING})), EVERY - {"beta-2", "ab"}),
        (Cmp("state", "ne", frozenset(S)), set()),
    ])


def test_id_filters_compare_without_regard_to_case(tstore, clock):
    _check_filters(tstore, clock, [
        (Cmp("id", "eq", "ALPHA-1"), {"alpha-1"}),
        (Cmp("id", "eq", "alpha_2"), {"Alpha_2"}),
        (Cmp("id", "ne", "alpha-1"), EVERY - {"alpha-1"}),
        (Cmp("id", "lt", "b"), {"alpha-1", "Alpha_2", "ab", "a_b"}),
        (Cmp("id", "le", "BETA-1"), {"alpha-1", "Alpha_2", "ab", "a_b", "beta-1"}),
        (Cmp("id", "gt", "beta-1"), {"beta-2", "gamma"}),
        (Cmp("id", "ge", "Beta-2"), {"beta-2", "gamma"}),
        (Cmp("id", "startswith", "ALPHA"), {"alpha-1", "Alpha_2"}),
        (Cmp("id", "startswith", "a_"), {"a_b"}),  # "_" is not a wildcard: "ab" does not start with "a_"
        (Cmp("id", "startswith", "gamma"), {"gamma"}),
        (Cmp("id", "startswith", "gammas"), set()),
        (Cmp("id", "startswith", ""), EVERY),
    ])


def test_datetime_filters_compare_instants(tstore, clock):
    _check_filters(tstore, clock, [
        (Cmp("createdAt", "eq", "2024-01-01T00:00:00Z"), {"alpha-1", "Alpha_2"}),
        (Cmp("createdAt", "eq", "2024-01-01T00:00:05.000000Z"), EVERY - {"alpha-1", "Alpha_2"}),
        (Cmp("createdAt", "ne", at(0)), EVERY - {"alpha-1", "Alpha_2"}),
        (Cmp("createdAt", "gt", at(0)), EVERY - {"alpha-1", "Alpha_2"}),
        (Cmp("createdAt", "ge", at(5)), EVERY - {"alpha-1", "Alpha_2"}),
        (Cmp("createdAt", "le", at(0)), {"alpha-1", "Alpha_2"}),
        (Cmp("createdAt", "lt", "2024-01-01T02:00:03+02:00"), {"alpha-1", "Alpha_2"}),  # an offset: 00:00:03Z
        (Cmp("createdAt", "lt", "2024-01-01T00:00:04"), {"alpha-1", "Alpha_2"}),  # no zone: UTC
        (Cmp("createdAt", "gt", "2024-01-01T00:00:04.999999Z"), EVERY - {"alpha-1", "Alpha_2"}),
        (Cmp("stateTransitionTime", "eq", at(5)), {"beta-2", "ab"}),
        (Cmp("stateTransitionTime", "gt", at(20)), {"Alpha_2", "a_b"}),
        (Cmp("lastModified", "ge", at(30)), {"Alpha_2", "a_b"}),
        (Cmp("lastModified", "lt", at(6)), {"beta-2", "ab"}),
        (Cmp("startTime", "lt", at(13)), {"alpha-1", "gamma"}),  # never started: no start time, not "earlier"
        (Cmp("startTime", "ge", at(15)), {"Alpha_2", "a_b"}),
        (Cmp("startTime", "ne", at(10)), EVERY - {"alpha-1"}),  # a missing value is not equal
        (Cmp("startTime", "eq", at(12)), {"gamma"}),
        (Cmp("endTime", "le", at(20)), {"beta-1", "alpha-1"}),
        (Cmp("endTime", "gt", at(20)), {"Alpha_2", "a_b"}),
        (Cmp("endTime", "ne", at(6)), EVERY - {"beta-1"}),
    ])


def test_exit_code_filters_compare_integers(tstore, clock):
    _check_filters(tstore, clock, [
        (Cmp("exitCode", "eq", 0), {"alpha-1"}),
        (Cmp("exitCode", "ne", 0), EVERY - {"alpha-1"}),  # no exit code is not 0
        (Cmp("exitCode", "lt", 0), {"a_b"}),
        (Cmp("exitCode", "le", 3), {"alpha-1", "Alpha_2", "a_b"}),
        (Cmp("exitCode", "gt", 0), {"Alpha_2"}),
        (Cmp("exitCode", "ge", 0), {"alpha-1", "Alpha_2"}),
        (Cmp("exitCode", "ge", 4), set()),
    ])


def test_result_filters(tstore, clock):
    _check_filters(tstore, clock, [
        (Cmp("result", "eq", "success"), {"alpha-1"}),
        (Cmp("result", "eq", "failure"), {"Alpha_2", "beta-1", "a_b"}),
        (Cmp("result", "ne", "success"), EVERY - {"alpha-1"}),
        (Cmp("result", "ne", "failure"), {"alpha-1", "beta-2", "gamma", "ab"}),
    ])


def test_and_or_and_parentheses_nest(tstore, clock):
    S = State
    pending_or_running = Or((Cmp("state", "eq", frozenset({S.PENDING})), Cmp("state", "eq", frozenset({S.RUNNING}))))
    _check_filters(tstore, clock, [
        (And((Cmp("state", "eq", frozenset({S.FAILED})), Cmp("exitCode", "gt", 0))), {"Alpha_2"}),
        (Or((Cmp("id", "startswith", "beta"), Cmp("exitCode", "lt", 0))), {"beta-1", "beta-2", "a_b"}),
        (And((pending_or_running, Cmp("id", "startswith", "g"))), {"gamma"}),
        (Or((And((Cmp("result", "eq", "failure"), Or((Cmp("exitCode", "eq", 3), Cmp("exitCode", "lt", 0))))),
             Cmp("id", "eq", "AB"))), {"Alpha_2", "a_b", "ab"}),
        (And((Cmp("createdAt", "eq", at(5)), Or((Cmp("startTime", "ge", at(12)), Cmp("endTime", "le", at(6)))))),
         {"gamma", "a_b", "beta-1"}),
        (And((Cmp("state", "ne", frozenset({S.PENDING})), Cmp("state", "ne", frozenset({S.FAILED})))),
         {"alpha-1", "beta-1", "gamma"}),
        (And(()), EVERY),
        (Or(()), set()),
        (And((Or(()), Cmp("id", "eq", "ab"))), set()),
        (Or((And(()), Cmp("id", "eq", "ab"))), EVERY),
    ])


@pytest.mark.parametrize(
    "make",
    [
        lambda: Cmp("name", "eq", "x"),  # not a field
        lambda: Cmp("state", "lt", frozenset({State.PENDING})),  # states compare for (in)equality only
        lambda: Cmp("state", "eq", "pending"),  # a set of canonical states, not a name
        lambda: Cmp("state", "eq", frozenset({"pending"})),
        lambda: Cmp("exitCode", "eq", "3"),
        lambda: Cmp("exitCode", "eq", True),
        lambda: Cmp("exitCode", "startswith", 3),
        lambda: Cmp("createdAt", "startswith", "2024"),
        lambda: Cmp("result", "eq", "succeeded"),
        lambda: Cmp("id", "eq", 3),
        lambda: Cmp("exitCode", "eq", 2**31),  # exit codes are 32-bit (the column, transitions and $filter)
        lambda: Cmp("exitCode", "lt", -(2**31) - 1),
        lambda: Cmp("exitCode", "gt", 2**70),
        lambda: Cmp("id", "eq", "a\x00"),  # PostgreSQL cannot take NUL: refused on both engines alike
        lambda: Cmp("id", "startswith", "\x00"),
        lambda: Cmp("endTime", "lt", "2024-01-01T00:00:00Z\x00"),
    ],
)
def test_a_malformed_filter_is_refused_when_built(make):
    with pytest.raises(FilterError):
        make()


def test_a_filter_time_that_is_not_iso_8601_is_refused(tstore):
    tstore.add_task(SCOPE, {"id": "t"})
    with pytest.raises(ValidationError) as err:
        tstore.queries.list_tasks(SCOPE, where=Cmp("createdAt", "gt", "yesterday"))
    assert err.value.field == "filter"


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_filter_time_outside_the_calendar_in_utc_is_refused(tstore, moment):
    tstore.add_task(SCOPE, {"id": "t"})
    with pytest.raises(ValidationError) as err:
        tstore.queries.list_tasks(SCOPE, where=Cmp("createdAt", "gt", moment))
    assert err.value.field == "filter"


# -- cursors ---------------------------------------------------------------------------------------------------


def _first_cursor(store, scope: Scope = SCOPE, **kwargs: Any) -> str:
    page = store.queries.list_tasks(scope, limit=2, **kwargs)
    assert page.next_cursor
    return page.next_cursor


def _paged_scopes(store) -> None:
    for scope in (
        SCOPE,
        Scope("ws-1", "job-1", "exec-2"),
        Scope("ws-1", "job-2", "exec-1"),
        Scope("ws-2", "job-1", "exec-1"),
    ):
        store.add_tasks(scope, [{"id": f"t{i}", "displayName": "task"} for i in range(5)])


@pytest.mark.parametrize(
    "change",
    [
        {"sort": "createdAt:asc"},
        {"sort": "name:asc"},
        {"q": "t1"},
        {"where": Cmp("state", "eq", frozenset({State.PENDING}))},
        {"scope": Scope("ws-1", "job-1", "exec-2")},  # another execution
        {"scope": Scope("ws-1", "job-2", "exec-1")},  # another job
        {"scope": Scope("ws-2", "job-1", "exec-1")},  # another workspace
    ],
    ids=["sort", "sort-name", "q", "filter", "execution", "job", "workspace"],
)
def test_a_cursor_of_another_query_is_refused(tstore, change):
    _paged_scopes(tstore)
    cursor = _first_cursor(tstore)
    change = dict(change)
    scope = change.pop("scope", SCOPE)

    with pytest.raises(CursorError, match="belongs to another query") as err:
        tstore.queries.list_tasks(scope, limit=2, cursor=cursor, **change)
    assert err.value.field == "cursor"


@pytest.mark.parametrize(
    "first, then",
    [
        ({"q": "ta"}, {"q": "as"}),
        ({"q": "task"}, {}),
        ({"where": Cmp("id", "startswith", "t")}, {"where": Cmp("id", "startswith", "t1")}),
        ({"where": Cmp("id", "startswith", "t")}, {}),
        ({"where": Cmp("exitCode", "ne", 1)}, {"where": Cmp("exitCode", "ne", 2)}),
        ({"where": Cmp("state", "eq", frozenset({State.PENDING}))}, {"where": Cmp("state", "ne", frozenset())}),
        ({"sort": "name:desc"}, {"sort": "name:asc"}),
        ({"sort": "number:asc"}, {"sort": "createdAt:asc"}),
    ],
)
def test_a_cursor_of_a_filtered_or_sorted_query_is_refused_by_another(tstore, first, then):
    _paged_scopes(tstore)
    cursor = _first_cursor(tstore, **first)

    tstore.queries.list_tasks(SCOPE, limit=2, cursor=cursor, **first)  # its own query takes it
    with pytest.raises(CursorError, match="belongs to another query"):
        tstore.queries.list_tasks(SCOPE, limit=2, cursor=cursor, **then)


def test_a_cursor_is_never_authority_over_another_scope(tstore):
    mine, theirs = Scope("ws-mine", "job", "e"), Scope("ws-theirs", "job", "e")
    tstore.add_tasks(mine, [{"id": f"m{i}"} for i in range(4)])
    tstore.add_tasks(theirs, [{"id": f"secret{i}"} for i in range(4)])
    for sort in ALL_SORTS:
        cursor = _first_cursor(tstore, mine, sort=sort)

        with pytest.raises(CursorError):
            tstore.queries.list_tasks(theirs, sort=sort, limit=2, cursor=cursor)

        # the cursor says where a page ended and nothing else: no scope, no task data beyond the sort key
        body = orjson.loads(base64.urlsafe_b64decode(cursor.split(".")[0] + "=="))
        assert set(body) == {"d", "f", "t"} and set(body["d"]) == {"k"}
        assert "ws-mine" not in cursor and b"ws-mine" not in orjson.dumps(body)
        # and it still pages its own scope only
        page = tstore.queries.list_tasks(mine, sort=sort, limit=10, cursor=cursor)
        assert all(t.task_id.startswith("m") for t in page.items) and len(page.items) == 2


def test_a_cursor_holds_the_last_key_of_its_page(tstore, clock):
    tstore.add_tasks(SCOPE, [{"id": f"t{i}"} for i in range(5)])
    for sort in ALL_SORTS:
        page = tstore.queries.list_tasks(SCOPE, sort=sort, limit=2)
        last = page.items[-1]
        doc = tstore.queries.cursors.decode(page.next_cursor, tstore.queries.query_fingerprint(SCOPE, sort, None, None))
        expected = {"createdAt": [last.created_at, last.key], "name": [last.key], "number": [last.number]}
        assert doc == {"k": expected[sort.split(":")[0]]}


class CodecClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_cursor_older_than_24_hours_is_refused(tstore):
    _paged_scopes(tstore)
    codec_clock = CodecClock()
    tstore.queries.cursors.clock = codec_clock
    cursor = _first_cursor(tstore)

    codec_clock.now += 24 * 3600 - 1
    assert tstore.queries.list_tasks(SCOPE, limit=2, cursor=cursor).items
    codec_clock.now += 2
    with pytest.raises(CursorError, match="expired"):
        tstore.queries.list_tasks(SCOPE, limit=2, cursor=cursor)


def test_the_cursor_lifetime_is_configurable(tstore):
    _paged_scopes(tstore)
    codec_clock = CodecClock()
    queries = TaskQueries(tstore.log, CursorCodec(store_key(tstore.engine), max_age=60, clock=codec_clock))
    cursor = _first_cursor(tstore)  # the store's own codec shares the key: its cursors are good here too
    mine = queries.list_tasks(SCOPE, limit=2).next_cursor

    codec_clock.now += 60
    assert queries.list_tasks(SCOPE, limit=2, cursor=mine).items
    codec_clock.now += 1
    with pytest.raises(CursorError, match="expired"):
        queries.list_tasks(SCOPE, limit=2, cursor=mine)
    codec_clock.now = tstore.queries.cursors.clock()  # the store's cursor, read by this codec when fresh
    assert queries.list_tasks(SCOPE, limit=2, cursor=cursor).items


def test_a_cursor_issued_in_the_future_is_refused(tstore):
    _paged_scopes(tstore)
    codec_clock = CodecClock()
    tstore.queries.cursors.clock = codec_clock
    codec_clock.now += 3600
    cursor = _first_cursor(tstore)
    codec_clock.now -= 3600

    with pytest.raises(CursorError, match="future"):
        tstore.queries.list_tasks(SCOPE, limit=2, cursor=cursor)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_tampered_cursor_is_refused(tstore):
    _paged_scopes(tstore)
    cursor = _first_cursor(tstore, sort="name:asc")
    body_text, mac_text = cursor.split(".")
    body = base64.urlsafe_b64decode(body_text + "==")
    mac = base64.urlsafe_b64decode(mac_text + "==")

    forged_key = body.replace(b'"t1"', b'"t0"')  # move the page back
    assert forged_key != body
    tampered = [f"{_b64(forged_key)}.{mac_text}"]
    for i in range(len(body)):  # flip each byte of the document
        flipped = bytearray(body)
        flipped[i] ^= 0x01
        tampered.append(f"{_b64(bytes(flipped))}.{mac_text}")
    for i in range(len(mac)):  # and of the signature
        flipped = bytearray(mac)
        flipped[i] ^= 0x80
        tampered.append(f"{body_text}.{_b64(bytes(flipped))}")

    for token in tampered:
        with pytest.raises(CursorError, match="altered or was not issued by this store"):
            tstore.queries.list_tasks(SCOPE, sort="name:asc", limit=2, cursor=token)


def test_every_single_character_change_to_a_cursor_is_refused(tstore):
    _paged_scopes(tstore)
    cursor = _first_cursor(tstore)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=."

    for i, original in enumerate(cursor):
        for ch in alphabet:
            if ch != original:
                with pytest.raises(CursorError):
                    tstore.queries.cursors.decode(cursor[:i] + ch + cursor[i + 1 :],
                                                  tstore.queries.query_fingerprint(SCOPE, "createdAt:desc", None, None))


def test_a_cursor_signed_with_another_key_is_refused(tstore):
    _paged_scopes(tstore)
    fp = tstore.queries.query_fingerprint(SCOPE, "createdAt:desc", None, None)
    page = tstore.queries.list_tasks(SCOPE, limit=2)
    doc = tstore.queries.cursors.decode(page.next_cursor, fp)
    foreign = CursorCodec(b"\x00" * 32).encode(doc, fp)

    with pytest.raises(CursorError, match="altered or was not issued by this store"):
        tstore.queries.list_tasks(SCOPE, limit=2, cursor=foreign)


@pytest.mark.parametrize(
    "garbage",
    [
        "x",
        "not a cursor",
        "abc.def.ghi",
        ".",
        "....",
        "é.é",
        "eyJrIjpbXX0",  # base64 JSON, unsigned
        "eyJrIjpbXX0.",
        "%%%.%%%",
        "a" * 5000 + "." + "b",
        "null",
        "\x00.\x00",
    ],
)
def test_a_string_that_is_not_a_cursor_is_refused(tstore, garbage):
    _paged_scopes(tstore)
    with pytest.raises(CursorError) as err:
        tstore.queries.list_tasks(SCOPE, limit=2, cursor=garbage)
    assert err.value.field == "cursor"
    assert any(m in str(err.value) for m in ("not a cursor of this store", "altered or was not issued"))


def test_a_signed_document_that_is_not_a_page_end_is_refused(tstore):
    _paged_scopes(tstore)
    codec = tstore.queries.cursors
    fp = tstore.queries.query_fingerprint(SCOPE, "name:asc", None, None)
    for doc in ({"k": "t1"}, {"k": ["a", "b"]}, ["t1"], {"x": 1}, None):
        with pytest.raises(ValidationError) as err:
            tstore.queries.list_tasks(SCOPE, sort="name:asc", limit=2, cursor=codec.encode(doc, fp))
        assert err.value.field == "cursor"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"d": 1}', b'{"d": 1, "f": "x", "t": "soon"}', b"null"])
def test_a_body_signed_with_the_store_s_key_that_is_no_cursor_envelope_is_refused(tstore, body):
    """Only this store can sign; should it ever have signed something else, the signature does not make it a cursor."""
    import hashlib
    import hmac

    _paged_scopes(tstore)
    mac = hmac.new(store_key(tstore.engine), body, hashlib.sha256).digest()[:16]
    token = ".".join(base64.urlsafe_b64encode(part).rstrip(b"=").decode() for part in (body, mac))
    with pytest.raises(CursorError, match="not a cursor of this store") as err:
        tstore.queries.list_tasks(SCOPE, limit=2, cursor=token)
    assert err.value.field == "cursor"


# -- the walk budget -------------------------------------------------------------------------------------------


def test_a_selective_filter_with_a_small_walk_budget_pages_short_but_finds_every_match_once(tstore, clock):
    for i in range(40):
        tstore.add_task(SCOPE, {"id": f"t{i:02}", "displayName": "needle" if i in (5, 6, 7, 30) else "hay"})
        if i % 3 == 0:
            clock.advance(seconds=1)
    tstore.queries.scan_budget = 4
    wanted = {"t05", "t06", "t07", "t30"}
    filters = [
        {"where": Or(tuple(Cmp("id", "eq", i) for i in sorted(wanted)))},
        {"q": "needle"},
        {"q": "NEEDLE", "where": Cmp("state", "eq", frozenset({State.PENDING}))},
    ]
    for kwargs in filters:
        for sort in ALL_SORTS:
            got, pages = walk(tstore.queries, SCOPE, sort=sort, limit=2, **kwargs)
            tasks = [tstore.get_task(SCOPE, i) for i in wanted]
            assert ids(got) == ids(in_order(tasks, sort)), (sort, kwargs)
            # no page walked more than its budget: at least ten walks for forty tasks
            assert len(pages) >= 10
            assert any(not p.items and p.has_more and p.next_cursor for p in pages)  # empty, yet more to walk
            assert any(0 < len(p.items) < 2 and p.next_cursor for p in pages)  # short, yet more to walk
            assert pages[-1].next_cursor == "" and not pages[-1].has_more
            assert all(p.total == 40 for p in pages)


def test_a_walk_that_fills_its_page_stops_at_the_page(tstore):
    tstore.add_tasks(SCOPE, [{"id": f"t{i:02}", "labels": {"k": "even" if i % 2 == 0 else "odd"}} for i in range(20)])
    tstore.queries.scan_budget = 8

    page = tstore.queries.list_tasks(SCOPE, sort="name:asc", limit=2, q="even")

    assert ids(page.items) == ["t00", "t02"]
    assert page.has_more
    rest, _ = walk(tstore.queries, SCOPE, sort="name:asc", limit=2, q="even", cursor=page.next_cursor)
    assert ids(rest) == [f"t{i:02}" for i in range(4, 20, 2)]


@pytest.mark.parametrize("sort", ALL_SORTS)
@pytest.mark.parametrize("budget", [10_000, 300, 30])
def test_sparse_matches_are_found_across_the_growing_windows_of_one_walk(tstore, sort, budget):
    """A page of 2 walks windows of 24, 192, then what is left of the budget: matches in each are gathered into
    one page, in order, none twice, none skipped, and no page walks past its budget."""
    needles = {3, 100, 250, 590}
    tstore.add_tasks(SCOPE, [{"id": f"t{i:03}", "displayName": "needle" if i in needles else "hay"}
                             for i in range(600)])
    tstore.queries.scan_budget = budget
    got, pages = walk(tstore.queries, SCOPE, sort=sort, limit=2, q="needle")
    wanted = in_order([tstore.get_task(SCOPE, f"t{i:03}") for i in needles], sort)
    assert ids(got) == ids(wanted)
    assert len(pages) >= 600 // budget  # each page walked at most the budget
    if budget == 10_000:  # the whole scope in reach of every page: exact pages
        assert [len(p.items) for p in pages] == [2, 2] and pages[0].has_more and not pages[1].has_more
    assert pages[-1].next_cursor == "" and not pages[-1].has_more


def test_unfiltered_and_state_filtered_pages_do_not_depend_on_the_walk_budget(tstore):
    _states_scope(tstore)
    tstore.queries.scan_budget = 1
    pending = Cmp("state", "eq", frozenset({State.PENDING, State.SUCCEEDED}))

    for sort in ALL_SORTS:
        _, pages = walk(tstore.queries, SCOPE, sort=sort, limit=3)
        _assert_exact_pages(pages, 14, 3)
    for sort in ("createdAt:desc", "createdAt:asc", "number:asc"):  # the sorts a state filter seeks by
        _, pages = walk(tstore.queries, SCOPE, sort=sort, limit=2, where=pending)
        _assert_exact_pages(pages, 5, 2)


# -- tasks added while a client pages --------------------------------------------------------------------------


@pytest.mark.parametrize("sort", ALL_SORTS)
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"where": Cmp("state", "eq", frozenset({State.PENDING}))}, {"q": "-x"}],
    ids=["unfiltered", "state", "q"],
)
def test_tasks_added_between_pages_are_never_returned_twice_and_skip_nothing(tstore, clock, sort, kwargs):
    first = [f"{c}-x{i}" for i, c in enumerate("dmhrbvkq")]
    tstore.add_tasks(SCOPE, [{"id": i} for i in first])
    before = {i.lower() for i in first}
    added: list[str] = []
    seen: list[Task] = []
    cursor = None
    n = 0
    while True:
        page = tstore.queries.list_tasks(SCOPE, sort=sort, limit=3, cursor=cursor, **kwargs)
        seen += page.items
        if not page.next_cursor:
            break
        cursor = page.next_cursor
        n += 1
        assert n < 50, "the walk does not end"
        if n <= 4:
            # new tasks before, among and after the ones listed so far, some at the instant of the last ones
            new = [f"a-x{n}", f"m-y{n}-x", f"z-x{n}"]
            tstore.add_tasks(SCOPE, [{"id": i} for i in new])
            added += new
            if n % 2:
                clock.advance(microseconds=1)

    keys = [t.key for t in seen]
    assert len(keys) == len(set(keys)), "a task was listed twice"
    assert before <= set(keys), "a task that existed before the first page was skipped"
    assert set(keys) <= before | {a.lower() for a in added}
    assert keys == [t.key for t in in_order(seen, sort)], "the pages are not in order"


def test_a_task_added_while_a_filtered_page_is_read_is_not_returned_twice(tstore, monkeypatch):
    """A task committed between the statements of one walked page (after its window's edge is read, before its
    matches are) must not move the page's end backwards."""
    from projections import engine_sql

    tstore.add_tasks(SCOPE, [{"id": i} for i in ("b", "d", "f", "h")])
    tstore.queries.scan_budget = 3
    armed = [True]
    real = engine_sql.driver_execute

    def add_meanwhile(conn, sql, params=()):
        cur = real(conn, sql, params)
        if armed[0] and "FROM task_view" in sql and "OFFSET" in sql:  # a walk window's edge
            armed[0] = False
            tstore.add_task(SCOPE, {"id": "c"})  # sorts inside the walk that is being read
        return cur

    monkeypatch.setattr(engine_sql, "driver_execute", add_meanwhile)
    got, _ = walk(tstore.queries, SCOPE, sort="name:asc", limit=5, where=Cmp("id", "eq", "f"))
    monkeypatch.undo()

    assert not armed[0]
    assert ids(got) == ["f"]


# -- counts ----------------------------------------------------------------------------------------------------


def test_counts_give_tasks_and_slots_per_state_and_the_azure_batch_summary(tstore):
    S = State
    specs = {
        "p": 1, "p2": 2, "s": 3, "r": 4, "x": 5, "ok": 6, "f": 7, "c": 8, "retried": 9, "reactivated": 10,
    }
    tstore.add_tasks(SCOPE, [
        {"id": i, "requiredSlots": n, **({"maxRetries": 1} if i == "retried" else {})} for i, n in specs.items()
    ])
    tstore.add_task(SCOPE, {"id": "noslots"})  # one slot when none is asked for
    for task_id, steps in {
        "s": ["starting"], "r": ["running"], "x": ["running", "stopping"], "ok": ["running", "succeeded"],
        "f": ["running", "failed"], "c": ["starting", "cancelled"], "retried": ["running", "failed"],
        "reactivated": ["running", "failed"],
    }.items():
        for to in steps:
            tstore.transition(SCOPE, task_id, to)
    tstore.reactivate(SCOPE, "reactivated")

    summary = tstore.queries.counts(SCOPE)

    assert dict(summary.states) == {
        S.PENDING: 5, S.STARTING: 1, S.RUNNING: 1, S.STOPPING: 1, S.SUCCEEDED: 1, S.FAILED: 1, S.CANCELLED: 1,
    }
    assert dict(summary.slots) == {
        S.PENDING: 1 + 2 + 9 + 10 + 1, S.STARTING: 3, S.RUNNING: 4, S.STOPPING: 5, S.SUCCEEDED: 6, S.FAILED: 7,
        S.CANCELLED: 8,
    }
    assert summary.total == 11
    assert summary.task_counts() == {"active": 5, "running": 3, "completed": 3, "succeeded": 1, "failed": 2}
    assert summary.slot_counts() == {"active": 23, "running": 12, "completed": 21, "succeeded": 6, "failed": 15}
    assert summary.validation_status == "validated"
    assert summary.to_dict()["validationStatus"] == "validated"
    assert tstore.queries.list_tasks(SCOPE).total == 11


def test_counts_of_a_scope_are_its_own(tstore):
    tstore.add_tasks(SCOPE, [{"id": "a"}, {"id": "b"}])
    tstore.add_tasks(Scope("ws-1", "job-1", "exec-2"), [{"id": "a", "requiredSlots": 4}])
    tstore.transition(Scope("ws-1", "job-1", "exec-2"), "a", "running")

    mine = tstore.queries.counts(SCOPE)
    other = tstore.queries.counts(Scope("ws-1", "job-1", "exec-2"))
    nobody = tstore.queries.counts(Scope("nobody", "nothing"))

    assert (mine.total, mine.states[State.PENDING], mine.slots[State.PENDING]) == (2, 2, 2)
    assert (other.total, other.states[State.RUNNING], other.slots[State.RUNNING]) == (1, 1, 4)
    assert nobody.total == 0 and set(nobody.states.values()) == {0}
    assert {mine.validation_status, other.validation_status, nobody.validation_status} == {"validated"}


# -- single tasks ----------------------------------------------------------------------------------------------


def test_a_task_read_from_the_view_equals_the_fold_of_its_stream(tstore, clock):
    tstore.add_tasks(SCOPE, [
        {"id": "Busy", "displayName": "busy one", "labels": {"a": "b"}, "requiredSlots": 2, "maxRetries": 2},
        {"id": "quiet"},
    ])
    steps: list[tuple[str, dict[str, Any]]] = [
        ("starting", {}), ("pending", {}), ("running", {"node_info": {"nodeId": "n1"}}),
        ("failed", {"exit_code": 2}), ("running", {}), ("stopping", {"message": "stop"}),
        ("failed", {"exit_code": 9, "failure_info": {"category": "usererror", "code": "E"}}),
    ]
    for to, extra in steps:
        clock.advance(seconds=1)
        tstore.transition(SCOPE, "Busy", to, **extra)
    tstore.record_condition(SCOPE, "Busy", {"type": "Ready", "state": "False"})
    tstore.reactivate(SCOPE, "busy")
    tstore.terminate(SCOPE, "BUSY")

    for task_id in ("Busy", "quiet"):
        folded = tstore.get_task(SCOPE, task_id)
        assert tstore.queries.get_task(SCOPE, task_id.upper()) == folded
        assert tstore.queries.get_by_number(SCOPE, folded.number) == folded
        listed = [t for t in tstore.queries.list_tasks(SCOPE).items if t.key == folded.key]
        assert listed == [folded]


def test_a_task_of_another_scope_is_not_found(tstore):
    task = tstore.add_task(SCOPE, {"id": "mine"})
    other = Scope("ws-1", "job-1", "exec-2")
    tstore.add_task(other, {"id": "theirs"})

    with pytest.raises(TaskNotFound):
        tstore.queries.get_task(other, "mine")
    with pytest.raises(TaskNotFound):
        tstore.queries.get_by_number(other, task.number)
    with pytest.raises(TaskNotFound):
        tstore.queries.get_task(Scope("nobody", "nothing"), "mine")


def test_a_task_id_with_a_nul_character_is_not_found_on_both_engines(tstore):
    tstore.add_task(SCOPE, {"id": "mine"})
    with pytest.raises(TaskNotFound):
        tstore.queries.get_task(SCOPE, "mine\x00")
    with pytest.raises(TaskNotFound):
        tstore.queries.task_as_of(SCOPE, "mine\x00", 10**9)


# -- plans: a page is read in the order of its sort's index ------------------------------------------------------


def _page_statements(store, monkeypatch, scope: Scope, **kwargs: Any) -> list[tuple[str, tuple]]:
    """The page statements (and parameters) of the first page of a query and of the page after it."""
    from projections import engine_sql

    seen: list[tuple[str, tuple]] = []
    real = engine_sql.driver_execute

    def spy(conn, sql, params=()):
        if " FROM task_view v WHERE v.scope_id = " in sql:
            seen.append((sql, tuple(params)))
        return real(conn, sql, params)

    monkeypatch.setattr(engine_sql, "driver_execute", spy)
    first = store.queries.list_tasks(scope, limit=200, **kwargs)
    store.queries.list_tasks(scope, limit=200, cursor=first.next_cursor, **kwargs)
    monkeypatch.setattr(engine_sql, "driver_execute", real)
    return seen


_PENDING = Cmp("state", "eq", frozenset({State.PENDING}))
_BY_STATE = sorted(_SEEKABLE_BY_STATE)  # the sorts a state filter seeks by


@pytest.mark.parametrize(
    ("sort", "where"),
    [(sort, None) for sort in ALL_SORTS] + [(sort, _PENDING) for sort in _BY_STATE],
    ids=[f"{sort}-unfiltered" for sort in ALL_SORTS] + [f"{sort}-state" for sort in _BY_STATE],
)
def test_the_first_pages_of_a_small_job_are_read_in_index_order(database, monkeypatch, sort, where):
    """A page is one index seek plus the page, also while the whole task view is small. PostgreSQL estimates a scope
    at 0.5% of the table (its scope_id keeps no statistics): with a LIMIT it knew, a page of 200 of a job of 2,000
    tasks was planned as a bitmap scan of the whole job and a sort (at 10,000 tasks, 18 ms where the index's order
    takes 4) for a connection's first executions of it, before its generic plan. The plan is asked of a new
    connection, with the parameters the page was read with."""
    from tests.test_append_path import _analyze, _plan

    store = database.open_store(snapshot_every=None)
    try:
        for b in range(20):
            store.add_tasks(SCOPE, [{"id": f"t-{b:02}-{i:03}", "commandLine": "x"} for i in range(100)])
        _analyze(store)  # as autovacuum would have by now: the planner knows the table's size
        statements = _page_statements(store, monkeypatch, SCOPE, sort=sort, where=where)
        assert len(statements) == 2, "the first page and the one after it, each one statement"
        for sql, params in statements:
            plan = _plan(store, sql, params)
            if database.engine == "postgresql":
                assert "Index Scan" in plan and "Sort" not in plan and "Bitmap" not in plan, plan
            else:
                assert "TEMP B-TREE" not in plan and "USING INDEX" in plan, plan
    finally:
        store.close()
