"""The task projection: folds events into the task view and the per-scope count summary.

It runs inline (inside each append's transaction, through ``eventstore.InlineProjection``) and in catch-up mode
(rebuilds). Either way a task row is ``eventstore.task.evolve`` applied to the row before it, so the view equals a
fold of the log by construction, and the audit checks that it does.
"""

from __future__ import annotations

from typing import Sequence

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.engine import Connection

from eventstore import EventLog, RecordedEvent, Task
from eventstore.task import TASK_ADDED, evolve

from .counts import Deltas, apply_deltas
from .rows import row_of, task_of
from .tables import scope_counts, task_view



class TaskProjection:
    """An ``InlineProjection`` that keeps the task view and the count summaries."""

    name = "tasks"

    def __init__(
        self, log: EventLog, view: Table = task_view, counts: Table = scope_counts, *, catch_up: bool = False
    ) -> None:
        self.log = log
        self.view = view
        self.counts = counts
        # Catch-up mode (rebuilds): an event the tables already reflect (its version is not above the row's) is
        # skipped, so batches may overlap. In both modes an event of a stream that does not start with TaskAdded
        # (not a task) is counted in ``skipped``.
        self.catch_up = catch_up
        self.skipped = 0
        self._by_keys = select(view).where(
            view.c.scope_id == bindparam("sid"), view.c.key.in_(bindparam("keys", expanding=True))
        )
        updatable = [c.name for c in view.c if c.name not in ("scope_id", "key")]
        self._update = (
            update(view)
            .where(view.c.scope_id == bindparam("b_scope_id"), view.c.key == bindparam("b_key"))
            .values({name: bindparam(name) for name in updatable})
        )

    def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        wanted = {(e.scope_id, e.stream) for e in events if self.catch_up or e.type != TASK_ADDED}
        known = self._load(conn, wanted)
        tasks: dict[tuple[int, str], Task] = {}
        created: set[tuple[int, str]] = set()
        positions: dict[tuple[int, str], int] = {}
        deltas: dict[int, Deltas] = {}
        for e in events:
            k = (e.scope_id, e.stream)
            before = tasks.get(k) or known.get(k)
            if self.catch_up and before is not None and e.version <= before.version:
                continue
            if before is None and e.type != TASK_ADDED:
                # A stream that does not start with TaskAdded is not a task (the log may hold other streams);
                # an event of another type on a task's stream goes through evolve, as a rebuild folds it.
                self.skipped += 1
                continue
            if e.type == TASK_ADDED:
                created.add(k)
                before = None
            after = evolve(before, e)
            tasks[k] = after
            positions[k] = e.position
            d = deltas.setdefault(e.scope_id, Deltas())
            d.position = max(d.position, e.position)
            if before is None:
                d.new_scope = True
                d.move(None, after.state, after.required_slots)
            elif before.state is not after.state:
                d.move(before.state, after.state, after.required_slots)
        new_rows = [row_of(tasks[k], k[0], positions[k]) for k in tasks if k in created]
        changed = [row_of(tasks[k], k[0], positions[k]) for k in tasks if k not in created]
        if new_rows:
            conn.execute(insert(self.view), new_rows)
        if changed:
            for r in changed:
                r["b_scope_id"] = r["scope_id"]
                r["b_key"] = r["key"]
            conn.execute(self._update, changed)
        for scope_id, d in deltas.items():
            apply_deltas(conn, self.log.dialect, self.counts, scope_id, d)

    def _load(self, conn: Connection, keys: set[tuple[int, str]]) -> dict[tuple[int, str], Task]:
        out: dict[tuple[int, str], Task] = {}
        if not keys:
            return out
        by_scope: dict[int, list[str]] = {}
        for sid, key in keys:
            by_scope.setdefault(sid, []).append(key)
        for sid, streams in by_scope.items():
            scope = self.log.scope_of(conn, sid)
            for i in range(0, len(streams), 500):
                params = {"sid": sid, "keys": streams[i : i + 500]}
                for row in conn.execute(self._by_keys, params).mappings():
                    out[(sid, row["key"])] = task_of(row, scope)
        return out


__all__ = ["TaskProjection"]
