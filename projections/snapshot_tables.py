"""The tables of replay: projection checkpoints, snapshots of each scope's projected state, and the snapshot schedule.

Migration ``0002_snapshots`` creates exactly these (from its own frozen copy).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from .tables import Json, Time, metadata, task_view

# An autoincrementing id: INTEGER PRIMARY KEY (the rowid) on SQLite, BIGINT identity on PostgreSQL.
Id = BigInteger().with_variant(Integer(), "sqlite")


def checkpoints_table(md: MetaData = metadata) -> Table:
    """Where each catch-up projector stands in the log, and which version of the projection code made its tables.

    ``tasks`` is the live task view and count summaries (kept inline; its row says which code version built them);
    a rebuild in progress keeps its own row, named after the fresh tables it fills, so that it can resume.
    """
    return Table(
        "projection_checkpoints",
        md,
        Column("name", String(64), primary_key=True),
        Column("txid", BigInteger, nullable=False, default=0),
        Column("position", BigInteger, nullable=False, default=0),
        Column("projection_version", Integer, nullable=False),
        Column("status", String(16), nullable=False),  # live | seeding | catching-up
        Column("detail", Text, nullable=False, default=""),
        Column("updated_at", Time, nullable=False),
    )


def snapshots_table(md: MetaData = metadata) -> Table:
    """One row per snapshot of a scope: its counts, the log position it reflects, and how it was checked."""
    t = Table(
        "scope_snapshots",
        md,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("scope_id", BigInteger, nullable=False),
        Column("projection_version", Integer, nullable=False),
        Column("kind", String(8), nullable=False),  # full (task rows and counts) | counts
        # The last of the scope's events the snapshot reflects. On PostgreSQL, where transactions commit out of
        # position order, it reflects exactly the events visible in ``visibility`` (a pg_snapshot, as text; its xmin
        # is its lower bound, in ``snapshot_xmin``): an event of a transaction that was still open then is not in
        # it, even below position.
        Column("position", BigInteger, nullable=False),
        Column("snapshot_xmin", BigInteger),
        Column("visibility", Text),
        Column("tasks", BigInteger, nullable=False),
        Column("counts", Json, nullable=False),  # {"states": {state: n}, "slots": {state: n}}
        Column("verified", Boolean, nullable=False),
        Column("detail", Text, nullable=False, default=""),
        Column("complete", Boolean, nullable=False),
        Column("created_at", Time, nullable=False),
    )
    Index("ix_scope_snapshots_scope", t.c.scope_id, t.c.projection_version, t.c.position)
    return t


def snapshot_tasks_table(md: MetaData = metadata) -> Table:
    """The task rows of full snapshots: the task view's columns, keyed by snapshot instead of scope."""
    cols = [Column("snapshot_id", BigInteger, primary_key=True)]
    for c in task_view.columns:
        if c.name != "scope_id":
            cols.append(Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable))
    return Table("snapshot_tasks", md, *cols)


def schedule_table(md: MetaData = metadata) -> Table:
    """Events appended to each scope since its last snapshot, and since its last full snapshot (kept inline)."""
    return Table(
        "snapshot_schedule",
        md,
        Column("scope_id", BigInteger, primary_key=True),
        Column("events", BigInteger, nullable=False, default=0),
        Column("since_full", BigInteger, nullable=False, default=0),
    )


projection_checkpoints = checkpoints_table()
scope_snapshots = snapshots_table()
snapshot_tasks = snapshot_tasks_table()
snapshot_schedule = schedule_table()

SNAPSHOT_COLUMNS = tuple(c.name for c in snapshot_tasks.columns if c.name != "snapshot_id")
