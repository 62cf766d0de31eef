"""Count summaries: tasks and required slots per canonical state for each scope, kept by the task projection.

The summary answers in O(1) from one row. ``CountSummary`` also speaks Azure Batch's meaning of its five counts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

from sqlalchemy import Table
from sqlalchemy.engine import Connection

from eventstore import Scope, State

from . import engine_sql
from .tables import STATE_COLUMNS


@dataclass(frozen=True)
class CountSummary:
    scope: Scope
    states: Mapping[State, int]
    slots: Mapping[State, int]
    position: int = 0  # the log position the counts reflect
    validation_status: str = "unvalidated"
    validation_detail: str = ""

    @property
    def total(self) -> int:
        return sum(self.states.values())

    @property
    def active(self) -> int:
        return self.states[State.PENDING]

    @property
    def running(self) -> int:  # preparing (starting) and stopping tasks count as running
        return self.states[State.STARTING] + self.states[State.RUNNING] + self.states[State.STOPPING]

    @property
    def completed(self) -> int:
        return self.states[State.SUCCEEDED] + self.states[State.FAILED] + self.states[State.CANCELLED]

    @property
    def succeeded(self) -> int:
        return self.states[State.SUCCEEDED]

    @property
    def failed(self) -> int:  # a cancelled task's result is failure, as a terminated task's is in Azure Batch
        return self.states[State.FAILED] + self.states[State.CANCELLED]

    def slot_counts(self) -> dict[str, int]:
        s = self.slots
        return {
            "active": s[State.PENDING],
            "running": s[State.STARTING] + s[State.RUNNING] + s[State.STOPPING],
            "completed": s[State.SUCCEEDED] + s[State.FAILED] + s[State.CANCELLED],
            "succeeded": s[State.SUCCEEDED],
            "failed": s[State.FAILED] + s[State.CANCELLED],
        }

    def task_counts(self) -> dict[str, int]:
        return {
            "active": self.active,
            "running": self.running,
            "completed": self.completed,
            "succeeded": self.succeeded,
            "failed": self.failed,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "workspace": self.scope.workspace,
            "job": self.scope.job,
            "execution": self.scope.execution,
            "total": self.total,
            "states": {s.value: self.states[s] for s in State},
            "slots": {s.value: self.slots[s] for s in State},
            "taskCounts": self.task_counts(),
            "taskSlotCounts": self.slot_counts(),
            "position": self.position,
            "validationStatus": self.validation_status,
            "validationDetail": self.validation_detail,
        }


def empty_summary(scope: Scope) -> CountSummary:
    return CountSummary(scope, {s: 0 for s in State}, {s: 0 for s in State})


@dataclass
class Deltas:
    """Changes to one scope's counts from one batch of events."""

    tasks: Counter[str] = field(default_factory=Counter)
    slots: Counter[str] = field(default_factory=Counter)
    position: int = 0
    new_scope: bool = False

    def move(self, before: State | None, after: State, slots: int) -> None:
        if before is not None:
            self.tasks[before.value] -= 1
            self.slots[before.value] -= slots
        self.add(after.value, slots)

    def add(self, state: str, slots: int) -> None:
        """A new task in ``state`` (a state's value)."""
        self.tasks[state] += 1
        self.slots[state] += slots


def apply_deltas(conn: Connection, table: Table, scope_id: int, d: Deltas) -> None:
    """Fold one batch's changes into the scope's count summary (made when it has none yet)."""
    moves = [(d.tasks.get(state, 0), d.slots.get(state, 0)) for state in STATE_COLUMNS]
    engine_sql.add_to_counts(conn, table, scope_id, d.position, moves)


def summary_of(row: Mapping[str, Any] | None, scope: Scope) -> CountSummary:
    if row is None:
        return empty_summary(scope)
    return CountSummary(
        scope,
        {s: int(row[s.value]) for s in State},
        {s: int(row[f"slots_{s.value}"]) for s in State},
        position=int(row["position"]),
    )
