"""Alembic environment for the event log. Run through ``eventstore.migrate.upgrade``, never by hand-edited config."""

from alembic import context

config = context.config
connection = config.attributes["connection"]

context.configure(
    connection=connection,
    target_metadata=None,
    version_table="eventstore_version",
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
