"""Rebuilding the task view and count summaries from the log into fresh tables, and swapping them in.

1. Fresh tables (``task_view_a``/``scope_counts_a``, or ``_b`` when the live ones came from ``_a``) are created.
2. Seeding, with ``from_snapshots``: each scope's newest verified full snapshot (of this version of the projection
   code) is copied in, and the scope's events it lacks are folded on top; a scope without one is folded from its
   first event. The log is not read from its start. Without ``from_snapshots`` nothing is seeded.
3. Catching up: a :class:`~projections.projector.CatchUpProjector` follows the whole log from a stored checkpoint
   (the log's head before seeding began, or its start) until it is caught up, one write transaction per batch;
   appends go on meanwhile. Events the fresh tables already reflect are skipped by version, so seeding and
   catching up may overlap. An interrupted rebuild resumes from its checkpoint.
4. The swap, in one write transaction: writers are kept out of the live tables (SQLite: the write transaction
   itself; PostgreSQL: ``LOCK TABLE ... IN EXCLUSIVE MODE``, readers go on), the last events are applied, and the
   fresh tables are renamed to the live names. The inline projection's SQLAlchemy tables are bound by name, so the
   next append writes to the rebuilt tables. The live tables' checkpoint row records the code version that built
   them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Callable

from sqlalchemy import MetaData, func, inspect, insert, select
from sqlalchemy.engine import Connection

from eventstore import START, Checkpoint, EventLog, State
from eventstore.schema import events

from . import engine_sql
from .engine_sql import consistent
from .projector import CatchUpProjector, delete_checkpoint, load_checkpoint, save_checkpoint
from .replay import COLUMNS, decode, log_after
from .snapshot_tables import SNAPSHOT_COLUMNS, snapshot_tasks
from .snapshots import FULL, Snapshots, scope_ids
from .tables import STATE_COLUMNS, counts_table, scope_counts, task_view, task_view_table
from .task_view import TaskProjection
from .version import PROJECTION_VERSION

REBUILD = "tasks:rebuild"
LIVE = "tasks"
LEASE = timedelta(minutes=5)  # a rebuild whose checkpoint has not moved for this long is taken over

Progress = Callable[[int, "int | None"], None]  # (events just applied, total expected so far)


class RebuildInProgress(Exception):
    pass


@dataclass(frozen=True)
class RebuildResult:
    events: int
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
    moment = datetime.fromisoformat(updated_at.replace("Z", "+00:00"))
    return datetime.now(UTC) - moment > LEASE


def rebuild(
    log: EventLog,
    *,
    from_snapshots: bool = False,
    snapshots: Snapshots | None = None,
    batch_size: int = 5000,
    progress: Progress | None = None,
) -> RebuildResult:
    """Rebuild the task view and count summaries into fresh tables and swap them in; see the module's doc."""
    started = time.perf_counter()
    if from_snapshots and snapshots is None:
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
        md = MetaData()
        fresh_view = task_view_table(view_name, md)
        fresh_counts = counts_table(counts_name, md)
        if not resumed:
            engine_sql.drop_tables(conn, [view_name, counts_name, f"{task_view.name}_retired",
                                          f"{scope_counts.name}_retired"])
            md.create_all(conn)
            save_checkpoint(conn, REBUILD, START, status="seeding", detail=view_name)
    projection = TaskProjection(log, fresh_view, fresh_counts, catch_up=True)
    projector = CatchUpProjector(log, projection, REBUILD, batch_size=batch_size)
    done = 0
    from_snap = from_log = 0
    total: int | None = None

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(n, total)

    if not resumed:
        if from_snapshots:
            assert snapshots is not None
            start = log.head()
            with log.reading() as conn:
                plan = []
                for sid, _scope in scope_ids(conn):
                    snap = snapshots.newest(conn, sid, kind=FULL, verified=True)
                    lacking = engine_sql.count_since(conn, sid, snap.point if snap else None)
                    plan.append((sid, snap, lacking))
                total = sum(n for _, _, n in plan)
            for sid, snap, _ in plan:
                if snap is not None:
                    _seed(log, sid, snap.id, snap.position, fresh_view, fresh_counts, batch_size)
                    from_snap += 1
                else:
                    from_log += 1
                _fold_scope(log, projection, sid, snap.point if snap else None, batch_size, advance)
                with log.writing() as conn:  # a heartbeat: this rebuild is alive
                    save_checkpoint(conn, REBUILD, START, status="seeding", detail=view_name)
        else:
            start = START
            with log.reading() as conn:
                total = conn.execute(select(func.count()).select_from(events)).scalar_one()
                from_log = len(scope_ids(conn))
        with log.writing() as conn:
            save_checkpoint(conn, REBUILD, start, status="catching-up", detail=view_name)
    projector.run(progress=advance)
    final = _swap(log, projection, fresh_view, fresh_counts, batch_size, advance)
    return RebuildResult(
        events=done,
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
        conn.execute(insert(counts).values(row))


def _fold_scope(log: EventLog, projection: TaskProjection, sid: int, base: Any, batch: int,
                advance: Callable[[int], None]) -> None:
    """Fold the scope's events that ``base`` lacks into the fresh tables, a page of positions at a time."""
    cond, params = engine_sql.lacks(log.engine, "events", base)
    from sqlalchemy import text

    after = 0
    while True:
        with consistent(log) as conn:
            q = (
                select(*COLUMNS)
                .where(events.c.scope_id == sid, events.c.position > after, text(cond).bindparams(**params))
                .order_by(events.c.position)
                .limit(batch)
            )
            page = [decode(log, conn, r) for r in conn.execute(q)]
        if page:
            with log.writing() as conn:
                projection.apply(conn, page)
            advance(len(page))
            after = page[-1].position
        if len(page) < batch:
            return


def _swap(log: EventLog, projection: TaskProjection, view: Any, counts: Any, batch: int,
          advance: Callable[[int], None]) -> Checkpoint:
    with log.writing() as conn:
        engine_sql.lock_for_swap(conn, [task_view.name, scope_counts.name])
        stored = load_checkpoint(conn, REBUILD)
        after = stored.checkpoint if stored else START
        applied = 0
        while True:
            page = log_after(log, conn, after, batch)
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
