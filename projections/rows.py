"""A task as a row of the task view, and back. The row holds exactly what ``eventstore.task.Task`` holds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from operator import itemgetter
from typing import Any, Mapping

from eventstore import Scope, State, Task


_STATE = {s.value: s for s in State}


def search_text(task: Task) -> str:
    """What ``q`` searches: the id, the display name, label keys and values (in the order of their keys: the
    order a document was given in is not kept by PostgreSQL's jsonb), lower-cased."""
    parts = [task.task_id, task.display_name or ""]
    for k, v in sorted(task.labels.items()):
        parts += [k, v]
    return "\n".join(parts).lower()


def row_of(task: Task, scope_id: int, position: int) -> dict[str, Any]:
    return {
        "scope_id": scope_id,
        "key": task.key,
        "task_id": task.task_id,
        "number": task.number,
        "state": task.state.value,
        "previous_state": task.previous_state.value if task.previous_state else None,
        "version": task.version,
        "position": position,
        "created_at": task.created_at,
        "state_transition_time": task.state_transition_time,
        "previous_state_transition_time": task.previous_state_transition_time,
        "last_modified": task.last_modified,
        "scheduled_at": task.scheduled_at,
        "start_time": task.start_time,
        "end_time": task.end_time,
        "exit_code": task.exit_code,
        "result": task.result,
        "retry_count": task.retry_count,
        "requeue_count": task.requeue_count,
        "last_retry_time": task.last_retry_time,
        "last_requeue_time": task.last_requeue_time,
        "required_slots": task.required_slots,
        "display_name": task.display_name,
        "status_message": task.status_message,
        "search": search_text(task),
        "spec": dict(task.spec),
        "failure_info": task.failure_info,
        "node_info": task.node_info,
        "conditions": list(task.conditions) if task.conditions else None,
    }


# The columns of ``row_of`` after the key and the position, in its order: each is a Task field of the same name
# stored as it is, an enum stored as its value, or one of the columns made from the specification.
_PLAIN, _ENUM, _SPEC = "plain", "enum", "spec"
_UPDATE_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (name, _ENUM if name in ("state", "previous_state") else _SPEC if name in (
        "required_slots", "display_name", "search", "spec") else _PLAIN)
    for name in (
        "task_id", "number", "state", "previous_state", "version", "created_at", "state_transition_time",
        "previous_state_transition_time", "last_modified", "scheduled_at", "start_time", "end_time", "exit_code",
        "result", "retry_count", "requeue_count", "last_retry_time", "last_requeue_time", "required_slots",
        "display_name", "status_message", "search", "spec", "failure_info", "node_info", "conditions",
    )
)


def changed_row(before: Task, after: Task, scope_id: int, position: int) -> dict[str, Any]:
    """The update that turns the row of ``before`` into the row of ``after``: the key, the position, and exactly
    the columns in which ``row_of`` of the two differs (in its column order), found from the tasks' fields
    without making either row; the columns made from the specification are compared only when it changed."""
    out: dict[str, Any] = {"scope_id": scope_id, "key": after.key, "position": position}
    spec_changed = after.spec is not before.spec and after.spec != before.spec
    new_row = row_of(after, scope_id, position) if spec_changed else None
    old_row = row_of(before, scope_id, 0) if spec_changed else None
    for name, kind in _UPDATE_COLUMNS:
        if kind is _SPEC:
            if new_row is not None and new_row[name] != old_row[name]:  # type: ignore[index]
                out[name] = new_row[name]
            continue
        if name == "conditions":
            if after.conditions != before.conditions:
                out[name] = list(after.conditions) if after.conditions else None
            continue
        value = getattr(after, name)
        if kind is _ENUM:
            if value is not getattr(before, name):
                out[name] = value.value if value is not None else None
        elif value != getattr(before, name):
            out[name] = value
    return out


def task_of(row: Mapping[str, Any], scope: Scope) -> Task:
    return Task(
        scope=scope,
        task_id=row["task_id"],
        number=row["number"],
        spec=row["spec"],
        state=_STATE[row["state"]],
        version=row["version"],
        created_at=row["created_at"],
        state_transition_time=row["state_transition_time"],
        last_modified=row["last_modified"],
        previous_state=_STATE[row["previous_state"]] if row["previous_state"] else None,
        previous_state_transition_time=row["previous_state_transition_time"],
        scheduled_at=row["scheduled_at"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        exit_code=row["exit_code"],
        result=row["result"],
        failure_info=row["failure_info"],
        node_info=row["node_info"],
        retry_count=row["retry_count"],
        requeue_count=row["requeue_count"],
        last_retry_time=row["last_retry_time"],
        last_requeue_time=row["last_requeue_time"],
        status_message=row["status_message"],
        conditions=tuple(row["conditions"] or ()),
    )


_FIELDS = tuple(f.name for f in fields(Task) if f.name != "scope")
_AT_STATE, _AT_PREVIOUS, _AT_CONDITIONS = (_FIELDS.index(n) for n in ("state", "previous_state", "conditions"))


def task_builder(columns: Sequence[str]) -> Callable[[Sequence[Any], Scope], Task]:
    """``task_of`` for rows given as the values of ``columns`` in that order (JSON decoded), as a page's one
    statement reads them: the task's fields taken by position, no mapping made (a list page makes 50 of them)."""
    get = itemgetter(*(list(columns).index(n) for n in _FIELDS))
    states = _STATE

    def build(values: Sequence[Any], scope: Scope) -> Task:
        v = list(get(values))
        v[_AT_STATE] = states[v[_AT_STATE]]
        if v[_AT_PREVIOUS]:
            v[_AT_PREVIOUS] = states[v[_AT_PREVIOUS]]
        else:
            v[_AT_PREVIOUS] = None
        v[_AT_CONDITIONS] = tuple(v[_AT_CONDITIONS] or ())
        return Task(scope, *v)

    return build
