"""The interface through which read models follow the log.

``eventstore`` defines it and never imports an implementation: ``projections/`` implements it and the composition
root (``taskstore.open_store``) plugs the implementations into an :class:`~eventstore.log.EventLog`.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from sqlalchemy.engine import Connection

from .events import RecordedEvent, Scope
from .task import Task


@runtime_checkable
class InlineProjection(Protocol):
    """Called inside the append's own transaction, after its events are inserted.

    Whatever it writes commits or rolls back with the events, so a read after a write sees it, and an exception here
    undoes the whole append.
    """

    name: str

    def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None: ...


@runtime_checkable
class TaskStateSource(Protocol):
    """Where commands read a task's current state from, instead of folding its whole stream.

    The task view kept by an inline projection is exactly the fold of each stream (it is written in the same
    transaction as the events), so a command can decide from one row. The expected version the command appends
    with is the row's version, so a stale read can only make the append fail and be decided again, never write
    a wrong event.
    """

    def load_tasks(self, scope: Scope, keys: Sequence[str]) -> dict[str, Task]: ...
