"""The database a ``taskstore`` command names with ``--db``, opened: one that cannot be opened (no such file for a
command that only reads, a directory, a file that is not a database, a scheme no driver speaks, a server that does
not answer) is bad input, which ``main`` prints as one line and exits 2 for, never a traceback; and a command that
only reads never leaves an empty SQLite database (and its folders) behind where there was none."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from eventstore import ValidationError
from eventstore.engine import normalise_url


def _sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None: not SQLite, in memory, a ``file:`` URI, or not a URL at all)."""
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.query.get("uri") or parsed.database.startswith("file:"):
        return None
    return Path(parsed.database).expanduser()


def _shown(url: str) -> str:
    try:
        return make_url(normalise_url(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        text = str(exc.orig)
    elif isinstance(exc, ImportError):
        text = f"no driver for this kind of database ({exc})"
    else:
        text = str(exc)
    return " ".join(text.split()) or exc.__class__.__name__


def open_db(opener: Callable[..., Any], url: str, *, create: bool = True, **kwargs: Any) -> Any:
    """``opener(url, **kwargs)`` (the command module's ``open_store``); ``create=False`` for a command that only
    reads or works on what is there: a SQLite file that does not exist is refused rather than made."""
    path = _sqlite_path(url)
    if path is not None:
        if path.is_dir():
            raise ValidationError("db", f"{path} is a directory, not a database")
        if not create and not path.exists():
            raise ValidationError("db", f"there is no database at {path}")
    try:
        return opener(url, **kwargs)
    except (SQLAlchemyError, ImportError) as exc:
        raise ValidationError("db", f"cannot open {_shown(url)}: {_reason(exc)}") from None
