"""Rebuilding the task view and count summaries from the log into fresh tables, and swapping them in.

1. Fresh tables (``task_view_a``/``scope_counts_a``, or ``_b`` when the live ones came from ``_a``) are created, and
   the log's head is noted.
2. Seeding, scope by scope. A scope is folded from its first event stream by stream (its unique (stream, version)
   index order: each task's row is written once, nothing is read back; a large scope in several processes at once,
   ``seeding.py``), or, with ``from_snapshots``, its newest verified full snapshot (of this version of the
   projection code) is copied in and the events it lacks are folded on top. With snapshots the log is not read from
   its start. The task view's indexes are made after seeding, in the transaction that records the catch-up's start.
3. Catching up: a :class:`~projections.projector.CatchUpProjector` follows the whole log from the head noted in 1,
   storing its checkpoint with every batch (an interrupted rebuild resumes from it), one write transaction per
   batch; appends go on meanwhile. Events the fresh tables already reflect are skipped by version, so seeding and
   catching up may overlap. On PostgreSQL the projector stops below the commit horizon; everything visible beyond
   it is then applied from one snapshot, and the swap reads only what that snapshot did not see.
4. The swap, in one write transaction: writers are kept out of the live tables (SQLite: the write transaction
   itself; PostgreSQL: ``LOCK TABLE ... IN EXCLUSIVE MODE`` with a short lock timeout, tried again after catching
   up if it runs out; readers go on), the last events are applied, and the fresh tables are renamed to the live
   names. The inline projection's SQLAlchemy tables are bound by name, so the next append writes to the rebuilt
   tables. The live tables' checkpoint row records the code version that built them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, inspect, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.schema import CreateTable

from eventstore import START, Checkpoint, EventLog, State
from eventstore.schema import events
from eventstore.task import TASK_ADDED

from . import engine_sql
from .engine_sql import Point, consistent
from .projector import (
    CatchUpProjector,
    delete_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from .replay import events_page, log_after
from .seeding import default_workers, seed_scope
from .snapshot_tables import SNAPSHOT_COLUMNS, projection_checkpoints, snapshot_tasks
from .snapshots import FULL, Snapshots, live_version, scope_ids
from .tables import STATE_COLUMNS, rebuild_tables, scope_counts, task_view
from .task_view import TaskProjection
from .version import PROJECTION_VERSION

REBUILD = "tasks:rebuild"
LIVE = "tasks"
SWAP_ATTEMPTS = 12
LEASE = timedelta(minutes=5)  # a rebuild whose checkpoint has not moved for this long is taken over

Progress = Callable[[int, "int | None"], None]  # (events just applied, total expected so far)


class RebuildInProgress(Exception):
    pass


@dataclass(frozen=True)
class RebuildResult:
    events: int  # events read, in all (the catch-up may read again, and skip, what seeding folded)
    seeded: int  # of which while seeding the scopes
    scopes_from_snapshots: int
    scopes_from_log: int
    skipped: int
    checkpoint: Checkpoint
    seconds: float
    tables: tuple[str, str]
    resumed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "seeded": self.seeded,
            "scopesFromSnapshots": self.scopes_from_snapshots,
            "scopesFromLog": self.scopes_from_log,
            "skipped": self.skipped,
            "checkpoint": {"txid": self.checkpoint.txid, "position": self.checkpoint.position},
            "seconds": round(self.seconds, 3),
            "eventsPerSecond": round(self.events / self.seconds) if self.seconds else None,
            "tables": list(self.tables),
            "resumed": self.resumed,
        }


def _fresh_names(conn: Connection) -> tuple[str, str]:
    live = {ix["name"] for ix in inspect(conn).get_indexes(task_view.name)}
    for suffix in ("a", "b"):
        view = f"{task_view.name}_{suffix}"
        if not any(name and name.startswith(f"ix_{view}_") for name in live):
            return view, f"{scope_counts.name}_{suffix}"
    raise RuntimeError("the live task view's indexes name both rebuild generations")  # pragma: no cover


def _stale(updated_at: str) -> bool:
    moment = datetime.fromisoformat(updated_at)
    return datetime.now(UTC) - moment > LEASE


def rebuild(
    log: EventLog,
    *,
    from_snapshots: bool = False,
    snapshots: Snapshots | None = None,
    batch_size: int = 5000,
    progress: Progress | None = None,
    workers: int | None = None,
) -> RebuildResult:
    """Rebuild the task view and count summaries into fresh tables and swap them in; see the module's doc.

    ``workers``: processes that fold a scope of at least ``PARALLEL_MIN_EVENTS`` events from the log, each a run of
    its streams (``seeding.py``: this one and ``workers - 1`` forks of it); by default one per core, at most
    ``MAX_WORKERS``; 1 folds in this process alone."""
    started = time.perf_counter()
    workers = default_workers() if workers is None else max(1, workers)
    if snapshots is None:
        snapshots = Snapshots(log, background=False)
    with log.writing() as conn:
        stored = load_checkpoint(conn, REBUILD)
        if stored is not None and not _stale(stored.updated_at):
            raise RebuildInProgress(
                f"another rebuild is {stored.status} (checkpoint {stored.checkpoint.position}, updated "
                f"{stored.updated_at}); it is taken over after {LEASE} without progress"
            )
        names = inspect(conn).get_table_names()
        resumed = (
            stored is not None
            and stored.status == "catching-up"
            and stored.projection_version == PROJECTION_VERSION
            and stored.detail in names
        )
        if resumed:
            view_name = stored.detail  # type: ignore[union-attr]
            counts_name = view_name.replace(task_view.name, scope_counts.name, 1)
        else:
            view_name, counts_name = _fresh_names(conn)
        fresh_view, fresh_counts = rebuild_tables(view_name, counts_name)
        if not resumed:
            engine_sql.drop_tables(conn, [view_name, counts_name, f"{task_view.name}_retired",
                                          f"{scope_counts.name}_retired"])
            # The task view's indexes are made when seeding is done (below): built once from the loaded rows,
            # not kept up to date row by row while every row goes in.
            conn.execute(CreateTable(fresh_view))
            engine_sql.scopes_estimated_evenly(conn, view_name)
            fresh_counts.create(conn)
            save_checkpoint(conn, REBUILD, START, status="seeding", detail=view_name)
    projection = TaskProjection(log, fresh_view, fresh_counts, catch_up=True)
    projector = CatchUpProjector(log, projection, REBUILD, batch_size=batch_size)
    done = 0
    seeded_in: Point | None = None  # a state whose every visible event is in the fresh tables (PostgreSQL)
    seeded = 0  # events read while seeding: each scope's stream-by-stream fold, or its snapshot's tail
    from_snap = from_log = 0
    total: int | None = None
    exiting: list[Any] = []  # seeding workers done with their runs, joined at the end

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(n, total)

    try:
        if not resumed:
            # Every event at or before ``start`` is in the fresh tables once each scope is seeded. On SQLite the
            # catch-up projector follows the log from there (skipping, by version, what seeding already folded). On
            # PostgreSQL the seeding below, which starts later, reads every event visible in ``seeded_in``, and the
            # catch-up reads only the others: the head stops below the commit horizon, which a long transaction
            # anywhere in the database holds back, and from the head alone the catch-up would read such events again.
            start = log.head()
            seeded_in = _visible_now(log)
            with log.reading() as conn:
                plan = []
                for sid, scope in scope_ids(conn):
                    snap = snapshots.newest(conn, sid, kind=FULL, verified=True) if from_snapshots else None
                    plan.append((sid, scope, snap))
                sizes: dict[int, int] = {}  # the parallel fold cuts a scope by its events
                if from_snapshots:
                    total = sum(engine_sql.count_since(conn, sid, snap.point if snap else None)
                                for sid, _, snap in plan)
                elif workers > 1 and len(plan) > 1:
                    q = select(events.c.scope_id, func.count()).group_by(events.c.scope_id)
                    sizes = {int(sid): int(n) for sid, n in conn.execute(q)}
                    total = sum(sizes.values())
                else:
                    # The table's count, which SQLite takes page by page without reading an entry (4 ms against 37 ms
                    # for one scope's at 200,000 tasks): in a log of one scope, that scope's.
                    total = conn.execute(select(func.count()).select_from(events)).scalar_one()
                    if workers > 1 and plan:
                        sizes = {plan[0][0]: total}
            for sid, scope, snap in plan:
                if snap is not None:
                    _seed(log, sid, snap.id, snap.position, fresh_view, fresh_counts, batch_size)
                    _fold_scope(log, projection, sid, snap.point, batch_size, advance)
                    from_snap += 1
                else:
                    projection.skipped += seed_scope(
                        log, sid, scope, fresh_view, fresh_counts, batch_size, advance, workers=workers,
                        events_in_scope=sizes.get(sid, 0), exiting=exiting)
                    from_log += 1
                with log.writing() as conn:  # a heartbeat: this rebuild is alive
                    save_checkpoint(conn, REBUILD, START, status="seeding", detail=view_name)
            with log.writing() as conn:
                # Before the catch-up: a resumed rebuild finds them.
                engine_sql.create_indexes(conn, fresh_view.indexes)
                save_checkpoint(conn, REBUILD, start, status="catching-up", detail=view_name)
            seeded = done
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            if seeded_in is None:  # (after a fresh seeding on PostgreSQL, _catch_up_visible reads all it would)
                projector.run(progress=advance)
            seen = _catch_up_visible(log, projection, batch_size, advance, seeded_in)
            try:
                final = _swap(log, projection, fresh_view, fresh_counts, batch_size, advance, seen)
                break
            except OperationalError as exc:
                if not engine_sql.lock_timed_out(exc) or attempt == SWAP_ATTEMPTS:
                    raise
    finally:  # however the rebuild ends: a worker that reported its run is not left a zombie
        for worker in exiting:
            worker.join()
    return RebuildResult(
        events=done,
        seeded=seeded,
        scopes_from_snapshots=from_snap,
        scopes_from_log=from_log,
        skipped=projection.skipped,
        checkpoint=final,
        seconds=time.perf_counter() - started,
        tables=(view_name, counts_name),
        resumed=bool(resumed),
    )


def _seed(log: EventLog, sid: int, snapshot_id: int, position: int, view: Any, counts: Any, chunk: int) -> None:
    """Copy a full snapshot's task rows into the fresh view, ``chunk`` per write transaction, and count them."""
    after = None
    while True:
        with log.writing() as conn:
            after = engine_sql.copy_rows_in_database(
                conn, SNAPSHOT_COLUMNS, source=snapshot_tasks.name, source_key="snapshot_id", source_id=snapshot_id,
                target=view.name, target_key="scope_id", target_id=sid, after=after, limit=chunk,
            )
        if after is None:
            break
    with log.writing() as conn:
        row: dict[str, Any] = {"scope_id": sid, "position": position}
        row.update({s: 0 for s in STATE_COLUMNS})
        row.update({f"slots_{s}": 0 for s in STATE_COLUMNS})
        c = view.c
        q = select(c.state, func.count(), func.sum(c.required_slots)).where(c.scope_id == sid).group_by(c.state)
        for state, n, slots in conn.execute(q):
            row[State(state).value] = int(n)
            row[f"slots_{State(state).value}"] = int(slots or 0)
        # The summary's position is its tasks' last event (as the inline projection and the seeding from the log
        # keep it), not the snapshot's, which may be an event of a stream that is not a task's.
        row["position"] = int(conn.execute(select(func.max(c.position)).where(c.scope_id == sid)).scalar() or 0)
        conn.execute(insert(counts).values(row))


def _fold_scope(log: EventLog, projection: TaskProjection, sid: int, base: Any, batch: int,
                advance: Callable[[int], None]) -> None:
    """Fold the scope's events that ``base`` lacks into the fresh tables, a page of positions at a time, each read
    in a consistent read of its own and applied in a write transaction of its own."""
    after: int | None = None
    while True:
        with consistent(log) as conn:
            if after is None:
                after = engine_sql.lacks_after(conn, base)
            page = events_page(log, conn, sid, base, after, batch)
        if page:
            with log.writing() as conn:
                projection.apply(conn, page)
            advance(len(page))
            after = page[-1].position
        if len(page) < batch:
            return


def _visible_now(log: EventLog) -> Point | None:
    """PostgreSQL: the state a transaction begun now sees (None on SQLite)."""
    if not engine_sql.is_postgresql(log.engine):
        return None
    with consistent(log) as conn:
        return engine_sql.point_of(conn, 0)


def _catch_up_visible(log: EventLog, projection: TaskProjection, batch: int,
                      advance: Callable[[int], None], seeded_in: Point | None = None) -> Point | None:
    """PostgreSQL: the catch-up projector stops below the commit horizon, which one long transaction anywhere in
    the database holds back. Before the swap takes its locks, apply every event visible now after the stored
    checkpoint but those visible in ``seeded_in`` (the seeding read them), read in one REPEATABLE READ snapshot and
    applied a batch per write transaction (the checkpoint stays where it is), and return that snapshot: the swap
    then reads only the events it did not see."""
    if not engine_sql.is_postgresql(log.engine):
        return None
    with log.reading() as conn:
        stored = load_checkpoint(conn, REBUILD)
    after = stored.checkpoint if stored else START
    with consistent(log) as rconn:
        seen = engine_sql.point_of(rconn, 0)
        while True:
            page = log_after(log, rconn, after, batch, unseen_in=seeded_in)
            if page:
                with log.writing() as conn:
                    projection.apply(conn, page)
                advance(len(page))
                after = page[-1].checkpoint
            if len(page) < batch:
                return seen


def _swap(log: EventLog, projection: TaskProjection, view: Any, counts: Any, batch: int,
          advance: Callable[[int], None], seen: Point | None) -> Checkpoint:
    with log.writing() as conn:
        engine_sql.lock_for_swap(conn, [task_view.name, scope_counts.name])
        stored = load_checkpoint(conn, REBUILD)
        after = stored.checkpoint if stored else START
        applied = 0
        while True:
            page = log_after(log, conn, after, batch, unseen_in=seen)
            if not page:
                break
            projection.apply(conn, page)
            after = page[-1].checkpoint
            applied += len(page)
        retired = engine_sql.swap(
            conn,
            [
                (task_view.name, view.name, f"{task_view.name}_retired"),
                (scope_counts.name, counts.name, f"{scope_counts.name}_retired"),
            ],
            lambda fresh: [ix.name for t in (view, counts) if t.name == fresh for ix in t.indexes],
        )
        save_checkpoint(conn, LIVE, after, status="live", detail=f"rebuilt into {view.name}")
        delete_checkpoint(conn, REBUILD)
    advance(applied)  # after the commit: a progress callback may append
    if retired:
        with log.writing() as conn:
            engine_sql.drop_tables(conn, retired)
    return after


def _stamp_empty_view(log: EventLog) -> None:
    """An empty task view of a log without tasks is what every version of the projection code makes of it: say it
    is this version's (a new store's migrations record the version they were written for)."""
    with log.reading() as conn:
        if live_version(conn) == PROJECTION_VERSION:
            return
    with log.writing() as conn:
        conn.execute(
            update(projection_checkpoints)
            .where(projection_checkpoints.c.name == LIVE)
            .values(projection_version=PROJECTION_VERSION)
        )


def backfill_if_needed(log: EventLog, snapshots: Snapshots | None = None) -> RebuildResult | None:
    """Fold the log into an empty task view: a store whose events were written before it had projections (an older
    taskstore, upgraded in place) gets its task view and count summaries when it is first opened with them.
    Two cheap probes when there is nothing to do."""
    from sqlalchemy import exists

    with log.reading() as conn:
        has_rows = conn.execute(select(exists().where(task_view.c.scope_id.isnot(None)))).scalar()
        if has_rows:
            return None
        has_tasks = conn.execute(select(exists().where(events.c.type == TASK_ADDED))).scalar()
    if not has_tasks:
        _stamp_empty_view(log)
        return None
    try:
        return rebuild(log, snapshots=snapshots)
    except RebuildInProgress:
        return None  # another process is doing it
