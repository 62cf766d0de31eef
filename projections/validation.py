"""Whether a count summary agrees with the tasks' states (``validationStatus``).

Up to ``RECOUNT_LIMIT`` tasks the summary is checked by a recount of the task view. Above it, Azure Batch gives up
and says "unvalidated"; taskstore checks from the last verified snapshot plus the from/to deltas of the events after
it (``snapshots.py``), never by a full scan at request time. When neither check can be made within its budget, the
summary says "unvalidated", honestly.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import Table, func, select
from sqlalchemy.engine import Connection

from eventstore import State

from .counts import CountSummary

RECOUNT_LIMIT = 200_000


def recount(conn: Connection, view: Table, scope_id: int) -> tuple[Counter[State], Counter[State]]:
    c = view.c
    tasks: Counter[State] = Counter()
    slots: Counter[State] = Counter()
    q = select(c.state, func.count(), func.sum(c.required_slots)).where(c.scope_id == scope_id).group_by(c.state)
    for state, n, s in conn.execute(q):
        tasks[State(state)] = int(n)
        slots[State(state)] = int(s or 0)
    return tasks, slots


def agrees(summary: CountSummary, tasks: Counter[State], slots: Counter[State]) -> bool:
    return all(summary.states[s] == tasks[s] and summary.slots[s] == slots[s] for s in State)
