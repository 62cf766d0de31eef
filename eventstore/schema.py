"""The tables of the event log, in SQLAlchemy Core.

The migrations in ``migrations/versions`` create exactly these; a test compares the two.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Integer, MetaData, SmallInteger, String, Table, Text, UniqueConstraint
from sqlalchemy.dialects import postgresql

metadata = MetaData()

# On SQLite an INTEGER PRIMARY KEY is the rowid: positions are assigned in commit order and only grow.
Position = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(postgresql.JSONB(), "postgresql")

scopes = Table(
    "scopes",
    metadata,
    Column("id", Position, primary_key=True, autoincrement=True),
    Column("workspace", String(128), nullable=False),
    Column("job", String(128), nullable=False),
    Column("execution", String(128), nullable=False),
    UniqueConstraint("workspace", "job", "execution", name="uq_scopes_key"),
)

events = Table(
    "events",
    metadata,
    Column("position", Position, primary_key=True, autoincrement=True),
    # PostgreSQL only: the id of the writing transaction (pg_current_xact_id()), for gap-free reading. NULL on SQLite.
    Column("txid", BigInteger, nullable=True),
    Column("scope_id", BigInteger, nullable=False),
    Column("stream", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", String(64), nullable=False),
    Column("schema_version", SmallInteger, nullable=False),
    Column("data", Json, nullable=False),
    Column("metadata", Json, nullable=False),
    UniqueConstraint("scope_id", "stream", "version", name="uq_events_stream_version"),
)

requests = Table(
    "requests",
    metadata,
    Column("namespace", String(128), primary_key=True),
    Column("request_id", String(128), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("positions", Text, nullable=False),
    Column("recorded_at", String(40), nullable=False),
)

from sqlalchemy import Index  # noqa: E402

Index("ix_events_scope_position", events.c.scope_id, events.c.position)
# Readers of the whole log on PostgreSQL walk (txid, position); the index is created there only.
Index("ix_events_txid_position", events.c.txid, events.c.position, postgresql_where=events.c.txid.isnot(None)).ddl_if(
    dialect="postgresql"
)
