"""taskstore: an event-sourced task state store.

    import taskstore
    store = taskstore.open_store("sqlite:///taskstore.db")
    scope = taskstore.Scope("my-workspace", "my-job")
    store.add_tasks(scope, [{"id": "task-1", "commandLine": "echo hi"}])
    store.transition(scope, "task-1", "running")
    store.get_task(scope, "task-1").state        # State.RUNNING
    store.history(scope, "task-1")               # the task's events, oldest first
"""

from eventstore import (
    ConcurrencyError,
    EventStoreError,
    IdempotencyConflict,
    IllegalTransition,
    Scope,
    State,
    Task,
    TaskExists,
    TaskNotFound,
    ValidationError,
    VersionMismatch,
)

from projections.cursor import CursorError

from .store import TaskStore, open_store

__all__ = [
    "ConcurrencyError",
    "CursorError",
    "EventStoreError",
    "IdempotencyConflict",
    "IllegalTransition",
    "Scope",
    "State",
    "Task",
    "TaskExists",
    "TaskNotFound",
    "TaskStore",
    "ValidationError",
    "VersionMismatch",
    "open_store",
]
