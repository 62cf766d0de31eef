"""Reads "as of" a log position: what a scope's counts, or one task, were when the log ended there.

Both start from the newest snapshot at or before the position (made by this version of the projection code) and
fold the scope's events up to it that the snapshot lacks; without a snapshot, from the scope's first event.
"""

from __future__ import annotations

from typing import Any

from eventstore import EventLog, Scope, State, Task, TaskNotFound
from eventstore.task import TASK_ADDED, evolve, stream_key

from .counts import CountSummary, empty_summary
from .engine_sql import consistent
from .replay import deltas_since, last_position, scope_events
from .rows import task_of
from .snapshot_tables import snapshot_tasks
from .snapshots import FULL


def counts_as_of(log: EventLog, snapshots: Any, scope: Scope, position: int) -> CountSummary:
    with consistent(log) as conn:
        sid = log.scope_id(scope, conn)
        if sid is None:
            return empty_summary(scope)
        snap = snapshots.newest(conn, sid, verified=True, at_or_before=position) if snapshots else None
        d = deltas_since(log, conn, sid, snap.point if snap else None, upto=position)
        zero = {s: 0 for s in State}
        states, slots = d.added_to(snap.states if snap else zero, snap.slots if snap else zero)
        last = last_position(conn, sid, upto=position)
    source = f"snapshot #{snap.id} at position {snap.position}" if snap else "the scope's first event"
    return CountSummary(
        scope,
        states,
        slots,
        position=last,
        validation_status="unvalidated",
        validation_detail=f"as of position {position}: {source} plus {d.events} events",
    )


def task_as_of(log: EventLog, snapshots: Any, scope: Scope, task_id: str, position: int) -> Task:
    if "\x00" in task_id:  # no task has one, and PostgreSQL cannot take it: not found, on both engines alike
        raise TaskNotFound(scope, task_id)
    key = stream_key(task_id)
    with consistent(log) as conn:
        sid = log.scope_id(scope, conn)
        task: Task | None = None
        if sid is not None:
            snap = snapshots.newest(conn, sid, kind=FULL, verified=True, at_or_before=position) if snapshots else None
            if snap is not None:
                c = snapshot_tasks.c
                row = conn.execute(
                    snapshot_tasks.select().where(c.snapshot_id == snap.id, c.key == key)
                ).mappings().first()
                task = task_of(row, scope) if row else None
            for e in scope_events(log, conn, sid, snap.point if snap else None, upto=position, stream=key):
                if task is not None and e.version <= task.version:
                    continue  # already in the snapshot's row
                if task is None and e.type != TASK_ADDED:
                    continue  # a stream's events before its first TaskAdded are not a task's (as ScopeFold skips them)
                task = evolve(task, e)
    if task is None:
        raise TaskNotFound(scope, task_id)
    return task
