"""The read side's tables, in SQLAlchemy Core. The migrations in ``migrations/versions`` create exactly these.

Times are stored as ISO 8601 text in UTC with microseconds and a ``Z`` (fixed width), so text order is time order
on both engines and a value reads back exactly as the event wrote it.
"""

from __future__ import annotations

import functools

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, MetaData, String, Table, Text
from sqlalchemy.dialects import postgresql

metadata = MetaData()
Json = JSON().with_variant(postgresql.JSONB(), "postgresql")
Time = String(32)

STATE_COLUMNS = ("pending", "starting", "running", "stopping", "succeeded", "failed", "cancelled")


def task_view_table(name: str, md: MetaData = metadata) -> Table:
    """The task view: one row per task with everything the three dialects show. Rebuilds fill a copy."""
    t = Table(
        name,
        md,
        Column("scope_id", BigInteger, primary_key=True),
        Column("key", String(64), primary_key=True),  # the task id folded to lower case
        Column("task_id", String(64), nullable=False),
        Column("number", BigInteger, nullable=False),
        Column("state", String(16), nullable=False),
        Column("previous_state", String(16)),
        Column("version", Integer, nullable=False),
        Column("position", BigInteger, nullable=False),  # the log position of the last event folded in
        Column("created_at", Time, nullable=False),
        Column("state_transition_time", Time, nullable=False),
        Column("previous_state_transition_time", Time),
        Column("last_modified", Time, nullable=False),
        Column("scheduled_at", Time),
        Column("start_time", Time),
        Column("end_time", Time),
        Column("exit_code", Integer),
        Column("result", String(16)),
        Column("retry_count", Integer, nullable=False),
        Column("requeue_count", Integer, nullable=False),
        Column("last_retry_time", Time),
        Column("last_requeue_time", Time),
        Column("required_slots", Integer, nullable=False),
        Column("display_name", String(1024)),
        Column("status_message", Text),
        Column("search", Text, nullable=False),  # lower-cased id, display name, label keys and values, for q
        Column("spec", Json, nullable=False),
        Column("failure_info", Json),
        Column("node_info", Json),
        Column("conditions", Json),
    )
    # One index per sort the lists seek by, with and without a state filter (see listing.py).
    Index(f"ix_{name}_created", t.c.scope_id, t.c.created_at, t.c.key)
    Index(f"ix_{name}_state_created", t.c.scope_id, t.c.state, t.c.created_at, t.c.key)
    Index(f"ix_{name}_number", t.c.scope_id, t.c.number, unique=True)
    Index(f"ix_{name}_state_number", t.c.scope_id, t.c.state, t.c.number)
    return t


task_view = task_view_table("task_view")


def counts_table(name: str, md: MetaData = metadata) -> Table:
    """One row per scope: tasks and required slots in each canonical state, and the log position they reflect."""
    cols = [Column("scope_id", BigInteger, primary_key=True)]
    cols += [Column(s, BigInteger, nullable=False, default=0) for s in STATE_COLUMNS]
    cols += [Column(f"slots_{s}", BigInteger, nullable=False, default=0) for s in STATE_COLUMNS]
    cols += [Column("position", BigInteger, nullable=False, default=0)]
    return Table(name, md, *cols)


scope_counts = counts_table("scope_counts")


@functools.cache
def rebuild_tables(view_name: str, counts_name: str) -> tuple[Table, Table]:
    """The fresh task view and count summaries a rebuild fills under these names (two generations, ``_a`` and
    ``_b``): made once per process, so that the statements on them are compiled once, not at every rebuild."""
    md = MetaData()
    return task_view_table(view_name, md), counts_table(counts_name, md)


settings = Table(
    "store_settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
