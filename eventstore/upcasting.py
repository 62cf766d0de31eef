"""Upcasting: events written in an older shape are brought to the current shape when they are read.

The log is never rewritten. Each event type has a current schema version; for every older version there is one
function that lifts data from version ``n`` to ``n + 1``. Reading applies them in a chain, so an event written at
version 1 of a type now at version 3 passes through two steps.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Mapping

from .errors import EventStoreError

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class Upcasters:
    def __init__(self) -> None:
        self._current: dict[str, int] = {}
        self._steps: dict[tuple[str, int], Upcaster] = {}
        self._current_view: Mapping[str, int] = MappingProxyType(self._current)

    def declare(self, event_type: str, current_version: int) -> None:
        self._current[event_type] = current_version

    def register(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: ``@upcasters.register("TaskAdded", 1)`` lifts TaskAdded data from version 1 to 2."""

        def add(fn: Upcaster) -> Upcaster:
            self._steps[(event_type, from_version)] = fn
            if self._current.get(event_type, 1) <= from_version:
                self._current[event_type] = from_version + 1
            return fn

        return add

    def current_version(self, event_type: str) -> int:
        return self._current.get(event_type, 1)

    def current_versions(self) -> Mapping[str, int]:
        """Every declared type's current schema version (a live, read-only view; an undeclared type is at 1).

        For readers that decode many rows: ``schema_version < current.get(type, 1)`` is the test of
        ``current_version`` without a method call per event, and ``upcast`` is needed only when it holds."""
        return self._current_view

    def upcast(self, event_type: str, version: int, data: Mapping[str, Any]) -> tuple[int, Mapping[str, Any]]:
        target = self._current.get(event_type, version)
        if version >= target:
            return version, data
        lifted = dict(data)
        while version < target:
            step = self._steps.get((event_type, version))
            if step is None:
                raise EventStoreError(f"no upcaster for {event_type} from schema version {version}")
            lifted = step(lifted)
            version += 1
        return version, lifted
