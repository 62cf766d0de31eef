"""Replay: projection checkpoints, snapshots of each scope's projected state, the snapshot schedule.

Revision ID: p0002
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "p0002"
down_revision = "p0001"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Time = sa.String(32)
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # A frozen copy of the tables as this revision makes them (projections/snapshot_tables.py holds the current ones).
    checkpoints = op.create_table(
        "projection_checkpoints",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("txid", sa.BigInteger, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("projection_version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
    )
    op.create_table(
        "scope_snapshots",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("scope_id", sa.BigInteger, nullable=False),
        sa.Column("projection_version", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("snapshot_xmin", sa.BigInteger),
        sa.Column("visibility", sa.Text),
        sa.Column("tasks", sa.BigInteger, nullable=False),
        sa.Column("counts", Json, nullable=False),
        sa.Column("verified", sa.Boolean, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("complete", sa.Boolean, nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_index("ix_scope_snapshots_scope", "scope_snapshots", ["scope_id", "projection_version", "position"])
    op.create_table(
        "snapshot_tasks",
        sa.Column("snapshot_id", sa.BigInteger, primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("number", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("previous_state", sa.String(16)),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("state_transition_time", Time, nullable=False),
        sa.Column("previous_state_transition_time", Time),
        sa.Column("last_modified", Time, nullable=False),
        sa.Column("scheduled_at", Time),
        sa.Column("start_time", Time),
        sa.Column("end_time", Time),
        sa.Column("exit_code", sa.Integer),
        sa.Column("result", sa.String(16)),
        sa.Column("retry_count", sa.Integer, nullable=False),
        sa.Column("requeue_count", sa.Integer, nullable=False),
        sa.Column("last_retry_time", Time),
        sa.Column("last_requeue_time", Time),
        sa.Column("required_slots", sa.Integer, nullable=False),
        sa.Column("display_name", sa.String(1024)),
        sa.Column("status_message", sa.Text),
        sa.Column("search", sa.Text, nullable=False),
        sa.Column("spec", Json, nullable=False),
        sa.Column("failure_info", Json),
        sa.Column("node_info", Json),
        sa.Column("conditions", Json),
    )
    op.create_table(
        "snapshot_schedule",
        sa.Column("scope_id", sa.BigInteger, primary_key=True),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("since_full", sa.BigInteger, nullable=False),
    )
    # The live task view was made by the inline projection of version 1 of the projection code.
    now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    op.bulk_insert(
        checkpoints,
        [{"name": "tasks", "txid": 0, "position": 0, "projection_version": 1, "status": "live", "detail": "inline",
          "updated_at": now}],
    )


def downgrade() -> None:
    raise NotImplementedError("projections are rebuilt from the log, never downgraded")
