"""An append that lost a race which violated nothing the caller asked for is tried again (``EventLog.append``), on
both engines. The races themselves are timing (``test_concurrency.py`` runs them for real); here each loss is made to
happen on a chosen attempt, after the append has written its rows, so that the retry is seen to write them once.

- PostgreSQL broke a deadlock by rolling the append back (SQLSTATE 40P01): tried again, the events written once; on
  every attempt: raised after the last, nothing written. Any other operational error: raised at once, nothing written.
- A unique key was taken by another writer where only streams expected at ANY version could have moved: their
  versions are decided again, the events written once. Where every exact expectation still holds and no stream is
  expected at ANY version, the error is not explained away: raised, nothing written.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

import eventstore.log as log_module
from eventstore import EventLog, Expect, NewEvent, Scope, StreamAppend

from .test_log_contract import rows

SCOPE = Scope("ws", "retries", "run-1")


class _DriverError(Exception):
    """What the driver raises, as SQLAlchemy wraps it: only its SQLSTATE is read."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


def _operational(sqlstate: str) -> OperationalError:
    return OperationalError("INSERT INTO events ...", {}, _DriverError(sqlstate))


def _integrity() -> IntegrityError:
    return IntegrityError("INSERT INTO events ...", {}, _DriverError("23505"))


@pytest.fixture
def log(engine):
    return EventLog(engine)


@pytest.fixture
def losing(monkeypatch) -> Callable[[Callable[[int], Exception | None]], list[int]]:
    """Make ``EventLog._append_in`` write as before and then raise ``lose(attempt)`` where that gives an error (in
    the append's transaction, which it rolls back). Returns the attempts made, numbered from 1."""

    def install(lose: Callable[[int], Exception | None]) -> list[int]:
        attempts: list[int] = []
        real = EventLog._append_in

        def append_in(self, conn, appends, meta):
            out = real(self, conn, appends, meta)
            attempts.append(len(attempts) + 1)
            error = lose(attempts[-1])
            if error is not None:
                raise error
            return out

        monkeypatch.setattr(EventLog, "_append_in", append_in)
        return attempts

    return install


def test_an_append_rolled_back_for_a_deadlock_is_tried_again_and_written_once(log, engine, losing):
    attempts = losing(lambda n: _operational("40P01") if n == 1 else None)
    result = log.append([StreamAppend(SCOPE, "a", [NewEvent("E", {"n": 1})]),
                         StreamAppend(SCOPE, "b", [NewEvent("E", {"n": 2})])])
    assert attempts == [1, 2]
    assert [(e.stream, e.version) for e in result.events] == [("a", 1), ("b", 1)]
    assert [(r[2], r[3]) for r in rows(engine)] == [("a", 1), ("b", 1)]  # once each


def test_a_deadlock_on_every_attempt_is_raised_after_the_last_and_writes_nothing(log, engine, losing, monkeypatch):
    monkeypatch.setattr(log_module, "_ATTEMPTS", 3)
    attempts = losing(lambda n: _operational("40P01"))
    with pytest.raises(OperationalError):
        log.append([StreamAppend(SCOPE, "a", [NewEvent("E", {})])])
    assert attempts == [1, 2, 3]
    assert rows(engine) == []


def test_any_other_operational_error_is_raised_at_once_and_writes_nothing(log, engine, losing):
    attempts = losing(lambda n: _operational("57014"))  # query_canceled
    with pytest.raises(OperationalError):
        log.append([StreamAppend(SCOPE, "a", [NewEvent("E", {})])])
    assert attempts == [1]
    assert rows(engine) == []


def test_a_lost_race_of_streams_expected_at_any_version_is_decided_again(log, engine, losing):
    log.append([StreamAppend(SCOPE, "a", [NewEvent("E", {"n": 0})])])
    attempts = losing(lambda n: _integrity() if n == 1 else None)
    result = log.append([StreamAppend(SCOPE, "a", [NewEvent("E", {"n": 1})], expected=Expect.ANY)])
    assert attempts == [1, 2]
    assert [e.version for e in result.events] == [2]
    assert [(r[2], r[3]) for r in rows(engine)] == [("a", 1), ("a", 2)]


def test_a_unique_key_error_that_no_expectation_explains_is_raised_and_writes_nothing(log, engine, losing):
    log.append([StreamAppend(SCOPE, "a", [NewEvent("E", {"n": 0})])])
    attempts = losing(lambda n: _integrity())
    with pytest.raises(IntegrityError):
        log.append([StreamAppend(SCOPE, "a", [NewEvent("E", {"n": 1})], expected=1)])  # still holds
    assert attempts == [1]
    assert [(r[2], r[3]) for r in rows(engine)] == [("a", 1)]
