"""Snapshots of each scope's projected state at a log position: its task rows and count summary.

What a snapshot is for: validating count summaries without recounting (``validation.py``), rebuilding without
reading the log from its start (``rebuild.py``), and "as of" reads (``as_of.py``). Each records the version of the
projection code that made it (``version.PROJECTION_VERSION``); every lookup here ignores other versions, so a
snapshot is never misread after the code changes, and the scope's next due snapshot replaces it.

Two kinds:

- ``full``: the scope's task rows and counts, copied from the live tables at one consistent state, and *verified*
  when a recount of the copied rows agrees with the copied counts. Costs a copy of every task of the scope.
- ``counts``: the counts alone, *verified* when the newest verified snapshot plus the from/to deltas of the events
  after it agrees with them (the chain that validation walks). Costs the events since that snapshot, never a scan.

Cadence. Appends keep, per scope, the number of events since its last snapshot and since its last full snapshot
(``SnapshotSchedule``: one upsert per scope per append, in the append's transaction). When a scope reaches ``every``
events a snapshot is due: a full one when the scope has none yet or when the events since the last one reach
``full_ratio`` times the scope's tasks (so copying rows costs at most ``1 / full_ratio`` row copies per event
appended, whatever the scope's size), else a counts snapshot. Due snapshots are taken off the append path: by a
background thread of the store (the default), by ``take_due()``, or by ``taskstore snapshot --due``.

Cost to writers. On PostgreSQL a full snapshot is one ``INSERT ... SELECT`` in a REPEATABLE READ transaction: it
blocks no writer. On SQLite, a small scope (``chunk`` tasks or fewer) is copied in one write transaction; a larger
one is copied inside the database (``INSERT ... SELECT``) in write transactions of ``chunk`` rows, so appends wait
at most for one chunk, and the last transaction copies again the rows of tasks that moved meanwhile: the snapshot is
the scope at that transaction's position.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from eventstore import EventLog, RecordedEvent, Scope, State, Task
from eventstore.schema import events, scopes

from . import engine_sql
from .engine_sql import Point, consistent, point_of
from .replay import BudgetExceeded, deltas_since, last_position
from .rows import task_of
from .snapshot_tables import (
    SNAPSHOT_COLUMNS,
    projection_checkpoints,
    scope_snapshots,
    snapshot_schedule,
    snapshot_tasks,
)
from .tables import scope_counts, task_view
from .version import PROJECTION_VERSION

log_ = logging.getLogger("taskstore.snapshots")

DEFAULT_EVERY = 10_000
DEFAULT_CHUNK = 5_000
ABANDONED = timedelta(hours=1)  # an incomplete snapshot this old was abandoned by its taker
FULL = "full"
COUNTS = "counts"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class StaleProjection(Exception):
    """The live tables were built by another version of the projection code: snapshot them only after a rebuild."""


@dataclass(frozen=True)
class Snapshot:
    id: int
    scope_id: int
    kind: str
    position: int
    xmin: int | None
    visibility: str | None
    tasks: int
    states: Mapping[State, int]
    slots: Mapping[State, int]
    verified: bool
    detail: str
    created_at: str
    projection_version: int

    @property
    def point(self) -> Point:
        return Point(self.position, self.xmin, self.visibility)

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Snapshot:
        counts = row["counts"]
        return cls(
            id=int(row["id"]),
            scope_id=int(row["scope_id"]),
            kind=row["kind"],
            position=int(row["position"]),
            xmin=row["snapshot_xmin"],
            visibility=row["visibility"],
            tasks=int(row["tasks"]),
            states={s: int(counts["states"].get(s.value, 0)) for s in State},
            slots={s: int(counts["slots"].get(s.value, 0)) for s in State},
            verified=bool(row["verified"]),
            detail=row["detail"],
            created_at=row["created_at"],
            projection_version=int(row["projection_version"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "position": self.position,
            "tasks": self.tasks,
            "states": {s.value: n for s, n in self.states.items()},
            "slots": {s.value: n for s, n in self.slots.items()},
            "verified": self.verified,
            "detail": self.detail,
            "createdAt": self.created_at,
            "projectionVersion": self.projection_version,
        }


def counts_doc(states: Mapping[State, int], slots: Mapping[State, int]) -> dict[str, dict[str, int]]:
    return {"states": {s.value: int(states.get(s, 0)) for s in State},
            "slots": {s.value: int(slots.get(s, 0)) for s in State}}


def counts_of_row(row: Mapping[str, Any] | None) -> tuple[dict[State, int], dict[State, int]]:
    if row is None:
        return {s: 0 for s in State}, {s: 0 for s in State}
    return {s: int(row[s.value]) for s in State}, {s: int(row[f"slots_{s.value}"]) for s in State}


def live_version(conn: Connection) -> int | None:
    """The version of the projection code that built the live task view (None: unknown)."""
    return conn.execute(
        select(projection_checkpoints.c.projection_version).where(projection_checkpoints.c.name == "tasks")
    ).scalar()


def scope_ids(conn: Connection, workspace: str | None = None, job: str | None = None,
              execution: str | None = None) -> list[tuple[int, Scope]]:
    q = select(scopes).order_by(scopes.c.id)
    for col, value in (("workspace", workspace), ("job", job), ("execution", execution)):
        if value is not None:
            q = q.where(scopes.c[col] == value)
    return [(int(r.id), Scope(r.workspace, r.job, r.execution)) for r in conn.execute(q)]


class Snapshots:
    """Takes, finds and prunes snapshots of one store's scopes."""

    def __init__(
        self,
        log: EventLog,
        *,
        every: int | None = DEFAULT_EVERY,
        full_ratio: float = 1.0,
        keep_full: int = 2,
        keep_counts: int = 8,
        chunk: int = DEFAULT_CHUNK,
        background: bool = True,
    ) -> None:
        self.log = log
        self.every = every
        self.full_ratio = full_ratio
        self.keep_full = keep_full
        self.keep_counts = keep_counts
        self.chunk = chunk
        self.schedule = SnapshotSchedule(self)
        # An in-memory SQLite database has one connection, which a second thread must not share.
        self.worker = SnapshotWorker(self) if background and not engine_sql.single_connection(log.engine) else None

    # -- finding ---------------------------------------------------------------------------------------------------

    def newest(
        self,
        conn: Connection,
        scope_id: int,
        *,
        kind: str | None = None,
        verified: bool | None = None,
        at_or_before: int | None = None,
    ) -> Snapshot | None:
        """The newest complete snapshot of the scope made by this version of the projection code."""
        s = scope_snapshots.c
        q = select(scope_snapshots).where(
            s.scope_id == scope_id, s.projection_version == PROJECTION_VERSION, s.complete.is_(True)
        )
        if kind is not None:
            q = q.where(s.kind == kind)
        if verified is not None:
            q = q.where(s.verified.is_(verified))
        if at_or_before is not None:
            q = q.where(s.position <= at_or_before)
        row = conn.execute(q.order_by(s.position.desc(), s.id.desc()).limit(1)).mappings().first()
        return Snapshot.of(row) if row else None

    def list(self, scope: Scope, *, all_versions: bool = False) -> list[Snapshot]:
        with self.log.reading() as conn:
            sid = self.log.scope_id(scope, conn)
            if sid is None:
                return []
            s = scope_snapshots.c
            q = select(scope_snapshots).where(s.scope_id == sid, s.complete.is_(True))
            if not all_versions:
                q = q.where(s.projection_version == PROJECTION_VERSION)
            return [Snapshot.of(r) for r in conn.execute(q.order_by(s.position, s.id)).mappings()]

    def task_rows(self, conn: Connection, snapshot: Snapshot, scope: Scope,
                  keys: Sequence[str] | None = None) -> dict[str, tuple[Task, int]]:
        """Tasks of a full snapshot (all, or those of ``keys``), each with the position of its last event."""
        c = snapshot_tasks.c
        out: dict[str, tuple[Task, int]] = {}
        chunks = [None] if keys is None else [list(keys[i : i + 500]) for i in range(0, len(keys), 500)]
        for chunk in chunks:
            q = select(snapshot_tasks).where(c.snapshot_id == snapshot.id)
            if chunk is not None:
                q = q.where(c.key.in_(chunk))
            for row in conn.execute(q).mappings():
                out[row["key"]] = (task_of(row, scope), int(row["position"]))
        return out

    # -- taking ----------------------------------------------------------------------------------------------------

    def take(self, scope: Scope, kind: str = FULL, *, cancelled: Callable[[], bool] | None = None) -> Snapshot | None:
        """Take a snapshot of ``scope`` now; None when the scope has no events (or the take was cancelled).

        A counts snapshot of a scope without a verified snapshot to chain from is taken as a full one.
        """
        if kind not in (FULL, COUNTS):
            raise ValueError(f"snapshot kind {kind!r} is neither {FULL!r} nor {COUNTS!r}")
        sid = self.log.scope_id(scope)
        if sid is None:
            return None
        snap = None
        if kind == COUNTS:
            self._reset_schedule(sid, full=False)
            snap = self._take_counts(scope, sid)
        if snap is None:
            self._reset_schedule(sid, full=True)
            snap = self._take_full(scope, sid, cancelled)
        if snap is not None:
            self.prune(sid)
        return snap

    def _check_version(self, conn: Connection) -> None:
        v = live_version(conn)
        if v != PROJECTION_VERSION:
            raise StaleProjection(
                f"the task view was built by version {v} of the projection code and this is version "
                f"{PROJECTION_VERSION}: run `taskstore rebuild` before taking snapshots"
            )

    def _header(self, sid: int, kind: str, point: Point, states: Mapping[State, int], slots: Mapping[State, int],
                *, verified: bool, detail: str, complete: bool) -> dict[str, Any]:
        return {
            "scope_id": sid,
            "projection_version": PROJECTION_VERSION,
            "kind": kind,
            "position": point.position,
            "snapshot_xmin": point.xmin,
            "visibility": point.visibility,
            "tasks": sum(states.values()),
            "counts": counts_doc(states, slots),
            "verified": verified,
            "detail": detail,
            "complete": complete,
            "created_at": now_iso(),
        }

    def _take_counts(self, scope: Scope, sid: int) -> Snapshot | None:
        with consistent(self.log) as conn:
            self._check_version(conn)
            base = self.newest(conn, sid, verified=True)
            if base is None:
                return None
            position = last_position(conn, sid)
            point = point_of(conn, position)
            states, slots = counts_of_row(self._counts_row(conn, sid))
            d = deltas_since(self.log, conn, sid, base.point)
        exp_states, exp_slots = d.added_to(base.states, base.slots)
        ok = exp_states == states and exp_slots == slots
        detail = (
            f"snapshot #{base.id} at position {base.position} plus the {d.events} events after it "
            + ("agree" if ok else "disagree with the summary")
        )
        with self.log.writing() as w:
            new_id = w.execute(
                insert(scope_snapshots)
                .values(self._header(sid, COUNTS, point, states, slots, verified=ok, detail=detail, complete=True))
                .returning(scope_snapshots.c.id)
            ).scalar_one()
            return self._get(w, new_id)

    def _counts_row(self, conn: Connection, sid: int) -> Mapping[str, Any] | None:
        return conn.execute(select(scope_counts).where(scope_counts.c.scope_id == sid)).mappings().first()

    def _get(self, conn: Connection, snapshot_id: int) -> Snapshot:
        return Snapshot.of(
            conn.execute(select(scope_snapshots).where(scope_snapshots.c.id == snapshot_id)).mappings().one()
        )

    def _recount(self, conn: Connection, snapshot_id: int) -> tuple[dict[State, int], dict[State, int]]:
        c = snapshot_tasks.c
        states = {s: 0 for s in State}
        slots = {s: 0 for s in State}
        q = select(c.state, func.count(), func.sum(c.required_slots)).where(c.snapshot_id == snapshot_id)
        for state, n, sl in conn.execute(q.group_by(c.state)):
            states[State(state)] = int(n)
            slots[State(state)] = int(sl or 0)
        return states, slots

    def _finish(self, conn: Connection, snapshot_id: int, states: Mapping[State, int],
                slots: Mapping[State, int]) -> Snapshot:
        rs, rsl = self._recount(conn, snapshot_id)
        ok = rs == dict(states) and rsl == dict(slots)
        detail = "a recount of its task rows agrees with its counts" if ok else (
            "a recount of its task rows disagrees with its counts"
        )
        conn.execute(
            update(scope_snapshots)
            .where(scope_snapshots.c.id == snapshot_id)
            .values(complete=True, verified=ok, detail=detail)
        )
        return self._get(conn, snapshot_id)

    def _take_full(self, scope: Scope, sid: int, cancelled: Callable[[], bool] | None) -> Snapshot | None:
        engine = self.log.engine
        if engine_sql.is_postgresql(engine):
            # One REPEATABLE READ transaction: a consistent state that blocks no writer.
            with consistent(self.log) as conn:
                self._check_version(conn)
                return self._full_in(conn, sid)
        with self.log.reading() as conn:
            self._check_version(conn)
            row = self._counts_row(conn, sid)
        small = row is None or sum(counts_of_row(row)[0].values()) <= self.chunk
        if small or engine_sql.single_connection(engine):
            with self.log.writing() as conn:
                self._check_version(conn)
                return self._full_in(conn, sid)
        return self._full_chunked(sid, cancelled)

    def _full_in(self, conn: Connection, sid: int) -> Snapshot | None:
        position = last_position(conn, sid)
        if not position:
            return None
        point = point_of(conn, position)
        states, slots = counts_of_row(self._counts_row(conn, sid))
        new_id = conn.execute(
            insert(scope_snapshots)
            .values(self._header(sid, FULL, point, states, slots, verified=False, detail="", complete=False))
            .returning(scope_snapshots.c.id)
        ).scalar_one()
        engine_sql.copy_rows_in_database(
            conn, SNAPSHOT_COLUMNS, source=task_view.name, source_key="scope_id", source_id=sid,
            target=snapshot_tasks.name, target_key="snapshot_id", target_id=new_id,
        )
        return self._finish(conn, new_id, states, slots)

    def _full_chunked(self, sid: int, cancelled: Callable[[], bool] | None) -> Snapshot | None:
        """SQLite, a large scope: copied inside the database ``chunk`` rows (in key order) per write transaction, so
        that appends wait for one chunk at most; then made the scope's state at the position of the last
        transaction, in it: the rows of the tasks with events after the first chunk was copied are copied again.

        SQLite has one writer at a time and numbers events in commit order, so a row copied in one transaction and
        not moved by any event after it is the same row in every later transaction.
        """
        with self.log.writing() as w:
            self._check_version(w)
            first = last_position(w, sid)
            if not first:
                return None
            states, slots = counts_of_row(self._counts_row(w, sid))
            header = self._header(sid, FULL, point_of(w, first), states, slots, verified=False, detail="",
                                  complete=False)
            new_id = w.execute(insert(scope_snapshots).values(header).returning(scope_snapshots.c.id)).scalar_one()
            after = self._copy_chunk(w, sid, new_id, None)
        while after is not None:
            if cancelled is not None and cancelled():
                self._delete(new_id)
                return None
            with self.log.writing() as w:
                self._check_version(w)
                after = self._copy_chunk(w, sid, new_id, after)
        with self.log.writing() as w:
            self._check_version(w)
            position = last_position(w, sid)
            if position > first:
                moved = list(w.execute(
                    select(events.c.stream).distinct().where(events.c.scope_id == sid, events.c.position > first)
                ).scalars())
                c = snapshot_tasks.c
                for i in range(0, len(moved), 500):
                    keys = moved[i : i + 500]
                    w.execute(delete(snapshot_tasks).where(c.snapshot_id == new_id, c.key.in_(keys)))
                    self._copy_chunk(w, sid, new_id, None, keys=keys)
            states, slots = counts_of_row(self._counts_row(w, sid))
            point = point_of(w, position)
            header = self._header(sid, FULL, point, states, slots, verified=False, detail="", complete=False)
            w.execute(
                update(scope_snapshots).where(scope_snapshots.c.id == new_id).values(
                    {k: header[k] for k in ("position", "snapshot_xmin", "visibility", "tasks", "counts")}
                )
            )
            return self._finish(w, new_id, states, slots)

    def _copy_chunk(self, conn: Connection, sid: int, snapshot_id: int, after: str | None,
                    keys: Sequence[str] | None = None) -> str | None:
        """The scope's next ``chunk`` task rows after key ``after`` into the snapshot, returning their last key
        (None: none was left); with ``keys``, the rows of those keys instead."""
        return engine_sql.copy_rows_in_database(
            conn, SNAPSHOT_COLUMNS, source=task_view.name, source_key="scope_id", source_id=sid,
            target=snapshot_tasks.name, target_key="snapshot_id", target_id=snapshot_id, after=after,
            limit=None if keys is not None else self.chunk, keys=keys,
        )

    # -- the schedule ----------------------------------------------------------------------------------------------

    def _reset_schedule(self, sid: int, *, full: bool) -> None:
        values: dict[str, Any] = {"events": 0}
        if full:
            values["since_full"] = 0
        with self.log.writing() as w:
            w.execute(update(snapshot_schedule).where(snapshot_schedule.c.scope_id == sid).values(values))

    def due(self) -> list[int]:
        """Scopes with ``every`` or more events since their last snapshot."""
        if not self.every:
            return []
        with self.log.reading() as conn:
            q = select(snapshot_schedule.c.scope_id).where(snapshot_schedule.c.events >= self.every)
            return [int(x) for x in conn.execute(q.order_by(snapshot_schedule.c.scope_id)).scalars()]

    def take_due(self, scope_ids: Sequence[int] | None = None, *,
                 cancelled: Callable[[], bool] | None = None) -> list[Snapshot]:
        """Take the snapshots that are due (of ``scope_ids``, or of every scope)."""
        taken = []
        for sid in self.due() if scope_ids is None else scope_ids:
            snap = self.take_if_due(sid, cancelled=cancelled)
            if snap is not None:
                taken.append(snap)
        return taken

    def take_if_due(self, sid: int, *, cancelled: Callable[[], bool] | None = None) -> Snapshot | None:
        since_full = self.claim(sid)
        return None if since_full is None else self.take_claimed(sid, since_full, cancelled=cancelled)

    def claim(self, sid: int) -> int | None:
        """Claim a due snapshot of the scope (of several processes, one does); returns the events since its last
        full snapshot, or None when it is not due (or not yet visibly so: see ``SnapshotWorker``)."""
        if not self.every:
            return None
        with self.log.writing() as w:
            found = w.execute(
                update(snapshot_schedule)
                .where(snapshot_schedule.c.scope_id == sid, snapshot_schedule.c.events >= self.every)
                .values(events=0)
                .returning(snapshot_schedule.c.since_full)
            ).scalar()
        return None if found is None else int(found)

    def take_claimed(self, sid: int, since_full: int, *,
                     cancelled: Callable[[], bool] | None = None) -> Snapshot | None:
        with self.log.reading() as conn:
            tasks = sum(counts_of_row(self._counts_row(conn, sid))[0].values())
            has_full = self.newest(conn, sid, kind=FULL) is not None
            scope = self.log.scope_of(conn, sid)
        kind = FULL if not has_full or since_full >= max(self.every or 0, self.full_ratio * tasks) else COUNTS
        try:
            return self.take(scope, kind, cancelled=cancelled)
        except StaleProjection as exc:
            log_.warning("snapshot of %s not taken: %s", scope, exc)
            return None

    def notify(self, sid: int) -> None:
        if self.worker is not None:
            self.worker.submit(sid)

    # -- pruning ---------------------------------------------------------------------------------------------------

    def prune(self, sid: int) -> int:
        """Delete the scope's snapshots of other code versions, incomplete ones abandoned by their taker, and all
        but the newest ``keep_full`` full and ``keep_counts`` counts snapshots. Returns how many were deleted."""
        s = scope_snapshots.c
        with self.log.reading() as conn:
            rows = conn.execute(
                select(s.id, s.kind, s.projection_version, s.complete, s.created_at)
                .where(s.scope_id == sid)
                .order_by(s.position.desc(), s.id.desc())
            ).all()
        abandoned_before = (datetime.now(UTC) - ABANDONED).isoformat(timespec="microseconds").replace("+00:00", "Z")
        kept = {FULL: 0, COUNTS: 0}
        limits = {FULL: self.keep_full, COUNTS: self.keep_counts}
        doomed = []
        for r in rows:
            if r.projection_version != PROJECTION_VERSION:
                doomed.append(r.id)
            elif not r.complete:
                if r.created_at < abandoned_before:
                    doomed.append(r.id)  # its taker died (a complete snapshot is marked so in the same transaction)
            elif kept.get(r.kind, 0) >= limits.get(r.kind, 0):
                doomed.append(r.id)
            else:
                kept[r.kind] += 1
        for snapshot_id in doomed:
            self._delete(snapshot_id)
        return len(doomed)

    def _delete(self, snapshot_id: int) -> None:
        """The header first (so that nothing uses it), then its rows, ``chunk`` per write transaction."""
        with self.log.writing() as w:
            w.execute(delete(scope_snapshots).where(scope_snapshots.c.id == snapshot_id))
        c = snapshot_tasks.c
        while True:
            with self.log.writing() as w:
                keys = select(c.key).where(c.snapshot_id == snapshot_id).order_by(c.key).limit(self.chunk)
                n = w.execute(delete(snapshot_tasks).where(c.snapshot_id == snapshot_id, c.key.in_(keys))).rowcount
            if n < self.chunk:
                return

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()


class SnapshotSchedule:
    """The inline part of snapshots: per scope, count the events appended since its last snapshot.

    One upsert per scope per append; when a scope crosses ``every`` the store's snapshot worker is told (after the
    append commits the worker claims it; an append that rolls back leaves nothing to claim).
    """

    name = "snapshot-schedule"

    def __init__(self, snapshots: Snapshots) -> None:
        self.snapshots = snapshots

    def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        per: dict[int, int] = {}
        for e in events:
            per[e.scope_id] = per.get(e.scope_id, 0) + 1
        rows = [{"scope_id": sid, "events": n, "since_full": n} for sid, n in sorted(per.items())]
        every = self.snapshots.every
        for sid, total, _since_full in engine_sql.schedule_add(conn, snapshot_schedule, rows):
            if every and total >= every and total - per[sid] < every:
                self.snapshots.notify(sid)


class SnapshotWorker:
    """One background thread per store that takes due snapshots, started when the first one is due."""

    RETRIES = 40
    RETRY_DELAY = 0.05

    def __init__(self, snapshots: Snapshots) -> None:
        self.snapshots = snapshots
        self._queue: queue.Queue[tuple[int, int]] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.errors: list[BaseException] = []

    def submit(self, sid: int) -> None:
        if self._stop.is_set():
            return
        self._queue.put((sid, 0))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="taskstore-snapshots", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sid, attempt = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                since_full = self.snapshots.claim(sid)
                if since_full is None:
                    # The worker is told inside the append that made the scope due, before it commits; on
                    # PostgreSQL the claim cannot wait for a schedule row that append inserted. Look again shortly.
                    if attempt < self.RETRIES and not self._stop.wait(self.RETRY_DELAY):
                        self._queue.put((sid, attempt + 1))
                else:
                    self.snapshots.take_claimed(sid, since_full, cancelled=self._stop.is_set)
            except Exception as exc:  # a failed snapshot is taken again when next due: never kill the thread
                self.errors.append(exc)
                log_.exception("snapshot of scope %s failed", sid)
            finally:
                self._queue.task_done()

    def wait(self, timeout: float = 30.0) -> None:
        """Until every submitted scope has been handled (for tests and orderly shutdown)."""
        done = threading.Event()

        def join() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=join, daemon=True).start()
        done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


__all__ = ["BudgetExceeded", "Snapshot", "SnapshotSchedule", "SnapshotWorker", "Snapshots", "StaleProjection"]
