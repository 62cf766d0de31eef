"""The hand-written baselines of the bulk-add and transition questions ("every row add_tasks writes" in
benchmarks/append.py, "every row TaskStore.transition writes" in benchmarks/transitions.py) write what the API
writes: the same events, task view rows, count summary and snapshot schedule, on each engine. Without this, their
ratios would compare taskstore with less (or other) work. Nothing here is timed."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy import text

from benchmarks import append, harness, transitions
from eventstore import Scope
from tests.conftest import PG_URL, make_database
from tests.test_benchmark_templates import _TIMES, _without_times


def _everything(store) -> dict[str, list]:
    with store.engine.connect() as conn:
        def rows(sql: str) -> list[dict]:
            return [_times_by_order({k: _without_times(_json(k, v)) for k, v in r._mapping.items()})
                    for r in conn.execute(text(sql))]

        out = {
            "events": rows("SELECT position, scope_id, stream, version, type, schema_version, data "
                           "FROM events ORDER BY position"),
            "task_view": rows("SELECT * FROM task_view ORDER BY scope_id, key"),
            "scope_counts": rows("SELECT * FROM scope_counts ORDER BY scope_id"),
            "snapshot_schedule": rows("SELECT scope_id, events, since_full FROM snapshot_schedule ORDER BY scope_id"),
        }
    return out


def _times_by_order(row: dict) -> dict:
    """A row's times (the two databases were written at other moments) as their order among the row's own: which
    of them are equal, which later, which empty is what both writers must agree on."""
    moments = sorted({v for k, v in row.items() if k in _TIMES and v is not None})
    return {k: (moments.index(v) if v is not None else None) if k in _TIMES else v for k, v in row.items()}


def _json(column: str, value):
    """A JSON column's document: text on SQLite, decoded already on PostgreSQL."""
    if column in ("data", "spec", "failure_info", "node_info", "conditions") and isinstance(value, str):
        return orjson.loads(value)
    return value


@pytest.fixture(params=["sqlite", "postgresql"])
def two_stores(request, tmp_path):
    """Two fresh databases of one engine, for the API and for the hand-written baseline: their stores and the
    baseline's ``harness.Target``."""
    kind = request.param
    for d in ("api", "raw"):
        (tmp_path / d).mkdir()
    gens = [make_database(kind, tmp_path / n) for n in ("api", "raw")]
    dbs = [next(g) for g in gens]
    stores = [db.open_store(background_snapshots=False) for db in dbs]
    raw = dbs[1]
    target = harness.Target(kind, raw.url, raw.schema, Path(raw.url.removeprefix("sqlite:///")),
                            PG_URL if kind == "postgresql" else None)
    try:
        yield stores, target
    finally:
        for s in stores:
            s.close()
        for g in gens:
            next(g, None)


def _same(api_store, hand_store, tasks: int) -> None:
    api, hand = _everything(api_store), _everything(hand_store)
    assert len(api["task_view"]) == tasks and api["snapshot_schedule"]
    for table in api:
        assert hand[table] == api[table], table


def test_the_bulk_add_baseline_writes_every_row_add_tasks_writes(two_stores):
    (api, hand), target = two_stores
    batches = harness.spec_batches("add", 3)
    for batch in batches:
        api.add_tasks(Scope(*harness.SCOPE_PARTS), batch)
    write = (append._raw_sqlite_all if target.engine == "sqlite" else append._raw_pg_all)(target)
    try:
        for batch in batches:
            write(batch)
    finally:
        write.close()
    _same(api, hand, 300)


def test_the_transition_baseline_writes_every_row_transition_writes(two_stores):
    (api, hand), target = two_stores
    scope = Scope(*harness.SCOPE_PARTS)
    batches = harness.spec_batches("single", 2)
    ids = [s["id"] for b in batches for s in b][::7]
    for store in (api, hand):
        for batch in batches:
            store.add_tasks(scope, batch)
    for task_id in ids:
        api.transition(scope, task_id, "starting")
    move, close = transitions._raw_all(target)
    try:
        for task_id in ids:
            move(task_id)
    finally:
        close()
    _same(api, hand, 200)
    assert sum(r["state"] == "starting" for r in _everything(hand)["task_view"]) == len(ids)
