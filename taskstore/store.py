"""The composition root: one object that holds the event log, the task service and the read side of a database."""

from __future__ import annotations

from typing import Any

import projections
from eventstore import DEFAULT_URL, EventLog, TaskService, open_engine, task_upcasters
from eventstore.log import Clock, utc_now
from projections import CursorCodec, TaskQueries


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

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "TaskStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_store(url: str = DEFAULT_URL, *, schema: str | None = None, clock: Clock = utc_now) -> TaskStore:
    """Open (creating or upgrading in place) the store at ``url``.

    ``sqlite:///path/to/file.db`` (the default is ``taskstore.db`` in the working directory) or
    ``postgresql+psycopg://user@host/db``; ``schema`` puts a PostgreSQL store in its own schema.
    """
    engine = open_engine(url, schema=schema)
    log = EventLog(engine, upcasters=task_upcasters(), clock=clock)
    queries = projections.install(log)
    return TaskStore(log, queries)
