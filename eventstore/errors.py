"""Errors raised by the event log and the task lifecycle.

Every error carries the facts a caller needs to answer in its own dialect: the HTTP layer maps them to status codes
and vendor error bodies, the command line prints them. None of them leaves anything half-written: each is raised
before, or instead of, a commit.
"""

from __future__ import annotations

from typing import Any


class EventStoreError(Exception):
    """Base class of every error this package raises on purpose."""


class ConcurrencyError(EventStoreError):
    """An append expected a stream version that the stream does not have."""

    def __init__(self, stream: str, expected: Any, actual: int | None, *, scope: Any = None, key: str = "") -> None:
        self.stream = stream
        self.scope = scope
        self.key = key
        self.expected = expected
        self.actual = actual
        shown = "no stream" if actual is None else f"version {actual}"
        super().__init__(f"stream {stream!r}: expected {_describe(expected)}, but it is at {shown}")


class IdempotencyConflict(EventStoreError):
    """A request id was reused for an append with different content."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        super().__init__(f"request id {request_id!r} was already used for a different append")


class ValidationError(EventStoreError):
    """Input that cannot be recorded; ``field`` names the offending field (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}" if field else message)


class TaskNotFound(EventStoreError):
    def __init__(self, scope: Any, task_id: str) -> None:
        self.scope = scope
        self.task_id = task_id
        super().__init__(f"task {task_id!r} does not exist in {scope}")


class TaskExists(EventStoreError):
    def __init__(self, scope: Any, task_id: str) -> None:
        self.scope = scope
        self.task_id = task_id
        super().__init__(f"task {task_id!r} already exists in {scope} (task ids are unique without regard to case)")


class IllegalTransition(EventStoreError):
    """A transition the lifecycle does not allow from the task's current state."""

    def __init__(self, task_id: str, current: str, requested: str, why: str = "") -> None:
        self.task_id = task_id
        self.current = current
        self.requested = requested
        tail = f": {why}" if why else ""
        super().__init__(f"task {task_id!r} is {current}; it cannot go to {requested}{tail}")


class VersionMismatch(EventStoreError):
    """A command carried an expected task version (If-Match) that the task has moved past."""

    def __init__(self, task_id: str, expected: int, actual: int) -> None:
        self.task_id = task_id
        self.expected = expected
        self.actual = actual
        super().__init__(f"task {task_id!r} is at version {actual}, not the expected {expected}")


def _describe(expected: Any) -> str:
    if isinstance(expected, int):
        return f"version {expected}"
    return str(expected)
