"""validationStatus at or below the recount limit: a verified point plus the events since, else a recount."""

from sqlalchemy import text

from eventstore import Scope

SCOPE = Scope("ws", "job-validate")


def _corrupt_pending(store, by: int) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE scope_counts SET pending = pending + :by"), {"by": by})


def test_counts_stay_validated_as_tasks_move_and_say_so_after_the_summary_is_corrupted(store):
    store.add_tasks(SCOPE, [{"id": f"t{i}", "requiredSlots": 1 + i % 3} for i in range(30)])
    first = store.queries.counts(SCOPE)
    assert first.validation_status == "validated" and first.total == 30
    store.transition_many(SCOPE, [(f"t{i}", "running") for i in range(10)])
    moved = store.queries.counts(SCOPE)
    assert moved.validation_status == "validated"
    assert (moved.active, moved.running) == (20, 10)
    _corrupt_pending(store, 1)
    broken = store.queries.counts(SCOPE)
    assert broken.validation_status == "unvalidated"
    assert "disagrees" in broken.validation_detail
    _corrupt_pending(store, -1)
    assert store.queries.counts(SCOPE).validation_status == "validated"
