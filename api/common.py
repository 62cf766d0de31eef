"""What every dialect's router needs: the store and credentials of the application, bounded bodies, times."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy.pool import QueuePool
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from eventstore import ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from taskstore.store import TaskStore

    from .credentials import CredentialStore

MAX_BODY = 8 * 1024 * 1024


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the request body is larger than {limit} bytes")


class BadJson(ValueError):
    pass


def store_of(request: Request) -> "TaskStore":
    return request.app.state.store


def credentials_of(request: Request) -> "CredentialStore":
    return request.app.state.credentials


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The body, refused (without reading on) once it passes ``limit`` bytes."""
    cached = request.scope.get("taskstore.body")
    if cached is not None:
        return cached
    length = request.headers.get("content-length")
    # str.isdigit() also holds for '²' (a latin-1 header byte), which int() refuses: ASCII digits only
    if length is not None and length.isascii() and length.isdigit() and int(length) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    request.scope["taskstore.body"] = body
    return body


def parse_json(body: bytes) -> Any:
    """The JSON document of a body. Strings with NUL characters are refused here: PostgreSQL cannot store them."""
    if not body.strip():
        raise BadJson("the request body is empty; a JSON document is required")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadJson(f"the request body is not valid JSON: {exc}") from None
    if b"\\u0000" in body:
        where = _nul_path(doc, "")
        if where is not None:
            raise ValidationError(where or "body", "strings must not contain NUL characters")
    return doc


def _nul_path(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}" if path else str(k)
            if "\x00" in k:
                return here
            found = _nul_path(v, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _nul_path(v, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def nul_query_parameter(request: Request) -> str | None:
    """The name of a query parameter whose name or value holds a NUL character (which no store can take)."""
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            return name.replace("\x00", "")
    return None


def printable(value: str | None, limit: int) -> bool:
    return value is not None and 0 < len(value) <= limit and value.isprintable()


def http_date(iso: str) -> str:
    """An RFC 1123 date (Last-Modified) for one of the store's ISO 8601 times."""
    return format_datetime(datetime.fromisoformat(iso.replace("Z", "+00:00")), usegmt=True)


def path_of(request: Request) -> str:
    """The request's path below the application's root path."""
    path = request.scope.get("path", "")
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path


def base_url(request: Request) -> str:
    """The URL of the application's root as the client reached it, without a trailing slash."""
    return str(request.base_url).rstrip("/")


# -- endpoints that read their own parameters ------------------------------------------------------------------------
#
# FastAPI resolves every declared ``Path``/``Query``/``Header`` parameter and ``Depends`` through pydantic on every
# request (about 0.1 ms for a list route on this project's machine). The busiest routes instead take the request
# alone, read the same values Starlette parsed (``request.path_params``, ``request.query_params.get``,
# ``request.headers.get``: what FastAPI itself reads for a ``str | None`` parameter), authenticate on the event loop
# and run the store's work and the rendering in the thread pool with :func:`offload`, as a sync endpoint runs (a
# short read on SQLite on the event loop, with :func:`short_read`). :func:`documented` keeps their parameters in the
# OpenAPI document. Registered with :func:`direct_get`, they are also answered without FastAPI's router
# (``api.app.DirectRoutes``).

DIRECT = "taskstore_direct"  # the attribute that marks an endpoint registered with direct_get


def direct_get(router: Any, path: str, **kwargs: Any) -> Any:
    """``router.get(path, **kwargs)`` for an endpoint ``async def (request) -> Response`` that reads its own
    parameters, marked so that the application answers a GET of it without FastAPI's routing (see
    ``api.app.DirectRoutes``); the route stays registered with FastAPI, for the OpenAPI document and for the
    other methods (a HEAD or a PUT gets the dialect's 405 as before)."""

    def register(endpoint: Any) -> Any:
        setattr(endpoint, DIRECT, True)
        return router.get(path, **kwargs)(endpoint)

    return register


def _param(where: str, name: str, description: str | None, required: bool) -> dict[str, Any]:
    title = name.replace("_", " ").title()
    schema: dict[str, Any] = {"title": title, "type": "string"}
    if not required:
        schema = {"anyOf": [{"type": "string"}, {"type": "null"}], "title": title}
    out: dict[str, Any] = {"in": where, "name": name, "required": required, "schema": schema}
    if description:
        out["description"] = description
        schema["description"] = description
    return out


def documented(
    *,
    path: tuple[str, ...] = (),
    query: tuple[tuple[str, str | None], ...] = (),
    header: tuple[tuple[str, str | None], ...] = (),
) -> dict[str, Any]:
    """``openapi_extra`` describing the parameters an endpoint reads from the request itself (path parameters are
    required strings, query parameters and headers optional strings, as FastAPI would document them)."""
    params = [_param("path", n, None, True) for n in path]
    params += [_param("query", n, d, False) for n, d in query]
    params += [_param("header", n, d, False) for n, d in header]
    return {"parameters": params}


offload = run_in_threadpool


# -- where a short read runs ---------------------------------------------------------------------------------------


def loop_reads(engine: Any) -> bool:
    """Whether :func:`short_read` may run reads of ``engine`` on the event loop: only for a SQLite file in WAL mode
    (no network I/O, and a reader never waits for a writer) behind SQLAlchemy's queue pool (an in-memory database
    shares one connection between threads: it keeps the thread pool). Never for PostgreSQL: network round trips."""
    if engine.dialect.name != "sqlite" or not isinstance(engine.pool, QueuePool):
        return False
    with engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    return str(mode).lower() == "wal"


async def short_read(request: Request, call: Any, *args: Any) -> Any:
    """``call(*args)``: a short, bounded read of the store and its rendering (a keyset page of at most 200 rows, no
    filter that may scan; a caller never passes anything else), on the event loop when the application's store
    allows it (``app.state.loop_reads``, see :func:`loop_reads`) and an idle connection is at hand, so that the
    checkout cannot wait; otherwise in the thread pool, like :func:`offload`.

    Why: the thread pool's hand-off is two thread wake-ups (to a worker and back), 0.1 to 0.3 ms a request on this
    project's machine and more when its cores are busy, which was most of what HTTP added to a SQLite list page;
    such a read itself takes about a millisecond, during which the loop waits."""
    if getattr(request.app.state, "loop_reads", False) and store_of(request).engine.pool.checkedin() > 0:
        return call(*args)
    return await run_in_threadpool(call, *args)
