"""The append-only events table and the scopes it is keyed by, with the triggers that refuse UPDATE and DELETE.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_position = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "scopes",
        sa.Column("id", _position, primary_key=True, autoincrement=True),
        sa.Column("workspace", sa.String(128), nullable=False),
        sa.Column("job", sa.String(128), nullable=False),
        sa.Column("execution", sa.String(128), nullable=False),
        sa.UniqueConstraint("workspace", "job", "execution", name="uq_scopes_key"),
    )
    txid_default = sa.text("(pg_current_xact_id()::text)::bigint") if pg else None
    op.create_table(
        "events",
        sa.Column("position", _position, primary_key=True, autoincrement=True),
        sa.Column("txid", sa.BigInteger, nullable=True, server_default=txid_default),
        sa.Column("scope_id", sa.BigInteger, nullable=False),
        sa.Column("stream", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("schema_version", sa.SmallInteger, nullable=False),
        sa.Column("data", _json, nullable=False),
        sa.Column("metadata", _json, nullable=False),
        sa.UniqueConstraint("scope_id", "stream", "version", name="uq_events_stream_version"),
    )
    op.create_index("ix_events_scope_position", "events", ["scope_id", "position"])
    if pg:
        op.create_index(
            "ix_events_txid_position", "events", ["txid", "position"], postgresql_where=sa.text("txid IS NOT NULL")
        )
        op.execute(
            """
            CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'events are append-only: % refused', TG_OP USING ERRCODE = 'restrict_violation';
            END
            $$
            """
        )
        op.execute(
            "CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events "
            "FOR EACH ROW EXECUTE FUNCTION events_refuse_change()"
        )
        op.execute(
            "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
            "FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change()"
        )
    else:
        op.execute(
            "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
            "BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused'); END"
        )
        op.execute(
            "CREATE TRIGGER events_no_delete BEFORE DELETE ON events "
            "BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE refused'); END"
        )


def downgrade() -> None:
    raise NotImplementedError("the event log is never downgraded")
