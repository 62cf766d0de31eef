"""SQLite binds None through an adapter of its own (``eventstore.dialects.sqlite.bind_none_directly``): the sqlite3
module's quick way past its adapter lookup, which must change nothing that is written."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from eventstore import Scope, State
from taskstore import open_store

JOB = Scope("ws", "job-none")


def test_opening_a_sqlite_store_registers_an_adapter_that_gives_none_back(tmp_path):
    with open_store(f"sqlite:///{tmp_path / 'adapt.db'}"):
        # Without an adapter of None, sqlite3.adapt(None) raises "can't adapt" (the driver then binds it itself).
        assert sqlite3.adapt(None) is None


def test_nones_are_written_as_null_by_the_appends_and_by_a_rebuild(tmp_path):
    path = tmp_path / "nulls.db"
    with open_store(f"sqlite:///{path}", snapshot_every=None) as store:
        added = store.add_tasks(JOB, [{"id": f"t{i}", "commandLine": "true"} for i in range(6)])
        store.transition_many(JOB, [(t.task_id, State.STARTING) for t in added[:2]])

        def kinds() -> list[tuple]:
            with closing(sqlite3.connect(path)) as raw:
                return raw.execute(
                    "SELECT task_id, typeof(previous_state), typeof(start_time), typeof(exit_code), "
                    "typeof(display_name), typeof(status_message) FROM task_view ORDER BY task_id"
                ).fetchall()

        expected = [(f"t{i}", "text" if i < 2 else "null", "null", "null", "null", "null") for i in range(6)]
        assert kinds() == expected  # written by the inline projection (insert, then update)
        store.rebuild(workers=1)
        assert kinds() == expected  # written again by the rebuild's bulk load
