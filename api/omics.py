"""AWS HealthOmics: ListRunTasks and GetRunTask, for boto3's unmodified ``omics`` client.

Mounted at ``/omics`` (``endpoint_url="http://HOST:PORT/omics"``, with ``Config(inject_host_prefix=False)``).
Authentication is Signature Version 4 (service ``omics``, any region) with a credential's key id as the access key
id and its secret as the secret access key. A run ``R`` (digits) is the scope (workspace, ``R``, ``default``); a
task's id in this dialect is its number, given when it was added.

    GET /run/{id}/task?status=&maxResults=&startingToken=     ListRunTasks    {"items", "nextToken"}
    GET /run/{id}/task/{taskId}                                GetRunTask
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Path, Query
from starlette.requests import Request
from starlette.responses import Response

from eventstore import (
    ConcurrencyError,
    IdempotencyConflict,
    Scope,
    Task,
    TaskNotFound,
    ValidationError,
)
from eventstore.lifecycle import HEALTHOMICS, states_for
from projections.filters import Cmp

from .auth import AuthFailure, authenticate_sigv4
from .common import BadJson, BodyTooLarge, credentials_of, nul_query_parameter, read_body, store_of
from .cursors import CursorError
from .errors import ApiError, Dialect, JSONResponse

PREFIX = "/omics"
SERVICE = "omics"
DIGITS = re.compile(r"[0-9]{1,18}")  # with fullmatch: "$" would also pass a trailing newline
INTEGER = re.compile(r"-?[0-9]+")
MAX_RESULTS = 100
MAX_TOKEN = 128
STATUSES = ("PENDING", "STARTING", "RUNNING", "STOPPING", "COMPLETED", "CANCELLED", "FAILED")
_UUID_NAMESPACE = uuid.UUID("5b0c3f0e-6d1c-4c39-9a57-7461736b7374")

router = APIRouter(tags=["AWS HealthOmics"])


def render(err: ApiError, request: Request) -> Response:
    headers = {"x-amzn-ErrorType": err.code, **err.headers}
    return JSONResponse({"message": err.message, **err.extra}, status_code=err.status, headers=headers)


def validation(message: str) -> ApiError:
    return ApiError(400, "ValidationException", message)


def invalid(problems: list[str]) -> ApiError:
    """AWS's ValidationException for the request's constraint violations, worded as AWS words them."""
    n = len(problems)
    return validation(f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(problems))


def _violation(name: str, value: str, constraint: str) -> str:
    return f"Value '{value}' at '{name}' failed to satisfy constraint: Member must {constraint}"


def id_problems(name: str, value: str) -> list[str]:
    """A run or task id: 1 to 18 characters, digits only (``TaskId``/``RunId`` in the service model)."""
    out = []
    if len(value) > 18:
        out.append(_violation(name, value, "have length less than or equal to 18"))
    if not re.fullmatch(r"[0-9]+", value):
        out.append(_violation(name, value, "satisfy regular expression pattern: [0-9]+"))
    return out


def not_found(message: str) -> ApiError:
    return ApiError(404, "ResourceNotFoundException", message)


def translate(exc: BaseException) -> ApiError | None:
    if isinstance(exc, AuthFailure):
        return ApiError(403, "AccessDeniedException", str(exc))
    if isinstance(exc, (BodyTooLarge, BadJson)):
        return validation(str(exc))
    if isinstance(exc, TaskNotFound):
        return not_found("The requested task could not be found.")
    if isinstance(exc, CursorError):
        return validation(f"Invalid startingToken: {exc.reason}")
    if isinstance(exc, (ValidationError, IdempotencyConflict)):
        return validation(str(exc))
    if isinstance(exc, ConcurrencyError):
        return ApiError(429, "ThrottlingException", "The request was throttled; retry it.")
    return None


DIALECT = Dialect(
    name="omics",
    prefix=PREFIX,
    render=render,
    translate=translate,
    not_found=lambda r: ApiError(404, "UnknownOperationException", "The requested operation is not supported."),
    method_not_allowed=lambda r: ApiError(
        405, "UnknownOperationException", "The requested operation is not supported."
    ),
    internal=lambda: ApiError(500, "InternalServerException", "An unexpected error occurred. Try the request again."),
    unavailable=lambda: ApiError(500, "InternalServerException", "The service is unavailable. Try the request again."),
)


class Context:
    def __init__(self, request: Request, workspace: str) -> None:
        self.request = request
        self.workspace = workspace
        self.store = store_of(request)

    def run_scope(self, run_id: str) -> Scope:
        if not DIGITS.fullmatch(run_id):
            raise invalid(id_problems("id", run_id))
        scope = Scope(self.workspace, run_id)
        if not self.store.queries.scope_exists(scope):
            raise not_found("The requested run could not be found.")
        return scope


async def context(request: Request) -> Context:
    body = await read_body(request)
    cred = await authenticate_sigv4(request, body, credentials_of(request), service=SERVICE)
    bad = nul_query_parameter(request)
    if bad is not None:
        raise validation(f"Value at '{bad}' failed to satisfy constraint: Member must not contain NUL characters")
    return Context(request, cred.workspace)


def task_uuid(task: Task) -> str:
    return str(uuid.uuid5(_UUID_NAMESPACE, f"{task.scope}/{task.key}"))


def list_item(task: Task) -> dict[str, Any]:
    spec = task.spec
    resources = spec.get("resources") or {}
    out: dict[str, Any] = {
        "taskId": str(task.number),
        "status": HEALTHOMICS[task.state],
        "name": spec.get("displayName") or task.task_id,
        "cacheHit": False,
        "creationTime": task.created_at,
        "uuid": task_uuid(task),
    }
    for name in ("cpus", "memory", "gpus", "instanceType"):
        if resources.get(name) is not None:
            out[name] = resources[name]
    if task.start_time:
        out["startTime"] = task.start_time
    if task.end_time:
        out["stopTime"] = task.end_time
    return out


def task_detail(task: Task) -> dict[str, Any]:
    out = list_item(task)
    if task.status_message:
        out["statusMessage"] = task.status_message
    failure = task.failure_info or {}
    if failure.get("message") or failure.get("code"):
        out["failureReason"] = failure.get("message") or failure.get("code")
    image = (task.spec.get("containerSettings") or {}).get("imageName")
    if image:
        out["imageDetails"] = {"image": image, "sourceImage": image}
    return out


@router.get("/run/{run_id}/task", summary="ListRunTasks")
def list_run_tasks(
    run_id: str = Path(..., description="the run's id (digits)"),
    ctx: Context = Depends(context),
    status: str | None = Query(None, description=" | ".join(STATUSES)),
    max_results: str | None = Query(None, alias="maxResults", description="1 to 100"),
    starting_token: str | None = Query(None, alias="startingToken"),
) -> Response:
    problems = id_problems("id", run_id)
    limit = MAX_RESULTS
    if max_results is not None:
        try:
            given = int(max_results) if INTEGER.fullmatch(max_results) else None
        except ValueError:  # more digits than int() takes
            given = None
        if given is None:
            problems.append(_violation("maxResults", max_results, "be an integer"))
        elif given < 1:
            problems.append(_violation("maxResults", str(given), "have value greater than or equal to 1"))
        elif given > MAX_RESULTS:
            problems.append(_violation("maxResults", str(given), f"have value less than or equal to {MAX_RESULTS}"))
        else:
            limit = given
    where = None
    if status is not None:
        if status not in STATUSES:
            problems.append(_violation("status", status, f"satisfy enum value set: [{', '.join(STATUSES)}]"))
        else:
            where = Cmp("state", "eq", states_for(status, "omics"))
    if starting_token is not None:
        if len(starting_token) < 1:
            problems.append(_violation("startingToken", starting_token, "have length greater than or equal to 1"))
        elif len(starting_token) > MAX_TOKEN:
            problems.append(
                _violation("startingToken", starting_token, f"have length less than or equal to {MAX_TOKEN}")
            )
    if problems:
        raise invalid(problems)
    scope = ctx.run_scope(run_id)
    page = ctx.store.queries.list_tasks(scope, sort="number:asc", limit=limit, cursor=starting_token, where=where)
    out: dict[str, Any] = {"items": [list_item(t) for t in page.items]}
    if page.has_more and page.next_cursor:
        if len(page.next_cursor) > MAX_TOKEN:  # pragma: no cover - the store's cursors for this sort are short
            raise ApiError(500, "InternalServerException", "the next token would be longer than 128 characters")
        out["nextToken"] = page.next_cursor
    return JSONResponse(out)


@router.get("/run/{run_id}/task/{task_id}", summary="GetRunTask")
def get_run_task(
    run_id: str = Path(..., description="the run's id (digits)"),
    task_id: str = Path(..., description="the task's id (digits)"),
    ctx: Context = Depends(context),
) -> Response:
    problems = id_problems("id", run_id) + id_problems("taskId", task_id)
    if problems:
        raise invalid(problems)
    scope = ctx.run_scope(run_id)
    task = ctx.store.queries.get_by_number(scope, int(task_id))
    return JSONResponse(task_detail(task))


__all__ = ["DIALECT", "PREFIX", "router"]
