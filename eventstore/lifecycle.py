"""The task lifecycle: canonical states, what each means in every vendor's vocabulary, and the legal transitions.

    pending ──▶ starting ──▶ running ──▶ succeeded
       ▲  │        │  │        │  │
       │  │        │  └────────┼──┴─▶ stopping ──▶ cancelled / failed / succeeded
       │  └────────┴───────────┴────▶ cancelled            (terminate)
       ├── starting/running ─ requeue                       (requeueCount + 1)
       ├── starting/running ─ failure with retries left     (retryCount + 1)
       └── failed/cancelled ─ reactivate                    (retryCount reset to 0)

Everything here is pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
from typing import Mapping


class State(enum.StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})
ACTIVE = frozenset({State.STARTING, State.RUNNING, State.STOPPING})  # counted as "running" in summaries

# Each canonical state means exactly one value in each vendor's vocabulary.
AZURE_BATCH: Mapping[State, str] = {
    State.PENDING: "active",
    State.STARTING: "preparing",
    State.RUNNING: "running",
    State.STOPPING: "running",
    State.SUCCEEDED: "completed",
    State.FAILED: "completed",
    State.CANCELLED: "completed",
}
AZURE_BATCH_RESULT: Mapping[State, str] = {
    State.SUCCEEDED: "success",
    State.FAILED: "failure",
    State.CANCELLED: "failure",
}
HEALTHOMICS: Mapping[State, str] = {
    State.PENDING: "PENDING",
    State.STARTING: "STARTING",
    State.RUNNING: "RUNNING",
    State.STOPPING: "STOPPING",
    State.SUCCEEDED: "COMPLETED",
    State.FAILED: "FAILED",
    State.CANCELLED: "CANCELLED",
}
BLAXEL: Mapping[State, str] = {
    State.PENDING: "pending",
    State.STARTING: "reconciling",
    State.RUNNING: "running",
    State.STOPPING: "running",
    State.SUCCEEDED: "succeeded",
    State.FAILED: "failed",
    State.CANCELLED: "cancelled",
}
VOCABULARIES: Mapping[str, Mapping[State, str]] = {
    "batch": AZURE_BATCH,
    "omics": HEALTHOMICS,
    "blaxel": BLAXEL,
}


def states_for(value: str, dialect: str | None = None) -> frozenset[State]:
    """The canonical states a state name stands for.

    With a dialect, ``value`` is read in that vendor's vocabulary (Azure Batch ``completed`` is succeeded, failed
    and cancelled). Without one, a canonical name means itself, and any other vendor value means what it means in
    the vocabulary that has it. Raises ``KeyError`` for a value no vocabulary knows.
    """
    if dialect is None:
        try:
            return frozenset({State(value)})
        except ValueError:
            pass
        vocabularies = list(VOCABULARIES.values())
    else:
        vocabularies = [VOCABULARIES[dialect]]
    found = frozenset(s for vocab in vocabularies for s, name in vocab.items() if name == value)
    if not found:
        raise KeyError(value)
    return found


class Cause(enum.StrEnum):
    """Why a transition happened; recorded on every transition event."""

    TRANSITION = "transition"
    RETRY = "retry"  # a failure with retries left: back to pending
    REQUEUE = "requeue"  # sent back to pending before finishing, not counted as a retry
    TERMINATE = "terminate"  # cancelled before finishing
    REACTIVATE = "reactivate"  # a failed or cancelled task back to pending, retries reset


ALLOWED: Mapping[State, frozenset[State]] = {
    State.PENDING: frozenset({State.STARTING, State.RUNNING, State.CANCELLED}),
    State.STARTING: frozenset({State.RUNNING, State.PENDING, State.FAILED, State.CANCELLED}),
    State.RUNNING: frozenset({State.STOPPING, State.PENDING, State.SUCCEEDED, State.FAILED, State.CANCELLED}),
    State.STOPPING: frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED}),
    State.SUCCEEDED: frozenset(),
    State.FAILED: frozenset({State.PENDING}),
    State.CANCELLED: frozenset({State.PENDING}),
}
RETRYABLE_FROM = frozenset({State.STARTING, State.RUNNING})


def retries_left(retry_count: int, max_retries: int) -> bool:
    """``max_retries`` of -1 means unlimited, as Azure Batch's maxTaskRetryCount."""
    return max_retries == -1 or retry_count < max_retries


def plan(current: State, requested: State, retry_count: int, max_retries: int) -> tuple[State, Cause] | str:
    """Where a request to go from ``current`` to ``requested`` lands, and why; or the reason it is illegal."""
    if requested not in ALLOWED[current]:
        if current == requested:
            return f"it is already {current}"
        if current is State.SUCCEEDED:
            return "a succeeded task is final"
        return f"the lifecycle has no step from {current} to {requested}"
    if requested is State.FAILED and current in RETRYABLE_FROM and retries_left(retry_count, max_retries):
        return State.PENDING, Cause.RETRY
    if requested is State.PENDING:
        return State.PENDING, (Cause.REACTIVATE if current in TERMINAL else Cause.REQUEUE)
    if requested is State.CANCELLED:
        return State.CANCELLED, Cause.TERMINATE
    return requested, Cause.TRANSITION
