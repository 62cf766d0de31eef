"""What differs between the two engines, each in one clearly named module.

Everything else in ``eventstore`` is SQLAlchemy Core that runs unchanged on both.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from .base import Dialect


def dialect_for(engine: Engine) -> Dialect:
    name = engine.dialect.name
    if name == "sqlite":
        from .sqlite import SQLiteDialect

        return SQLiteDialect()
    if name == "postgresql":
        from .postgresql import PostgreSQLDialect

        return PostgreSQLDialect()
    raise ValueError(f"unsupported database engine {name!r}: taskstore runs on SQLite and PostgreSQL")


__all__ = ["Dialect", "dialect_for"]
