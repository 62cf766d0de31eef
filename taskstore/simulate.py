"""A realistic job driven through the Python API: tasks added in bulk, then started, retried, requeued, succeeded,
failed and cancelled in plausible proportions. How users and benchmarks make large jobs."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from eventstore import Scope, State, Task

from .store import TaskStore

BATCH = 500

# What becomes of a task, and how often (a job that mostly works, as real ones do).
OUTCOMES: list[tuple[str, float]] = [
    ("succeeded", 0.70),
    ("retried-then-succeeded", 0.08),
    ("failed", 0.06),
    ("cancelled", 0.04),
    ("requeued-then-succeeded", 0.02),
    ("running", 0.05),
    ("starting", 0.02),
    ("pending", 0.03),
]

# The transitions each outcome walks, in rounds; round r of every task is one bulk call.
PATHS: dict[str, list[str]] = {
    "succeeded": ["starting", "running", "succeeded"],
    "retried-then-succeeded": ["starting", "running", "failed", "starting", "running", "succeeded"],
    "failed": ["starting", "running", "failed", "starting", "running", "failed"],
    "cancelled": ["starting", "running", "cancelled"],
    "requeued-then-succeeded": ["starting", "pending", "starting", "running", "succeeded"],
    "running": ["starting", "running"],
    "starting": ["starting"],
    "pending": [],
}


@dataclass
class Summary:
    tasks: int = 0
    events: int = 0
    states: Counter[str] = field(default_factory=Counter)


def simulate(
    store: TaskStore,
    scope: Scope,
    tasks: int,
    *,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Summary:
    """Add ``tasks`` tasks to ``scope`` and drive them; ``progress(n)`` is called with each n events written."""
    rng = random.Random(seed)
    names, weights = zip(*OUTCOMES)
    summary = Summary(tasks=tasks)
    ids = [f"task-{i:07d}" for i in range(tasks)]
    outcome = rng.choices(names, weights=weights, k=tasks)
    for start in range(0, tasks, BATCH):
        chunk = ids[start : start + BATCH]
        specs = []
        for task_id in chunk:
            spec: dict = {
                "id": task_id,
                "displayName": f"{rng.choice(['align', 'call', 'merge', 'qc', 'index'])} {task_id}",
                "commandLine": f"/bin/sh -c 'run {task_id}'",
                "constraints": {"maxTaskRetryCount": 1, "maxWallClockTime": "PT1H"},
                "requiredSlots": rng.choice([1, 1, 1, 2, 4]),
                "labels": {"stage": rng.choice(["prep", "compute", "report"])},
                "resources": {"cpus": rng.choice([1, 2, 4]), "memory": rng.choice([2, 4, 8])},
            }
            specs.append(spec)
        store.add_tasks(scope, specs)
        summary.events += len(chunk)
        if progress:
            progress(len(chunk))
    final = [State.PENDING.value] * tasks
    rounds = max(len(p) for p in PATHS.values())
    for r in range(rounds):
        moving = [i for i, o in enumerate(outcome) if r < len(PATHS[o])]
        for start in range(0, len(moving), BATCH):
            chunk = moving[start : start + BATCH]
            done: list[Task] = store.transition_many(scope, [_move(ids[i], PATHS[outcome[i]][r], rng) for i in chunk])
            for i, task in zip(chunk, done):
                final[i] = task.state.value
            summary.events += len(done)
            if progress:
                progress(len(done))
    summary.states.update(final)
    return summary


def _move(task_id: str, to: str, rng: random.Random) -> tuple[str, str, dict]:
    if to == "succeeded":
        return task_id, to, {"exitCode": 0}
    if to == "failed":
        return task_id, to, {
            "exitCode": rng.choice([1, 2, 137]),
            "failureInfo": {"category": "usererror", "code": "FailureExitCode", "message": "the task exited non-zero"},
        }
    if to == "running":
        return task_id, to, {"nodeInfo": {"nodeId": f"node-{rng.randrange(64):02d}", "poolId": "pool-1"}}
    return task_id, to, {}


def planned_events(tasks: int, seed: int = 0) -> int:
    """How many events ``simulate`` will write (for a progress bar's total)."""
    rng = random.Random(seed)
    names, weights = zip(*OUTCOMES)
    return tasks + sum(len(PATHS[o]) for o in rng.choices(names, weights=weights, k=tasks))
