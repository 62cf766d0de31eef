"""The filter expression tree that task lists accept, and its compilation onto the task view in SQLAlchemy Core.

The Azure Batch ``$filter`` parser (``api/``), the command line's ``--state`` and the native API all build these
nodes; nothing else reaches the SQL.

    Cmp("state", "eq", frozenset({State.RUNNING, State.STOPPING}))
    And((Cmp("id", "startswith", "align-"), Or((Cmp("exitCode", "ne", 0), Cmp("result", "eq", "failure")))))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import orjson

from eventstore import State

FIELDS: dict[str, str] = {
    # field name -> type
    "id": "string",
    "state": "state",
    "createdAt": "datetime",
    "stateTransitionTime": "datetime",
    "lastModified": "datetime",
    "startTime": "datetime",
    "endTime": "datetime",
    "exitCode": "int",
    "result": "string",
}
OPS: dict[str, frozenset[str]] = {
    "string": frozenset({"eq", "ne", "lt", "le", "gt", "ge", "startswith"}),
    "state": frozenset({"eq", "ne"}),
    "datetime": frozenset({"eq", "ne", "lt", "le", "gt", "ge"}),
    "int": frozenset({"eq", "ne", "lt", "le", "gt", "ge"}),
}
RESULTS = frozenset({"success", "failure"})


class FilterError(ValueError):
    """A filter that names an unknown field, an operator the field does not take, or a value of the wrong type."""


@dataclass(frozen=True, slots=True)
class Cmp:
    """``field op value``. For ``state`` the value is a set of canonical states (``eq``: in the set).

    Datetimes are ISO 8601 strings in UTC ending in ``Z`` (as the task view stores them), compared as text.
    """

    field: str
    op: str
    value: Any

    def __post_init__(self) -> None:
        kind = FIELDS.get(self.field)
        if kind is None:
            raise FilterError(f"unknown field {self.field!r}; filterable: {', '.join(FIELDS)}")
        if self.op not in OPS[kind]:
            raise FilterError(f"{self.field} does not take {self.op!r}; it takes {', '.join(sorted(OPS[kind]))}")
        if kind == "state":
            if not isinstance(self.value, frozenset) or not all(isinstance(s, State) for s in self.value):
                raise FilterError("a state comparison takes a set of canonical states")
        elif kind == "int":
            # Exit codes are 32-bit (as transitions and Batch's $filter take them, and as the column holds them).
            if isinstance(self.value, bool) or not isinstance(self.value, int) or not -(2**31) <= self.value < 2**31:
                raise FilterError(f"{self.field} compares with a 32-bit integer")
        elif not isinstance(self.value, str):
            raise FilterError(f"{self.field} compares with a string")
        elif "\x00" in self.value:  # PostgreSQL cannot take it: refused on both engines alike
            raise FilterError(f"{self.field} compares with a string without NUL characters")
        if self.field == "result" and self.value not in RESULTS:
            raise FilterError("result is 'success' or 'failure'")


@dataclass(frozen=True, slots=True)
class And:
    items: tuple["Expr", ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple["Expr", ...]


Expr = Union[Cmp, And, Or]


def canonical(expr: Expr | None) -> str:
    """A stable text of the expression, for the cursor's query fingerprint."""
    return orjson.dumps(_plain(expr), option=orjson.OPT_SORT_KEYS).decode() if expr is not None else ""


def _plain(expr: Expr) -> Any:
    if isinstance(expr, Cmp):
        value = sorted(s.value for s in expr.value) if isinstance(expr.value, frozenset) else expr.value
        return [expr.field, expr.op, value]
    return [type(expr).__name__.lower(), [_plain(e) for e in expr.items]]
