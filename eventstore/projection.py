"""The interface through which read models follow the log.

``eventstore`` defines it and never imports an implementation: ``projections/`` implements it and the composition
root (``taskstore.open_store``) plugs the implementations into an :class:`~eventstore.log.EventLog`.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence, runtime_checkable

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
class DecidedStates(Protocol):
    """An inline projection that can take the states a command decided its events from instead of reading them.

    ``decided`` maps (scope, stream) to the task the stream's events were decided from. An entry is the stream's
    state before the events only when its version is the one before the stream's first event in ``events``
    (the append's expected version made it so, in this transaction); the projection checks that, and reads any
    other stream as ``apply`` does. What it writes must be what ``apply`` would write.

    It returns the tasks after the events of the streams it folded from ``decided`` (by (scope, stream)), or None:
    the append hands them back in ``AppendResult.states``, so that a command need not fold its events again.
    """

    name: str

    def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None: ...

    def apply_decided(
        self, conn: Connection, events: Sequence[RecordedEvent], decided: Mapping[tuple[Scope, str], Task]
    ) -> Mapping[tuple[Scope, str], Task] | None: ...


@runtime_checkable
class TaskStateSource(Protocol):
    """Where commands read a task's current state from, instead of folding its whole stream.

    The task view kept by an inline projection is exactly the fold of each stream (it is written in the same
    transaction as the events), so a command can decide from one row. The expected version the command appends
    with is the row's version, so a stale read can only make the append fail and be decided again, never write
    a wrong event.
    """

    def load_tasks(self, scope: Scope, keys: Sequence[str], conn: Connection | None = None) -> dict[str, Task]:
        """The tasks of ``keys`` (stream keys) that exist; read through ``conn`` when given (a command that reads
        and appends in one transaction), else in a read transaction of its own."""
        ...
