"""What every dialect's router needs: the store and credentials of the application, bounded bodies, times."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request

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
    if length is not None and length.isdigit() and int(length) > limit:
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
    if not body.strip():
        raise BadJson("the request body is empty; a JSON document is required")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadJson(f"the request body is not valid JSON: {exc}") from None


def http_date(iso: str) -> str:
    """An RFC 1123 date (Last-Modified) for one of the store's ISO 8601 times."""
    return format_datetime(datetime.fromisoformat(iso.replace("Z", "+00:00")), usegmt=True)


def path_of(request: Request) -> str:
    """The request's path below the application's root path."""
    path = request.scope.get("path", "")
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path


def single_query(request: Request, name: str) -> str | None:
    """A query parameter's value (the first when repeated)."""
    return request.query_params.get(name)


def base_url(request: Request) -> str:
    """The URL of the application's root as the client reached it, without a trailing slash."""
    return str(request.base_url).rstrip("/")
