"""The HTTP service: one FastAPI application, four mount points, one store behind them.

/batch       Azure Batch (SharedKey)                    api.batch
/omics       AWS HealthOmics (SigV4)                    api.omics
/blaxel/v0   Blaxel (X-Blaxel-Authorization bearer)     api.blaxel
/v1          the native API (Authorization bearer)      api.native
/docs        OpenAPI documentation

from api import create_app
app = create_app(taskstore.open_store("sqlite:///taskstore.db"))
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from . import batch, blaxel, native, omics
from eventstore import ValidationError

from .common import path_of
from .credentials import CredentialStore, migrate
from .errors import ApiError, Dialects, JSONResponse, plain_error

log = logging.getLogger("taskstore.api")

DESCRIPTION = __doc__


class Guard:
    """ASGI middleware: an exception that escaped every handler still gets the dialect's error response (and the
    connection stays open), instead of Starlette's bare 500 and a dropped keep-alive connection."""

    def __init__(self, app: Any, answer: Any) -> None:
        self.app = app
        self.answer = answer

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if started:
                raise
            response = self.answer(Request(scope), exc)
            await response(scope, receive, send)


class RequestIds:
    """ASGI middleware: ``request-id`` on every Batch response (``client-request-id`` echoed unless the caller says
    ``return-client-request-id: false``), ``x-amzn-RequestId`` on every HealthOmics response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        extra: list[tuple[bytes, bytes]] = []
        rid = str(uuid.uuid4())
        if path.startswith(batch.PREFIX + "/") or path == batch.PREFIX:
            scope["taskstore.request_id"] = rid
            extra.append((b"request-id", rid.encode()))
            headers = {k.lower(): v for k, v in scope.get("headers", [])}
            client_id = headers.get(b"client-request-id")
            if client_id is not None and headers.get(b"return-client-request-id", b"").lower() != b"false":
                extra.append((b"client-request-id", client_id))
        elif path.startswith(omics.PREFIX + "/"):
            extra.append((b"x-amzn-requestid", rid.encode()))
        if not extra:
            await self.app(scope, receive, send)
            return

        async def send_with_ids(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_ids)


def create_app(store: Any, *, credentials: CredentialStore | None = None) -> FastAPI:
    """The application over ``store`` (a :class:`taskstore.TaskStore`); creates the api package's tables."""
    migrate(store.engine)
    creds = credentials or CredentialStore(store.engine)
    creds.reload()
    app = FastAPI(
        title="taskstore",
        summary="An event-sourced task state store speaking Azure Batch, AWS HealthOmics, Blaxel and its own API.",
        description=DESCRIPTION,
        version="0.1.0",
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.store = store
    app.state.credentials = creds
    dialects = Dialects()
    app.state.dialects = dialects
    for module in (batch, omics, blaxel, native):
        app.include_router(module.router, prefix=module.PREFIX)
        dialects.add(module.DIALECT)

    def answer(request: Request, exc: BaseException) -> Response:
        dialect = dialects.for_path(path_of(request))
        err: ApiError | None = exc if isinstance(exc, ApiError) else None
        if err is None and dialect is not None:
            err = dialect.translate(exc)
        if err is None and isinstance(exc, StarletteHTTPException):
            if exc.status_code == 404 and dialect is not None:
                err = dialect.not_found(request)
            elif exc.status_code == 405 and dialect is not None:
                err = dialect.method_not_allowed(request)
            else:
                code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
                err = ApiError(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))
        if err is None and isinstance(exc, RequestValidationError):
            first = (exc.errors() or [{}])[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            err = ApiError(400, "InvalidRequest", f"{where}: {first.get('msg', 'invalid request')}")
        if err is None and isinstance(exc, DataError) and dialect is not None:
            # input the validation let through but the database refuses: still the caller's input
            err = dialect.translate(ValidationError("", f"the input cannot be stored: {exc.orig}"))
        if err is None and isinstance(exc, (OperationalError, InterfaceError, SATimeoutError)):
            log.warning("store unavailable answering %s %s: %s", request.method, request.url.path, exc)
            err = dialect.unavailable() if dialect is not None else ApiError(503, "unavailable", "retry")
        if err is None:
            log.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
            err = dialect.internal() if dialect is not None else ApiError(500, "internal", "internal server error")
        return (dialect.render if dialect is not None else plain_error)(err, request)

    async def handler(request: Request, exc: Exception) -> Response:
        return answer(request, exc)

    app.add_exception_handler(Exception, handler)
    app.add_exception_handler(ApiError, handler)
    app.add_exception_handler(StarletteHTTPException, handler)
    app.add_exception_handler(RequestValidationError, handler)
    from eventstore import EventStoreError

    from .auth import AuthFailure
    from .common import BadJson, BodyTooLarge

    for cls in (EventStoreError, AuthFailure, BadJson, BodyTooLarge):
        app.add_exception_handler(cls, handler)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:  # no I/O: answered on the event loop, without a trip to the thread pool
        return JSONResponse({"status": "ok"})

    app.add_middleware(Guard, answer=answer)
    app.add_middleware(RequestIds)  # outermost: its headers go on every answer, the guard's included
    return app


__all__ = ["create_app"]
