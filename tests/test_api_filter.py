"""Azure Batch's $filter grammar for tasks, compiled onto projections.filters nodes (no server needed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.batch_filter import BatchFilterError, parse_datetime, parse_filter
from eventstore import State
from projections.filters import And, Cmp, Or

COMPLETED = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})


@pytest.mark.parametrize(
    "text, expected",
    [
        ("id eq 'a'", Cmp("id", "eq", "a")),
        ("id eq 'it''s'", Cmp("id", "eq", "it's")),
        ("startswith(id,'task-')", Cmp("id", "startswith", "task-")),
        ("startswith(id, 'x') eq true", Cmp("id", "startswith", "x")),
        ("id ge 'b' and id lt 'c'", And((Cmp("id", "ge", "b"), Cmp("id", "lt", "c")))),
        ("state eq 'active'", Cmp("state", "eq", frozenset({State.PENDING}))),
        ("state eq 'preparing'", Cmp("state", "eq", frozenset({State.STARTING}))),
        ("state eq 'running'", Cmp("state", "eq", frozenset({State.RUNNING, State.STOPPING}))),
        ("state ne 'completed'", Cmp("state", "ne", COMPLETED)),
        ("State Eq 'Completed'", Cmp("state", "eq", COMPLETED)),
        ("executionInfo/exitCode ne 0", Cmp("exitCode", "ne", 0)),
        ("executionInfo/exitCode ge -1", Cmp("exitCode", "ge", -1)),
        ("executionInfo/result eq 'failure'", Cmp("result", "eq", "failure")),
        ("creationTime gt DateTime'2024-01-01T00:00:00Z'", Cmp("createdAt", "gt", "2024-01-01T00:00:00.000000Z")),
        ("lastModifiedTime le 2024-01-01T01:00:00+01:00", Cmp("lastModified", "le", "2024-01-01T00:00:00.000000Z")),
        ("lastModified lt '2024-01-01T00:00:00.1234567Z'", Cmp("lastModified", "lt", "2024-01-01T00:00:00.123456Z")),
        ("executionInfo/startTime ge 2024-01-01", Cmp("startTime", "ge", "2024-01-01T00:00:00.000000Z")),
        ("creationTime gt DateTime'0999-01-01T00:00:00Z'", Cmp("createdAt", "gt", "0999-01-01T00:00:00.000000Z")),
        (
            "executionInfo/endTime eq datetime'2024-02-29T23:59:59Z'",
            Cmp("endTime", "eq", "2024-02-29T23:59:59.000000Z"),
        ),
        (
            "stateTransitionTime ne DateTime'2024-01-01T00:00:00'",
            Cmp("stateTransitionTime", "ne", "2024-01-01T00:00:00.000000Z"),
        ),
        (
            "id eq 'a' or id eq 'b' and state eq 'active'",
            Or((Cmp("id", "eq", "a"), And((Cmp("id", "eq", "b"), Cmp("state", "eq", frozenset({State.PENDING})))))),
        ),
        (
            "(id eq 'a' or id eq 'b') and (executionInfo/exitCode gt 0)",
            And((Or((Cmp("id", "eq", "a"), Cmp("id", "eq", "b"))), Cmp("exitCode", "gt", 0))),
        ),
        ("  ", None),
        (None, None),
    ],
)
def test_grammar(text, expected):
    assert parse_filter(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "id",
        "id eq",
        "eq 'a'",
        "id eq 'a' and",
        "id eq 'a' xor id eq 'b'",
        "id eq a",
        "id eq 3",
        "id like 'a'",
        "state gt 'active'",
        "state eq 'sleeping'",
        "state eq 3",
        "executionInfo/result eq 'maybe'",
        "executionInfo/result gt 'success'",
        "executionInfo/exitCode eq 'abc'",
        "executionInfo/exitCode eq 99999999999",
        "creationTime eq 'yesterday'",
        "creationTime eq DateTime'2024-13-01T00:00:00Z'",
        "creationTime eq 5",
        "startswith(state,'a')",
        "startswith(id,'a') eq false",
        "startswith(id 'a')",
        "nodeInfo/poolId eq 'p'",
        "(id eq 'a'",
        "id eq 'a')",
        "id eq 'unterminated",
        "id eq 'a' $ id eq 'b'",
        "(" * 40 + "id eq 'a'" + ")" * 40,
        "id eq 'a' " + "or id eq 'a' " * 300,
        "x" * 9000,
    ],
)
def test_invalid_filters_are_filter_errors(text):
    with pytest.raises(BatchFilterError):
        parse_filter(text)


def test_datetimes_are_utc_with_microseconds():
    assert parse_datetime("2024-06-01T12:30:00.5-02:00") == "2024-06-01T14:30:00.500000Z"
    assert parse_datetime("2024-06-01T12:30Z") == "2024-06-01T12:30:00.000000Z"
    with pytest.raises(BatchFilterError):
        parse_datetime("2024-06-31T00:00:00Z")


_ATOMS = st.sampled_from(
    [
        "id",
        "state",
        "creationTime",
        "executionInfo/exitCode",
        "executionInfo/result",
        "startswith",
        "eq",
        "ne",
        "gt",
        "and",
        "or",
        "(",
        ")",
        ",",
        "'a'",
        "'completed'",
        "DateTime'2024-01-01T00:00:00Z'",
        "2024-01-01",
        "0",
        "-5",
        "true",
        "'",
        "''",
        "/",
        "$",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), st.lists(_ATOMS, max_size=12).map(" ".join)))
def test_any_text_parses_or_raises_a_filter_error(text):
    try:
        parse_filter(text)
    except BatchFilterError:
        pass
