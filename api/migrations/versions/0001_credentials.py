"""API credentials: one row per key, each reaching one workspace.

The secret is kept because SharedKey and SigV4 are HMACs the server must recompute; bearer tokens are looked up by
the SHA-256 of the secret.

Revision ID: a0001
"""

import sqlalchemy as sa
from alembic import op

revision = "a0001"
down_revision = None
branch_labels = ("api",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_credentials",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("workspace", sa.String(128), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("description", sa.String(256), nullable=True),
    )
    op.create_index("ix_api_credentials_workspace", "api_credentials", ["workspace"])
    op.create_index("ix_api_credentials_secret_sha256", "api_credentials", ["secret_sha256"], unique=True)


def downgrade() -> None:
    raise NotImplementedError("credentials are never downgraded")
