"""Blaxel: ListJobExecutionTasks, for the ``blaxel`` SDK's generated control-plane client.

Mounted at ``/blaxel/v0`` (``client.with_base_url("http://HOST:PORT/blaxel/v0")``). Authentication:
``X-Blaxel-Authorization: Bearer SECRET`` and ``X-Blaxel-Workspace: WORKSPACE`` (the credential's own workspace).
Job ``J``, execution ``E`` is the scope (workspace, ``J``, ``E``).

    GET /jobs/{jobId}/executions/{executionId}/tasks?cursor=&limit=&sort=&q=
        -> {"data": [task], "meta": {"hasMore", "nextCursor", "total"}}
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header
from starlette.requests import Request
from starlette.responses import Response

from eventstore import ConcurrencyError, IdempotencyConflict, Scope, Task, TaskNotFound, ValidationError
from eventstore.lifecycle import BLAXEL

from .auth import AuthFailure, authenticate_bearer, bearer_token
from .common import (
    BadJson,
    BodyTooLarge,
    credentials_of,
    direct_get,
    documented,
    nul_query_parameter,
    offload,
    short_read,
    store_of,
)
from .cursors import CursorError
from .errors import ApiError, Dialect, JSONResponse

PREFIX = "/blaxel/v0"
SORTS = ("createdAt:desc", "createdAt:asc", "name:asc", "name:desc")
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_Q = 200

router = APIRouter(tags=["Blaxel"])


def render(err: ApiError, request: Request) -> Response:
    return JSONResponse(
        {"error": err.message, "code": err.status, **err.extra}, status_code=err.status, headers=err.headers
    )


def translate(exc: BaseException) -> ApiError | None:
    if isinstance(exc, AuthFailure):
        return ApiError(401, "unauthorized", str(exc))
    if isinstance(exc, (BodyTooLarge, BadJson)):
        return ApiError(400, "bad_request", str(exc))
    if isinstance(exc, TaskNotFound):
        return ApiError(404, "not_found", "task not found")
    if isinstance(exc, CursorError):
        return ApiError(400, "bad_cursor", f"invalid cursor: {exc.reason}")
    if isinstance(exc, (ValidationError, IdempotencyConflict)):
        return ApiError(400, "bad_request", str(exc))
    if isinstance(exc, ConcurrencyError):
        return ApiError(429, "busy", "too many concurrent changes; retry", headers={"Retry-After": "1"})
    return None


DIALECT = Dialect(
    name="blaxel",
    prefix=PREFIX,
    render=render,
    translate=translate,
    not_found=lambda r: ApiError(404, "not_found", "not found"),
    method_not_allowed=lambda r: ApiError(405, "method_not_allowed", f"{r.method} is not allowed here"),
    internal=lambda: ApiError(500, "internal", "internal server error"),
    unavailable=lambda: ApiError(503, "unavailable", "service unavailable; retry", headers={"Retry-After": "1"}),
)


async def workspace_of(
    request: Request,
    authorization: str | None = Header(None, alias="X-Blaxel-Authorization", description="Bearer SECRET"),
    workspace: str | None = Header(None, alias="X-Blaxel-Workspace"),
) -> str:
    # An Authorization header is accepted too, for callers that send the standard one.
    token = bearer_token(authorization or request.headers.get("authorization"))
    cred = await authenticate_bearer(token, credentials_of(request))
    if workspace is not None and workspace != cred.workspace:
        raise ApiError(403, "forbidden", f"the API key does not belong to workspace {workspace!r}")
    bad = nul_query_parameter(request)
    if bad is not None:
        raise ApiError(400, "bad_request", f"query parameter {bad!r} must not contain NUL characters")
    return cred.workspace


def task_json(task: Task) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": task.task_id,
        "createdAt": task.created_at,
        "updatedAt": task.last_modified,
    }
    for key, value in (
        ("scheduledAt", task.scheduled_at),
        ("startedAt", task.start_time),
        ("completedAt", task.end_time),
    ):
        if value:
            metadata[key] = value
    if task.display_name:
        metadata["displayName"] = task.display_name
    if task.labels:
        metadata["labels"] = dict(task.labels)
    spec: dict[str, Any] = {"maxRetries": task.max_retries}
    timeout = task.spec.get("timeout") or (task.spec.get("constraints") or {}).get("maxWallClockTime")
    if timeout:
        spec["timeout"] = timeout
    return {
        "status": BLAXEL[task.state],
        "metadata": metadata,
        "spec": spec,
        "conditions": [dict(c) for c in task.conditions],
    }


_LIST_QUERY = (
    ("cursor", "meta.nextCursor of the previous page"),
    ("limit", "1 to 200 (default 50; larger values are clamped)"),
    ("sort", ", ".join(SORTS)),
    ("q", "search in name, display name and labels"),
)


@direct_get(
    router,
    "/jobs/{job_id}/executions/{execution_id}/tasks",
    summary="ListJobExecutionTasks",
    description="One cursor-paginated page of an execution's tasks.",
    openapi_extra=documented(
        path=("job_id", "execution_id"),
        query=_LIST_QUERY,
        header=(("X-Blaxel-Authorization", "Bearer SECRET"), ("X-Blaxel-Workspace", None)),
    ),
)
async def list_job_execution_tasks(request: Request) -> Response:
    # reads its own parameters (see api.common.documented): the busiest route
    headers = request.headers
    workspace = await workspace_of(request, headers.get("x-blaxel-authorization"), headers.get("x-blaxel-workspace"))
    path, query = request.path_params, request.query_params
    call = (
        _list_tasks,
        store_of(request),
        workspace,
        path["job_id"],
        path["execution_id"],
        *(query.get(name) for name, _ in _LIST_QUERY),
    )
    if query.get("q"):  # a search may scan up to the store's scan budget: not a short read
        return await offload(*call)
    return await short_read(request, *call)


def _list_tasks(
    store: Any,
    workspace: str,
    job_id: str,
    execution_id: str,
    cursor: str | None,
    limit: str | None,
    sort: str | None,
    q: str | None,
) -> Response:
    n = DEFAULT_LIMIT
    if limit is not None and limit != "":
        try:
            n = int(limit)
        except ValueError:
            raise ApiError(400, "bad_request", f"limit must be an integer, not {limit!r}") from None
        if n < 1:
            raise ApiError(400, "bad_request", "limit must be at least 1")
        n = min(n, MAX_LIMIT)
    order = sort or "createdAt:desc"
    if order not in SORTS:
        raise ApiError(400, "bad_request", f"sort must be one of {', '.join(SORTS)}")
    if q is not None and len(q) > MAX_Q:
        raise ApiError(400, "bad_request", f"q is at most {MAX_Q} characters")
    try:
        scope = Scope(workspace, job_id, execution_id)
    except ValidationError:
        raise ApiError(404, "not_found", "job or execution not found") from None
    if not store.queries.scope_exists(scope):
        raise ApiError(404, "not_found", "job or execution not found")
    page = store.queries.list_tasks(scope, sort=order, limit=n, cursor=cursor or None, q=q)
    return JSONResponse(
        {
            "data": [task_json(t) for t in page.items],
            "meta": {
                "hasMore": bool(page.has_more and page.next_cursor),
                "nextCursor": page.next_cursor or "",
                "total": page.total,
            },
        }
    )


__all__ = ["DIALECT", "PREFIX", "router"]
