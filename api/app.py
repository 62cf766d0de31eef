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
from fastapi.routing import APIRoute
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import compile_path, get_route_path

from . import batch, blaxel, native, omics
from eventstore import ValidationError

from .common import DIRECT, loop_reads, path_of
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
        if path.startswith(batch.PREFIX + "/") or path == batch.PREFIX:
            rid = str(uuid.uuid4())
            scope["taskstore.request_id"] = rid
            extra.append((b"request-id", rid.encode()))
            headers = {k.lower(): v for k, v in scope.get("headers", [])}
            client_id = headers.get(b"client-request-id")
            if client_id is not None and headers.get(b"return-client-request-id", b"").lower() != b"false":
                extra.append((b"client-request-id", client_id))
        elif path.startswith(omics.PREFIX + "/"):
            extra.append((b"x-amzn-requestid", str(uuid.uuid4()).encode()))
        else:  # the other mount points carry no request id
            await self.app(scope, receive, send)
            return

        async def send_with_ids(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_ids)


TELEMETRY = "fastapi.telemetry"  # the scope key of FastAPI's instrumentation, when it is configured


class DirectRoutes:
    """ASGI middleware: a GET of an endpoint registered with :func:`api.common.direct_get` (the list and count
    routes) is answered here, without FastAPI's router, exception middleware and request handler, which cost about
    0.15 ms a request on this project's machine; every other request goes on to FastAPI.

    The route is matched as Starlette matches it (``compile_path`` of the mount point and the route's path, against
    the path below the root path, with the route's converters) and the endpoint gets the same scope keys
    (``path_params``, ``endpoint``, ``route``). An exception it raises gets ``answer``, the function every exception
    handler of the application (and :class:`Guard`) calls. The mount points do not overlap and, within one, no other
    GET route matches a direct route's paths (tests/test_api_direct.py checks both), so the answer is the one FastAPI's
    routing would have chosen. While FastAPI's OpenTelemetry instrumentation observes a request (its request telemetry
    is under ``fastapi.telemetry`` in the scope), the request goes through FastAPI, which names the span's route.
    """

    def __init__(self, app: Any, routes: list[tuple[Any, Any]], answer: Any) -> None:
        self.app = app
        self.answer = answer
        # (compiled path, converters, route)
        self.routes = [(*compile_path(prefix + route.path)[::2], route) for prefix, route in routes]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope.get(TELEMETRY) is None:
            path = get_route_path(scope)
            for regex, convertors, route in self.routes:
                m = regex.match(path)
                if m is None:
                    continue
                params = {k: convertors[k].convert(v) for k, v in m.groupdict().items()}
                scope["path_params"] = {**scope.get("path_params", {}), **params}
                scope["endpoint"] = route.endpoint
                scope["route"] = route
                request = Request(scope, receive, send)
                try:
                    response = await route.endpoint(request)
                except Exception as exc:  # noqa: BLE001 - what the exception handlers do
                    response = self.answer(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def direct_routes(modules: Any) -> list[tuple[str, Any]]:
    """(mount point, route) of every route registered with :func:`api.common.direct_get` in ``modules``."""
    return [
        (module.PREFIX, route)
        for module in modules
        for route in module.router.routes
        if isinstance(route, APIRoute) and getattr(route.endpoint, DIRECT, False)
    ]


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
    app.state.loop_reads = loop_reads(store.engine)  # see api.common.short_read
    dialects = Dialects()
    app.state.dialects = dialects
    # FastAPI tries the routes in the order they were included, every route of a router before the next router's:
    # the native API and Blaxel (the most requested) first. The mount points do not overlap, so the order decides
    # no match.
    modules = (native, blaxel, batch, omics)
    for module in modules:
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
        if err is None and isinstance(exc, ClientDisconnect):
            # the client went away before its body ended: its input, not the server's failure (and no one reads
            # the answer); logging it as an unexpected error would let any client fill the log with tracebacks
            log.debug("client disconnected before its body ended: %s %s", request.method, path_of(request))
            reason = BadJson("the request body ended early: the client disconnected")
            err = dialect.translate(reason) if dialect is not None else None
            err = err or ApiError(400, "bad_request", str(reason))
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

    app.add_middleware(DirectRoutes, routes=direct_routes(modules), answer=answer)
    app.add_middleware(Guard, answer=answer)
    app.add_middleware(RequestIds)  # outermost: its headers go on every answer, the guard's included
    return app


__all__ = ["create_app"]
