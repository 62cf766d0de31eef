"""What every benchmark question shares: the run's configuration, timing, peak memory, fresh databases made from job
templates, raw-SQL contenders, realistic task specifications, and the record of one measurement.

A question (one module each, registered in ``benchmarks.suite``) receives a :class:`Context` and, for one engine and
one job size, returns :class:`Measurement` objects. Everything about presenting them lives in ``benchmarks.report``.
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import sqlite3
import statistics
import time
import tracemalloc
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import orjson

SCOPE_PARTS = ("bench", "job", "default")  # the one scope (workspace, job, execution) every benchmark job lives in
SQLITE = "sqlite"
POSTGRESQL = "postgresql"

# -- configuration -------------------------------------------------------------------------------------------------


@dataclass
class Config:
    quick: bool
    sizes: list[int]
    pg_url: str | None
    workdir: Path
    reps: int  # timed repetitions after the warm-up
    warmup: int  # untimed repetitions first
    batches: int  # batches of 100 tasks per repetition (bulk appends)
    singles: int  # single-task operations per repetition
    # The same on SQLite, long enough that each repetition holds its share of the periodic costs: SQLite checkpoints
    # its WAL every 1,000 pages, which one-row transitions (about 11 pages each with the projections, 3 for a bare
    # event) reach every 90 to 330 transitions. With 40, a repetition held one checkpoint or none, and the median of
    # a few said more about which than about the writer. (PostgreSQL checkpoints in the background, on a timer.)
    sqlite_singles: int
    threads: list[int]  # concurrent writers (PostgreSQL)
    budget_s: float  # soft bound: a step not started by then is skipped and the report says so
    started: float = field(default_factory=time.monotonic)
    only_engines: list[str] | None = None  # run on these engines alone (PostgreSQL needs pg_url)
    smoke: bool = False  # the smallest run that goes through every step: checks the instrument, measures nothing

    @property
    def engines(self) -> list[str]:
        available = [SQLITE, POSTGRESQL] if self.pg_url else [SQLITE]
        return [e for e in available if self.only_engines is None or e in self.only_engines]

    def over_budget(self) -> bool:
        return time.monotonic() - self.started > self.budget_s


def default_config(*, quick: bool, sizes: Sequence[int] | None, pg_url: str | None, workdir: Path,
                   smoke: bool = False) -> Config:
    if smoke:  # quick mode cut to one repetition of everything
        return replace(default_config(quick=True, sizes=sizes or [300], pg_url=pg_url, workdir=workdir),
                       reps=1, warmup=0, batches=1, singles=4, sqlite_singles=4, threads=[1, 2], budget_s=600.0, smoke=True)
    if quick:
        return Config(
            quick=True,
            sizes=list(sizes or [10_000]),
            pg_url=pg_url,
            workdir=workdir,
            reps=3,
            warmup=1,
            batches=5,
            singles=40,
            sqlite_singles=300,
            threads=[1, 2, 4],
            budget_s=270.0,  # every question starts by then; the run ends within about 5 minutes
        )
    return Config(
        quick=False,
        sizes=list(sizes or [10_000, 200_000, 1_000_000]),
        pg_url=pg_url,
        workdir=workdir,
        reps=7,
        warmup=2,
        batches=20,
        singles=100,
        sqlite_singles=600,
        threads=[1, 2, 4],
        budget_s=6 * 3600.0,
    )


# -- measurements --------------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """This measurement's rate relative to another measurement of the same question, engine and size."""

    baseline: str  # the other measurement's operation name
    goal: float | None = None  # the least acceptable ratio, or None when the ratio is only reported
    goal_text: str = ""


@dataclass
class Measurement:
    question: str
    operation: str
    engine: str
    size: int  # tasks in the job before the measured operation
    unit: str  # what one sample's time is per ("batch of 100 tasks", "transition", "whole log")
    samples: list[float]  # seconds per unit, one per timed repetition
    events_per_unit: float  # for the rate column
    comparisons: list[Comparison] = field(default_factory=list)
    peak_bytes: int | None = None
    note: str = ""
    skipped: str = ""  # why it was not measured
    limit: tuple[float, str] | None = None  # an absolute goal: (most seconds per unit, goal text)
    rate_unit: str = "events"  # what the rate column counts

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def rate(self) -> float:
        """Events per second at the median."""
        return self.events_per_unit / self.median if self.samples and self.median > 0 else 0.0


def ratio(m: Measurement, baseline: Measurement) -> float:
    """How many times the baseline's rate ``m`` achieves (> 1: faster than the baseline)."""
    return baseline.median / m.median


# -- timing --------------------------------------------------------------------------------------------------------


def repeat(cfg: Config, sample: Callable[[int], float], *, reps: int | None = None, warmup: int | None = None) -> list[float]:
    """Run ``sample(i)`` warm-up times untimed, then ``reps`` times; each call returns its own measured seconds per
    unit (the caller times only the operation, never its setup)."""
    out: list[float] = []
    w = cfg.warmup if warmup is None else warmup
    for i in range(w + (cfg.reps if reps is None else reps)):
        gc.collect()
        seconds = sample(i)
        if i >= w:
            out.append(seconds)
    return out


def interleaved(cfg: Config, samples: dict[str, Callable[[int], float]], *, reps: int | None = None,
                warmup: int | None = None, freeze: bool = False) -> dict[str, list[float]]:
    """Several read-only contenders on the same database, their repetitions interleaved (a, b, a, b, ...) so that
    any drift of the machine touches all of them alike. Each sample starts after a full garbage collection; with
    ``freeze`` (samples of milliseconds, hundreds of them), the objects alive before the first sample are moved out
    of the collector's sight meanwhile (``gc.freeze``), so that each collection costs what the samples left
    (about 1 ms) rather than a walk of the whole heap (about 30 ms here)."""
    out: dict[str, list[float]] = {k: [] for k in samples}
    w = cfg.warmup if warmup is None else warmup
    if freeze:
        gc.collect()
        gc.freeze()
    try:
        for i in range(w + (cfg.reps if reps is None else reps)):
            for name, fn in samples.items():
                gc.collect()
                seconds = fn(i)
                if i >= w:
                    out[name].append(seconds)
    finally:
        if freeze:
            gc.unfreeze()
    return out


# Operations of about a millisecond (a page, a count summary) are timed in many short samples: this machine runs the
# same page in 0.6 ms and, in bursts of 10 to 100 ms (another process, the hypervisor), in 1.1 to 2 ms; a few long
# samples each land in one burst or none, and their median then depends on luck rather than on the operation.
SHORT_OPS_PER_SAMPLE = 5  # operations per timed sample
SHORT_REPS_FACTOR = 4  # times the mode's repetitions (and warm-ups)


def short_ops(cfg: Config) -> dict[str, Any]:
    """The ``reps``, ``warmup`` and ``freeze`` of :func:`interleaved` for operations of about a millisecond."""
    return {"reps": cfg.reps * SHORT_REPS_FACTOR, "warmup": cfg.warmup * SHORT_REPS_FACTOR, "freeze": True}


@dataclass
class Contender:
    """One side of a comparison, set up on its own database: ``sample(i)`` runs repetition ``i`` and returns its
    seconds per unit; ``memory()`` runs one more unit for the peak-memory measurement."""

    sample: Callable[[int], float]
    memory: Callable[[], Any] | None = None


def shared_job_note(size: int) -> str:
    """What the report says of a writing question run on a job shared with other writers (``Target.tag``)."""
    return (f"postgresql, {size:,} tasks: the job's template is used in place, not copied for each contender (a copy "
            "takes another 41 GB): every contender, and every writing question after the first, adds its own tasks to "
            "the one job, which so grows over the run by what they add (in full mode, the events of about 470,000 tasks: "
            "under 5% of the job).")


def side_by_side(cfg: Config, setups: dict[str, Callable[[ExitStack], Contender]], *, reps: int | None = None,
                 warmup: int | None = None) -> dict[str, tuple[list[float], int | None]]:
    """Set every contender up (each registers its own clean-up on the stack), run their repetitions interleaved,
    then one untimed memory run each. Returns name -> (samples, peak bytes)."""
    with ExitStack() as stack:
        contenders = {name: setup(stack) for name, setup in setups.items()}
        got = interleaved(cfg, {name: c.sample for name, c in contenders.items()}, reps=reps, warmup=warmup)
        return {name: (got[name], peak_memory(c.memory) if c.memory else None) for name, c in contenders.items()}


class Stopwatch:
    """Accumulates only the timed parts of a sample: ``with sw: operation()``."""

    def __init__(self) -> None:
        self.total = 0.0
        self._t = 0.0

    def __enter__(self) -> "Stopwatch":
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.total += time.perf_counter() - self._t


T = TypeVar("T")


def in_fresh_process(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a Python process started afresh (multiprocessing's spawn: it imports what ``fn`` needs and
    nothing of what this process holds), its result returned and its exception raised here. For measurements that
    fork (a rebuild's seeding workers): forking and ending a child cost what the parent has mapped."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def peak_memory(fn: Callable[[], Any]) -> int:
    """Peak Python heap (tracemalloc) while ``fn`` runs, in bytes: an untimed extra run, since tracing is slow.
    Memory that SQLite or libpq allocate in C is not counted."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


# -- realistic task specifications -----------------------------------------------------------------------------------


def task_spec(task_id: str, rng: random.Random) -> dict[str, Any]:
    """An Add Task body of the size real control planes send: Azure Batch fields, Blaxel's spec, HealthOmics'
    resources and labels (about 1 KB of JSON)."""
    stage = rng.choice(["prep", "align", "call", "merge", "report"])
    return {
        "id": task_id,
        "displayName": f"{stage} {task_id}",
        "commandLine": f"/bin/bash -c 'run-{stage} --sample {task_id} --threads 4 --out /mnt/out/{task_id}'",
        "constraints": {"maxWallClockTime": "PT2H", "retentionTime": "P7D", "maxTaskRetryCount": 2},
        "environmentSettings": [
            {"name": "SAMPLE", "value": task_id},
            {"name": "STAGE", "value": stage},
        ],
        "resourceFiles": [
            {"httpUrl": f"https://store.example.com/inputs/{task_id}.fastq.gz", "filePath": "in/reads.fastq.gz"},
            {"storageContainerUrl": "https://store.example.com/reference", "blobPrefix": "grch38/"},
        ],
        "outputFiles": [
            {
                "filePattern": "out/**/*",
                "destination": {"container": {"containerUrl": "https://store.example.com/results", "path": task_id}},
                "uploadOptions": {"uploadCondition": "taskcompletion"},
            }
        ],
        "requiredSlots": rng.choice([1, 1, 1, 2, 4]),
        "containerSettings": {"imageName": f"registry.example.com/pipeline/{stage}:1.4.2", "workingDirectory": "taskWorkingDirectory"},
        "userIdentity": {"autoUser": {"scope": "task", "elevationLevel": "nonadmin"}},
        "maxRetries": 2,
        "timeout": "PT2H",
        "resources": {"cpus": rng.choice([1, 2, 4, 8]), "memory": rng.choice([2, 4, 8, 16])},
        "labels": {"stage": stage, "cohort": f"c{rng.randrange(20)}", "priority": rng.choice(["low", "normal", "high"])},
    }


def spec_batches(prefix: str, count: int, size: int = 100, seed: int = 7) -> list[list[dict[str, Any]]]:
    """``count`` batches of ``size`` specs with ids ``{prefix}-{batch}-{i}``, made before any timing starts."""
    rng = random.Random(seed)
    return [[task_spec(f"{prefix}-{b}-{i}", rng) for i in range(size)] for b in range(count)]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def added_row(scope_id: int, spec: dict[str, Any], at: str) -> tuple:
    """The events row taskstore writes for a TaskAdded (spec without its id, as TaskSpec.to_data leaves it)."""
    data = {k: v for k, v in spec.items() if k != "id"}
    return (scope_id, spec["id"].lower(), 1, "TaskAdded", 1,
            dumps({"taskId": spec["id"], "spec": data, "at": at}), dumps({"recordedAt": at}))


EVENT_COLUMNS = "scope_id, stream, version, type, schema_version, data, metadata"


# -- databases -----------------------------------------------------------------------------------------------------


@dataclass
class Target:
    """One fresh database: the URL and schema to open it with, and where its file is (SQLite)."""

    engine: str
    url: str
    schema: str | None = None
    path: Path | None = None
    pg_url: str | None = None  # the plain libpq URL (PostgreSQL)
    # Added to the ids of the tasks (and jobs) a question writes: "" unless the job is shared with other writers
    # (a PostgreSQL template used in place, see Databases.fresh), where each holder gets its own ("_1", "_2", ...).
    tag: str = ""

    def open_store(self):
        from taskstore import open_store

        return open_store(self.url, schema=self.schema)

    def scope(self):
        from eventstore import Scope

        return Scope(*SCOPE_PARTS)


def libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def pg_connect(cfg_or_url: str, schema: str | None = None, *, autocommit: bool = False):
    import psycopg

    conn = psycopg.connect(libpq_url(cfg_or_url), autocommit=autocommit)
    if schema:
        conn.execute(f'SET search_path TO "{schema}"')
        if not autocommit:
            conn.commit()
    return conn


def drop_schema(url: str, schema: str) -> None:
    with pg_connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def sqlite_connect(path: Path) -> sqlite3.Connection:
    """A raw sqlite3 connection with the PRAGMAs of eventstore/dialects/sqlite.py; the caller issues BEGIN."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def sqlite_checkpoint(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _copy_sqlite(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    for suffix in ("-wal", "-shm"):
        s = Path(str(src) + suffix)
        if s.exists():
            shutil.copyfile(s, Path(str(dst) + suffix))


# -- jobs: how the database of a job of N tasks is made ----------------------------------------------------------------

class JobShape:
    """A kind of job a question needs in its database before it measures; ``build`` writes one into an open store."""

    name = "job"
    lifecycle: list[str] | None = None

    def build(self, store: Any, size: int) -> None:
        build_job(store, size, lifecycle=self.lifecycle)


class SimulatedJob(JobShape):
    """The realistic job of ``taskstore simulate``: tasks added in bulk, then started, retried, requeued, succeeded,
    failed and cancelled in plausible proportions (about 4.3 events per task)."""

    name = "simulated"


class LifecycleJob(JobShape):
    """Every task added, then started, running and succeeded: 4 events per task, the workload of the peers question."""

    name = "lifecycle"
    lifecycle = ["starting", "running", "succeeded"]


def build_job(store: Any, size: int, *, lifecycle: list[str] | None) -> None:
    """Write a job of ``size`` tasks into ``store``: its events, and the projections every append keeps.

    The job is the one ``taskstore simulate --seed 0`` makes (or, with ``lifecycle``, every task through those
    steps): the same decisions, taken by the same code (simulate's outcomes, specs and transition details,
    eventstore's transition planner and fold), inserted into ``events`` 500 at a time with the store's own inline
    projections applied in the same transaction. Only the commands' own work is skipped (spec validation, reading
    each task to decide, the version check of each append), so that the large jobs build in minutes; what those
    cost is what questions 1 and 2 measure. At 10,000 tasks this writes exactly the
    events (42,994) and count summary that ``simulate`` writes, timestamps aside.
    """
    copy = store.engine.dialect.name == POSTGRESQL and size > COPY_BUILD_ABOVE
    _bulk_job(store, size, lifecycle, copy=copy)
    if copy:
        # The events went in without the projections: make them as `taskstore rebuild` does (one COPY per core), and
        # the full snapshot a job of this size would have (the schedule the appends keep saw none of these events).
        store.rebuild()
        store.snapshot(Target(SQLITE, "").scope(), "full")
        return
    snapshots = getattr(getattr(store, "queries", None), "snapshots", None)
    if snapshots is not None and hasattr(snapshots, "take_due"):
        snapshots.take_due()  # what `taskstore snapshot --due` does; normally a background thread's work


# PostgreSQL jobs above this size (the 10,000,000-task job of full mode) are built by COPY of their events, with the
# projections made afterwards by a rebuild: through the append path, building one would take hours. The events are
# the same (the same decisions, in the same order), and so is what a rebuild makes of them (the audit checks it).
COPY_BUILD_ABOVE = 1_000_000
CLONE_UP_TO = 1_000_000  # PostgreSQL templates of larger jobs are used in place, not copied (see Databases.fresh)
SQLITE_MAX_SIZE = 1_000_000  # larger jobs are measured on PostgreSQL only
COPY_ROWS = 50_000  # event rows per COPY transaction
# The event-history baselines (Blaxel's approach: fold the scope's events into tasks) hold every task of the job in
# memory at once: 435 MiB at 200,000 tasks, so about 22 GiB at 10,000,000, which this 24 GiB machine does not have
# beside PostgreSQL. Above this size they are not run, and the report says so.
FOLD_UP_TO = 1_000_000


def fold_skipped(size: int) -> str:
    """Why the event-history baseline is not measured at ``size`` ("" when it is)."""
    if size <= FOLD_UP_TO:
        return ""
    return (f"not run above {FOLD_UP_TO:,} tasks: it holds every task in memory (435 MiB at 200,000 tasks, "
            f"about {size * 435 / 200_000 / 1024:,.0f} GiB here)")


def _bulk_job(store: Any, size: int, lifecycle: list[str] | None, *, copy: bool = False) -> None:
    from eventstore.events import RecordedEvent
    from eventstore.lifecycle import State
    from eventstore.schema import events
    from eventstore.spec import parse_spec
    from eventstore.task import added, evolve
    from eventstore.tasks import _transition_event, transition_details
    from taskstore.simulate import BATCH, OUTCOMES, PATHS, _move

    log = store.log
    scope = Target(SQLITE, "").scope()
    rng = random.Random(0)
    ids = [f"task-{i:07d}" for i in range(size)]
    if lifecycle is None:
        names, weights = zip(*OUTCOMES)
        paths = [PATHS[o] for o in rng.choices(names, weights=weights, k=size)]
    else:
        paths = [lifecycle] * size
    tasks: list[Any] = [None] * size
    sid = 0

    deciding: dict[int, dict[str, Any]] = {}

    def slim(task: Any) -> Any:
        """The task with only what the decisions read of its spec (its retry limit), shared between tasks: a job of
        10,000,000 tasks is folded in memory as it is built."""
        from dataclasses import replace as with_

        from eventstore.task import max_retries

        limit = max_retries(task.spec)
        spec = deciding.get(limit)
        if spec is None:
            spec = deciding[limit] = {"constraints": {"maxTaskRetryCount": limit}}
        return with_(task, spec=spec)

    pending: list[tuple] = []
    positions = iter(range(10**12))  # stand-ins for the positions COPY leaves to the sequence: the fold reads none

    def flush() -> None:
        from eventstore.dialects.base import driver_copy

        if pending:
            with log.writing() as conn:
                driver_copy(conn, f"COPY {events.name} (scope_id, stream, version, type, schema_version, data, "
                                  "metadata) FROM STDIN", pending)
            pending.clear()

    def write(rows: list[dict[str, Any]], at: str) -> list[RecordedEvent]:
        meta = {"recordedAt": at}
        for r in rows:
            r["scope_id"], r["schema_version"], r["metadata"], r["after"] = sid, 1, meta, 0
        if copy:
            text = orjson.dumps(meta).decode()
            pending.extend((sid, r["stream"], r["version"], r["type"], 1, orjson.dumps(r["data"]).decode(), text)
                           for r in rows)
            if len(pending) >= COPY_ROWS:
                flush()
            return [RecordedEvent(next(positions), scope, r["stream"], r["version"], r["type"], 1, r["data"], meta, 0,
                                  scope_id=sid) for r in rows]
        with log.writing() as conn:
            got = log.dialect.insert_events(conn, events, rows)  # the append's own insert (unnest on PostgreSQL)
            recorded = [
                RecordedEvent(p, scope, r["stream"], r["version"], r["type"], 1, r["data"], meta, t or 0, scope_id=sid)
                for r, (p, t) in zip(rows, got)
            ]
            for projection in log.projections:
                projection.apply(conn, recorded)
        return recorded

    for start in range(0, size, BATCH):
        specs = []
        for i in range(start, min(size, start + BATCH)):
            if lifecycle is None:
                specs.append({
                    "id": ids[i],
                    "displayName": f"{rng.choice(['align', 'call', 'merge', 'qc', 'index'])} {ids[i]}",
                    "commandLine": f"/bin/sh -c 'run {ids[i]}'",
                    "constraints": {"maxTaskRetryCount": 1, "maxWallClockTime": "PT1H"},
                    "requiredSlots": rng.choice([1, 1, 1, 2, 4]),
                    "labels": {"stage": rng.choice(["prep", "compute", "report"])},
                    "resources": {"cpus": rng.choice([1, 2, 4]), "memory": rng.choice([2, 4, 8])},
                })
            else:
                specs.append(task_spec(ids[i], rng))
        if start == 0:  # the first batch through the API: it creates the scope
            for i, task in enumerate(store.add_tasks(scope, specs)):
                tasks[i] = task
            sid = log.scope_id(scope)
            continue
        at = now_iso()
        rows = [{"stream": s["id"].lower(), "version": 1, "type": "TaskAdded",
                 "data": {"taskId": s["id"], "spec": parse_spec(s).to_data(), "at": at}} for s in specs]
        for i, rec in zip(range(start, start + len(specs)), write(rows, at)):
            tasks[i] = slim(added(rec)) if copy else added(rec)
    rounds = max(len(p) for p in paths)
    for r in range(rounds):
        moving = [i for i in range(size) if r < len(paths[i])]
        for start in range(0, len(moving), BATCH):
            at = now_iso()
            chunk = moving[start : start + BATCH]
            rows = []
            for i in chunk:
                if lifecycle is None:
                    _, to, raw = _move(ids[i], paths[i][r], rng)
                else:
                    to, raw = paths[i][r], {}
                ev = _transition_event(tasks[i], State(to), transition_details(raw), at)
                rows.append({"stream": ids[i], "version": tasks[i].version + 1, "type": ev.type, "data": ev.data})
            for i, rec in zip(chunk, write(rows, at)):
                tasks[i] = evolve(tasks[i], rec)
    flush()


class Databases:
    """Job templates, built once per (shape, engine, size), and fresh databases copied from them.

    SQLite: a template file, copied to a new temporary file for every benchmark. PostgreSQL: a template schema, and
    for every benchmark a fresh schema opened through ``open_store(url, schema=...)`` (so the migrations make it)
    and filled from the template server-side (every table, events and projections); every schema is dropped
    afterwards.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.root = cfg.workdir
        self.root.mkdir(parents=True, exist_ok=True)
        self._sqlite: dict[tuple[str, int], Path] = {}
        self._pg: dict[tuple[str, int], str] = {}
        self._pg_holders: dict[tuple[str, int], int] = {}  # questions holding a template used in place
        self._pg_tags: dict[tuple[str, int], int] = {}  # shared writers given a template so far: written when any
        self.build_seconds: dict[tuple[str, str, int], float] = {}
        self.extras: dict[str, Any] = {}  # a question's own templates (e.g. another library's databases)
        self._release_hooks: list[Callable[[int], None]] = []

    def on_release(self, hook: Callable[[int], None]) -> None:
        """Call ``hook(size)`` when the templates of a size are released."""
        if hook not in self._release_hooks:
            self._release_hooks.append(hook)

    # templates

    def sqlite_template(self, shape: JobShape, size: int) -> Path:
        key = (shape.name, size)
        if key not in self._sqlite:
            from taskstore import open_store

            path = self.root / f"tpl-{shape.name}-{size}.db"
            for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                p.unlink(missing_ok=True)
            t = time.perf_counter()
            store = open_store(f"sqlite:///{path}")
            try:
                shape.build(store, size)
            finally:
                store.close()
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("ANALYZE")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
            self.build_seconds[(shape.name, SQLITE, size)] = time.perf_counter() - t
            self._sqlite[key] = path
        return self._sqlite[key]

    def pg_template(self, shape: JobShape, size: int) -> str:
        key = (shape.name, size)
        if key not in self._pg:
            from taskstore import open_store

            schema = f"bench_tpl_{shape.name}_{size}_{uuid.uuid4().hex[:6]}"
            self._pg[key] = schema
            t = time.perf_counter()
            store = open_store(self.cfg.pg_url, schema=schema)  # type: ignore[arg-type]
            try:
                shape.build(store, size)
            finally:
                store.close()
            _pg_analyze(self.cfg.pg_url, schema)  # type: ignore[arg-type]
            self.build_seconds[(shape.name, POSTGRESQL, size)] = time.perf_counter() - t
        return self._pg[key]

    # fresh databases

    @contextmanager
    def fresh(self, engine: str, shape: JobShape | None, size: int, *, changes: bool = True,
              shared: bool = False) -> Iterator[Target]:
        """A database of its own holding a job of ``size`` tasks of ``shape`` (or an empty store), removed after.

        ``changes``: whether the question writes to the job (adds events, snapshots or tables). ``shared``: whether
        it can write to a job that other writers share (it adds tasks of its own, ids tagged by ``Target.tag``, and
        reads back only those). On PostgreSQL above ``CLONE_UP_TO`` tasks the template is not copied (a copy of a
        10,000,000-task template needs another 41 GB): a question that does not change the job reads the template
        itself; shared writers all write to it, the template then marked written; a question that changes the job
        otherwise (a rebuild) takes it over and drops it after. A reader or a rebuild that finds the template
        written gets one built again (``suite.in_run_order`` runs readers first, then the rebuild, then the shared
        writers, so that a run builds it at most twice).
        """
        from taskstore import open_store

        if engine == POSTGRESQL and shape is not None and size > CLONE_UP_TO:
            assert self.cfg.pg_url
            key = (shape.name, size)
            if self._pg_tags.get(key) and not (changes and shared):  # written by shared writers: not as built
                self._drop_pg_template(key)
            tpl = self.pg_template(shape, size)
            tag = ""
            if changes and shared:
                self._pg_tags[key] = self._pg_tags.get(key, 0) + 1
                tag = f"_{self._pg_tags[key]}"
            self._pg_holders[key] = self._pg_holders.get(key, 0) + 1
            try:
                yield Target(POSTGRESQL, self.cfg.pg_url, schema=tpl, pg_url=libpq_url(self.cfg.pg_url), tag=tag)
            finally:
                self._pg_holders[key] -= 1
                if changes and not shared and key in self._pg and not self._pg_holders[key]:
                    self._drop_pg_template(key)
            return

        if engine == SQLITE:
            path = self.root / f"run-{uuid.uuid4().hex[:10]}.db"
            if shape is not None and size > 0:
                _copy_sqlite(self.sqlite_template(shape, size), path)
            else:
                open_store(f"sqlite:///{path}").close()
            try:
                yield Target(SQLITE, f"sqlite:///{path}", path=path)
            finally:
                for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                    p.unlink(missing_ok=True)
            return
        assert self.cfg.pg_url
        tpl = self.pg_template(shape, size) if shape is not None and size > 0 else None
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        try:
            open_store(self.cfg.pg_url, schema=schema).close()
            if tpl:
                _pg_clone(self.cfg.pg_url, tpl, schema)
            yield Target(POSTGRESQL, self.cfg.pg_url, schema=schema, pg_url=libpq_url(self.cfg.pg_url))
        finally:
            drop_schema(self.cfg.pg_url, schema)

    def _drop_pg_template(self, key: tuple[str, int]) -> None:
        if self._pg_holders.get(key):
            raise RuntimeError(f"the {key[0]} template of {key[1]:,} tasks is still in use")
        self._pg_tags.pop(key, None)
        drop_schema(self.cfg.pg_url, self._pg.pop(key))  # type: ignore[arg-type]

    def release(self, size: int) -> None:
        """Drop the templates of one size (after every question has used them)."""
        for hook in self._release_hooks:
            hook(size)
        for key in [k for k in self._sqlite if k[1] == size]:
            path = self._sqlite.pop(key)
            for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                p.unlink(missing_ok=True)
        for key in [k for k in self._pg if k[1] == size]:
            self._drop_pg_template(key)

    def close(self, sizes: Sequence[int] = ()) -> None:
        for size in {*sizes, *(k[1] for k in [*self._sqlite, *self._pg])}:
            self.release(size)
        shutil.rmtree(self.root, ignore_errors=True)


def _pg_clone(url: str, src: str, dst: str) -> None:
    """Copy every table of schema ``src`` (but the migration version tables) into the same tables of ``dst``."""
    with pg_connect(url) as pg:
        tables = [r[0] for r in pg.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'",
            (src,),
        ) if not r[0].endswith("_version")]
        with pg.transaction():
            for t in tables:
                if t != "events":  # append-only (and empty in a fresh store); others may hold a fresh store's rows
                    pg.execute(f'DELETE FROM "{dst}"."{t}"')
                pg.execute(f'INSERT INTO "{dst}"."{t}" SELECT * FROM "{src}"."{t}"')
            for t, col in pg.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND column_default LIKE 'nextval%%'", (dst,)
            ).fetchall():
                pg.execute(
                    f"SELECT setval(pg_get_serial_sequence('\"{dst}\".\"{t}\"', '{col}'), "
                    f'coalesce((SELECT max("{col}") FROM "{dst}"."{t}"), 0) + 1, false)'
                )
            for t in tables:
                pg.execute(f'ANALYZE "{dst}"."{t}"')


def _pg_analyze(url: str, schema: str) -> None:
    with pg_connect(url, autocommit=True) as pg:
        for (t,) in pg.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'",
            (schema,),
        ).fetchall():
            pg.execute(f'ANALYZE "{schema}"."{t}"')


def bare_log(store: Any) -> Any:
    """The store's event log without its inline projections: the cost of the event log alone, on the same engine."""
    from eventstore import EventLog, task_upcasters

    return EventLog(store.engine, upcasters=task_upcasters())


def scope_id(target: Target) -> int:
    """The database id of the benchmark scope (created when missing), for raw contenders."""
    if target.engine == SQLITE:
        conn = sqlite_connect(target.path)  # type: ignore[arg-type]
        conn.execute("INSERT OR IGNORE INTO scopes (workspace, job, execution) VALUES (?, ?, ?)", SCOPE_PARTS)
        sid = conn.execute("SELECT id FROM scopes WHERE workspace=? AND job=? AND execution=?", SCOPE_PARTS).fetchone()[0]
        conn.close()
        return sid
    with pg_connect(target.pg_url, target.schema) as pg:  # type: ignore[arg-type]
        pg.execute(
            "INSERT INTO scopes (workspace, job, execution) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", SCOPE_PARTS
        )
        sid = pg.execute(
            "SELECT id FROM scopes WHERE workspace=%s AND job=%s AND execution=%s", SCOPE_PARTS
        ).fetchone()[0]
        pg.commit()
        return sid


# -- the context a question runs in ---------------------------------------------------------------------------------


@dataclass
class Context:
    cfg: Config
    dbs: Databases
    status: Callable[[str], None] = lambda _msg: None  # shows what runs now (the progress bar's description)
    notes: dict[str, list[str]] = field(default_factory=dict)  # question key -> findings worth a line in the report

    def note(self, question: str, text: str) -> None:
        lst = self.notes.setdefault(question, [])
        if text not in lst:
            lst.append(text)


def machine() -> dict[str, str]:
    """What the report says about where it ran."""
    import platform

    info = {"cores": str(os.cpu_count()), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        info["memory"] = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        info["memory"] = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line for line in f if line.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        info["cpu"] = platform.processor() or "unknown"
    info["os"] = f"{platform.system()} {platform.release()}"
    return info
