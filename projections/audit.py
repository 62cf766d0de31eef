"""The audit: fold the log again and compare with the live task view and count summaries.

For each scope, in one consistent read:

- from the first event: every stream folded with ``eventstore.task.evolve`` (a chunk of streams at a time, in the
  database's (stream, version) order, so memory stays bounded), each task compared field by field with its live
  row, live rows without a task in the log reported, and the folded counts compared with the live summary;
- from snapshots: the newest full snapshot of this code version, plus the events it lacks, compared the same way;
  and the newest verified snapshot's counts plus the from/to deltas after it (what validation relies on) compared
  with the live summary.

Every disagreement is a :class:`Difference` (scope, task, field, live value, folded value, and which fold). With a
``progress`` callback, the tasks compared are reported as they go, against the tasks expected (each scope's live
total, once per fold it is compared in): what ``taskstore audit`` shows as its progress bar.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, exists, select
from sqlalchemy.engine import Connection

from eventstore import EventLog, Scope, State, Task
from eventstore.schema import events
from eventstore.task import TASK_ADDED

from . import engine_sql
from .engine_sql import consistent
from .replay import ScopeFold, StreamEvent, deltas_since, scope_events, scope_streams
from .rows import row_of, task_of
from .snapshot_tables import snapshot_tasks
from .snapshots import FULL, Snapshot, Snapshots, counts_of_row, live_version, scope_ids
from .tables import scope_counts, task_view
from .version import PROJECTION_VERSION

CHUNK = 1000

Progress = Callable[[int, "int | None"], None]  # (tasks just compared, tasks expected in all)
Tick = Callable[[int], None]


@dataclass(frozen=True)
class Difference:
    scope: str
    task: str | None  # None: the scope's count summary
    field: str
    live: Any
    folded: Any
    source: str  # "log" (folded from the first event) or "snapshot #id at position p"

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "task": self.task, "field": self.field, "live": self.live,
                "folded": self.folded, "source": self.source}


@dataclass
class AuditReport:
    scopes: int = 0
    tasks: int = 0
    events: int = 0
    snapshots: int = 0
    differences: list[Difference] = field(default_factory=list)
    more: int = 0  # differences found beyond ``limit`` and not listed
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences and not self.more

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "scopes": self.scopes,
            "tasks": self.tasks,
            "events": self.events,
            "snapshots": self.snapshots,
            "differences": [d.to_dict() for d in self.differences],
            "moreDifferences": self.more,
            "notes": self.notes,
        }


class _Collector:
    def __init__(self, report: AuditReport, limit: int) -> None:
        self.report = report
        self.limit = limit

    def add(self, d: Difference) -> None:
        if len(self.report.differences) < self.limit:
            self.report.differences.append(d)
        else:
            self.report.more += 1


def audit(
    log: EventLog,
    *,
    workspace: str | None = None,
    job: str | None = None,
    execution: str | None = None,
    snapshots: Snapshots | None = None,
    from_snapshots: bool = True,
    limit: int = 1000,
    progress: Progress | None = None,
) -> AuditReport:
    """Audit every scope (or those matching ``workspace``/``job``/``execution``); see the module's doc."""
    report = AuditReport()
    out = _Collector(report, limit)
    snapshots = snapshots or Snapshots(log, background=False)
    totals: dict[int, int] = {}
    with log.reading() as conn:
        targets = scope_ids(conn, workspace, job, execution)
        version = live_version(conn)
        if progress is not None:  # a lookup of each scope's count summary: only when asked
            totals = {sid: engine_sql.scope_total(conn, scope_counts, sid) for sid, _ in targets}
    expected = sum(totals.values()) * (2 if from_snapshots else 1)

    def tick(n: int) -> None:
        if progress is not None and n:
            progress(n, expected)

    if version != PROJECTION_VERSION:
        report.notes.append(
            f"the live task view was built by projection version {version}; this code is version "
            f"{PROJECTION_VERSION}: differences are expected until `taskstore rebuild`"
        )
    for sid, scope in targets:
        report.scopes += 1
        with consistent(log) as conn:
            _audit_from_log(log, conn, sid, scope, report, out, tick)
            if from_snapshots and not _audit_from_snapshots(log, conn, snapshots, sid, scope, report, out, tick):
                tick(totals.get(sid, 0))  # no full snapshot: none of its tasks to compare there
    return report


def _live_rows(conn: Connection, sid: int, keys: list[str]) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in engine_sql.view_rows(conn, task_view, sid, keys)}


def _compare_tasks(conn: Connection, sid: int, scope: Scope, folded: dict[str, tuple[Task, int]], source: str,
                   out: _Collector) -> None:
    keys = sorted(folded)
    for i in range(0, len(keys), CHUNK):
        chunk = keys[i : i + CHUNK]
        live = _live_rows(conn, sid, chunk)
        for key in chunk:
            task, position = folded[key]
            want = row_of(task, sid, position)
            have = live.get(key)
            if have is None:
                out.add(Difference(str(scope), task.task_id, "row", "missing", "present", source))
                continue
            for name, value in want.items():
                if have.get(name) != value:
                    out.add(Difference(str(scope), task.task_id, name, have.get(name), value, source))


def _compare_counts(conn: Connection, sid: int, scope: Scope, states: Any, slots: Any, position: int | None,
                    source: str, out: _Collector) -> None:
    row = conn.execute(select(scope_counts).where(scope_counts.c.scope_id == sid)).mappings().first()
    total = sum(states.values())
    if row is None:
        if total:
            out.add(Difference(str(scope), None, "row", "missing", "present", source))
        return
    live_states, live_slots = counts_of_row(row)
    for s in State:
        if live_states[s] != states.get(s, 0):
            out.add(Difference(str(scope), None, s.value, live_states[s], states.get(s, 0), source))
        if live_slots[s] != slots.get(s, 0):
            out.add(Difference(str(scope), None, f"slots_{s.value}", live_slots[s], slots.get(s, 0), source))
    if position is not None and int(row["position"]) != position:
        out.add(Difference(str(scope), None, "position", int(row["position"]), position, source))


def _audit_from_log(log: EventLog, conn: Connection, sid: int, scope: Scope, report: AuditReport,
                    out: _Collector, tick: Tick) -> None:
    states: Counter[State] = Counter()
    slots: Counter[State] = Counter()
    batch: dict[str, tuple[Task, int]] = {}
    skipped = 0
    newest = 0  # the position of the scope's last event of a task: what its count summary reflects

    def flush() -> None:
        _compare_tasks(conn, sid, scope, batch, "log", out)
        tick(len(batch))
        batch.clear()

    for stream, evs in scope_streams(log, sid, conn=conn):
        report.events += len(evs)
        fold = ScopeFold(scope, sid).apply_all(StreamEvent(p, scope, v, t, d, sid, stream) for p, v, t, d in evs)
        skipped += fold.skipped
        for key, task in fold.tasks.items():
            batch[key] = (task, fold.positions[key])
            newest = max(newest, fold.positions[key])
            states[task.state] += 1
            slots[task.state] += task.required_slots
            report.tasks += 1
        if len(batch) >= CHUNK:
            flush()
    flush()
    if skipped:
        events_ = "event" if skipped == 1 else "events"
        report.notes.append(f"{scope}: {skipped} {events_} of streams that do not start with {TASK_ADDED} (not tasks)")
    # Live rows of tasks the log does not have.
    v = task_view.c
    added = exists().where(
        and_(events.c.scope_id == v.scope_id, events.c.stream == v.key, events.c.type == TASK_ADDED)
    )
    for key, task_id in conn.execute(select(v.key, v.task_id).where(v.scope_id == sid, ~added).limit(1000)):
        out.add(Difference(str(scope), task_id, "row", "present", "missing", "log"))
    # Events of streams that are not tasks move no count: the summary's position is the last task event's.
    _compare_counts(conn, sid, scope, states, slots, newest or None, "log", out)


def _audit_from_snapshots(log: EventLog, conn: Connection, snapshots: Snapshots, sid: int, scope: Scope,
                          report: AuditReport, out: _Collector, tick: Tick) -> bool:
    """Compare the scope with its newest full snapshot plus the events after it, and its counts with the newest
    verified snapshot plus the deltas after it. Whether it had a full snapshot (tasks compared)."""
    full = snapshots.newest(conn, sid, kind=FULL)
    if full is not None:
        report.snapshots += 1
        _audit_full_snapshot(log, conn, full, sid, scope, out, tick)
    verified = snapshots.newest(conn, sid, verified=True)
    if verified is not None and (full is None or verified.id != full.id):
        report.snapshots += 1
    if verified is not None:
        source = f"snapshot #{verified.id} at position {verified.position} plus deltas"
        d = deltas_since(log, conn, sid, verified.point)
        states, slots = d.added_to(verified.states, verified.slots)
        _compare_counts(conn, sid, scope, states, slots, None, source, out)
    return full is not None


def _audit_full_snapshot(log: EventLog, conn: Connection, snap: Snapshot, sid: int, scope: Scope,
                         out: _Collector, tick: Tick) -> None:
    source = f"snapshot #{snap.id} at position {snap.position}"
    tail: dict[str, list[Any]] = {}
    for e in scope_events(log, conn, sid, snap.point):
        tail.setdefault(e.stream, []).append(e)
    states: Counter[State] = Counter()
    slots: Counter[State] = Counter()
    c = snapshot_tasks.c
    seen: set[str] = set()
    after: str | None = None
    while True:
        q = select(snapshot_tasks).where(c.snapshot_id == snap.id)
        if after is not None:
            q = q.where(c.key > after)
        rows = conn.execute(q.order_by(c.key).limit(CHUNK)).mappings().all()
        if not rows:
            break
        after = rows[-1]["key"]
        fold = ScopeFold(scope, sid)
        for r in rows:
            fold.tasks[r["key"]] = task_of(r, scope)
            fold.positions[r["key"]] = int(r["position"])
            seen.add(r["key"])
            fold.apply_all(tail.get(r["key"], ()))
        _compare_tasks(conn, sid, scope, {k: (t, fold.positions[k]) for k, t in fold.tasks.items()}, source, out)
        tick(len(fold.tasks))
        for t in fold.tasks.values():
            states[t.state] += 1
            slots[t.state] += t.required_slots
    fresh = ScopeFold(scope, sid)
    for key, evs in tail.items():
        if key not in seen:
            fresh.apply_all(evs)
    _compare_tasks(conn, sid, scope, {k: (t, fresh.positions[k]) for k, t in fresh.tasks.items()}, source, out)
    tick(len(fresh.tasks))
    for t in fresh.tasks.values():
        states[t.state] += 1
        slots[t.state] += t.required_slots
    _compare_counts(conn, sid, scope, states, slots, None, source, out)
