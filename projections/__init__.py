"""The read side of taskstore: projections that fold the event log into task views and count summaries.

``TaskProjection`` runs inside each append (an ``eventstore.InlineProjection``); ``TaskQueries`` answers lists,
counts and single tasks from what it keeps. ``install`` wires both onto an event log.
"""

from __future__ import annotations

from pathlib import Path

from eventstore import EventLog
from eventstore.engine import upgrade

from .counts import CountSummary
from .cursor import CursorCodec, CursorError, store_key
from .filters import And, Cmp, Expr, FilterError, Or
from .listing import Page
from .queries import TaskQueries
from .rebuild import backfill_if_needed
from .snapshots import DEFAULT_EVERY, Snapshot, Snapshots
from .task_view import TaskProjection
from .validation import DEFAULT_BUDGET, RECOUNT_LIMIT, SnapshotValidator
from .version import PROJECTION_VERSION

VERSIONS = Path(__file__).parent / "migrations" / "versions"
VERSION_TABLE = "projections_version"
HEAD = "p0003"  # the newest revision in migrations/versions


def install(
    log: EventLog,
    *,
    cursor_max_age: float | None = None,
    snapshot_every: int | None = DEFAULT_EVERY,
    background_snapshots: bool = True,
    validation_budget: int = DEFAULT_BUDGET,
) -> TaskQueries:
    """Create or upgrade the read side's tables, plug the task projection into ``log``, and return its queries.

    ``snapshot_every``: events of a scope between its snapshots (None: only on demand); due snapshots are taken by
    a background thread unless ``background_snapshots`` is false (then by ``queries.snapshots.take_due()`` or
    ``taskstore snapshot --due``). ``validation_budget``: events after the last verified snapshot a count check
    above ``RECOUNT_LIMIT`` tasks may fold before it says "unvalidated".
    """
    upgrade(log.engine, versions=VERSIONS, version_table=VERSION_TABLE, head=HEAD)
    log.projections.append(TaskProjection(log))
    snapshots = Snapshots(log, every=snapshot_every, background=background_snapshots)
    log.projections.append(snapshots.schedule)
    kwargs = {} if cursor_max_age is None else {"max_age": cursor_max_age}
    queries = TaskQueries(log, CursorCodec(store_key(log.engine), **kwargs))
    queries.snapshots = snapshots
    queries.validator = SnapshotValidator(log, snapshots, budget=validation_budget)
    backfill_if_needed(log, snapshots)  # events written before this store had projections
    return queries


__all__ = [
    "PROJECTION_VERSION",
    "RECOUNT_LIMIT",
    "And",
    "Cmp",
    "CountSummary",
    "CursorCodec",
    "CursorError",
    "Expr",
    "FilterError",
    "Or",
    "Page",
    "Snapshot",
    "SnapshotValidator",
    "Snapshots",
    "TaskProjection",
    "TaskQueries",
    "install",
]
