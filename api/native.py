"""The native API, through which a control plane writes tasks and follows them.

Mounted at ``/v1``; ``Authorization: Bearer SECRET``; the credential's workspace is the only one reached. Every POST
takes an ``Idempotency-Key``: a retry with the same key and body returns the first answer and writes nothing.

    POST /v1/jobs/{job}/executions/{execution}/tasks                          add tasks, all or nothing (201)
    GET  /v1/jobs/{job}/executions/{execution}/tasks                          list (cursor limit sort q state filter)
    GET  /v1/jobs/{job}/executions/{execution}/tasks/{task}                   one task (ETag: "VERSION"; asOf)
    POST /v1/jobs/{job}/executions/{execution}/tasks/{task}/transitions       record a transition (If-Match)
    POST /v1/jobs/{job}/executions/{execution}/tasks/{task}/conditions        record a Blaxel condition (If-Match)
    GET  /v1/jobs/{job}/executions/{execution}/tasks/{task}/events            the task's history
    GET  /v1/jobs/{job}/executions/{execution}/counts                         tasks and slots per state (asOf)
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Path, Query
from starlette.requests import Request
from starlette.responses import Response

from eventstore import (
    ConcurrencyError,
    IdempotencyConflict,
    IllegalTransition,
    RecordedEvent,
    Scope,
    State,
    Task,
    TaskExists,
    TaskNotFound,
    ValidationError,
    VersionMismatch,
    states_for,
)
from projections.filters import Cmp

from .auth import AuthFailure, authenticate_bearer, bearer_token
from .batch_filter import and_filter
from .common import (
    BadJson,
    BodyTooLarge,
    credentials_of,
    direct_get,
    documented,
    nul_query_parameter,
    offload,
    parse_json,
    printable,
    read_body,
    short_read,
    store_of,
)
from .cursors import CursorError
from .errors import ApiError, Dialect, JSONResponse

PREFIX = "/v1"
SORTS = ("createdAt:desc", "createdAt:asc", "name:asc", "name:desc", "number:asc")
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_TASKS = 10_000
TRANSITION_FIELDS = {"to", "exitCode", "reason", "message", "failureInfo", "nodeInfo"}

router = APIRouter(tags=["native"])


def render(err: ApiError, request: Request) -> Response:
    body: dict[str, Any] = {"code": err.code, "message": err.message, **err.extra}
    return JSONResponse({"error": body}, status_code=err.status, headers=err.headers)


def translate(exc: BaseException) -> ApiError | None:
    if isinstance(exc, AuthFailure):
        return ApiError(401, "unauthenticated", str(exc), headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, BodyTooLarge):
        return ApiError(413, "body_too_large", str(exc))
    if isinstance(exc, BadJson):
        return ApiError(400, "invalid_json", str(exc))
    if isinstance(exc, TaskNotFound):
        return ApiError(404, "task_not_found", str(exc), extra={"taskId": exc.task_id})
    if isinstance(exc, TaskExists):
        return ApiError(409, "task_exists", str(exc), extra={"taskId": exc.task_id})
    if isinstance(exc, IllegalTransition):
        return ApiError(
            409,
            "illegal_transition",
            str(exc),
            extra={"taskId": exc.task_id, "current": exc.current, "requested": exc.requested},
        )
    if isinstance(exc, VersionMismatch):
        return ApiError(412, "version_mismatch", str(exc), extra={"expected": exc.expected, "actual": exc.actual})
    if isinstance(exc, IdempotencyConflict):
        return ApiError(422, "idempotency_key_reused", str(exc))
    if isinstance(exc, CursorError):
        return ApiError(400, "invalid_cursor", exc.reason, extra={"field": "cursor"})
    if isinstance(exc, ValidationError):
        return ApiError(400, "invalid", str(exc), extra={"field": exc.field})
    if isinstance(exc, ConcurrencyError):
        return ApiError(
            409,
            "concurrent_update",
            "too many concurrent changes to the same task; retry",
            headers={"Retry-After": "1"},
        )
    return None


DIALECT = Dialect(
    name="native",
    prefix=PREFIX,
    render=render,
    translate=translate,
    not_found=lambda r: ApiError(404, "not_found", f"no such resource: {r.url.path}"),
    method_not_allowed=lambda r: ApiError(405, "method_not_allowed", f"{r.method} is not allowed on {r.url.path}"),
    internal=lambda: ApiError(500, "internal", "the server failed to answer; try again"),
)


class Context:
    def __init__(self, request: Request, workspace: str) -> None:
        self.request = request
        self.workspace = workspace
        self.store = store_of(request)

    def scope(self, job: str, execution: str) -> Scope:
        return Scope(self.workspace, job, execution)

    def existing_scope(self, job: str, execution: str) -> Scope:
        try:
            scope = Scope(self.workspace, job, execution)
        except ValidationError:
            raise ApiError(404, "not_found", "no such job or execution") from None
        if not self.store.queries.scope_exists(scope):
            raise ApiError(404, "not_found", f"job {job!r} has no execution {execution!r} in this workspace")
        return scope

    @property
    def request_id(self) -> str | None:
        key = self.request.headers.get("idempotency-key")
        if key is None:
            return None
        if not printable(key, 120):
            raise ApiError(
                400, "invalid", "Idempotency-Key is 1 to 120 printable characters", extra={"field": "Idempotency-Key"}
            )
        return f"v1:{key}"


_AUTH_HEADER = (("authorization", "Bearer SECRET"),)


async def context(
    request: Request,
    authorization: str | None = Header(None, description="Bearer SECRET"),
) -> Context:
    cred = await authenticate_bearer(bearer_token(authorization), credentials_of(request))
    bad = nul_query_parameter(request)
    if bad is not None:
        raise ApiError(400, "invalid", "query parameters must not contain NUL characters", extra={"field": bad})
    return Context(request, cred.workspace)


async def body_of(request: Request) -> bytes:
    return await read_body(request)


def _expected_version(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    value = if_match.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    # str.isdigit() also holds for '²', which int() refuses; past 18 digits no task's version (a 32-bit number), and
    # the 412 naming it would not serialise (a 500)
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise ApiError(400, "invalid", 'If-Match is a task version in quotes, such as "3"', extra={"field": "If-Match"})
    return int(value)


def _task_response(task: Task, status: int = 200) -> Response:
    return JSONResponse(task.to_dict(), status_code=status, headers={"ETag": f'"{task.version}"'})


def _object(body: bytes) -> dict[str, Any]:
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise ValidationError("", "the body is a JSON object")
    return doc


_JSON_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}


@router.post(
    "/jobs/{job}/executions/{execution}/tasks",
    status_code=201,
    summary="Add tasks (all or nothing)",
    openapi_extra=_JSON_BODY,
)
def add_tasks(
    job: str = Path(...),
    execution: str = Path(...),
    ctx: Context = Depends(context),
    body: bytes = Depends(body_of),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> Response:
    doc = _object(body)
    unknown = set(doc) - {"tasks"}
    if unknown:
        raise ValidationError(sorted(unknown)[0], "unknown field")
    tasks = doc.get("tasks")
    if not isinstance(tasks, list):
        raise ValidationError("tasks", "is required (a list of task specifications)")
    if len(tasks) > MAX_TASKS:
        raise ValidationError("tasks", f"at most {MAX_TASKS} tasks per request")
    scope = ctx.scope(job, execution)
    added = ctx.store.add_tasks(scope, tasks, request_id=ctx.request_id)
    return JSONResponse({"tasks": [t.to_dict() for t in added]}, status_code=201)


@router.post(
    "/jobs/{job}/executions/{execution}/tasks/{task}/transitions",
    summary="Record a transition",
    openapi_extra=_JSON_BODY,
)
def transition(
    job: str = Path(...),
    execution: str = Path(...),
    task: str = Path(...),
    ctx: Context = Depends(context),
    body: bytes = Depends(body_of),
    if_match: str | None = Header(None, alias="If-Match"),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> Response:
    doc = _object(body)
    unknown = set(doc) - TRANSITION_FIELDS
    if unknown:
        raise ValidationError(sorted(unknown)[0], "unknown field")
    to = doc.get("to")
    if not isinstance(to, str):
        raise ValidationError("to", f"is required: one of {', '.join(s.value for s in State)}")
    for name in ("failureInfo", "nodeInfo"):
        if doc.get(name) is not None and not isinstance(doc[name], dict):
            raise ValidationError(name, "must be an object")
    scope = ctx.scope(job, execution)
    result = ctx.store.transition(
        scope,
        task,
        to,
        exit_code=doc.get("exitCode"),
        failure_info=doc.get("failureInfo"),
        node_info=doc.get("nodeInfo"),
        reason=doc.get("reason"),
        message=doc.get("message"),
        expected_version=_expected_version(if_match),
        request_id=ctx.request_id,
    )
    return _task_response(result)


@router.post(
    "/jobs/{job}/executions/{execution}/tasks/{task}/conditions",
    summary="Record a Blaxel condition",
    openapi_extra=_JSON_BODY,
)
def record_condition(
    job: str = Path(...),
    execution: str = Path(...),
    task: str = Path(...),
    ctx: Context = Depends(context),
    body: bytes = Depends(body_of),
    if_match: str | None = Header(None, alias="If-Match"),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> Response:
    doc = _object(body)
    scope = ctx.scope(job, execution)
    result = ctx.store.record_condition(
        scope, task, doc, expected_version=_expected_version(if_match), request_id=ctx.request_id
    )
    return _task_response(result)


@router.get("/jobs/{job}/executions/{execution}/tasks/{task}", summary="Get a task")
def get_task(
    job: str = Path(...),
    execution: str = Path(...),
    task: str = Path(...),
    as_of: str | None = Query(None, alias="asOf", description=(
        "a log position: the task as it was when the log ended there (404 if it did not exist yet)")),
    ctx: Context = Depends(context),
) -> Response:
    scope = ctx.scope(job, execution)
    now = ctx.store.get_task(scope, task)  # the id checked, and found: tasks are never removed
    if as_of is None or as_of == "":
        return _task_response(now)
    return _task_response(ctx.store.queries.task_as_of(scope, task, _position("asOf", as_of)))


def _position(name: str, text: str) -> int:
    """A log position given as a query parameter."""
    if not (text.isascii() and text.isdigit()) or len(text) > 18:  # not '²' or '١': ASCII digits
        raise ValidationError(name, "must be a log position (a whole number)")
    return int(text)


def _event_json(e: RecordedEvent) -> dict[str, Any]:
    out = e.to_dict()
    if "requestId" in out:  # as the caller sent it, without the dialect's namespace
        out["requestId"] = out["requestId"].removeprefix("v1:").removeprefix("batch:")
    return out


@router.get("/jobs/{job}/executions/{execution}/tasks/{task}/events", summary="A task's history")
def task_events(
    job: str = Path(...),
    execution: str = Path(...),
    task: str = Path(...),
    ctx: Context = Depends(context),
) -> Response:
    events = ctx.store.history(ctx.scope(job, execution), task)
    return JSONResponse({"events": [_event_json(e) for e in events]})


_LIST_QUERY = (
    ("cursor", None),
    ("limit", "1 to 200 (default 50; larger values are clamped)"),
    ("sort", ", ".join(SORTS)),
    ("q", "search in id, display name and labels"),
    ("state", "comma-separated states (canonical or any dialect's)"),
    ("filter", "an Azure Batch $filter expression (with state: tasks that match both)"),
)


@direct_get(
    router,
    "/jobs/{job}/executions/{execution}/tasks",
    summary="List tasks",
    openapi_extra=documented(path=("job", "execution"), query=_LIST_QUERY, header=_AUTH_HEADER),
)
async def list_tasks(request: Request) -> Response:
    # reads its own parameters (see api.common.documented): the busiest route
    ctx = await context(request, request.headers.get("authorization"))
    path, query = request.path_params, request.query_params
    call = (_list_tasks, ctx, path["job"], path["execution"], *(query.get(name) for name, _ in _LIST_QUERY))
    if query.get("q") or query.get("state") or query.get("filter"):  # may scan up to the scan budget: not short
        return await offload(*call)
    return await short_read(request, *call)


def _list_tasks(
    ctx: Context,
    job: str,
    execution: str,
    cursor: str | None,
    limit: str | None,
    sort: str | None,
    q: str | None,
    state: str | None,
    filter_: str | None = None,
) -> Response:
    n = DEFAULT_LIMIT
    if limit is not None and limit != "":
        try:
            n = int(limit)
        except ValueError:
            raise ValidationError("limit", "must be an integer") from None
        if n < 1:
            raise ValidationError("limit", "must be at least 1")
        n = min(n, MAX_LIMIT)
    order = sort or "createdAt:desc"
    if order not in SORTS:
        raise ValidationError("sort", f"must be one of {', '.join(SORTS)}")
    where = None
    if state:
        wanted: set[State] = set()
        for name in state.split(","):
            try:
                wanted |= states_for(name.strip())
            except KeyError:
                raise ValidationError("state", f"{name.strip()!r} is not a state") from None
        where = Cmp("state", "eq", frozenset(wanted))
    where = and_filter(where, filter_)
    scope = ctx.existing_scope(job, execution)
    page = ctx.store.queries.list_tasks(scope, sort=order, limit=n, cursor=cursor or None, q=q, where=where)
    return JSONResponse(
        {
            "tasks": [t.to_dict() for t in page.items],
            "hasMore": bool(page.has_more and page.next_cursor),
            "nextCursor": page.next_cursor or "",
            "total": page.total,
        }
    )


_COUNTS_QUERY = (
    ("asOf", "a log position: the counts as they were when the log ended there (an earlier answer's position), "
             "folded from the newest snapshot at or before it"),
)


@direct_get(
    router,
    "/jobs/{job}/executions/{execution}/counts",
    summary="Task and slot counts per state",
    openapi_extra=documented(path=("job", "execution"), query=_COUNTS_QUERY, header=_AUTH_HEADER),
)
async def counts(request: Request) -> Response:
    # reads its own parameters (see api.common.documented)
    ctx = await context(request, request.headers.get("authorization"))
    path = request.path_params
    return await offload(_counts, ctx, path["job"], path["execution"], request.query_params.get("asOf"))


def _counts(ctx: Context, job: str, execution: str, as_of: str | None = None) -> Response:
    scope = ctx.existing_scope(job, execution)
    if as_of is None or as_of == "":
        summary = ctx.store.queries.counts(scope)
    else:
        summary = ctx.store.queries.counts_as_of(scope, _position("asOf", as_of))
    return JSONResponse(
        {
            "position": summary.position,
            "states": {s.value: int(summary.states.get(s, 0)) for s in State},
            "slots": {s.value: int(summary.slots.get(s, 0)) for s in State},
            "total": summary.total,
            "active": summary.active,
            "running": summary.running,
            "completed": summary.completed,
            "succeeded": summary.succeeded,
            "failed": summary.failed,
            "validationStatus": summary.validation_status,
            "validationDetail": summary.validation_detail,
        }
    )


__all__ = ["DIALECT", "PREFIX", "router"]
