"""The README's tour of the Python API, as a test: add, transition, get, history."""

from taskstore import Scope, State


def test_readme_tour(store):
    scope = Scope("my-workspace", "my-job")
    store.add_tasks(scope, [{"id": "task-1", "commandLine": "echo hi"}])
    store.transition(scope, "task-1", "running")
    assert store.get_task(scope, "task-1").state is State.RUNNING
    assert [e.type for e in store.history(scope, "TASK-1")] == ["TaskAdded", "TaskTransitioned"]


def test_the_exceptions_the_readme_names_are_taskstore_s():
    """README: "Errors are exceptions ... each importable from taskstore"."""
    import taskstore

    names = ("ValidationError", "TaskExists", "TaskNotFound", "IllegalTransition", "VersionMismatch",
             "ConcurrencyError", "IdempotencyConflict", "CursorError")
    assert all(issubclass(getattr(taskstore, n), taskstore.EventStoreError) for n in names)
    assert issubclass(taskstore.CursorError, taskstore.ValidationError)
