"""The task projection: folds events into the task view and the per-scope count summary.

It runs inline (inside each append's transaction, through ``eventstore.InlineProjection``) and in catch-up mode
(rebuilds). Either way a task row is ``eventstore.task.evolve`` applied to the row before it, so the view equals a
fold of the log by construction, and the audit checks that it does.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

from sqlalchemy import Table
from sqlalchemy.engine import Connection

from eventstore import EventLog, RecordedEvent, Scope, Task, ValidationError
from eventstore.task import TASK_ADDED, evolve

from . import engine_sql
from .counts import Deltas, apply_deltas
from .replay import SEED_SLOTS, SEED_STATE, seed_row, seed_row_fits
from .rows import changed_row, row_of, task_builder
from .tables import scope_counts, task_view

_KEY = ("scope_id", "key")


def _decided_before(decided: Mapping[tuple[Scope, str], Task], e: RecordedEvent) -> Task | None:
    """The task ``e``'s stream was decided from, when it is the stream's state just before ``e``: its version is
    the one before (the append checked the stream holds it) and its scope is the event's; else None."""
    task = decided.get((e.scope, e.stream))
    return task if task is not None and task.version == e.version - 1 and task.scope == e.scope else None


class TaskProjection:
    """An ``InlineProjection`` that keeps the task view and the count summaries."""

    name = "tasks"

    def __init__(
        self, log: EventLog, view: Table = task_view, counts: Table = scope_counts, *, catch_up: bool = False
    ) -> None:
        self.log = log
        self.view = view
        self.counts = counts
        # A stream started by its only event of a batch (a task just added) gets its row straight from the event
        # with ``seed_row`` (the rebuild's fold, kept equal to ``evolve`` and ``row_of`` by a property test), when
        # it makes this view's rows: no Task, no row by name, no second encoding.
        self._seeds = seed_row_fits(view)
        names = [c.name for c in view.columns]
        self._task_of_values, self._at_key = task_builder(names), names.index("key")
        # Catch-up mode (rebuilds): an event the tables already reflect (its version is not above the row's) is
        # skipped, so batches may overlap. In both modes an event of a stream that does not start with TaskAdded
        # (not a task) is counted in ``skipped``.
        self.catch_up = catch_up
        self.skipped = 0

    def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        self._apply(conn, events, None)

    def apply_decided(
        self, conn: Connection, events: Sequence[RecordedEvent], decided: Mapping[tuple[Scope, str], Task]
    ) -> dict[tuple[Scope, str], Task]:
        """As ``apply``, starting each stream from the task its events were decided from (an
        ``eventstore.projection.DecidedStates``): no read of its row, when that task is the row's state. Returns
        those streams' tasks after the events."""
        if len(events) == 1 and not self.catch_up and events[0].type != TASK_ADDED:
            e = events[0]
            task = _decided_before(decided, e)
            if task is not None:
                return {(e.scope, e.stream): self._apply_one(conn, e, task)}
        return self._apply(conn, events, decided)

    def _apply_one(self, conn: Connection, e: RecordedEvent, before: Task) -> Task:
        """``_apply`` of one event (a transition, a condition) to the task it was decided from, without the
        bookkeeping of a batch: the same row update and count move (``test_append_path`` checks them)."""
        after = evolve(before, e)
        row = changed_row(before, after, e.scope_id, e.position)
        engine_sql.update_view_rows(conn, self.view, [row], tuple(n for n in row if n not in _KEY))
        d = Deltas(position=e.position)
        if before.state is not after.state:
            d.move(before.state, after.state, after.required_slots)
        apply_deltas(conn, self.counts, e.scope_id, d)
        return after

    def _apply(
        self, conn: Connection, events: Sequence[RecordedEvent], decided: Mapping[tuple[Scope, str], Task] | None
    ) -> dict[tuple[Scope, str], Task]:
        # A TaskAdded at version 1 starts its stream: no row to read. One at a later version (a raw append to a
        # stream that exists) needs the row, to tell a task added again from a stream that was not a task's.
        wanted = {(e.scope_id, e.stream) for e in events if self.catch_up or e.type != TASK_ADDED or e.version > 1}
        known: dict[tuple[int, str], Task] = {}
        from_decided: dict[tuple[int, str], tuple[Scope, str]] = {}
        if decided and not self.catch_up and wanted:
            # A decided task stands for the row only when it is the stream's state just before its first event
            # here: its version is that event's version minus one (the append checked the stream was there).
            first: dict[tuple[int, str], RecordedEvent] = {}
            for e in events:
                first.setdefault((e.scope_id, e.stream), e)
            for k in list(wanted):
                e = first[k]
                task = _decided_before(decided, e)
                if task is not None:
                    known[k] = task
                    from_decided[k] = (e.scope, e.stream)
                    wanted.discard(k)
        known.update(self._load(conn, wanted))
        tasks: dict[tuple[int, str], Task] = {}
        created: set[tuple[int, str]] = set()
        positions: dict[tuple[int, str], int] = {}
        deltas: dict[int, Deltas] = {}
        seeded: list[tuple] = []  # rows of streams started by their only event here, as insert values
        events_of = Counter((e.scope_id, e.stream) for e in events) if self._seeds else None
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
            d = deltas.get(e.scope_id)
            if d is None:  # (not setdefault: that would make a Deltas for every event)
                d = deltas[e.scope_id] = Deltas()
            if before is None and events_of is not None and events_of[k] == 1:
                row = seed_row(e.scope_id, ((e.position, e.version, e.type, e.data),))
                seeded.append(row)
                d.position = max(d.position, e.position)
                d.new_scope = True
                d.add(row[SEED_STATE], row[SEED_SLOTS])
                continue
            if e.type == TASK_ADDED and before is not None:
                if not self.catch_up:
                    raise ValidationError(
                        "events", f"stream {e.stream!r} already holds task {before.task_id!r}: a task is added "
                        f"once, by its stream's first {TASK_ADDED}")
                # A log written without this projection may hold one: as ``evolve`` does, the task starts over.
                d.tasks[before.state.value] -= 1
                d.slots[before.state.value] -= before.required_slots
                if k not in known:
                    created.add(k)
                before = None
            elif e.type == TASK_ADDED:
                created.add(k)
            after = evolve(before, e)
            tasks[k] = after
            positions[k] = e.position
            d.position = max(d.position, e.position)
            if before is None:
                d.new_scope = True
                d.move(None, after.state, after.required_slots)
            elif before.state is not after.state:
                d.move(before.state, after.state, after.required_slots)
        new_rows = [row_of(tasks[k], k[0], positions[k]) for k in tasks if k in created]
        # A changed row is written column by column where it differs from the row it had (the row of the task
        # before this batch, which is what the table holds: read from it, or decided from it), so that indexes on
        # columns that did not change are not rewritten. Rows that changed alike share one executemany.
        by_columns: dict[tuple[str, ...], list[dict]] = {}
        for k, after in tasks.items():
            if k in created:
                continue
            row = changed_row(known[k], after, k[0], positions[k])
            by_columns.setdefault(tuple(n for n in row if n not in _KEY), []).append(row)
        # (A psycopg pipeline for these statements, which wait for no result, measured slower than their round
        # trips on a local server.)
        if new_rows or seeded:
            engine_sql.insert_view_rows(conn, self.view, new_rows, seeded)
        for columns, rows in by_columns.items():
            engine_sql.update_view_rows(conn, self.view, rows, columns)
        for scope_id, d in deltas.items():
            apply_deltas(conn, self.counts, scope_id, d)
        return {name: tasks[k] for k, name in from_decided.items() if k in tasks}

    def _load(self, conn: Connection, keys: set[tuple[int, str]]) -> dict[tuple[int, str], Task]:
        out: dict[tuple[int, str], Task] = {}
        if not keys:
            return out
        by_scope: dict[int, list[str]] = {}
        for sid, key in keys:
            by_scope.setdefault(sid, []).append(key)
        for sid, streams in by_scope.items():
            scope = self.log.scope_of(conn, sid)
            for values in engine_sql.view_values(conn, self.view, sid, streams):
                out[(sid, values[self._at_key])] = self._task_of_values(values, scope)
        return out


__all__ = ["TaskProjection"]
