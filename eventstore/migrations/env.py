"""Alembic environment, shared by every package that keeps tables (the event log, projections, the HTTP service).

Run through ``eventstore.engine.upgrade``, which passes the connection and the package's own version table.
"""

from alembic import context

config = context.config
connection = config.attributes["connection"]

context.configure(
    connection=connection,
    target_metadata=None,
    version_table=config.attributes.get("version_table", "eventstore_version"),
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
