"""The benchmark's job templates (benchmarks/harness.py build_job): a PostgreSQL job built by COPY of its events and a
rebuild (how the 10,000,000-task job of full mode is built) holds what the append path builds: the same events in
the same order, the same task rows and counts, and a verified full snapshot. Nothing here is timed."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from benchmarks import harness
from tests.conftest import PG_URL, REQUIRE_PG, make_database, pg_unavailable

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


def _schemas(prefix: str) -> set[str]:
    with harness.pg_connect(harness.libpq_url(PG_URL)) as pg:
        return {r[0] for r in pg.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (prefix + "%",))}


def test_above_the_clone_bound_questions_use_the_postgresql_template_in_place(tmp_path, monkeypatch):
    """A 10,000,000-task template is not copied per question: readers share it, writers that add tasks of their own
    share it too (each with its own tag), a question that changes the job otherwise takes it over, and a reader or
    such a question that finds it written or taken gets a template built again."""
    if reason := pg_unavailable():
        if REQUIRE_PG:
            pytest.fail(f"TASKSTORE_REQUIRE_PG=1 but {reason}")
        pytest.skip(reason)
    monkeypatch.setattr(harness, "CLONE_UP_TO", 100)
    cfg = harness.default_config(quick=True, sizes=[150], pg_url=PG_URL, workdir=tmp_path / "w", smoke=True)
    dbs = harness.Databases(cfg)
    shape = harness.SimulatedJob()
    try:
        with dbs.fresh(harness.POSTGRESQL, shape, 150, changes=False) as first:
            assert first.tag == ""
        with dbs.fresh(harness.POSTGRESQL, shape, 150, changes=False) as second:
            assert second.schema == first.schema  # the same template, read in place
        with dbs.fresh(harness.POSTGRESQL, shape, 150) as taker:
            assert taker.schema == first.schema and taker.tag == ""
            store = taker.open_store()
            try:
                assert store.queries.counts(taker.scope()).total == 150
            finally:
                store.close()
        assert first.schema not in _schemas("bench_tpl_")  # taken over, then dropped
        with dbs.fresh(harness.POSTGRESQL, shape, 150, shared=True) as w1, \
                dbs.fresh(harness.POSTGRESQL, shape, 150, shared=True) as w2:
            assert w1.schema == w2.schema != first.schema  # built again, then written by both at once
            assert w1.tag and w2.tag and w1.tag != w2.tag
        with dbs.fresh(harness.POSTGRESQL, shape, 150, shared=True) as w3:
            assert w3.schema == w1.schema and w3.tag not in (w1.tag, w2.tag)  # a later writer: the same, written job
        assert w1.schema in _schemas("bench_tpl_")  # writers do not drop it
        with dbs.fresh(harness.POSTGRESQL, shape, 150, changes=False) as again:
            assert again.schema != w1.schema and again.schema in _schemas("bench_tpl_")  # written: built again
            assert again.tag == ""
        assert w1.schema not in _schemas("bench_tpl_")
        with dbs.fresh(harness.POSTGRESQL, shape, 100, changes=False) as small:  # at the bound: a copy of its own
            assert not small.schema.startswith("bench_tpl_")
        with dbs.fresh(harness.POSTGRESQL, shape, 100, shared=True) as small_writer:
            assert small_writer.tag == ""  # a copy of its own: nothing to share, ids as at every other size
    finally:
        dbs.close([100, 150])
    assert not _schemas("bench_tpl_") & {first.schema, w1.schema, again.schema}


def test_above_the_clone_bound_the_questions_that_change_the_job_run_last():
    from benchmarks import append, concurrency, counts, http, lists, rebuild, replay, transitions
    from benchmarks.suite import in_run_order

    pg, lite = harness.POSTGRESQL, harness.SQLITE
    big = harness.CLONE_UP_TO * 10
    units = [(10_000, q, e) for q in (transitions, lists) for e in (lite, pg)]
    units += [(big, q, pg) for q in (transitions, replay, concurrency, rebuild, http, append, lists, counts)]
    ordered = in_run_order(units)
    assert ordered[:4] == units[:4]  # at or below the bound: as given
    assert [q.KEY for _, q, _ in ordered[4:]] == [
        "replay", "http", "lists", "counts",  # readers, on the template as built
        "rebuild",  # it changes the job as a whole: it takes the template over
        "transitions", "concurrency", "append",  # writers of tasks of their own: one template built again, shared
    ]
