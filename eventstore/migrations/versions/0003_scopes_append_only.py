"""The scopes table refuses UPDATE and DELETE (and TRUNCATE on PostgreSQL), as the events table does: a scope row
names the workspace, job and execution of every event keyed by it, so changing or removing one would move or orphan
those events.

Revision ID: 0003
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION scopes_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'scopes are append-only: % refused', TG_OP USING ERRCODE = 'restrict_violation';
            END
            $$
            """
        )
        op.execute(
            "CREATE TRIGGER scopes_append_only BEFORE UPDATE OR DELETE ON scopes "
            "FOR EACH ROW EXECUTE FUNCTION scopes_refuse_change()"
        )
        op.execute(
            "CREATE TRIGGER scopes_no_truncate BEFORE TRUNCATE ON scopes "
            "FOR EACH STATEMENT EXECUTE FUNCTION scopes_refuse_change()"
        )
    else:
        op.execute(
            "CREATE TRIGGER scopes_no_update BEFORE UPDATE ON scopes "
            "BEGIN SELECT RAISE(ABORT, 'scopes are append-only: UPDATE refused'); END"
        )
        op.execute(
            "CREATE TRIGGER scopes_no_delete BEFORE DELETE ON scopes "
            "BEGIN SELECT RAISE(ABORT, 'scopes are append-only: DELETE refused'); END"
        )


def downgrade() -> None:
    raise NotImplementedError("the event log is never downgraded")
