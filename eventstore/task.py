"""The task aggregate: its state, the events that change it, and the fold that rebuilds it from its stream.

``evolve`` is the one definition of what an event does to a task. Commands (``tasks.py``) decide events from the
folded state; projections (``projections/``) store the same fold per task; audits compare the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping

from .events import RecordedEvent, Scope
from .lifecycle import TERMINAL, Cause, State

TASK_ADDED = "TaskAdded"
TASK_TRANSITIONED = "TaskTransitioned"
TASK_CONDITION_RECORDED = "TaskConditionRecorded"
EVENT_TYPES = (TASK_ADDED, TASK_TRANSITIONED, TASK_CONDITION_RECORDED)


def stream_key(task_id: str) -> str:
    """Task ids are unique within a scope without regard to case: the stream is keyed by the id folded to lower."""
    return task_id.lower()


@dataclass(frozen=True, slots=True)
class Task:
    scope: Scope
    task_id: str
    number: int  # the log position of the TaskAdded event: a numeric id, unique in the store (HealthOmics)
    spec: Mapping[str, Any]
    state: State
    version: int
    created_at: str
    state_transition_time: str
    last_modified: str
    previous_state: State | None = None
    previous_state_transition_time: str | None = None
    scheduled_at: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    exit_code: int | None = None
    result: str | None = None
    failure_info: Mapping[str, Any] | None = None
    node_info: Mapping[str, Any] | None = None
    retry_count: int = 0
    requeue_count: int = 0
    last_retry_time: str | None = None
    last_requeue_time: str | None = None
    status_message: str | None = None
    conditions: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    @property
    def key(self) -> str:
        return stream_key(self.task_id)

    @property
    def max_retries(self) -> int:
        return max_retries(self.spec)

    @property
    def required_slots(self) -> int:
        return self.spec.get("requiredSlots") or 1

    @property
    def display_name(self) -> str | None:
        return self.spec.get("displayName")

    @property
    def labels(self) -> Mapping[str, str]:
        return self.spec.get("labels") or {}

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-ready document of the task (the native API's and the command line's shape)."""
        out: dict[str, Any] = {
            "workspace": self.scope.workspace,
            "job": self.scope.job,
            "execution": self.scope.execution,
            "id": self.task_id,
            "number": self.number,
            "version": self.version,
            "state": self.state.value,
            "previousState": self.previous_state.value if self.previous_state else None,
            "createdAt": self.created_at,
            "stateTransitionTime": self.state_transition_time,
            "previousStateTransitionTime": self.previous_state_transition_time,
            "lastModified": self.last_modified,
            "scheduledAt": self.scheduled_at,
            "startTime": self.start_time,
            "endTime": self.end_time,
            "exitCode": self.exit_code,
            "result": self.result,
            "failureInfo": self.failure_info,
            "nodeInfo": self.node_info,
            "retryCount": self.retry_count,
            "requeueCount": self.requeue_count,
            "lastRetryTime": self.last_retry_time,
            "lastRequeueTime": self.last_requeue_time,
            "statusMessage": self.status_message,
            "conditions": list(self.conditions),
            "spec": dict(self.spec),
        }
        return out


def max_retries(spec: Mapping[str, Any]) -> int:
    """The retry limit: Azure Batch's maxTaskRetryCount, else Blaxel's maxRetries, else 0; -1 means unlimited."""
    constraints = spec.get("constraints") or {}
    if constraints.get("maxTaskRetryCount") is not None:
        return constraints["maxTaskRetryCount"]
    return spec["maxRetries"] if spec.get("maxRetries") is not None else 0


def added(event: RecordedEvent) -> Task:
    d = event.data
    return Task(
        scope=event.scope,
        task_id=d["taskId"],
        number=event.position,
        spec=d.get("spec", {}),
        state=State.PENDING,
        version=event.version,
        created_at=d["at"],
        state_transition_time=d["at"],
        last_modified=d["at"],
    )


def evolve(task: Task | None, event: RecordedEvent) -> Task:
    """The task after ``event``. The first event of a stream is always TaskAdded."""
    if event.type == TASK_ADDED:
        return added(event)
    if task is None:
        raise ValueError(f"stream {event.stream!r} does not start with {TASK_ADDED}")
    if event.type not in EVENT_TYPES:
        return _with(task, {"version": event.version})  # an event type this code does not know changes nothing
    d = event.data
    at = d["at"]
    if event.type == TASK_CONDITION_RECORDED:
        cond = d["condition"]
        kept = tuple(c for c in task.conditions if c.get("type") != cond.get("type"))
        return _with(task, {"conditions": kept + (cond,), "version": event.version, "last_modified": at})
    to = State(d["to"])
    cause = Cause(d.get("cause", Cause.TRANSITION))
    changes: dict[str, Any] = {
        "state": to,
        "previous_state": task.state,
        "previous_state_transition_time": task.state_transition_time,
        "state_transition_time": at,
        "last_modified": at,
        "version": event.version,
        "retry_count": d.get("retryCount", task.retry_count),
        "requeue_count": d.get("requeueCount", task.requeue_count),
    }
    for key, attr in (("nodeInfo", "node_info"), ("message", "status_message")):
        if key in d:
            changes[attr] = d[key]
    if to is State.STARTING:
        changes["scheduled_at"] = at
    elif to is State.RUNNING:
        changes["start_time"] = at
        if task.state is not State.STARTING:
            changes["scheduled_at"] = task.scheduled_at or at
    if cause is Cause.RETRY:
        changes.update(last_retry_time=at, exit_code=d.get("exitCode"), failure_info=d.get("failureInfo"))
    elif cause is Cause.REQUEUE:
        changes["last_requeue_time"] = at
    elif cause is Cause.REACTIVATE:
        changes.update(end_time=None, exit_code=None, result=None, failure_info=None)
    if to in TERMINAL:
        changes.update(
            end_time=at,
            exit_code=d.get("exitCode"),
            result=d.get("result"),
            failure_info=d.get("failureInfo"),
        )
    return _with(task, changes)


_FIELDS = tuple(f.name for f in fields(Task))
_set = object.__setattr__


def _with(task: Task, changes: Mapping[str, Any]) -> Task:
    """``dataclasses.replace`` without re-running ``__init__``: a fold calls this once per event."""
    new = object.__new__(Task)
    for name in _FIELDS:
        _set(new, name, changes[name] if name in changes else getattr(task, name))
    return new


def fold(events: Iterable[RecordedEvent], task: Task | None = None) -> Task | None:
    for event in events:
        task = evolve(task, event)
    return task
