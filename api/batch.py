"""Azure Batch: the task operations of the Batch service API, for the unmodified ``azure-batch`` SDKs.

Mounted at ``/batch`` (an endpoint of ``http://HOST:PORT/batch``). Authentication is SharedKey with the workspace as
the account name and a credential's secret as the account key. A job ``J`` is the scope (workspace, ``J``,
``default``).

    POST /jobs/{job}/tasks                       Add Task                  201
    POST /jobs/{job}/addtaskcollection           Add Task Collection       200, a result per task
    GET  /jobs/{job}/tasks                       List Tasks                $filter, $select, $expand, maxresults
    GET  /jobs/{job}/tasks/{task}                Get Task                  ETag, Last-Modified
    GET  /jobs/{job}/taskcounts                  Task Counts
    POST /jobs/{job}/tasks/{task}/terminate      Terminate Task            204
    POST /jobs/{job}/tasks/{task}/reactivate     Reactivate Task           204
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Mapping, Sequence
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Path, Query
from starlette.requests import Request
from starlette.responses import Response

from eventstore import (
    ConcurrencyError,
    IdempotencyConflict,
    IllegalTransition,
    Scope,
    State,
    Task,
    TaskExists,
    TaskNotFound,
    ValidationError,
    VersionMismatch,
)
from eventstore.durations import parse_duration
from eventstore.lifecycle import AZURE_BATCH, AZURE_BATCH_RESULT, TERMINAL
from eventstore.spec import TaskSpec, parse_spec
from eventstore.task import TASK_ADDED, stream_key
from projections.filters import And, Cmp, Expr, Or

from .auth import AuthFailure, authenticate_shared_key
from .batch_filter import BatchFilterError, parse_filter
from .common import (
    BadJson,
    BodyTooLarge,
    base_url,
    credentials_of,
    direct_get,
    documented,
    http_date,
    nul_query_parameter,
    offload,
    parse_json,
    printable,
    read_body,
    store_of,
)
from .cursors import CursorError
from .errors import ApiError, Dialect, JSONResponse

PREFIX = "/batch"
CONTENT_TYPE = "application/json;odata=minimalmetadata"
API_VERSION = re.compile(r"^20\d\d-\d\d-\d\d(\.\d+\.\d+)?$")
MAX_COLLECTION = 100
MAX_BODY = 1024 * 1024
MAX_RESULTS = 1000
INNER_LIMIT = 200
UNLIMITED = "P10675199DT2H48M5.4775807S"
DEFAULT_RETENTION = "P7D"

# Every top-level property of a task, as $select names it.
PROPERTIES = (
    "id",
    "displayName",
    "url",
    "eTag",
    "lastModified",
    "creationTime",
    "exitConditions",
    "state",
    "stateTransitionTime",
    "previousState",
    "previousStateTransitionTime",
    "commandLine",
    "containerSettings",
    "resourceFiles",
    "outputFiles",
    "environmentSettings",
    "affinityInfo",
    "constraints",
    "requiredSlots",
    "userIdentity",
    "executionInfo",
    "nodeInfo",
    "multiInstanceSettings",
    "stats",
    "dependsOn",
    "applicationPackageReferences",
    "authenticationTokenSettings",
)
_BY_LOWER = {p.lower(): p for p in PROPERTIES}
# Spec fields copied as given; everything else is derived from the task's state.
_SPEC_FIELDS = (
    "displayName",
    "commandLine",
    "containerSettings",
    "resourceFiles",
    "outputFiles",
    "environmentSettings",
    "affinityInfo",
    "exitConditions",
    "multiInstanceSettings",
    "dependsOn",
    "applicationPackageReferences",
    "authenticationTokenSettings",
)

router = APIRouter(tags=["Azure Batch"])


# -- errors ----------------------------------------------------------------------------------------------------------


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def render(err: ApiError, request: Request) -> Response:
    rid = request.scope.get("taskstore.request_id", "")
    body: dict[str, Any] = {
        "odata.metadata": (f"{base_url(request)}{PREFIX}/$metadata"
                           "#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element"),
        "code": err.code,
        "message": {"lang": "en-US", "value": f"{err.message}\nRequestId:{rid}\nTime:{_now_iso()}"},
    }
    if err.values:
        body["values"] = [{"key": k, "value": v} for k, v in err.values]
    return JSONResponse(body, status_code=err.status, headers=err.headers, media_type=CONTENT_TYPE)


def _query_error(name: str, value: str, reason: str, *, code: str = "InvalidQueryParameterValue") -> ApiError:
    return ApiError(
        400,
        code,
        f"Value for one of the query parameters specified in the request URI is invalid: {reason}",
        values=[("QueryParameterName", name), ("QueryParameterValue", value), ("Reason", reason)],
    )


def _property_error(field: str, reason: str) -> ApiError:
    if reason == "is required":
        return ApiError(
            400,
            "MissingRequiredProperty",
            f"A required property was not specified in the request body: {field}",
            values=[("PropertyName", field)],
        )
    return ApiError(
        400,
        "InvalidPropertyValue",
        f"The value provided for one of the properties in the request body is invalid: {field}: {reason}",
        values=[("PropertyName", field), ("Reason", reason)],
    )


def _body_error(reason: str) -> ApiError:
    return ApiError(
        400,
        "InvalidRequestBody",
        f"The specified Request Body is not syntactically valid: {reason}",
        values=[("Reason", reason)],
    )


def translate(exc: BaseException) -> ApiError | None:
    if isinstance(exc, AuthFailure):
        return ApiError(
            401,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of Authorization header is formed "
            f"correctly including the signature. {exc}",
            values=[("AuthenticationErrorDetail", str(exc))],
        )
    if isinstance(exc, BodyTooLarge):
        return ApiError(
            413,
            "RequestBodyTooLarge",
            f"The request body is too large and exceeds the maximum permissible limit ({exc.limit} bytes).",
            values=[("MaxLimit", str(exc.limit))],
        )
    if isinstance(exc, BadJson):
        return _body_error(str(exc))
    if isinstance(exc, BatchFilterError):
        return None  # raised with its value by the list operation
    if isinstance(exc, TaskNotFound):
        return ApiError(404, "TaskNotFound", "The specified task does not exist.")
    if isinstance(exc, TaskExists):
        return ApiError(409, "TaskExists", "The specified task already exists.")
    if isinstance(exc, VersionMismatch):
        return ApiError(412, "ConditionNotMet", "The condition specified using HTTP conditional header(s) is not met.")
    if isinstance(exc, CursorError):
        return _query_error("$skiptoken", "", str(exc))
    if isinstance(exc, IdempotencyConflict):
        return ApiError(
            400,
            "InvalidHeaderValue",
            "The value for one of the HTTP headers is not in the correct format: client-request-id "
            "was already used for a different request",
            values=[("HeaderName", "client-request-id")],
        )
    if isinstance(exc, ValidationError):
        return _property_error(exc.field, exc.reason)
    if isinstance(exc, ConcurrencyError):
        return ApiError(503, "ServerBusy", "The server is busy; retry the request.", headers={"Retry-After": "1"})
    if isinstance(exc, IllegalTransition):
        return ApiError(
            409,
            "TaskCompleted" if exc.current in {s.value for s in TERMINAL} else "OperationInvalidForCurrentState",
            str(exc),
        )
    return None


DIALECT = Dialect(
    name="batch",
    prefix=PREFIX,
    render=render,
    translate=translate,
    not_found=lambda r: ApiError(404, "ResourceNotFound", "The specified resource does not exist."),
    method_not_allowed=lambda r: ApiError(
        405, "UnsupportedHttpVerb", f"The resource doesn't support the specified HTTP verb {r.method}."
    ),
    internal=lambda: ApiError(
        500, "InternalError", "The server encountered an internal error. Please retry the request."
    ),
    unavailable=lambda: ApiError(
        503,
        "ServerBusy",
        "The server is currently unable to receive requests. Please retry your request.",
        headers={"Retry-After": "1"},
    ),
)


# -- the request's context -------------------------------------------------------------------------------------------


class Context:
    def __init__(self, request: Request, workspace: str, api_version: str) -> None:
        self.request = request
        self.workspace = workspace
        self.api_version = api_version
        self.store = store_of(request)

    def scope(self, job_id: str, *, adding: bool = False) -> Scope:
        try:
            return Scope(self.workspace, job_id)
        except ValidationError as exc:
            if adding:
                raise ApiError(
                    400, "InvalidUri", f"The requested URI does not represent any resource on the server: {exc.reason}"
                ) from None
            raise ApiError(404, "JobNotFound", "The specified job does not exist.") from None

    def job_exists(self, scope: Scope) -> bool:
        return self.store.queries.scope_exists(scope)

    def missing(self, scope: Scope) -> ApiError:
        if not self.job_exists(scope):
            return ApiError(404, "JobNotFound", "The specified job does not exist.")
        return ApiError(404, "TaskNotFound", "The specified task does not exist.")

    @property
    def root(self) -> str:
        return base_url(self.request) + PREFIX

    def task_url(self, scope: Scope, task_id: str) -> str:
        return f"{self.root}/jobs/{quote(scope.job, safe='')}/tasks/{quote(task_id, safe='')}"

    def request_id(self) -> str | None:
        """The caller's client-request-id: the idempotency key of a retried write."""
        value = self.request.headers.get("client-request-id")
        return f"batch:{value}" if printable(value, 120) else None

    def idempotent(self, command):
        """Run ``command(request_id)`` so that a retry with the same client-request-id returns the first answer.

        Batch promises nothing about a client-request-id reused for a different request, so such a reuse simply
        runs without deduplication instead of failing.
        """
        try:
            return command(self.request_id())
        except IdempotencyConflict:
            return command(None)


_API_VERSION_QUERY = (("api-version", "2024-02-01.19.0, 2025-06-01, ..."),)


async def context(
    request: Request,
    api_version: str | None = Query(None, alias="api-version", description=_API_VERSION_QUERY[0][1]),
) -> Context:
    cred = await authenticate_shared_key(request, credentials_of(request))
    if api_version is None:
        raise ApiError(
            400,
            "MissingRequiredQueryParameter",
            "A query parameter that's mandatory for this request is not specified: api-version",
            values=[("QueryParameterName", "api-version")],
        )
    if not API_VERSION.match(api_version):
        raise _query_error("api-version", api_version, "the api-version is not supported")
    bad = nul_query_parameter(request)
    if bad is not None:
        raise _query_error(bad, "", "query parameters must not contain NUL characters")
    return Context(request, cred.workspace, api_version)


async def body_of(request: Request) -> bytes:
    return await read_body(request, MAX_BODY)


# -- rendering -------------------------------------------------------------------------------------------------------


def etag(task: Task) -> str:
    return version_etag(task.version)


def version_etag(version: int) -> str:
    return f"0x{version:X}"


def parse_etag(value: str) -> int | None:
    """The task version an eTag names (None for ``*`` or anything not ours, which then matches nothing)."""
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if value.lower().startswith("0x"):
        try:
            return int(value[2:], 16)
        except ValueError:
            return -1
    return -1


def _duration_between(start: str | None, end: str | None) -> str:
    if not start or not end:
        return "PT0S"
    a = datetime.fromisoformat(start.replace("Z", "+00:00"))
    b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    seconds = max((b - a).total_seconds(), 0.0)
    return f"PT{seconds:.6f}".rstrip("0").rstrip(".") + "S"


# Batch shows executionInfo.startTime only for a running or completed task, and exitCode and failureInfo only for a
# completed one: a task waiting to retry (active) or being prepared again shows neither, though the store keeps the
# last attempt's (seed 000, the task "waiting to run" with retryCount 3383 and no startTime or exitCode).
SHOWS_START_TIME = frozenset({State.RUNNING, State.STOPPING}) | TERMINAL


def execution_info(task: Task) -> dict[str, Any]:
    info: dict[str, Any] = {}
    if task.start_time and task.state in SHOWS_START_TIME:
        info["startTime"] = task.start_time
    if task.end_time:
        info["endTime"] = task.end_time
    if task.state in TERMINAL:
        if task.exit_code is not None:
            info["exitCode"] = task.exit_code
        if task.failure_info:
            info["failureInfo"] = dict(task.failure_info)
    info["retryCount"] = task.retry_count
    if task.last_retry_time:
        info["lastRetryTime"] = task.last_retry_time
    info["requeueCount"] = task.requeue_count
    if task.last_requeue_time:
        info["lastRequeueTime"] = task.last_requeue_time
    if task.state in TERMINAL:
        info["result"] = task.result or AZURE_BATCH_RESULT[task.state]
    return info


_SHOWN_IN = {"exitCode": TERMINAL, "startTime": SHOWS_START_TIME}


def as_shown(expr: Expr | None) -> Expr | None:
    """The ``$filter`` over the values Batch shows (``execution_info``): a task in a state that does not show its
    exitCode or startTime has none, so ``ne`` matches it (as OData's ``ne`` matches a missing value) and every other
    comparison does not."""
    if expr is None:
        return None
    if isinstance(expr, (And, Or)):
        return type(expr)(tuple(as_shown(e) for e in expr.items))  # type: ignore[misc]
    states = _SHOWN_IN.get(expr.field)
    if states is None:
        return expr
    if expr.op == "ne":
        return Or((Cmp("state", "ne", states), expr))
    return And((Cmp("state", "eq", states), expr))


def task_json(ctx: Context, task: Task, *, select: Sequence[str] | None = None, stats: bool = False) -> dict[str, Any]:
    spec = task.spec
    url = ctx.task_url(task.scope, task.task_id)
    out: dict[str, Any] = {
        "id": task.task_id,
        "url": url,
        "eTag": etag(task),
        "creationTime": task.created_at,
        "lastModified": task.last_modified,
        "state": AZURE_BATCH[task.state],
        "stateTransitionTime": task.state_transition_time,
    }
    if task.previous_state is not None:
        out["previousState"] = AZURE_BATCH[task.previous_state]
        out["previousStateTransitionTime"] = task.previous_state_transition_time
    for name in _SPEC_FIELDS:
        if spec.get(name) is not None:
            out[name] = spec[name]
    given = spec.get("constraints") or {}
    out["constraints"] = {
        "maxWallClockTime": given.get("maxWallClockTime", UNLIMITED),
        "retentionTime": given.get("retentionTime", DEFAULT_RETENTION),
        "maxTaskRetryCount": given.get("maxTaskRetryCount", 0),
    }
    out["requiredSlots"] = task.required_slots
    out["userIdentity"] = spec.get("userIdentity") or {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}
    out["executionInfo"] = execution_info(task)
    if task.node_info:
        out["nodeInfo"] = dict(task.node_info)
    if stats:
        end = task.end_time or task.last_modified
        out["stats"] = {
            "url": url,
            "startTime": task.created_at,
            "lastUpdateTime": task.last_modified,
            "userCPUTime": "PT0S",
            "kernelCPUTime": "PT0S",
            "wallClockTime": _duration_between(task.start_time, end) if task.start_time else "PT0S",
            "readIOps": "0",
            "writeIOps": "0",
            "readIOGiB": 0.0,
            "writeIOGiB": 0.0,
            "waitTime": _duration_between(task.created_at, task.start_time or end),
        }
    if select is not None:
        out = {k: v for k, v in out.items() if k in select}
    return out


def parse_select(value: str | None) -> list[str] | None:
    if value is None or not value.strip():
        return None
    out: list[str] = []
    for raw in value.split(","):
        name = raw.strip()
        if not name:
            continue
        found = _BY_LOWER.get(name.lower())
        if found is None:
            raise _query_error("$select", value, f"{name!r} is not a property of a task")
        out.append(found)
    return out or None


def parse_expand(value: str | None) -> bool:
    if value is None or not value.strip():
        return False
    names = {v.strip().lower() for v in value.split(",") if v.strip()}
    if names - {"stats"}:
        raise _query_error("$expand", value, "tasks expand only 'stats'")
    return "stats" in names


def _json(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(content, status_code=status, headers=dict(headers or {}), media_type=CONTENT_TYPE)


def _task_headers(ctx: Context, task: Task) -> dict[str, str]:
    url = ctx.task_url(task.scope, task.task_id)
    return {"ETag": etag(task), "Last-Modified": http_date(task.last_modified), "DataServiceId": url}


class Conditions:
    """The conditional headers of a request: If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since."""

    def __init__(
        self,
        if_match: str | None = Header(None, alias="If-Match"),
        if_none_match: str | None = Header(None, alias="If-None-Match"),
        if_modified_since: str | None = Header(None, alias="If-Modified-Since"),
        if_unmodified_since: str | None = Header(None, alias="If-Unmodified-Since"),
    ) -> None:
        self.if_match = if_match
        self.if_none_match = if_none_match
        self.if_modified_since = _http_time(if_modified_since, "If-Modified-Since")
        self.if_unmodified_since = _http_time(if_unmodified_since, "If-Unmodified-Since")

    @property
    def any(self) -> bool:
        return any(
            v is not None for v in (self.if_match, self.if_none_match, self.if_modified_since, self.if_unmodified_since)
        )

    def check(self, task: Task, *, reading: bool) -> Response | None:
        """Raise 412 ConditionNotMet when a precondition fails; for a read, a 304 when the task is not modified."""
        modified = _second(task.last_modified)
        failed = ApiError(
            412, "ConditionNotMet", "The condition specified using HTTP conditional header(s) is not met."
        )
        not_modified = Response(status_code=304, headers={"ETag": etag(task)})
        if self.if_match is not None and self.if_match.strip() != "*":
            if all(parse_etag(v) != task.version for v in self.if_match.split(",")):
                raise failed
        if self.if_unmodified_since is not None and modified > self.if_unmodified_since:
            raise failed
        # If-Modified-Since only without If-None-Match (RFC 9110 13.2.2; Azure's reads take either one passing): an
        # eTag that differs proves a change the date, to the second, may not show (two changes in one second).
        if self.if_none_match is not None:
            if self.if_none_match.strip() == "*" or any(
                parse_etag(v) == task.version for v in self.if_none_match.split(",")
            ):
                if reading:
                    return not_modified
                raise failed
        elif self.if_modified_since is not None and modified <= self.if_modified_since:
            if reading:
                return not_modified
            raise failed
        return None


def _http_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise ApiError(
            400,
            "InvalidHeaderValue",
            f"The value for one of the HTTP headers is not in the correct format: {name}",
            values=[("HeaderName", name), ("HeaderValue", value)],
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _second(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).replace(microsecond=0)


# -- Add Task ---------------------------------------------------------------------------------------------------------


def _batch_spec(raw: Any, where: str = "") -> TaskSpec:
    """An Add Task body, checked as Batch checks it (id and commandLine are required), then validated as the store
    validates it (the store takes the result as it is, without validating it again)."""
    prefix = f"{where}." if where else ""
    if not isinstance(raw, dict):
        raise ValidationError(where or "task", "a task is a JSON object")
    for name in ("id", "commandLine"):
        if raw.get(name) is None:
            raise ValidationError(prefix + name, "is required")
    constraints = raw.get("constraints")
    if isinstance(constraints, dict):
        for name in ("maxWallClockTime", "retentionTime"):
            value = constraints.get(name)
            if isinstance(value, str):
                try:
                    parse_duration(value)
                except ValueError as exc:
                    raise ValidationError(f"{prefix}constraints.{name}", str(exc)) from None
    return parse_spec(raw, where=where)


@router.post(
    "/jobs/{job_id}/tasks",
    status_code=201,
    summary="Add Task",
    response_class=Response,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
)
def add_task(
    job_id: str = Path(...),
    ctx: Context = Depends(context),
    body: bytes = Depends(body_of),
) -> Response:
    scope = ctx.scope(job_id, adding=True)
    spec = _batch_spec(parse_json(body))
    task = ctx.idempotent(lambda rid: ctx.store.add_task(scope, spec, request_id=rid))
    headers = _task_headers(ctx, task)
    headers["Location"] = headers["DataServiceId"]
    return Response(status_code=201, headers=headers)


def _result_error(code: str, message: str, values: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": {"lang": "en-US", "value": message}}
    if values:
        err["values"] = [{"key": k, "value": v} for k, v in values]
    return err


@router.post(
    "/jobs/{job_id}/addtaskcollection",
    summary="Add Task Collection",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
)
def add_task_collection(
    job_id: str = Path(...),
    ctx: Context = Depends(context),
    body: bytes = Depends(body_of),
) -> Response:
    scope = ctx.scope(job_id, adding=True)
    doc = parse_json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("value"), list):
        if isinstance(doc, dict) and doc.get("value") is None:
            raise _property_error("value", "is required")
        raise _body_error('the body is {"value": [tasks]}')
    raw_tasks = doc["value"]
    if len(raw_tasks) > MAX_COLLECTION:
        raise ApiError(
            413,
            "RequestBodyTooLarge",
            f"The number of tasks in the collection exceeds the maximum of {MAX_COLLECTION}.",
            values=[("MaxLimit", str(MAX_COLLECTION))],
        )
    if not raw_tasks:
        raise _property_error("value", "must hold at least one task")
    results: list[dict[str, Any] | None] = [None] * len(raw_tasks)
    valid: dict[str, tuple[int, TaskSpec]] = {}  # stream key -> (index, spec)
    for i, raw in enumerate(raw_tasks):
        task_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else ""
        try:
            spec = _batch_spec(raw)
        except ValidationError as exc:
            err = _property_error(exc.field, exc.reason)
            results[i] = {
                "status": "clienterror",
                "taskId": task_id,
                "error": _result_error(err.code, err.message, err.values),
            }
            continue
        key = stream_key(spec.id)
        if key in valid:
            results[i] = {
                "status": "clienterror",
                "taskId": task_id,
                "error": _result_error("TaskExists", "The specified task already exists."),
            }
            continue
        valid[key] = (i, spec)
    # A retry (the same client-request-id) gets its first answer: a task this request added is a success again (its
    # TaskAdded event's metadata names the request), not TaskExists; every other item is answered as before.
    rid = ctx.request_id()
    if valid:
        existing = ctx.store.log.read_streams(scope, list(valid))
        for key, events in existing.items():
            if events:
                i, spec = valid.pop(key)
                first = events[0]
                if rid is not None and first.metadata.get("requestId") == rid and first.type == TASK_ADDED:
                    results[i] = _added_result(ctx, scope, first.data["taskId"], first.version, first.data["at"])
                else:
                    results[i] = _exists_result(spec.id)
    while valid:
        try:
            specs = [spec for _, spec in valid.values()]
            added = ctx.idempotent(lambda r: ctx.store.add_tasks(scope, specs, request_id=r))  # noqa: B023
        except TaskExists as exc:
            key = stream_key(exc.task_id)
            if key not in valid:  # pragma: no cover - the store names a task of this batch
                raise
            i, spec = valid.pop(key)
            results[i] = _exists_result(spec.id)
            continue
        for task in added:
            i, _ = valid[task.key]
            results[i] = _added_result(ctx, scope, task.task_id, task.version, task.last_modified)
        break
    return _json({"value": [r for r in results if r is not None]})


def _added_result(ctx: Context, scope: Scope, task_id: str, version: int, last_modified: str) -> dict[str, Any]:
    return {
        "status": "success",
        "taskId": task_id,
        "eTag": version_etag(version),
        "lastModified": last_modified,
        "location": ctx.task_url(scope, task_id),
    }


def _exists_result(task_id: str) -> dict[str, Any]:
    return {
        "status": "clienterror",
        "taskId": task_id,
        "error": _result_error("TaskExists", "The specified task already exists."),
    }


# -- List Tasks -------------------------------------------------------------------------------------------------------


def _fingerprint(scope: Scope) -> str:
    return f"batch-list|{scope.workspace}|{scope.job}|{scope.execution}"


def _parse_max_results(value: str | None) -> int:
    if value is None or value == "":
        return MAX_RESULTS
    digits = value.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", digits):  # int() would also take "1_000" and other scripts' digits
        raise _query_error("maxresults", value, "maxresults is an integer")
    n = int(digits) if len(digits.lstrip("+-0")) <= 10 else MAX_RESULTS + 1  # int() refuses 4,300 digits and more
    if not 1 <= n <= MAX_RESULTS:
        raise _query_error(
            "maxresults",
            value,
            f"maxresults must be between 1 and {MAX_RESULTS}",
            code="OutOfRangeQueryParameterValue",
        )
    return n


@router.get("/jobs/{job_id}/tasks", summary="List Tasks")
def list_tasks(
    job_id: str = Path(...),
    ctx: Context = Depends(context),
    filter_: str | None = Query(
        None, alias="$filter", description="OData filter (id, state, times, exit code, result)"
    ),
    select: str | None = Query(None, alias="$select", description="comma-separated top-level properties"),
    expand: str | None = Query(None, alias="$expand", description="'stats'"),
    maxresults: str | None = Query(None, description="1 to 1000 (default 1000)"),
    skiptoken: str | None = Query(None, alias="$skiptoken", description="from odata.nextLink"),
) -> Response:
    scope = ctx.scope(job_id)
    if skiptoken:
        try:
            doc = ctx.store.cursors.decode(skiptoken, _fingerprint(scope))
        except CursorError as exc:
            raise _query_error("$skiptoken", skiptoken[:64], str(exc)) from None
        if not isinstance(doc, dict):
            raise _query_error("$skiptoken", skiptoken[:64], "not a skiptoken of this list")
        filter_text, select_list, stats, limit, inner = (
            doc.get("f"),
            doc.get("s"),
            bool(doc.get("e")),
            int(doc.get("m") or MAX_RESULTS),
            doc.get("c"),
        )
        # The token carries its whole query (the SDKs follow the link as it is); a query given beside it must be
        # that one: a token of one query is never a page of another.
        given = (
            ("$filter", filter_, filter_ is not None and filter_ != filter_text),
            ("$select", select, select is not None and parse_select(select) != select_list),
            ("$expand", expand, expand is not None and parse_expand(expand) != stats),
            ("maxresults", maxresults, maxresults is not None and _parse_max_results(maxresults) != limit),
        )
        for name, value, differs in given:
            if differs:
                raise _query_error(name, value or "", f"the $skiptoken belongs to a list with another {name}")
    else:
        filter_text, limit, inner = filter_, _parse_max_results(maxresults), None
        select_list = parse_select(select)
        stats = parse_expand(expand)
    try:
        where = as_shown(parse_filter(filter_text))
    except BatchFilterError as exc:
        raise _query_error("$filter", filter_text or "", str(exc)) from None
    if not ctx.job_exists(scope):
        raise ApiError(404, "JobNotFound", "The specified job does not exist.")
    calls = -(-limit // INNER_LIMIT)
    step = limit // calls
    items: list[Task] = []
    has_more = True
    for _ in range(calls + 4):
        page = ctx.store.queries.list_tasks(scope, sort="createdAt:asc", limit=step, cursor=inner, where=where)
        items.extend(page.items)
        has_more = bool(page.has_more and page.next_cursor)
        inner = page.next_cursor or None
        if not has_more or len(items) + step > limit:
            break
    out: dict[str, Any] = {
        "odata.metadata": f"{ctx.root}/$metadata#tasks",
        "value": [task_json(ctx, t, select=select_list, stats=stats) for t in items],
    }
    if has_more:
        token = ctx.store.cursors.encode(
            {"f": filter_text, "s": select_list, "e": stats, "m": limit, "c": inner}, _fingerprint(scope)
        )
        out["odata.nextLink"] = (
            f"{ctx.root}/jobs/{quote(scope.job, safe='')}/tasks?api-version={quote(ctx.api_version, safe='')}"
            f"&$skiptoken={quote(token, safe='')}"
        )
    return _json(out)


# -- Get Task ---------------------------------------------------------------------------------------------------------


@router.get("/jobs/{job_id}/tasks/{task_id}", summary="Get Task")
def get_task(
    job_id: str = Path(...),
    task_id: str = Path(...),
    ctx: Context = Depends(context),
    select: str | None = Query(None, alias="$select"),
    expand: str | None = Query(None, alias="$expand"),
    conditions: Conditions = Depends(),
) -> Response:
    scope = ctx.scope(job_id)
    select_list = parse_select(select)
    stats = parse_expand(expand)
    try:
        task = ctx.store.get_task(scope, task_id)
    except (TaskNotFound, ValidationError):
        raise ctx.missing(scope) from None
    not_modified = conditions.check(task, reading=True)
    if not_modified is not None:
        return not_modified
    body = task_json(ctx, task, select=select_list, stats=stats)
    body = {"odata.metadata": f"{ctx.root}/$metadata#tasks/@Element", **body}
    return _json(body, headers=_task_headers(ctx, task))


# -- Task Counts ------------------------------------------------------------------------------------------------------


@direct_get(
    router,
    "/jobs/{job_id}/taskcounts",
    summary="Get Task Counts",
    openapi_extra=documented(path=("job_id",), query=_API_VERSION_QUERY),
)
async def task_counts(request: Request) -> Response:
    # reads its own parameters (see api.common.documented)
    ctx = await context(request, request.query_params.get("api-version"))
    return await offload(_task_counts, ctx, request.path_params["job_id"])


def _task_counts(ctx: Context, job_id: str) -> Response:
    scope = ctx.scope(job_id)
    if not ctx.job_exists(scope):
        raise ApiError(404, "JobNotFound", "The specified job does not exist.")
    summary = ctx.store.queries.counts(scope)
    tasks = {
        "active": summary.active,
        "running": summary.running,
        "completed": summary.completed,
        "succeeded": summary.succeeded,
        "failed": summary.failed,
    }
    slots = summary.slot_counts()
    body = {
        "odata.metadata": f"{ctx.root}/$metadata#taskcounts/@Element",
        "taskCounts": tasks,
        "taskSlotCounts": {k: int(slots[k]) for k in tasks},
        # the older API's flat shape (seed 001), which current SDKs ignore
        **tasks,
        "validationStatus": summary.validation_status,
    }
    return _json(body)


# -- Terminate and Reactivate -----------------------------------------------------------------------------------------


def _command(ctx: Context, job_id: str, task_id: str, conditions: Conditions, run) -> Response:
    """Run a command on a task. Conditional headers are checked against the task as it is, and the command then
    expects that version: a change in between is a 412 too.

    A retry (the same client-request-id) of a conditional command that was applied finds its own change has moved
    the task on, so its conditions now fail: it still gets the first answer. The command runs expecting a version no
    task has; the store answers a request id it has seen before any version check, and anything else with
    VersionMismatch (412 ConditionNotMet)."""
    scope = ctx.scope(job_id)
    try:
        expected = None
        if conditions.any:
            current = ctx.store.get_task(scope, task_id)
            try:
                conditions.check(current, reading=False)
            except ApiError:
                if ctx.request_id() is None:
                    raise
                expected = -1
            else:
                expected = current.version
        task = run(scope, expected)
    except TaskNotFound:
        raise ctx.missing(scope) from None
    except ValidationError as exc:
        if exc.field == "taskId":
            raise ctx.missing(scope) from None
        raise
    return Response(status_code=204, headers=_task_headers(ctx, task))


@router.post(
    "/jobs/{job_id}/tasks/{task_id}/terminate", status_code=204, summary="Terminate Task", response_class=Response
)
def terminate_task(
    job_id: str = Path(...),
    task_id: str = Path(...),
    ctx: Context = Depends(context),
    conditions: Conditions = Depends(),
) -> Response:
    def run(scope: Scope, expected: int | None) -> Task:
        try:
            return ctx.idempotent(
                lambda rid: ctx.store.terminate(scope, task_id, expected_version=expected, request_id=rid)
            )
        except IllegalTransition as exc:
            raise ApiError(409, "TaskCompleted", "The specified task is already completed.") from exc

    return _command(ctx, job_id, task_id, conditions, run)


@router.post(
    "/jobs/{job_id}/tasks/{task_id}/reactivate", status_code=204, summary="Reactivate Task", response_class=Response
)
def reactivate_task(
    job_id: str = Path(...),
    task_id: str = Path(...),
    ctx: Context = Depends(context),
    conditions: Conditions = Depends(),
) -> Response:
    def run(scope: Scope, expected: int | None) -> Task:
        try:
            return ctx.idempotent(
                lambda rid: ctx.store.reactivate(scope, task_id, expected_version=expected, request_id=rid)
            )
        except IllegalTransition as exc:
            if exc.current == State.SUCCEEDED.value:
                raise ApiError(
                    409, "TaskSucceeded", "The specified task completed successfully and cannot be reactivated."
                ) from exc
            raise ApiError(
                409, "TaskNotCompleted", "The specified task is not completed; only a failed task can be reactivated."
            ) from exc

    return _command(ctx, job_id, task_id, conditions, run)


__all__ = ["DIALECT", "PREFIX", "router"]
