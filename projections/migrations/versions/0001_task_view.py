"""The task view, the count summary per scope, and the store's settings (the cursor signing key).

Revision ID: p0001
"""

from alembic import op
from sqlalchemy import MetaData

from projections import tables

revision = "p0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A frozen copy of the tables as this revision made them.
    md = MetaData()
    view = tables.task_view_table("task_view", md)
    counts = tables.counts_table("scope_counts", md)
    settings = tables.settings.to_metadata(md)
    bind = op.get_bind()
    for t in (view, counts, settings):
        t.create(bind)


def downgrade() -> None:
    raise NotImplementedError("projections are rebuilt from the log, never downgraded")
