"""The read side of taskstore: projections that fold the event log into task views and count summaries.

``TaskProjection`` runs inside each append (an ``eventstore.InlineProjection``); ``TaskQueries`` answers lists,
counts and single tasks from what it keeps. ``install`` wires both onto an event log.
"""

from __future__ import annotations

from pathlib import Path

from eventstore import EventLog
from eventstore.engine import upgrade

from .counts import CountSummary
from .cursor import CursorCodec, CursorError, store_key
from .filters import And, Cmp, Expr, FilterError, Or
from .listing import Page
from .queries import TaskQueries
from .task_view import TaskProjection

VERSIONS = Path(__file__).parent / "migrations" / "versions"
VERSION_TABLE = "projections_version"


def install(log: EventLog, *, cursor_max_age: float | None = None) -> TaskQueries:
    """Create or upgrade the read side's tables, plug the task projection into ``log``, and return its queries."""
    upgrade(log.engine, versions=VERSIONS, version_table=VERSION_TABLE)
    log.projections.append(TaskProjection(log))
    kwargs = {} if cursor_max_age is None else {"max_age": cursor_max_age}
    return TaskQueries(log, CursorCodec(store_key(log.engine), **kwargs))


__all__ = [
    "And",
    "Cmp",
    "CountSummary",
    "CursorCodec",
    "CursorError",
    "Expr",
    "FilterError",
    "Or",
    "Page",
    "TaskProjection",
    "TaskQueries",
    "install",
]
