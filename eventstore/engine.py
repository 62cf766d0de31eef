"""Opening a database: the URL, the engine with its per-engine settings, and the schema upgrade.

Alembic makes and upgrades the schema. Importing it and loading a package's migrations costs about a fifth of a
second, on every ``taskstore`` command: a database whose version table already names the package's newest revision
(``HEAD``; ``tests/test_migrations.py`` checks each against Alembic's) is left as it is without either.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import orjson
from sqlalchemy import create_engine, inspect, make_url, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from .dialects import Dialect, dialect_for

if TYPE_CHECKING:
    from alembic.config import Config

DEFAULT_URL = "sqlite:///taskstore.db"
MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "0003"  # the newest revision in migrations/versions
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def normalise_url(url: str) -> str:
    """Accept the URLs people type: ``postgresql://`` and ``postgres://`` mean psycopg 3; a bare path means SQLite."""
    if "://" not in url:
        return f"sqlite:///{url}"
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def open_engine(
    url: str = DEFAULT_URL,
    *,
    schema: str | None = None,
    idle_in_transaction_timeout_ms: int = 60_000,
    pool_size: int = 5,
) -> Engine:
    """An engine for ``url``, configured for the event log and upgraded to the newest schema."""
    parsed = make_url(normalise_url(url))
    kwargs: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}
    if schema is not None and not _SCHEMA_NAME.match(schema):
        raise ValueError(f"schema {schema!r} must be a lower-case SQL identifier")
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False}
        if parsed.database in (None, "", ":memory:"):
            kwargs["poolclass"] = StaticPool
        else:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    elif parsed.get_backend_name() == "postgresql":
        options = f"-c idle_in_transaction_session_timeout={int(idle_in_transaction_timeout_ms)}"
        if schema:
            options += f" -c search_path={schema}"
        kwargs["connect_args"] = {"options": options}
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = pool_size * 2
    engine = create_engine(parsed, **kwargs)
    dialect_for(engine).configure(engine, schema=schema)
    upgrade(engine)
    return engine


@contextmanager
def write_transaction(engine: Engine, dialect: Dialect | None = None) -> Iterator[Connection]:
    """A write transaction on a connection of ``engine``'s pool (``BEGIN IMMEDIATE`` on SQLite: the write lock
    before the first read); commits on success, rolls back on any exception. ``EventLog.writing`` uses it when
    its held connection is taken."""
    with engine.connect() as conn:
        (dialect or dialect_for(engine)).begin_write(conn)
        with conn.begin():
            yield conn


def alembic_config(versions: Path = MIGRATIONS / "versions", version_table: str = "eventstore_version") -> Config:
    """An Alembic configuration for one package's migrations; each package keeps its own version table."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(versions))
    cfg.attributes["version_table"] = version_table
    return cfg


def upgrade(
    engine: Engine,
    revision: str = "head",
    *,
    versions: Path = MIGRATIONS / "versions",
    version_table: str = "eventstore_version",
    head: str | None = HEAD,
) -> None:
    """Create a package's tables, or upgrade a database made by an older taskstore, in place.

    Without arguments: the event log's own tables. ``projections`` and ``api`` pass their own ``versions`` folder,
    ``version_table`` and ``head`` (the newest revision in that folder). Upgrading to the head of a database whose
    version table names ``head`` already does nothing, and does not load Alembic.
    """
    if revision == "head" and head is not None and revisions_of(engine, version_table) == {head}:
        return
    from alembic import command

    dialect = dialect_for(engine)
    cfg = alembic_config(versions, version_table)
    with write_transaction(engine) as conn:
        dialect.lock_for_migration(conn)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def revisions_of(engine: Engine, version_table: str) -> set[str]:
    """The revisions a package's version table names (one, unless its migrations branch); none without the table."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(version_table):
            return set()
        return {row[0] for row in conn.execute(text(f"SELECT version_num FROM {version_table}"))}


def current_revision(engine: Engine, version_table: str = "eventstore_version") -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": version_table}).get_current_revision()
