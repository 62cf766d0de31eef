"""PostgreSQL: no statistics of the task view's scope_id, so that a job the last ANALYZE did not see is not planned
as one row (see ``projections.engine_sql.scopes_estimated_evenly``, which the rebuild applies to its fresh tables).

Revision ID: p0003
"""

from alembic import op

revision = "p0003"
down_revision = "p0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A frozen copy of what engine_sql.scopes_estimated_evenly does. Changing the column to its own type clears the
    # statistics gathered so far without rewriting the table or its indexes.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE task_view ALTER COLUMN scope_id SET STATISTICS 0, ALTER COLUMN scope_id TYPE bigint")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE task_view ALTER COLUMN scope_id SET STATISTICS -1")
