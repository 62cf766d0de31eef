"""Azure Batch's ``$filter`` for List Tasks, compiled onto :mod:`projections.filters` nodes.

The grammar Batch documents for tasks::

    filter     := or
    or         := and ( "or" and )*
    and        := primary ( "and" primary )*
    primary    := "(" or ")" | comparison | "startswith(" "id" "," string ")" [ "eq" "true" ]
    comparison := property op literal
    op         := eq | ne | ge | gt | le | lt
    literal    := 'string' ('' escapes a quote) | DateTime'2024-01-01T00:00:00Z' | 2024-01-01T00:00:00Z | integer

Properties and what they take (``lastModifiedTime`` is also accepted as ``lastModified``, the JSON field's name)::

    id                                  startswith, eq, ne, ge, gt, le, lt   string
    state                               eq, ne                               active|preparing|running|completed
    stateTransitionTime, creationTime,
    lastModifiedTime,
    executionInfo/startTime,
    executionInfo/endTime               eq, ne, ge, gt, le, lt               DateTime
    executionInfo/exitCode              eq, ne, ge, gt, le, lt               Int
    executionInfo/result                eq, ne                               success|failure

Keywords and property names are matched without regard to case. Anything else raises :class:`BatchFilterError`,
which the Batch router answers with 400 InvalidQueryParameterValue.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import NamedTuple

from eventstore import ValidationError
from eventstore.lifecycle import states_for
from projections.filters import And, Cmp, Expr, FilterError, Or

MAX_LENGTH = 8192
MAX_DEPTH = 32
MAX_TERMS = 256


class BatchFilterError(ValueError):
    """A $filter that is not in the grammar, names an unknown property, or compares with a value of the wrong type."""


# property (lower-cased) -> (canonical field, kind, operators)
_CMP = frozenset({"eq", "ne", "ge", "gt", "le", "lt"})
PROPERTIES: dict[str, tuple[str, str, frozenset[str]]] = {
    "id": ("id", "string", _CMP),
    "state": ("state", "state", frozenset({"eq", "ne"})),
    "statetransitiontime": ("stateTransitionTime", "datetime", _CMP),
    "creationtime": ("createdAt", "datetime", _CMP),
    "lastmodifiedtime": ("lastModified", "datetime", _CMP),
    "lastmodified": ("lastModified", "datetime", _CMP),
    "executioninfo/starttime": ("startTime", "datetime", _CMP),
    "executioninfo/endtime": ("endTime", "datetime", _CMP),
    "executioninfo/exitcode": ("exitCode", "int", _CMP),
    "executioninfo/result": ("result", "result", frozenset({"eq", "ne"})),
}
BATCH_STATES = ("active", "preparing", "running", "completed")


class Token(NamedTuple):
    kind: str  # "(" ")" "," "name" "string" "datetime" "int" "bare" (an unquoted ISO datetime)
    value: str
    at: int


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<punct>[(),])
  | (?P<datetime>[Dd][Aa][Tt][Ee][Tt][Ii][Mm][Ee]'(?:[^']|'')*')
  | (?P<string>'(?:[^']|'')*')
  | (?P<bare>\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?(?![\w:.\-]))
  | (?P<int>[+-]?\d+(?![\w.]))
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*)
    """,
    re.X,
)


def tokenize(text: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            if text[pos] == "'":
                raise BatchFilterError(f"unterminated string at position {pos}")
            raise BatchFilterError(f"unexpected {text[pos]!r} at position {pos}")
        kind = m.lastgroup or ""
        value = m.group()
        if kind == "punct":
            out.append(Token(value, value, pos))
        elif kind == "string":
            out.append(Token("string", value[1:-1].replace("''", "'"), pos))
        elif kind == "datetime":
            out.append(Token("datetime", value[9:-1].replace("''", "'"), pos))
        elif kind != "space":
            out.append(Token(kind, value, pos))
        pos = m.end()
    return out


_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?\s*(Z|z|[+-]\d{2}:?\d{2})?$"
)


def parse_datetime(text: str) -> str:
    """An ISO 8601 datetime as the task view stores it: UTC, microseconds, ``Z`` (so text order is time order).

    No zone means UTC; fractions beyond microseconds (Azure writes seven digits) are truncated.
    """
    m = _ISO.match(text.strip())
    if not m:
        raise BatchFilterError(f"{text!r} is not an ISO 8601 datetime such as 2024-01-01T00:00:00Z")
    y, mo, d, h, mi, s, frac, zone = m.groups()
    try:
        micro = int((frac or "0")[:6].ljust(6, "0"))
        tz = UTC
        if zone and zone not in ("Z", "z"):
            sign = 1 if zone[0] == "+" else -1
            digits = zone[1:].replace(":", "")
            tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
        moment = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0), micro, tzinfo=tz)
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise BatchFilterError(f"{text!r} is not a valid datetime: {exc}") from None
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")  # strftime's %Y gives year 999 as "999"


class _Parser:
    def __init__(self, tokens: list[Token], text: str) -> None:
        self.tokens = tokens
        self.text = text
        self.i = 0
        self.depth = 0
        self.terms = 0

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self, what: str) -> Token:
        tok = self.peek()
        if tok is None:
            raise BatchFilterError(f"the filter ends where {what} was expected")
        self.i += 1
        return tok

    def keyword(self, *words: str) -> str | None:
        tok = self.peek()
        if tok is not None and tok.kind == "name" and tok.value.lower() in words:
            self.i += 1
            return tok.value.lower()
        return None

    def expect(self, kind: str, what: str) -> Token:
        tok = self.next(what)
        if tok.kind != kind:
            raise BatchFilterError(f"expected {what} at position {tok.at}, found {tok.value!r}")
        return tok

    def parse(self) -> Expr:
        if not self.tokens:
            raise BatchFilterError("the filter is empty")
        expr = self.or_()
        tok = self.peek()
        if tok is not None:
            raise BatchFilterError(f"unexpected {tok.value!r} at position {tok.at} (expected 'and', 'or' or the end)")
        return expr

    def or_(self) -> Expr:
        items = [self.and_()]
        while self.keyword("or"):
            items.append(self.and_())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_(self) -> Expr:
        items = [self.primary()]
        while self.keyword("and"):
            items.append(self.primary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def primary(self) -> Expr:
        tok = self.next("a comparison")
        if tok.kind == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise BatchFilterError(f"parentheses nest deeper than {MAX_DEPTH}")
            expr = self.or_()
            self.expect(")", "')'")
            self.depth -= 1
            return expr
        if tok.kind != "name":
            raise BatchFilterError(f"expected a property name at position {tok.at}, found {tok.value!r}")
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise BatchFilterError(f"the filter has more than {MAX_TERMS} comparisons")
        if tok.value.lower() == "startswith" and self.peek() is not None and self.peek().kind == "(":
            return self.startswith()
        prop = tok.value.lower()
        if prop not in PROPERTIES:
            known = (
                "id, state, stateTransitionTime, creationTime, lastModifiedTime, executionInfo/startTime, "
                "executionInfo/endTime, executionInfo/exitCode, executionInfo/result"
            )
            raise BatchFilterError(f"{tok.value!r} is not a property tasks can be filtered on ({known})")
        field, kind, ops = PROPERTIES[prop]
        op_tok = self.next("an operator")
        op = op_tok.value.lower() if op_tok.kind == "name" else ""
        if op not in _CMP:
            raise BatchFilterError(f"expected an operator (eq, ne, ge, gt, le, lt) at position {op_tok.at}")
        if op not in ops:
            raise BatchFilterError(f"{tok.value} takes only {', '.join(sorted(ops))}, not {op}")
        lit = self.next("a value")
        return self.compare(tok.value, field, kind, op, lit)

    def startswith(self) -> Expr:
        self.expect("(", "'('")
        prop = self.expect("name", "a property")
        if prop.value.lower() != "id":
            raise BatchFilterError(f"startswith applies to id only, not {prop.value!r}")
        self.expect(",", "','")
        lit = self.expect("string", "a quoted string")
        self.expect(")", "')'")
        if self.keyword("eq"):
            if not self.keyword("true"):
                raise BatchFilterError("startswith(...) can only be compared with true")
        return _cmp("id", "startswith", lit.value)

    def compare(self, name: str, field: str, kind: str, op: str, lit: Token) -> Expr:
        if kind == "string":
            if lit.kind != "string":
                raise BatchFilterError(f"{name} compares with a quoted string, not {lit.value!r}")
            return _cmp(field, op, lit.value)
        if kind == "state":
            if lit.kind not in ("string", "name"):
                raise BatchFilterError(f"state compares with one of {', '.join(BATCH_STATES)}")
            value = lit.value
            if value.lower() not in BATCH_STATES:
                raise BatchFilterError(f"{value!r} is not a task state ({', '.join(BATCH_STATES)})")
            return _cmp(field, op, states_for(value.lower(), "batch"))
        if kind == "result":
            if lit.kind not in ("string", "name") or lit.value.lower() not in ("success", "failure"):
                raise BatchFilterError("executionInfo/result compares with 'success' or 'failure'")
            return _cmp(field, op, lit.value.lower())
        if kind == "int":
            if lit.kind == "string" and re.fullmatch(r"[+-]?\d+", lit.value):
                lit = Token("int", lit.value, lit.at)
            if lit.kind != "int":
                raise BatchFilterError(f"{name} compares with an integer, not {lit.value!r}")
            # bounded before int(): Python refuses to convert more than 4,300 digits (a ValueError, not ours)
            value = int(lit.value) if len(lit.value.lstrip("+-0")) <= 10 else 2**31
            if not -(2**31) <= value < 2**31:
                raise BatchFilterError(f"{name} compares with a 32-bit integer")
            return _cmp(field, op, value)
        if lit.kind not in ("datetime", "bare", "string"):
            raise BatchFilterError(f"{name} compares with a datetime such as DateTime'2024-01-01T00:00:00Z'")
        return _cmp(field, op, parse_datetime(lit.value))


def _cmp(field: str, op: str, value: object) -> Cmp:
    try:
        return Cmp(field, op, value)
    except FilterError as exc:  # the tree refuses what the grammar let through: still the caller's error
        raise BatchFilterError(str(exc)) from None


def parse_filter(text: str | None) -> Expr | None:
    """The expression of a ``$filter``; None for an absent or blank one."""
    if text is None or not text.strip():
        return None
    if len(text) > MAX_LENGTH:
        raise BatchFilterError(f"the filter is longer than {MAX_LENGTH} characters")
    return _Parser(tokenize(text), text).parse()


def and_filter(where: Expr | None, text: str | None) -> Expr | None:
    """``where`` and the ``$filter`` ``text`` both (either alone when the other is absent), for the lists that take
    this grammar beside their own parameters (the native API's ``filter``, the command line's ``--filter``); a text
    that is not a filter is the caller's ``ValidationError`` on the field ``filter``."""
    try:
        expr = parse_filter(text)
    except BatchFilterError as exc:
        raise ValidationError("filter", str(exc)) from None
    if where is None or expr is None:
        return where or expr
    return And((where, expr))


__all__ = ["BatchFilterError", "and_filter", "parse_datetime", "parse_filter", "tokenize"]
