"""The interface through which read models follow the log.

``eventstore`` defines it and never imports an implementation: ``projections/`` implements it and the composition
root (``taskstore.open_store``) plugs the implementations into an :class:`~eventstore.log.EventLog`.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from sqlalchemy.engine import Connection

from .events import RecordedEvent


@runtime_checkable
class InlineProjection(Protocol):
    """Called inside the append's own transaction, after its events are inserted.

    Whatever it writes commits or rolls back with the events, so a read after a write sees it, and an exception here
    undoes the whole append.
    """

    name: str

    def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None: ...
