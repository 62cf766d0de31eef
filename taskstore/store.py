"""The composition root: one object that holds the event log, the task service and the read side of a database."""

from __future__ import annotations

from typing import Any

import projections
from eventstore import DEFAULT_URL, EventLog, Scope, TaskService, open_engine, task_upcasters
from eventstore.log import Clock, utc_now
from projections import CursorCodec, Snapshot, Snapshots, TaskQueries
from projections.audit import AuditReport, audit
from projections.rebuild import RebuildResult, rebuild
from projections.snapshots import DEFAULT_EVERY


class TaskStore(TaskService):
    """The Python API: every command of :class:`eventstore.TaskService`, and the read side as ``queries``.

    ``get_task`` and ``history`` read the log; ``queries.get_task``, ``queries.list_tasks`` and
    ``queries.counts`` read the projections that every append keeps in step.
    """

    def __init__(self, log: EventLog, queries: TaskQueries) -> None:
        super().__init__(log, state_source=queries)
        self.engine = log.engine
        self.queries = queries

    @property
    def cursors(self) -> CursorCodec:
        return self.queries.cursors

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    # -- replay: snapshots, rebuild, audit -----------------------------------------------------------------------

    @property
    def snapshots(self) -> Snapshots:
        return self.queries.snapshots

    def snapshot(self, scope: Scope, kind: str = "full") -> Snapshot | None:
        """Take a snapshot of ``scope`` now (``full``: task rows and counts; ``counts``: counts alone)."""
        return self.snapshots.take(scope, kind)

    def rebuild(self, *, from_snapshots: bool = False, batch_size: int = 5000, progress: Any = None,
                workers: int | None = None) -> RebuildResult:
        """Rebuild the task view and count summaries from the log into fresh tables and swap them in; a large scope
        is folded by ``workers`` processes (default: one per core)."""
        return rebuild(
            self.log, from_snapshots=from_snapshots, snapshots=self.snapshots, batch_size=batch_size,
            progress=progress, workers=workers,
        )

    def audit(self, scope: Scope | None = None, *, from_snapshots: bool = True, progress: Any = None) -> AuditReport:
        """Fold the log again (from the first event, and from snapshots) and compare with the live projections;
        ``progress(tasks just compared, tasks expected)`` as it goes."""
        where = {} if scope is None else {"workspace": scope.workspace, "job": scope.job, "execution": scope.execution}
        return audit(self.log, snapshots=self.snapshots, from_snapshots=from_snapshots, progress=progress, **where)

    def close(self) -> None:
        if self.queries.snapshots is not None:
            self.queries.snapshots.close()
        self.log.close()
        self.engine.dispose()

    def __enter__(self) -> "TaskStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_store(
    url: str = DEFAULT_URL,
    *,
    schema: str | None = None,
    clock: Clock = utc_now,
    snapshot_every: int | None = DEFAULT_EVERY,
    background_snapshots: bool = True,
) -> TaskStore:
    """Open (creating or upgrading in place) the store at ``url``.

    ``sqlite:///path/to/file.db`` (the default is ``taskstore.db`` in the working directory) or
    ``postgresql+psycopg://user@host/db``; ``schema`` puts a PostgreSQL store in its own schema.
    ``snapshot_every``: events of a scope between its snapshots (None: on demand only), taken by a background
    thread unless ``background_snapshots`` is false.
    """
    engine = open_engine(url, schema=schema)
    log = EventLog(engine, upcasters=task_upcasters(), clock=clock)
    queries = projections.install(log, snapshot_every=snapshot_every, background_snapshots=background_snapshots)
    return TaskStore(log, queries)
