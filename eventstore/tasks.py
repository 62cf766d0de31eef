"""The application service of the task lifecycle: commands that decide events from a task's folded stream and append
them with optimistic concurrency, and the queries of one task.

A command without an expected version re-reads and re-decides when another writer moved the task first; a command
with one (``If-Match``) fails with :class:`VersionMismatch` instead. A command with a request id is idempotent: a
retry of a committed command returns its first result and writes nothing.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Literal, Mapping, Sequence

import orjson
import pydantic
from pydantic import BaseModel, ConfigDict
from sqlalchemy.engine import Connection

from .errors import ConcurrencyError, IllegalTransition, TaskExists, TaskNotFound, ValidationError, VersionMismatch
from .events import Expect, NewEvent, RecordedEvent, Scope, StreamAppend
from .lifecycle import TERMINAL, Cause, State, plan
from .log import EventLog, iso
from .projection import TaskStateSource
from .spec import TASK_ID, StrictStr, TaskSpec, error_message, parse_spec
from .task import (
    TASK_ADDED,
    TASK_CONDITION_RECORDED,
    TASK_TRANSITIONED,
    Task,
    added,
    fold,
    stream_key,
)
from .upcasting import Upcasters


def task_upcasters() -> Upcasters:
    """The schema versions of the task events, and the upcasters of their older shapes."""
    registry = Upcasters()
    for name in (TASK_ADDED, TASK_TRANSITIONED, TASK_CONDITION_RECORDED):
        registry.declare(name, 1)
    return registry


class _Details(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NameValuePair(_Details):
    name: StrictStr
    value: StrictStr | None = None


class FailureInfo(_Details):
    category: Literal["usererror", "servererror"]
    code: StrictStr | None = None
    message: StrictStr | None = None
    details: list[NameValuePair] | None = None


class NodeInfo(_Details):
    affinityId: StrictStr | None = None
    nodeUrl: StrictStr | None = None
    poolId: StrictStr | None = None
    nodeId: StrictStr | None = None
    taskRootDirectory: StrictStr | None = None
    taskRootDirectoryUrl: StrictStr | None = None


class Condition(_Details):
    """A Blaxel task condition."""

    type: StrictStr
    state: StrictStr | None = None
    reason: StrictStr | None = None
    message: StrictStr | None = None
    severity: StrictStr | None = None
    executionReason: StrictStr | None = None


def _validated(model: type[BaseModel], value: Any, field: str) -> dict[str, Any]:
    try:
        return model.model_validate(value).model_dump(exclude_none=True)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        path = ".".join(str(p) for p in (field, *err["loc"]))
        raise ValidationError(path, error_message(err)) from None


class TaskService:
    """Add tasks, record their transitions, read them back."""

    def __init__(
        self, log: EventLog, *, state_source: TaskStateSource | None = None, max_attempts: int = 16
    ) -> None:
        self.log = log
        self.state_source = state_source
        self.max_attempts = max_attempts

    # -- commands ----------------------------------------------------------------------------------------------

    def add_tasks(
        self, scope: Scope, specs: Sequence[Mapping[str, Any] | TaskSpec], *, request_id: str | None = None
    ) -> list[Task]:
        """Add tasks in one transaction: all of them, or none (:class:`TaskExists` names the first that exists)."""
        if not specs:
            raise ValidationError("tasks", "at least one task is required")
        parsed = [parse_spec(s, where=f"tasks[{i}]" if len(specs) > 1 else "") for i, s in enumerate(specs)]
        first_index: dict[str, int] = {}
        for i, spec in enumerate(parsed):
            key = stream_key(spec.id)
            if key in first_index:
                raise ValidationError(
                    f"tasks[{i}].id", f"{spec.id!r} repeats tasks[{first_index[key]}] (ids ignore case)"
                )
            first_index[key] = i
        datas = [spec.to_data() for spec in parsed]
        # The fingerprint identifies a request's content: needed only with a request id.
        fingerprint = (
            None if request_id is None else _fingerprint("add", scope, [[p.id, d] for p, d in zip(parsed, datas)])
        )
        at = iso(self.log.clock())
        appends = [
            StreamAppend(
                scope,
                stream_key(spec.id),
                [NewEvent(TASK_ADDED, {"taskId": spec.id, "spec": data, "at": at})],
                Expect.NO_STREAM,
            )
            for spec, data in zip(parsed, datas)
        ]
        try:
            result = self.log.append(
                appends, request_id=request_id, namespace=scope.workspace, fingerprint=fingerprint
            )
        except ConcurrencyError as exc:
            existing = parsed[first_index[exc.key]].id if exc.key in first_index else exc.key
            raise TaskExists(scope, existing) from None
        return [added(e) for e in result.events]

    def add_task(self, scope: Scope, spec: Mapping[str, Any] | TaskSpec, *, request_id: str | None = None) -> Task:
        return self.add_tasks(scope, [spec], request_id=request_id)[0]

    def transition(
        self,
        scope: Scope,
        task_id: str,
        to: State | str,
        *,
        exit_code: int | None = None,
        failure_info: Mapping[str, Any] | None = None,
        node_info: Mapping[str, Any] | None = None,
        reason: str | None = None,
        message: str | None = None,
        expected_version: int | None = None,
        request_id: str | None = None,
    ) -> Task:
        """Move a task towards ``to``; a failure with retries left lands in pending, counting a retry."""
        try:
            target = State(to)
        except ValueError:
            raise ValidationError("to", f"{to!r} is not a state ({', '.join(s.value for s in State)})") from None
        details = transition_details(
            {"exitCode": exit_code, "failureInfo": failure_info, "nodeInfo": node_info, "reason": reason,
             "message": message}
        )

        def decide(task: Task, at: str) -> list[NewEvent]:
            return [_transition_event(task, target, details, at)]

        payload = {"to": target.value, **details}
        return self._command(scope, task_id, "transition", payload, decide, expected_version, request_id)

    def transition_many(
        self,
        scope: Scope,
        changes: Sequence[tuple[str, State | str] | tuple[str, State | str, Mapping[str, Any]]],
        *,
        request_id: str | None = None,
    ) -> list[Task]:
        """Several tasks' transitions in one transaction, all or nothing (simulations, bulk control-plane updates).

        Each change is ``(task_id, to)`` or ``(task_id, to, details)`` with the details ``transition`` takes
        (``{"exitCode": 1, "failureInfo": {...}}``); an illegal one raises :class:`IllegalTransition` and nothing
        is written.
        """
        if not changes:
            raise ValidationError("changes", "at least one transition is required")
        targets: dict[str, tuple[str, State, dict[str, Any]]] = {}
        for i, change in enumerate(changes):
            task_id, to = change[0], change[1]
            key = self._key(task_id)
            if key in targets:
                raise ValidationError(f"changes[{i}]", f"task {task_id!r} appears twice")
            try:
                target = State(to)
            except ValueError:
                raise ValidationError(f"changes[{i}].to", f"{to!r} is not a state") from None
            raw = change[2] if len(change) > 2 else {}  # type: ignore[misc]
            targets[key] = (task_id, target, transition_details(raw, f"changes[{i}]"))
        fingerprint = (
            None if request_id is None
            else _fingerprint("many", scope, [[k, t.value, d] for k, (_, t, d) in targets.items()])
        )
        if request_id is not None:
            found = self.log.find_request(scope.workspace, request_id, fingerprint)
            if found is not None:
                return [self._task_at(scope, e.stream, e.version) for e in found.events]
        keys = list(targets)
        for _ in range(self.max_attempts):
            tasks: list[Task] = []

            def decide_all(conn: Connection) -> tuple[list[StreamAppend], dict[tuple[Scope, str], Task]]:
                current = self._current(scope, keys, conn)
                at = iso(self.log.clock())
                tasks.clear()
                appends: list[StreamAppend] = []
                for key, (task_id, target, details) in targets.items():
                    task = current.get(key)
                    if task is None:
                        raise TaskNotFound(scope, task_id)
                    tasks.append(task)
                    appends.append(
                        StreamAppend(scope, key, [_transition_event(task, target, details, at)], task.version)
                    )
                return appends, {(scope, t.key): t for t in tasks}

            try:
                result = self.log.decide_and_append(
                    decide_all, request_id=request_id, namespace=scope.workspace, fingerprint=fingerprint
                )
            except ConcurrencyError:
                continue
            if result.deduplicated:
                return [self._task_at(scope, e.stream, e.version) for e in result.events]
            states = result.states
            return [states.get((scope, e.stream)) or fold([e], t) for e, t in zip(result.events, tasks)]  # type: ignore[misc]
        raise ConcurrencyError(f"{scope}", "a quiet moment", None, scope=scope)

    def terminate(
        self, scope: Scope, task_id: str, *, reason: str | None = None, expected_version: int | None = None,
        request_id: str | None = None,
    ) -> Task:
        """Cancel a task that has not finished; a finished one raises :class:`IllegalTransition`."""
        return self.transition(
            scope, task_id, State.CANCELLED, reason=reason, expected_version=expected_version, request_id=request_id
        )

    def reactivate(
        self, scope: Scope, task_id: str, *, expected_version: int | None = None, request_id: str | None = None
    ) -> Task:
        """A failed or cancelled task back to pending with its retry count reset; refused for any other state."""

        def decide(task: Task, at: str) -> list[NewEvent]:
            if task.state not in (State.FAILED, State.CANCELLED):
                why = (
                    "a succeeded task cannot be reactivated"
                    if task.state is State.SUCCEEDED
                    else "only a failed or cancelled task can be reactivated"
                )
                raise IllegalTransition(task.task_id, task.state.value, State.PENDING.value, why)
            return [_transition_event(task, State.PENDING, {}, at)]

        return self._command(scope, task_id, "reactivate", {}, decide, expected_version, request_id)

    def record_condition(
        self,
        scope: Scope,
        task_id: str,
        condition: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        request_id: str | None = None,
    ) -> Task:
        """Record a Blaxel condition on a task; a later condition of the same type replaces it."""
        cond = _validated(Condition, condition, "condition")

        def decide(task: Task, at: str) -> list[NewEvent]:
            return [NewEvent(TASK_CONDITION_RECORDED, {"condition": cond, "at": at})]

        return self._command(scope, task_id, "condition", cond, decide, expected_version, request_id)

    def _command(
        self,
        scope: Scope,
        task_id: str,
        op: str,
        payload: Mapping[str, Any],
        decide: Callable[[Task, str], list[NewEvent]],
        expected_version: int | None,
        request_id: str | None,
    ) -> Task:
        key = self._key(task_id)
        fingerprint = None if request_id is None else _fingerprint(op, scope, [key, payload])
        if request_id is not None:
            found = self.log.find_request(scope.workspace, request_id, fingerprint)
            if found is not None:
                return self._task_at(scope, task_id, found.events[-1].version)
        for _ in range(self.max_attempts):
            decided: list[Task] = []

            def decide_one(conn: Connection) -> tuple[list[StreamAppend], dict[tuple[Scope, str], Task]]:
                # Read in the append's own transaction: one transaction per command, and on SQLite (whose writers
                # hold the write lock from their first statement) the task cannot move between read and append.
                task = self._current(scope, [key], conn).get(key)
                if task is None:
                    raise TaskNotFound(scope, task_id)
                if expected_version is not None and task.version != expected_version:
                    raise VersionMismatch(task.task_id, expected_version, task.version)
                new_events = decide(task, iso(self.log.clock()))
                decided[:] = [task]
                return [StreamAppend(scope, key, new_events, task.version)], {(scope, key): task}

            try:
                result = self.log.decide_and_append(
                    decide_one, request_id=request_id, namespace=scope.workspace, fingerprint=fingerprint
                )
            except ConcurrencyError as exc:
                if expected_version is not None:
                    raise VersionMismatch(decided[0].task_id, expected_version, exc.actual or 0) from None
                continue
            if result.deduplicated:
                return self._task_at(scope, task_id, result.events[-1].version)
            after = result.states.get((scope, key))  # the task view's fold of the same events, when it made one
            return after if after is not None else fold(result.events, decided[0])  # type: ignore[return-value]
        raise ConcurrencyError(f"{scope}/{key}", "a quiet moment", None, scope=scope, key=key)

    # -- queries -----------------------------------------------------------------------------------------------

    def get_task(self, scope: Scope, task_id: str) -> Task:
        return self._load(scope, task_id, self._key(task_id))

    def history(self, scope: Scope, task_id: str) -> list[RecordedEvent]:
        found = self.log.read_stream(scope, self._key(task_id))
        if not found:
            raise TaskNotFound(scope, task_id)
        return found

    def _current(self, scope: Scope, keys: list[str], conn: Connection | None = None) -> dict[str, Task]:
        """The tasks' current states: from the state source when there is one, else by folding their streams
        (through ``conn`` when given)."""
        if self.state_source is not None:
            return self.state_source.load_tasks(scope, keys, conn)
        streams = self.log.read_streams(scope, keys, conn=conn)
        return {key: task for key, events in streams.items() if (task := fold(events)) is not None}

    def _load(self, scope: Scope, task_id: str, key: str) -> Task:
        task = fold(self.log.read_stream(scope, key))
        if task is None:
            raise TaskNotFound(scope, task_id)
        return task

    def _task_at(self, scope: Scope, task_id: str, version: int) -> Task:
        task = fold(self.log.read_stream(scope, self._key(task_id), to_version=version))
        if task is None:
            raise TaskNotFound(scope, task_id)
        return task

    @staticmethod
    def _key(task_id: str) -> str:
        if not isinstance(task_id, str) or not TASK_ID.match(task_id):
            raise ValidationError("taskId", f"{task_id!r} is not a task id (1 to 64 letters, digits, '-' or '_')")
        return stream_key(task_id)


def transition_details(raw: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """Validate what a transition may carry: exitCode, failureInfo, nodeInfo, reason, message (None: absent)."""
    prefix = f"{where}." if where else ""
    unknown = set(raw) - {"exitCode", "failureInfo", "nodeInfo", "reason", "message"}
    if unknown:
        raise ValidationError(f"{prefix}{sorted(unknown)[0]}", "unknown field")
    details: dict[str, Any] = {}
    exit_code = raw.get("exitCode")
    if exit_code is not None:
        if isinstance(exit_code, bool) or not isinstance(exit_code, int) or not -(2**31) <= exit_code < 2**31:
            raise ValidationError(f"{prefix}exitCode", "must be a 32-bit integer")
        details["exitCode"] = exit_code
    if raw.get("failureInfo") is not None:
        details["failureInfo"] = _validated(FailureInfo, raw["failureInfo"], f"{prefix}failureInfo")
    if raw.get("nodeInfo") is not None:
        details["nodeInfo"] = _validated(NodeInfo, raw["nodeInfo"], f"{prefix}nodeInfo")
    for key in ("reason", "message"):
        value = raw.get(key)
        if value is not None:
            if not isinstance(value, str) or "\x00" in value:
                raise ValidationError(f"{prefix}{key}", "must be a string without NUL characters")
            if not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError:  # a lone surrogate: no JSON encoder or database takes it
                    raise ValidationError(f"{prefix}{key}", "must be valid Unicode (no lone surrogates)") from None
            details[key] = value
    return details


def _transition_event(task: Task, target: State, details: Mapping[str, Any], at: str) -> NewEvent:
    landing = plan(task.state, target, task.retry_count, task.max_retries)
    if isinstance(landing, str):
        raise IllegalTransition(task.task_id, task.state.value, target.value, landing)
    state, cause = landing
    retry_count = 0 if cause is Cause.REACTIVATE else task.retry_count + (cause is Cause.RETRY)
    data: dict[str, Any] = {
        "from": task.state.value,
        "to": state.value,
        "at": at,
        "cause": cause.value,
        "retryCount": retry_count,
        "requeueCount": task.requeue_count + (cause is Cause.REQUEUE),
        **details,
    }
    if state is not target:
        data["requested"] = target.value
    if state in TERMINAL:
        data["result"] = "success" if state is State.SUCCEEDED else "failure"
    return NewEvent(TASK_TRANSITIONED, data)


def _fingerprint(op: str, scope: Scope, body: Any) -> str:
    raw = orjson.dumps([op, str(scope), body], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()


__all__ = ["TaskService", "task_upcasters"]
