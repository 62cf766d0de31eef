"""Whether a count summary agrees with the tasks' states (``validationStatus``).

Up to ``RECOUNT_LIMIT`` tasks the summary is checked by a recount of the task view. Above it, Azure Batch gives up
and says "unvalidated"; taskstore checks from the last verified snapshot plus the from/to deltas of the events after
it (``snapshots.py``), never by a full scan at request time. When neither check can be made within its budget, the
summary says "unvalidated", honestly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.engine import Connection

from eventstore import State

from .counts import CountSummary
from .replay import BudgetExceeded

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


# -- above RECOUNT_LIMIT: from the last verified snapshot ---------------------------------------------------------

DEFAULT_BUDGET = 20_000  # events since the last verified snapshot a check may fold (one indexed aggregate)


class SnapshotValidator:
    """Checks a summary from the newest verified snapshot plus the from/to deltas of the events after it.

    Cost: one index probe for the snapshot, one index range count of the events after it, and, when there are no
    more than ``budget`` of them, one aggregate over them in the database. Never a scan of the scope. A check that
    succeeds is remembered (per process) as a verified point, so the next check of a scope that did not change
    reads no event at all, and one that changed reads only what changed since.
    """

    def __init__(self, log: Any, snapshots: Any, *, budget: int = DEFAULT_BUDGET) -> None:
        self.log = log
        self.snapshots = snapshots
        self.budget = budget
        self._verified: dict[int, tuple[Any, dict[State, int], dict[State, int], str]] = {}

    def forget(self) -> None:
        self._verified.clear()

    def remember(self, conn: Connection, sid: int, states: Counter[State], slots: Counter[State], source: str) -> None:
        """Record a verified point found another way (a recount): later checks need only the events after it."""
        from .engine_sql import point_of
        from .replay import last_position

        here = point_of(conn, last_position(conn, sid))
        self._verified[sid] = (here, {s: states[s] for s in State}, {s: slots[s] for s in State}, source)

    def unchanged(self, scope: Any, sid: int, counts: Table) -> CountSummary | None:
        """The scope's summary, validated, when no event came after the point this process last verified and the
        summary still equals it: one statement (its own snapshot). None in every other case, which the whole
        check (:meth:`__call__`) then decides, with the reason when it cannot validate."""
        from .counts import summary_of
        from .engine_sql import summary_unchanged_since
        from .version import PROJECTION_VERSION

        cached = self._verified.get(sid)
        if cached is None:
            return None
        point, states, slots, source = cached
        with self.log.reading_one() as conn:
            found = summary_unchanged_since(conn, counts, sid, point)
        if found is None:
            return None
        row, version, since = found
        if version != PROJECTION_VERSION or since:
            return None
        summary = summary_of(row, scope)
        if not all(summary.states[s] == states[s] and summary.slots[s] == slots[s] for s in State):
            return None
        return replace(summary, validation_status="validated",
                       validation_detail=f"{source} plus the 0 events after it agree")

    def __call__(self, conn: Connection, sid: int, summary: CountSummary) -> CountSummary:
        from .snapshots import live_version
        from .version import PROJECTION_VERSION

        v = live_version(conn)
        if v != PROJECTION_VERSION:
            return _unvalidated(summary, f"the task view was built by projection version {v}, not {PROJECTION_VERSION}")
        # The last point this process verified first (no snapshot lookup), a verified snapshot when there is none or
        # too many events came after it: whichever is checked, the answer is the same, only the cost differs.
        cached = self._verified.get(sid)
        over: BudgetExceeded | None = None
        if cached is not None:
            try:
                return self._check(conn, sid, summary, cached, cached=True)
            except BudgetExceeded as exc:
                over = exc
        snap = self.snapshots.newest(conn, sid, verified=True)
        if snap is not None and (cached is None or snap.position > cached[0].position):
            try:
                return self._check(conn, sid, summary, (snap.point, dict(snap.states), dict(snap.slots),
                                                        f"snapshot #{snap.id} at position {snap.position}"))
            except BudgetExceeded as exc:
                over = exc
                cached = None
        if over is None:
            return _unvalidated(summary, "too many tasks to recount, and no verified snapshot of the scope yet")
        source = cached[3] if cached is not None else f"snapshot #{snap.id} at position {snap.position}"  # type: ignore[union-attr]
        return _unvalidated(
            summary,
            f"{over.events} events since the last verified point ({source}), more than the budget of {over.budget}: "
            "the next snapshot brings it back within budget",
        )

    def _check(self, conn: Connection, sid: int, summary: CountSummary, base: tuple[Any, dict[State, int],
               dict[State, int], str], *, cached: bool = False) -> CountSummary:
        """The summary checked against ``base`` (a verified point) plus the deltas of the events after it; raises
        :class:`BudgetExceeded` when more than the budget came after it. A check that agrees becomes the scope's
        verified point (unchanged when no event came after a point this process verified: it still holds)."""
        from .engine_sql import point_of
        from .replay import deltas_since, last_position

        point, states, slots, source = base
        d = deltas_since(self.log, conn, sid, point, budget=self.budget)
        exp_states, exp_slots = d.added_to(states, slots)
        if not all(summary.states[s] == exp_states[s] and summary.slots[s] == exp_slots[s] for s in State):
            return _unvalidated(summary, f"the summary disagrees with {source} plus the {d.events} events after it")
        if d.events or not cached:
            here = point_of(conn, last_position(conn, sid))
            self._verified[sid] = (here, exp_states, exp_slots, f"a check at position {here.position}")
        return replace(
            summary,
            validation_status="validated",
            validation_detail=f"{source} plus the {d.events} events after it agree",
        )


def _unvalidated(summary: CountSummary, why: str) -> CountSummary:
    return replace(summary, validation_status="unvalidated", validation_detail=why)
