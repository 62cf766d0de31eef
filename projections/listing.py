"""Task lists: keyset pages over the task view.

Every page is index seeks plus the page, whatever its depth: no OFFSET into the scope, no in-memory slicing.

- Unfiltered, or filtered on state alone with a createdAt or number sort: one seek into the sort's index, or one
  per state into an index that leads with (scope, state, sort key), merged; ``limit + 1`` rows are read, so
  ``has_more`` is exact; and the scope's total, all in one statement (``engine_sql.page_with_total``).
- Any other filter or ``q``: the sort index is walked from the cursor for at most ``budget`` rows, and the filter is
  applied to those, in windows that grow eightfold from 8 pages, each bounded by the key of its last row (read from
  the index alone) and stopped at the last match the page needs, so that dense matches cost about a page of rows.
  When the budget runs out before a page fills, the page comes back short (possibly empty) with a
  cursor that resumes where the walk stopped, exactly as Azure Batch's filtered pages do. ``has_more`` then means
  "the walk is not finished", not "another match exists": finding that out could mean reading the whole scope.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Mapping, Sequence

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    false,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.engine import Connection

from eventstore import State, Task, ValidationError

from .engine_sql import DriverQuery, page_with_total, walk_in_index_order
from .filters import And, Cmp, Expr, Or, canonical

SORTS: dict[str, tuple[tuple[str, ...], bool]] = {
    # sort -> (key columns, descending)
    "createdAt:desc": (("created_at", "key"), True),
    "createdAt:asc": (("created_at", "key"), False),
    "name:asc": (("key",), False),
    "name:desc": (("key",), True),
    "number:asc": (("number",), False),  # HealthOmics: task numbers in the order they were added
}
DEFAULT_SORT = "createdAt:desc"
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
SCAN_BUDGET = 10_000
_SEEKABLE_BY_STATE = {"createdAt:desc", "createdAt:asc", "number:asc"}
_COLUMN = {
    "id": "key",
    "state": "state",
    "createdAt": "created_at",
    "stateTransitionTime": "state_transition_time",
    "lastModified": "last_modified",
    "startTime": "start_time",
    "endTime": "end_time",
    "exitCode": "exit_code",
    "result": "result",
}


@dataclass(frozen=True)
class Page:
    items: list[Task]
    has_more: bool
    next_cursor: str
    total: int

    def to_dict(self) -> dict[str, Any]:
        """The Blaxel-shaped document: ``{"data": [...], "meta": {"hasMore", "nextCursor", "total"}}``."""
        return {
            "data": [t.to_dict() for t in self.items],
            "meta": {"hasMore": self.has_more, "nextCursor": self.next_cursor, "total": self.total},
        }


def check_sort(sort: str) -> str:
    if sort not in SORTS:
        raise ValidationError("sort", f"{sort!r} is not a sort; use one of {', '.join(SORTS)}")
    return sort


def clamp_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ValidationError("limit", "must be an integer")
    return max(1, min(limit, MAX_LIMIT))


def normalise_q(q: str | None) -> str | None:
    """Trimmed and lower-cased; shorter than 2 characters means no search, as Blaxel does."""
    if q is None:
        return None
    if not isinstance(q, str) or len(q) > 200:
        raise ValidationError("q", "a search is a string of at most 200 characters")
    if "\x00" in q:  # as everywhere in the store (PostgreSQL cannot take it): refused on both engines alike
        raise ValidationError("q", "a search must not contain NUL characters")
    q = q.strip()
    # Its length as given: lower-casing may lengthen it ("İ" is two characters lower-cased), not make it a search.
    return q.lower() if len(q) >= 2 else None


def state_only(expr: Expr | None) -> frozenset[State] | None:
    """The states a filter admits, when it filters on state and nothing else."""
    if isinstance(expr, Cmp):
        if expr.field != "state":
            return None
        return expr.value if expr.op == "eq" else frozenset(State) - expr.value
    if isinstance(expr, (And, Or)):
        parts = [state_only(e) for e in expr.items]
        if any(p is None for p in parts) or not parts:
            return None
        out = parts[0]
        for p in parts[1:]:
            out = (out & p) if isinstance(expr, And) else (out | p)  # type: ignore[operator]
        return out
    return None


def _datetime_text(value: str) -> str:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: an offset that takes it past year 1 or 9999 in UTC
        raise ValidationError("filter", f"{value!r} is not an ISO 8601 date and time") from None
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def compile_filter(expr: Expr, cols: Any) -> ColumnElement[bool]:
    if isinstance(expr, And):
        return and_(true(), *[compile_filter(e, cols) for e in expr.items])
    if isinstance(expr, Or):
        return or_(false(), *[compile_filter(e, cols) for e in expr.items])
    col = cols[_COLUMN[expr.field]]
    value = expr.value
    if expr.field == "state":
        names = sorted(s.value for s in value)
        return col.in_(names) if expr.op == "eq" else col.not_in(names)
    if expr.field == "id":
        value = value.lower()
        if expr.op == "startswith":
            escaped = re.sub(r"([\\%_])", r"\\\1", value)
            return col.like(f"{escaped}%", escape="\\")
    elif expr.field in ("createdAt", "stateTransitionTime", "lastModified", "startTime", "endTime"):
        value = _datetime_text(value)
    ops = {
        "eq": col == value,
        "lt": col < value,
        "le": col <= value,
        "gt": col > value,
        "ge": col >= value,
    }
    if expr.op == "ne":
        return or_(col != value, col.is_(None))  # OData: null ne x is true
    return ops[expr.op]


def _seek(cols: Any, sort: str, after: Sequence[Any] | None) -> ColumnElement[bool]:
    if after is None:
        return true()
    names, desc = SORTS[sort]
    if len(names) == 1:
        col = cols[names[0]]
        return col < after[0] if desc else col > after[0]
    left = tuple_(*[cols[n] for n in names])
    right = tuple_(*after)
    return left < right if desc else left > right


def _order(cols: Any, sort: str) -> list[Any]:
    names, desc = SORTS[sort]
    return [cols[n].desc() if desc else cols[n].asc() for n in names]


def key_of(row: Mapping[str, Any], sort: str) -> list[Any]:
    return [row[n] for n in SORTS[sort][0]]


def check_after(after: Any, sort: str) -> list[Any]:
    names = SORTS[sort][0]
    if not isinstance(after, list) or len(after) != len(names):
        raise ValidationError("cursor", "the cursor does not fit this sort")
    return after


def seek_states(sort: str, q: str | None, where: Expr | None) -> tuple[bool, tuple[str, ...] | None]:
    """Whether a page of this query is index seeks (a :func:`seek_page`), and of which states (None: all)."""
    if q is None and where is None:
        return True, None
    states = state_only(where) if q is None else None
    if states is not None and sort in _SEEKABLE_BY_STATE:
        return True, tuple(sorted(s.value for s in states))
    return False, None


def seek_page(
    conn: Connection,
    view: Table,
    counts: Table,
    scope_id: int,
    *,
    sort: str,
    limit: int,
    after: Sequence[Any] | None,
    states: tuple[str, ...] | None,
) -> tuple[list[list[Any]], bool, list[Any] | None, int]:
    """One page that is index seeks: its rows (each the values of every column, as ``page_with_total`` gives
    them), whether to offer a next page, the key to resume after, and the scope's total (from its count summary),
    all from one statement. ``limit + 1`` rows are read, so ``has_more`` is exact."""
    names, desc = SORTS[sort]
    rows, total = page_with_total(conn, view, counts, scope_id, names, desc, after, limit + 1, states)
    has_more = len(rows) > limit
    rows = rows[:limit]
    if not has_more:
        return rows, False, None, total
    columns = [c.name for c in view.columns]
    return rows, True, [rows[-1][columns.index(n)] for n in names], total


def walk_page(
    conn: Connection,
    view: Table,
    scope_id: int,
    *,
    sort: str,
    limit: int,
    after: Sequence[Any] | None,
    q: str | None,
    where: Expr | None,
    budget: int = SCAN_BUDGET,
) -> tuple[list[Sequence[Any]], bool, list[Any] | None]:
    """One page of any other filter, or a q search: its rows (each the values of every column of ``view``, JSON
    decoded, for ``rows.task_builder``), whether to offer a next page, and the key to resume after.

    The walk goes window by window, each growing eightfold from 8 pages up to what is left of ``budget``: first the
    key of the window's last row (an index-only read of the sort's index), then the matches up to it in sort order,
    at most as many as the page still lacks (the engine stops at the last one it needs). A page whose matches are
    dense reads a page and a bit of rows; a sparse one at most ``budget``. All of it in the caller's transaction,
    one snapshot, so no window can see a task that another did not."""
    walk_in_index_order(conn)
    n = limit + 1
    hits: list[Sequence[Any]] = []
    cursor = after
    walked = 0
    window = min(budget, 8 * n)
    key_at = [c.name for c in view.columns].index
    names = SORTS[sort][0]
    while True:
        edge = _window_edge(conn, view, scope_id, sort, cursor, window)
        hits += _matches(conn, view, scope_id, sort, cursor, edge, q, where, n - len(hits))
        if len(hits) > limit:
            rows = hits[:limit]
            return rows, True, [rows[-1][key_at(name)] for name in names]
        if edge is None:  # the scope ends inside this window
            return hits, False, None
        walked += window
        if walked >= budget:  # the page comes back short: the next one resumes after the last row walked
            return hits, True, edge
        cursor, window = edge, min(budget - walked, window * 8)


_WALKS: dict[tuple[Any, ...], tuple[Table, Any]] = {}


def _cached(key: tuple[Any, ...], view: Table, make: Any) -> Any:
    got = _WALKS.get(key)
    if got is not None and got[0] is view:
        return got[1]
    if len(_WALKS) >= 512:  # filters vary without end; the cache must not
        _WALKS.clear()
    stmt = make()
    _WALKS[key] = (view, stmt)
    return stmt


def _after_marks(sort: str, after: Sequence[Any] | None) -> list[Any] | None:
    """The bind parameters of the key a walk resumes after (``a0``, ``a1``, ...), or None from the scope's start."""
    return None if after is None else [bindparam(f"a{i}") for i in range(len(SORTS[sort][0]))]


def _walk_params(scope_id: int, after: Sequence[Any] | None, **more: Any) -> dict[str, Any]:
    params = {"sid": scope_id, **more}
    if after is not None:
        params.update({f"a{i}": v for i, v in enumerate(after)})
    return params


def _window_edge(
    conn: Connection, view: Table, scope_id: int, sort: str, after: Sequence[Any] | None, window: int
) -> list[Any] | None:
    """The sort key of the ``window``-th row after ``after`` (from the scope's first row when None), or None when
    the scope has fewer rows there: read from the sort's index alone."""
    names = SORTS[sort][0]

    def make() -> Any:
        c = view.c
        return (
            select(*[c[n] for n in names])
            .where(c.scope_id == bindparam("sid"), _seek(c, sort, _after_marks(sort, after)))
            .order_by(*_order(c, sort))
            .limit(1)
            .offset(bindparam("skip"))
        )

    query = _cached(("edge", conn.dialect.name, view.name, sort, after is None), view,
                    lambda: DriverQuery(make(), conn.dialect))
    found = query.rows(conn, _walk_params(scope_id, after, skip=window - 1))
    return found[0] if found else None


def _matches(
    conn: Connection, view: Table, scope_id: int, sort: str, after: Sequence[Any] | None, edge: Sequence[Any] | None,
    q: str | None, where: Expr | None, n: int,
) -> list[Sequence[Any]]:
    """At most ``n`` rows that match the filter and ``q``, after ``after`` and up to ``edge`` (included; to the end
    of the scope when None), in sort order, every column."""
    names, desc = SORTS[sort]

    def make() -> Any:
        c = view.c
        cond: list[ColumnElement[bool]] = [c.scope_id == bindparam("sid"), _seek(c, sort, _after_marks(sort, after))]
        if edge is not None:
            # Up to the edge, included: the seek of the other direction, turned around.
            bound = [bindparam(f"e{i}") for i in range(len(names))]
            left = c[names[0]] if len(names) == 1 else tuple_(*[c[n] for n in names])
            right = bound[0] if len(names) == 1 else tuple_(*bound)
            cond.append(left >= right if desc else left <= right)
        if where is not None:
            cond.append(compile_filter(where, c))
        if q is not None:
            cond.append(c.search.like(bindparam("pattern"), escape="\\"))
        return select(*view.c).where(*cond).order_by(*_order(c, sort)).limit(bindparam("n"))

    key = ("match", conn.dialect.name, view.name, sort, after is None, edge is None, canonical(where), q is not None)
    query = _cached(key, view, lambda: DriverQuery(make(), conn.dialect))
    params = _walk_params(scope_id, after, n=n)
    if edge is not None:
        params.update({f"e{i}": v for i, v in enumerate(edge)})
    if q is not None:
        params["pattern"] = "%" + re.sub(r"([\\%_])", r"\\\1", q) + "%"
    return query.rows(conn, params)
