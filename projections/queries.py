"""The read side's queries: one task, a page of tasks, a count summary. Every one is bounded by what it returns."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from sqlalchemy import Table, select
from sqlalchemy.engine import Connection

from eventstore import EventLog, Scope, Task, TaskNotFound, ValidationError
from eventstore.task import stream_key

from . import engine_sql
from .counts import CountSummary, empty_summary, summary_of
from .cursor import CursorCodec, fingerprint
from .engine_sql import consistent
from .filters import Expr, canonical
from .listing import (
    DEFAULT_LIMIT,
    DEFAULT_SORT,
    SCAN_BUDGET,
    Page,
    check_after,
    check_sort,
    clamp_limit,
    normalise_q,
    seek_page,
    seek_states,
    walk_page,
)
from .rows import task_builder, task_of
from .tables import scope_counts, task_view
from .validation import RECOUNT_LIMIT, agrees, recount


class TaskQueries:
    def __init__(
        self,
        log: EventLog,
        cursors: CursorCodec,
        *,
        view: Table = task_view,
        counts: Table = scope_counts,
        scan_budget: int = SCAN_BUDGET,
    ) -> None:
        self.log = log
        self.cursors = cursors
        self.view = view
        self.counts_table = counts
        self._task_of_values = task_builder([c.name for c in view.columns])  # for the one-statement pages
        self._at_key = [c.name for c in view.columns].index("key")
        self.scan_budget = scan_budget
        self.validator: Any = None  # set by the snapshot machinery for scopes above recount_limit
        self.recount_limit = RECOUNT_LIMIT  # above it, counts are validated by ``validator``, never by a recount
        self.snapshots: Any = None  # projections.snapshots.Snapshots, set by install()

    # -- one task ----------------------------------------------------------------------------------------------

    def get_task(self, scope: Scope, task_id: str) -> Task:
        if "\x00" in task_id:  # no task has one, and PostgreSQL cannot take it: not found, on both engines alike
            raise TaskNotFound(scope, task_id)
        return self._one(scope, task_id, lambda c: c.key == stream_key(task_id))

    def get_by_number(self, scope: Scope, number: int) -> Task:
        return self._one(scope, str(number), lambda c: c.number == number)

    def _one(self, scope: Scope, shown: str, cond: Any) -> Task:
        with self.log.reading() as conn:
            sid = self.log.scope_id(scope, conn)
            row = None
            if sid is not None:
                c = self.view.c
                row = conn.execute(select(self.view).where(c.scope_id == sid, cond(c))).mappings().first()
        if row is None:
            raise TaskNotFound(scope, shown)
        return task_of(row, scope)

    def load_tasks(self, scope: Scope, keys: Sequence[str], conn: Connection | None = None) -> dict[str, Task]:
        """Current tasks by stream key (the ``eventstore.TaskStateSource`` that commands decide from), read through
        ``conn`` when given (a command's own write transaction), else in a read transaction."""
        if conn is None:
            with self.log.reading() as c:
                return self.load_tasks(scope, keys, c)
        out: dict[str, Task] = {}
        sid = self.log.scope_id(scope, conn)
        if sid is None:
            return out
        build, at_key = self._task_of_values, self._at_key
        for values in engine_sql.view_values(conn, self.view, sid, keys):
            out[values[at_key]] = build(values, scope)
        return out

    def scope_exists(self, scope: Scope) -> bool:
        return self.log.scope_id(scope) is not None

    # -- lists -------------------------------------------------------------------------------------------------

    def list_tasks(
        self,
        scope: Scope,
        *,
        sort: str = DEFAULT_SORT,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
        q: str | None = None,
        where: Expr | None = None,
    ) -> Page:
        sort = check_sort(sort)
        limit = clamp_limit(limit)
        query = normalise_q(q)
        fp = self.query_fingerprint(scope, sort, query, where)
        after = None
        if cursor:
            doc = self.cursors.decode(cursor, fp)
            after = check_after(doc.get("k") if isinstance(doc, dict) else None, sort)
        seeks, states = seek_states(sort, query, where)
        if seeks:  # one statement
            with self.log.reading_one() as conn:
                sid = self.log.scope_id(scope, conn)
                if sid is None:
                    return Page([], False, "", 0)
                rows, has_more, last, total = seek_page(
                    conn, self.view, self.counts_table, sid, sort=sort, limit=limit, after=after, states=states
                )
            build = self._task_of_values
            items = [build(r, scope) for r in rows]
        else:
            with self.log.reading() as conn:
                sid = self.log.scope_id(scope, conn)
                if sid is None:
                    return Page([], False, "", 0)
                rows, has_more, last = walk_page(
                    conn, self.view, sid, sort=sort, limit=limit, after=after, q=query, where=where,
                    budget=self.scan_budget,
                )
                total = engine_sql.scope_total(conn, self.counts_table, sid)
            build = self._task_of_values
            items = [build(r, scope) for r in rows]
        next_cursor = self.cursors.encode({"k": last}, fp) if has_more and last is not None else ""
        return Page(items, has_more and bool(next_cursor), next_cursor, total)

    @staticmethod
    def query_fingerprint(scope: Scope, sort: str, q: str | None, where: Expr | None) -> str:
        return fingerprint("list", scope.workspace, scope.job, scope.execution, sort, q or "", canonical(where))

    # -- counts ------------------------------------------------------------------------------------------------

    def counts(self, scope: Scope, *, validate: bool = True) -> CountSummary:
        if validate and self.validator is not None:
            # A scope whose verified point still holds is answered by one statement; any other by the whole check.
            sid = self.log.scope_id(scope)
            if sid is not None and (quick := self.validator.unchanged(scope, sid, self.counts_table)) is not None:
                return quick
        # Validation compares the summary with other reads: they must all see one state (REPEATABLE READ on PostgreSQL);
        # the summary alone is one statement.
        with (consistent(self.log) if validate else self.log.reading_one()) as conn:
            sid = self.log.scope_id(scope, conn)
            if sid is None:
                return replace(empty_summary(scope), validation_status="validated",
                               validation_detail="the scope has no events: no tasks to count")
            summary = self._summary(conn, scope, sid)
            if not validate:
                return summary
            return self._validate(conn, sid, summary)

    def _summary(self, conn: Connection, scope: Scope, sid: int) -> CountSummary:
        return summary_of(engine_sql.summary_row(conn, self.counts_table, sid), scope)

    def _validate(self, conn: Connection, sid: int, summary: CountSummary) -> CountSummary:
        if summary.total <= self.recount_limit:
            # The last verified point plus the events since is cheaper than a recount; a recount decides otherwise.
            if self.validator is not None:
                quick = self.validator(conn, sid, summary)
                if quick.validation_status == "validated":
                    return quick
            tasks, slots = recount(conn, self.view, sid)
            ok = agrees(summary, tasks, slots)
            if ok and self.validator is not None:
                self.validator.remember(conn, sid, tasks, slots, f"a recount at position {summary.position}")
            detail = "recounted" if ok else "a recount disagrees with the summary"
            return replace(summary, validation_status="validated" if ok else "unvalidated", validation_detail=detail)
        if self.validator is not None:
            return self.validator(conn, sid, summary)
        return replace(summary, validation_detail=f"more than {self.recount_limit} tasks and no verified snapshot")

    # -- as of a log position ----------------------------------------------------------------------------------

    def counts_as_of(self, scope: Scope, position: int) -> CountSummary:
        """The scope's count summary as it was when the log ended at ``position``: the newest verified snapshot at
        or before it plus the deltas of the scope's events up to it."""
        from .as_of import counts_as_of

        return counts_as_of(self.log, self.snapshots, scope, position)

    def task_as_of(self, scope: Scope, task_id: str, position: int) -> Task:
        """The task as it was when the log ended at ``position`` (:class:`TaskNotFound` if it did not exist yet)."""
        from .as_of import task_as_of

        return task_as_of(self.log, self.snapshots, scope, task_id, position)


__all__ = ["TaskQueries", "Page", "CountSummary", "ValidationError"]
