"""Errors as each dialect writes them, and the one place that turns any exception into a dialect's error response.

Routers raise :class:`ApiError` with the dialect's own code (``TaskNotFound``, ``ResourceNotFoundException``, ...)
or let an ``eventstore`` error through; the application's handlers find the dialect from the path's mount point and
render the body that dialect's SDK understands:

- Azure Batch: ``{"code", "message": {"lang", "value"}, "values": [{"key", "value"}]}``
- HealthOmics: header ``x-amzn-ErrorType`` and ``{"message"}``
- Blaxel: ``{"error", "code"}`` (code is the HTTP status)
- native: ``{"error": {"code", "message", "field"?, ...}}``
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import orjson
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger("taskstore.api")


class ApiError(Exception):
    """An error answer: HTTP status, the dialect's code, a message, and dialect-specific extras."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        values: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.values = list(values)
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class JSONResponse(Response):
    """A JSON response serialised with orjson (datetimes are already strings)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


@dataclass
class Dialect:
    """How one mount point answers errors."""

    name: str
    prefix: str
    render: Callable[[ApiError, Request], Response]
    translate: Callable[[BaseException], ApiError | None]
    # the error for a path under this prefix that no route serves
    not_found: Callable[[Request], ApiError] = field(default=lambda r: ApiError(404, "NotFound", "no such resource"))
    method_not_allowed: Callable[[Request], ApiError] = field(
        default=lambda r: ApiError(405, "MethodNotAllowed", f"{r.method} is not allowed here")
    )
    internal: Callable[[], ApiError] = field(
        default=lambda: ApiError(500, "InternalServerError", "the server failed to answer; try again")
    )
    # the database cannot be reached or is overloaded: retry later
    unavailable: Callable[[], ApiError] = field(
        default=lambda: ApiError(503, "unavailable", "the store is unavailable; retry", headers={"Retry-After": "1"})
    )


class Dialects:
    def __init__(self) -> None:
        self._items: list[Dialect] = []

    def add(self, dialect: Dialect) -> None:
        self._items.append(dialect)
        self._items.sort(key=lambda d: -len(d.prefix))

    def for_path(self, path: str) -> Dialect | None:
        for d in self._items:
            if path == d.prefix or path.startswith(d.prefix + "/"):
                return d
        return None


def plain_error(err: ApiError, request: Request) -> Response:
    """Outside every mount point (the docs, unknown paths): the native shape."""
    return JSONResponse(
        {"error": {"code": err.code, "message": err.message}}, status_code=err.status, headers=err.headers
    )
