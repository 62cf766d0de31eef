"""Task lists: keyset pages over the task view.

Every page is index seeks plus the page, whatever its depth: no OFFSET into the scope, no in-memory slicing.

- Unfiltered, or filtered on state alone with a createdAt or number sort: one seek into the sort's index, or one
  per state into an index that leads with (scope, state, sort key), merged; ``limit + 1`` rows are read, so
  ``has_more`` is exact; and the scope's total, all in one statement (``engine_sql.page_with_total``).
- Any other filter or ``q``: the sort index is walked from the cursor for at most ``budget`` rows, and the filter is
  applied to those (in windows that grow eightfold from 8 pages, so that dense matches cost a few hundred rows). When the budget runs out before a page fills, the page comes back short (possibly empty) with a
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
    bindparam,
    Table,
    and_,
    false,
    func,
    literal_column,
    or_,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.engine import Connection, RowMapping

from eventstore import State, Task, ValidationError

from .engine_sql import page_with_total, view_rows
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
    q = q.strip().lower()
    return q if len(q) >= 2 else None


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
    except ValueError:
        raise ValidationError("filter", f"{value!r} is not an ISO 8601 date and time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


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
) -> tuple[list[RowMapping], bool, list[Any] | None]:
    """One page of any other filter, or a q search: its rows, whether to offer a next page, and the key to resume
    after."""
    # A window that grows eightfold up to the budget: a page whose matches are dense reads a few hundred rows, not
    # the whole budget; a sparse one reads at most about 1.15 times the budget. Each window is one statement.
    window = min(budget, 8 * (limit + 1))
    while (found := _walk_window(conn, view, scope_id, sort, limit, after, q, where, window, window >= budget)) is None:
        window = min(budget, window * 8)
    keys, edge = found
    if len(keys) > limit:
        rows = _rows(conn, view, scope_id, keys[:limit], sort)
        return rows, True, key_of(rows[-1], sort)
    rows = _rows(conn, view, scope_id, keys, sort)
    # The page is not full: either the scope ends inside the walk, or the budget ran out first.
    if edge is None:
        return rows, False, None
    return rows, True, key_of(edge, sort)


_WALKS: dict[tuple[Any, ...], tuple[Table, Any]] = {}


def _walk_statement(view: Table, sort: str, first: bool, where: Expr | None, searching: bool) -> Any:
    """The statement of one walk window, built once per (table, sort, first page or not, filter, q or not); the
    scope, the key to resume after, the window, the page size and the q pattern are bound when it runs."""
    key = (view.name, sort, first, canonical(where), searching)
    got = _WALKS.get(key)
    if got is not None and got[0] is view:
        return got[1]
    c = view.c
    names, desc = SORTS[sort]
    wanted = {"key", "search", *names, *_COLUMN.values()}
    after = None if first else [bindparam(f"a{i}") for i in range(len(names))]
    walked = (
        select(*[c[n] for n in sorted(wanted)])
        .where(c.scope_id == bindparam("sid"), _seek(c, sort, after))
        .order_by(*_order(c, sort))
        .limit(bindparam("window"))
        .cte("walked")
    )
    cond: list[ColumnElement[bool]] = []
    if where is not None:
        cond.append(compile_filter(where, walked.c))
    if searching:
        cond.append(walked.c.search.like(bindparam("pattern"), escape="\\"))
    # The matches and the last row walked come from one statement, so from one snapshot: a second statement could
    # see a task added meanwhile (PostgreSQL, read committed), put the edge before the end of the walk, and make the
    # next page return a match of this one again.
    key_cols = ["key", *[n for n in names if n != "key"]]
    hits = (
        select(literal_column("0").label("edge"), *[walked.c[n] for n in key_cols])
        .where(*cond)
        .order_by(*_order(walked.c, sort))
        .limit(bindparam("n"))
        .subquery()
    )
    full = select(func.count()).select_from(walked).scalar_subquery() >= bindparam("window")
    last = (
        select(literal_column("1").label("edge"), *[walked.c[n] for n in key_cols])
        .where(full)
        .order_by(*[walked.c[n].asc() if desc else walked.c[n].desc() for n in names])
        .limit(1)
        .subquery()
    )
    both = union_all(select(hits), select(last)).subquery()
    stmt = select(both).order_by(both.c.edge, *_order(both.c, sort))
    if len(_WALKS) >= 512:  # filters vary without end; the cache must not
        _WALKS.clear()
    _WALKS[key] = (view, stmt)
    return stmt


def _walk_window(
    conn: Connection,
    view: Table,
    scope_id: int,
    sort: str,
    limit: int,
    after: Sequence[Any] | None,
    q: str | None,
    where: Expr | None,
    budget: int,
    final: bool = False,
) -> tuple[list[str], RowMapping | None] | None:
    """The matches among the next ``budget`` rows of the sort, and the last row walked when the walk filled its
    budget; None when the window neither filled a page nor reached the end of the scope (unless ``final``)."""
    params: dict[str, Any] = {"sid": scope_id, "window": budget, "n": limit + 1}
    if after is not None:
        params.update({f"a{i}": v for i, v in enumerate(after)})
    if q is not None:
        params["pattern"] = "%" + re.sub(r"([\\%_])", r"\\\1", q) + "%"
    stmt = _walk_statement(view, sort, after is None, where, q is not None)
    found = conn.execute(stmt, params).mappings().all()
    keys = [r["key"] for r in found if r["edge"] == 0]
    edge = next((r for r in found if r["edge"] == 1), None)
    if len(keys) > limit or edge is None or final:
        return keys, edge
    return None


def _rows(conn: Connection, view: Table, scope_id: int, keys: list[str], sort: str) -> list[Mapping[str, Any]]:
    """The rows of ``keys``, in that order (read by the driver, as the commands' reads are)."""
    if not keys:
        return []
    found = view_rows(conn, view, scope_id, keys)
    order = {k: i for i, k in enumerate(keys)}
    return sorted(found, key=lambda r: order[r["key"]])
