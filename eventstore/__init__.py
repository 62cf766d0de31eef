"""The write side of taskstore: an append-only event log of task lifecycle events, on SQLite or PostgreSQL.

    from eventstore import EventLog, open_engine, TaskService, Scope, task_upcasters
"""

from .engine import DEFAULT_URL, open_engine, upgrade
from .errors import (
    ConcurrencyError,
    EventStoreError,
    IdempotencyConflict,
    IllegalTransition,
    TaskExists,
    TaskNotFound,
    ValidationError,
    VersionMismatch,
)
from .events import START, AppendResult, Batch, Checkpoint, Expect, NewEvent, RecordedEvent, Scope, StreamAppend
from .lifecycle import State, states_for
from .log import EventLog
from .projection import InlineProjection, TaskStateSource
from .task import Task, fold
from .tasks import TaskService, task_upcasters
from .upcasting import Upcasters

__all__ = [
    "DEFAULT_URL",
    "START",
    "AppendResult",
    "Batch",
    "Checkpoint",
    "ConcurrencyError",
    "EventLog",
    "EventStoreError",
    "Expect",
    "IdempotencyConflict",
    "IllegalTransition",
    "InlineProjection",
    "TaskStateSource",
    "NewEvent",
    "RecordedEvent",
    "Scope",
    "State",
    "StreamAppend",
    "Task",
    "TaskExists",
    "TaskNotFound",
    "TaskService",
    "Upcasters",
    "ValidationError",
    "VersionMismatch",
    "fold",
    "open_engine",
    "states_for",
    "task_upcasters",
    "upgrade",
]
