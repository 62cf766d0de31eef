"""The benchmark's job templates (benchmarks/harness.py build_job): a PostgreSQL job built by COPY of its events and a
rebuild (how the 10,000,000-task job of full mode is built) holds what the append path builds: the same events in
the same order, the same task rows and counts, and a verified full snapshot. Nothing here is timed."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from benchmarks import harness
from tests.conftest import make_database

# What differs between two builds of one job: the moment each was built.
_TIMES = {"created_at", "state_transition_time", "previous_state_transition_time", "last_modified", "scheduled_at",
          "start_time", "end_time", "last_retry_time", "last_requeue_time"}


def _without_times(value):
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k not in ("at", "recordedAt")}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def _contents(store) -> tuple[list, list, list]:
    with store.engine.connect() as conn:
        evs = [(r.position, r.stream, r.version, r.type, _without_times(r.data))
               for r in conn.execute(text("SELECT * FROM events ORDER BY position"))]
        rows = [{k: v for k, v in r._mapping.items() if k not in _TIMES}
                for r in conn.execute(text("SELECT * FROM task_view ORDER BY scope_id, key"))]
        counts = [tuple(r) for r in conn.execute(text("SELECT * FROM scope_counts ORDER BY scope_id"))]
    return evs, rows, counts


@pytest.fixture
def two_pg_stores(tmp_path):
    gens = [make_database("postgresql", tmp_path / n) for n in ("a", "b")]
    stores = [next(g).open_store(background_snapshots=False) for g in gens]
    try:
        yield stores
    finally:
        for s in stores:
            s.close()
        for g in gens:
            next(g, None)


@pytest.mark.parametrize("shape", [harness.SimulatedJob(), harness.LifecycleJob()], ids=lambda s: s.name)
def test_a_job_built_by_copy_and_rebuild_holds_what_the_append_path_builds(two_pg_stores, monkeypatch, shape):
    appended, copied = two_pg_stores
    size = 650  # batches of 100 and a short last one
    shape.build(appended, size)
    monkeypatch.setattr(harness, "COPY_BUILD_ABOVE", 0)
    shape.build(copied, size)

    a, b = _contents(appended), _contents(copied)
    assert len(a[0]) > size and a[0] == b[0]  # every event, in the same order
    assert len(a[1]) == size and a[1] == b[1]  # every task row
    assert a[2] == b[2]  # the count summary
    scope = harness.Target(harness.SQLITE, "").scope()
    assert copied.queries.counts(scope).validation_status == "validated"
    with copied.engine.connect() as conn:
        kinds = [tuple(r) for r in conn.execute(text("SELECT kind, verified, position FROM scope_snapshots"))]
    assert kinds == [("full", True, a[0][-1][0])]  # one, at the last event
    assert copied.audit(scope).ok
