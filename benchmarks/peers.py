"""Question 3: the ``eventsourcing`` library (https://pypi.org/project/eventsourcing/) with its SQLite and PostgreSQL
persistence, on the same task lifecycle events.

The workload: tasks added 100 at a time, then started, running and succeeded, 100 at a time: 400 events in four
transactions per batch of 100 tasks, appended to a job that already holds ``size`` tasks of the same shape.

- eventsourcing, in-memory aggregates: one ``Aggregate`` per task, created (event ``Added``, the same spec) and
  moved three times (event ``Transitioned``, the same data as taskstore's), ``app.save(*aggregates)`` per step:
  its fastest path, nothing is read back and nothing projected. Against taskstore's event log appending the same
  decided events (``EventLog.append`` with the same expected versions, without taskstore's inline projections).
- eventsourcing, command style: each transition step loads the aggregates (``app.repository.get``), triggers, saves;
  against taskstore's commands (``add_tasks`` then ``transition_many``: validate, read the task view, decide,
  append, and update the task view and count summary in the same transaction, work eventsourcing does not do).
- Replay: the whole notification log (``recorder.select_notifications`` 1,000 at a time, each turned back into a
  domain event by ``app.mapper``), against ``EventLog.iter_all`` (1,000 at a time, decoded into RecordedEvents).

Durability is made equal: eventsourcing's SQLite connections get ``PRAGMA synchronous=NORMAL`` (taskstore's setting;
its own default is FULL, an fsync per commit). Goal (issue 5): taskstore's append at least 3 times eventsourcing's.
"""

from __future__ import annotations

import shutil
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from .harness import (
    POSTGRESQL,
    SQLITE,
    Comparison,
    Contender,
    Context,
    LifecycleJob,
    Measurement,
    Stopwatch,
    Target,
    bare_log,
    drop_schema,
    interleaved,
    now_iso,
    peak_memory,
    pg_connect,
    side_by_side,
    spec_batches,
    task_spec,
)

KEY = "peers"
TITLE = "taskstore against the eventsourcing library"
GOAL = "taskstore's append at least 3 times eventsourcing's, for the same events"
UNIT = "batch of 100 tasks × 4 events"
STEPS = ("starting", "running", "succeeded")

ES_MEM = "eventsourcing: save in-memory aggregates"
ES_CMD = "eventsourcing: repository.get + save"
TS_LOG = "taskstore: EventLog.append, events only"
TS_API = "taskstore: add_tasks + transition_many (with projections)"
ES_READ = "eventsourcing: read notification log"
TS_READ = "taskstore: EventLog.iter_all"
READ_UNIT = "whole log"

NS = uuid.UUID("5d6f0c36-4c1b-4b38-9d43-3f0a5e2c9b11")
_classes: dict[str, Any] = {}


def _es() -> dict[str, Any]:
    """The eventsourcing application and aggregate, defined on first use (the library is an optional extra)."""
    if _classes:
        return _classes
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event
    from eventsourcing.sqlite import SQLiteConnectionPool

    class TaskAggregate(Aggregate):
        @staticmethod
        def create_id(task_id: str, spec: dict, at: str) -> uuid.UUID:
            return uuid.uuid5(NS, task_id.lower())

        @event("Added")
        def __init__(self, task_id: str, spec: dict, at: str) -> None:
            self.task_id = task_id
            self.spec = spec
            self.state = "pending"

        @event("Transitioned")
        def transitioned(self, change: dict) -> None:
            self.state = change["to"]

    class TaskApp(Application):
        name = "Tasks"

    if not getattr(SQLiteConnectionPool, "_bench_patched", False):
        original = SQLiteConnectionPool._create_connection

        def create_connection(self: Any) -> Any:
            conn = original(self)
            conn._sqlite_conn.execute("PRAGMA synchronous=NORMAL")
            return conn

        SQLiteConnectionPool._create_connection = create_connection  # type: ignore[method-assign]
        SQLiteConnectionPool._bench_patched = True  # type: ignore[attr-defined]
    _classes.update(app=TaskApp, aggregate=TaskAggregate)
    return _classes


def change(frm: str, to: str, at: str) -> dict[str, Any]:
    """The data of taskstore's TaskTransitioned for a plain step (what eventstore.tasks decides)."""
    data: dict[str, Any] = {"from": frm, "to": to, "at": at, "cause": "transition", "retryCount": 0, "requeueCount": 0}
    if to == "succeeded":
        data["result"] = "success"
    return data


# -- eventsourcing databases ---------------------------------------------------------------------------------------


def _env(engine: str, ctx: Context, where: str) -> dict[str, str]:
    if engine == SQLITE:
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": where}
    from sqlalchemy import make_url

    u = make_url(ctx.cfg.pg_url)  # type: ignore[arg-type]
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": u.database or "postgres",
        "POSTGRES_HOST": u.host or "127.0.0.1",
        "POSTGRES_PORT": str(u.port or 5432),
        "POSTGRES_USER": u.username or "postgres",
        "POSTGRES_PASSWORD": u.password or "",
        "POSTGRES_SCHEMA": where,
    }


def _app(engine: str, ctx: Context, where: str) -> Any:
    if engine == POSTGRESQL:
        with pg_connect(ctx.cfg.pg_url, autocommit=True) as c:  # type: ignore[arg-type]
            c.execute(f'CREATE SCHEMA IF NOT EXISTS "{where}"')
    return _es()["app"](env=_env(engine, ctx, where))


def _close(app: Any) -> None:
    try:
        app.close()
    except Exception:  # noqa: BLE001 - closing a pool twice is harmless here
        pass


def _fill(app: Any, size: int) -> None:
    """Write a job of ``size`` tasks, each added and moved through STEPS, 500 aggregates per save."""
    import random

    agg = _es()["aggregate"]
    rng = random.Random(0)
    for start in range(0, size, 500):
        at = now_iso()
        tasks = [agg(t, {k: v for k, v in task_spec(t, rng).items() if k != "id"}, at)
                 for t in (f"task-{i:07d}" for i in range(start, min(size, start + 500)))]
        app.save(*tasks)
        prev = "pending"
        for to in STEPS:
            for a in tasks:
                a.transitioned(change(prev, to, at))
            app.save(*tasks)
            prev = to


class _EsTemplates:
    """eventsourcing job templates per (engine, size), kept on the Databases object of the run."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.made: dict[tuple[str, int], str] = {}

    def template(self, engine: str, size: int) -> str:
        key = (engine, size)
        if key not in self.made:
            where = (str(self.ctx.cfg.workdir / f"es-tpl-{size}.db") if engine == SQLITE
                     else f"bench_es_tpl_{size}_{uuid.uuid4().hex[:6]}")
            app = _app(engine, self.ctx, where)
            _fill(app, size)
            _close(app)
            self.made[key] = where
        return self.made[key]

    @contextmanager
    def fresh(self, engine: str, size: int) -> Iterator[Any]:
        if engine == SQLITE:
            path = self.ctx.cfg.workdir / f"es-run-{uuid.uuid4().hex[:8]}.db"
            if size:
                src = self.template(engine, size)
                _checkpoint(src)
                shutil.copyfile(src, path)
            app = _app(engine, self.ctx, str(path))
            try:
                yield app
            finally:
                _close(app)
                for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                    p.unlink(missing_ok=True)
            return
        schema = f"bench_es_{uuid.uuid4().hex[:10]}"
        app = _app(engine, self.ctx, schema)
        try:
            if size:
                tpl = self.template(engine, size)
                table = app.recorder.events_table_name
                with pg_connect(self.ctx.cfg.pg_url, schema) as pg:  # type: ignore[arg-type]
                    pg.execute(f'INSERT INTO "{schema}".{table} SELECT * FROM "{tpl}".{table}')
                    seq = pg.execute(f"SELECT pg_get_serial_sequence('\"{schema}\".{table}', 'notification_id')"
                                     ).fetchone()[0]
                    if seq:
                        pg.execute(f"SELECT setval('{seq}', (SELECT max(notification_id) FROM \"{schema}\".{table}))")
                    pg.execute(f'ANALYZE "{schema}".{table}')
                    pg.commit()
            yield app
        finally:
            _close(app)
            drop_schema(self.ctx.cfg.pg_url, schema)  # type: ignore[arg-type]

    def release(self, size: int) -> None:
        for key in [k for k in self.made if k[1] == size]:
            where = self.made.pop(key)
            if key[0] == SQLITE:
                for p in (where, f"{where}-wal", f"{where}-shm"):
                    Path(p).unlink(missing_ok=True)
            else:
                drop_schema(self.ctx.cfg.pg_url, where)  # type: ignore[arg-type]


def _checkpoint(path: str) -> None:
    import sqlite3

    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


# -- the question --------------------------------------------------------------------------------------------------


# eventsourcing's job is written through its own API (``_fill``): about 15 minutes per 1,000,000 tasks on PostgreSQL
# here, so 2.5 hours at 10,000,000, and each of its three contenders gets a copy of it (its events with a 1 KB spec,
# as large as taskstore's events), beside taskstore's 41 GB template: more time than a session and more disk than this
# machine has. Above this size the question is not run, and the report says so.
PEERS_UP_TO = 1_000_000


def peers_skipped(size: int) -> str:
    """Why the comparison is not measured at ``size`` ("" when it is)."""
    if size <= PEERS_UP_TO:
        return ""
    return (f"not run above {PEERS_UP_TO:,} tasks: eventsourcing's job is written through its own API (about 15 "
            f"minutes per 1,000,000 tasks here, so {size * 15 / 1_000_000 / 60:,.1f} hours) and copied for each of "
            "its contenders, beside taskstore's template: more time and disk than this machine has")


def run(ctx: Context, engine: str, size: int) -> list[Measurement]:
    cfg = ctx.cfg
    if reason := peers_skipped(size):
        return [Measurement(KEY, name, engine, size, READ_UNIT if name in (ES_READ, TS_READ) else UNIT, [], 0,
                            skipped=reason) for name in (ES_MEM, ES_CMD, TS_LOG, TS_API, ES_READ, TS_READ)]
    es = ctx.dbs.extras.setdefault("eventsourcing", _EsTemplates(ctx))
    ctx.dbs.on_release(es.release)
    n_batches = (cfg.warmup + cfg.reps) * cfg.batches + 1
    specs = spec_batches("peer", n_batches)
    out: list[Measurement] = []

    def batches(write: Callable[[list[dict]], float]) -> Contender:
        def sample(i: int) -> float:
            first = i * cfg.batches
            return sum(write(specs[b]) for b in range(first, first + cfg.batches)) / cfg.batches

        return Contender(sample, lambda: write(specs[-1]))

    def es_side(command_style: bool) -> Callable[[ExitStack], Contender]:
        def open_(stack: ExitStack) -> Contender:
            return batches(_es_writer(stack.enter_context(es.fresh(engine, size)), command_style))

        return open_

    def ts_side(writer: Callable[[Any, Target], Callable[[list[dict]], float]]) -> Callable[[ExitStack], Contender]:
        def open_(stack: ExitStack) -> Contender:
            target = stack.enter_context(ctx.dbs.fresh(engine, LifecycleJob(), size))
            store = target.open_store()
            stack.callback(store.close)
            return batches(writer(store, target))

        return open_

    ctx.status(f"{KEY} · {engine} · {size:,} · append")
    got = side_by_side(cfg, {ES_MEM: es_side(False), ES_CMD: es_side(True), TS_LOG: ts_side(_ts_log_writer),
                             TS_API: ts_side(_ts_api_writer)})
    goals = {TS_LOG: [Comparison(ES_MEM, 3.0, "≥ 3× eventsourcing in-memory save")],
             TS_API: [Comparison(ES_CMD, 3.0, "≥ 3× eventsourcing repository.get + save")]}
    for name, (samples, peak) in got.items():
        out.append(Measurement(KEY, name, engine, size, UNIT, samples, 400, goals.get(name, []), peak))

    # Replay of the whole job: each system's log holds size × 4 events of the same shape.
    ctx.status(f"{KEY} · {engine} · {size:,} · replay")
    with es.fresh(engine, size) as app, ctx.dbs.fresh(engine, LifecycleJob(), size) as target:
        store = target.open_store()
        try:
            counts: dict[str, int] = {}

            def es_read(_i: int = 0) -> float:
                with Stopwatch() as sw:
                    counts[ES_READ] = _es_replay(app)
                return sw.total

            def ts_read(_i: int = 0) -> float:
                with Stopwatch() as sw:
                    counts[TS_READ] = sum(1 for _ in store.log.iter_all(batch_size=1000))
                return sw.total

            reps = cfg.reps if size <= 200_000 else 3
            got = interleaved(cfg, {ES_READ: es_read, TS_READ: ts_read}, reps=reps, warmup=1)
            peaks = {ES_READ: peak_memory(es_read), TS_READ: peak_memory(ts_read)}
        finally:
            store.close()
    for name in (ES_READ, TS_READ):
        comps = [Comparison(ES_READ)] if name == TS_READ else []
        note = f"{counts[name]:,} events"
        out.append(Measurement(KEY, name, engine, size, READ_UNIT, got[name], counts[name], comps, peaks[name], note))
    if engine == SQLITE:
        ctx.note(KEY, "eventsourcing's SQLite connections run with synchronous=NORMAL here, as taskstore's do "
                      "(the library's default, FULL, would fsync on every commit and flatter taskstore).")
    return out


def _es_replay(app: Any) -> int:
    n, start = 0, 0
    recorder, mapper = app.recorder, app.mapper
    while True:
        batch = recorder.select_notifications(start, 1000, inclusive_of_start=False)
        for item in batch:
            mapper.to_domain_event(item)
        n += len(batch)
        if len(batch) < 1000:
            return n
        start = batch[-1].id


def _es_writer(app: Any, command_style: bool) -> Callable[[list[dict]], float]:
    agg = _es()["aggregate"]

    def write(batch: list[dict]) -> float:
        with Stopwatch() as sw:
            at = now_iso()
            tasks = [agg(s["id"], {k: v for k, v in s.items() if k != "id"}, at) for s in batch]
            app.save(*tasks)
            ids = [t.id for t in tasks]
            prev = "pending"
            for to in STEPS:
                if command_style:
                    tasks = [app.repository.get(i) for i in ids]
                for t in tasks:
                    t.transitioned(change(prev, to, now_iso()))
                app.save(*tasks)
                prev = to
        return sw.total

    return write


def _ts_api_writer(store: Any, target: Target) -> Callable[[list[dict]], float]:
    scope = target.scope()

    def write(batch: list[dict]) -> float:
        ids = [s["id"] for s in batch]
        with Stopwatch() as sw:
            store.add_tasks(scope, batch)
            for to in STEPS:
                store.transition_many(scope, [(t, to) for t in ids])
        return sw.total

    return write


def _ts_log_writer(store: Any, target: Target) -> Callable[[list[dict]], float]:
    from eventstore import Expect, NewEvent, StreamAppend

    scope = target.scope()
    log = bare_log(store)

    def write(batch: list[dict]) -> float:
        with Stopwatch() as sw:
            at = now_iso()
            log.append([
                StreamAppend(scope, s["id"].lower(), [NewEvent(
                    "TaskAdded", {"taskId": s["id"], "spec": {k: v for k, v in s.items() if k != "id"}, "at": at}
                )], Expect.NO_STREAM)
                for s in batch
            ])
            prev = "pending"
            for version, to in enumerate(STEPS, 1):
                at = now_iso()
                log.append([
                    StreamAppend(scope, s["id"].lower(), [NewEvent("TaskTransitioned", change(prev, to, at))], version)
                    for s in batch
                ])
                prev = to
        return sw.total

    return write


ENGINES = (SQLITE, POSTGRESQL)
