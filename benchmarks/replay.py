"""Question 4: replay of the whole log.

``EventLog.iter_all`` (1,000 events a batch, each decoded and upcast into a RecordedEvent; on PostgreSQL in
(transaction id, position) order below the commit horizon) against reading the same rows with raw SQL, 1,000 a
batch by keyset on the position, and decoding their JSON with orjson (sqlite3; psycopg with orjson as its JSON
loader). Both read the same fresh database, their repetitions interleaved. Goal (issue 5): at least half the raw
read-and-decode rate; memory bounded by the batch size, not by the job.
"""

from __future__ import annotations

from typing import Any

import orjson

from .harness import (
    POSTGRESQL,
    SQLITE,
    Comparison,
    Context,
    Measurement,
    SimulatedJob,
    Stopwatch,
    Target,
    interleaved,
    peak_memory,
    pg_connect,
    sqlite_connect,
)

KEY = "replay"
MEMORY_BOUNDED = True  # taskstore's operations here hold one batch or page, whatever the job's size
TITLE = "Replay: the whole log, read and decoded"
GOAL = "at least half the raw read-and-decode rate"
UNIT = "whole log"
BATCH = 1000
MEMORY_EVENTS = 500_000  # the untimed memory run reads at most this many events (tracing is slow)

RAW = "raw SQL + orjson.loads"
API = "EventLog.iter_all"
_COLS = "position, txid, scope_id, stream, version, type, schema_version, data, metadata"


def run(ctx: Context, engine: str, size: int) -> list[Measurement]:
    cfg = ctx.cfg
    ctx.status(f"{KEY} · {engine} · {size:,}")
    counts: dict[str, int] = {}
    with ctx.dbs.fresh(engine, SimulatedJob(), size, changes=CHANGES_JOB) as target:
        store = target.open_store()
        raw_read = _raw_reader(target)
        try:
            def raw(_i: int = 0, limit: int | None = None) -> float:
                with Stopwatch() as sw:
                    counts[RAW] = raw_read(limit)
                return sw.total

            def api(_i: int = 0, limit: int | None = None) -> float:
                with Stopwatch() as sw:
                    n = 0
                    for _ in store.log.iter_all(batch_size=BATCH):
                        n += 1
                        if limit is not None and n >= limit:
                            break
                    counts[API] = n
                return sw.total

            reps = cfg.reps if size <= 200_000 else 3
            got = interleaved(cfg, {RAW: raw, API: api}, reps=reps, warmup=1)
            total = dict(counts)
            peaks = {RAW: peak_memory(lambda: raw(limit=MEMORY_EVENTS)),
                     API: peak_memory(lambda: api(limit=MEMORY_EVENTS))}
        finally:
            getattr(raw_read, "close", lambda: None)()
            store.close()
    out = []
    for name in (RAW, API):
        comps = [Comparison(RAW, 0.5, "≥ 0.5× raw")] if name == API else []
        note = f"{total[name]:,} events"
        if total[name] > MEMORY_EVENTS:
            note += f"; memory over the first {MEMORY_EVENTS:,}"
        out.append(Measurement(KEY, name, engine, size, UNIT, got[name], total[name], comps, peaks[name], note))
    return out


class _Reader:
    def __init__(self, fn: Any, close: Any) -> None:
        self.fn, self.close = fn, close

    def __call__(self, limit: int | None) -> int:
        return self.fn(limit)


def _raw_reader(target: Target) -> _Reader:
    loads = orjson.loads
    if target.engine == SQLITE:
        conn = sqlite_connect(target.path)  # type: ignore[arg-type]
        sql = f"SELECT {_COLS} FROM events WHERE position > ? ORDER BY position LIMIT {BATCH}"

        def read(limit: int | None) -> int:
            n, after = 0, 0
            while True:
                conn.execute("BEGIN")
                rows = conn.execute(sql, (after,)).fetchall()
                conn.execute("COMMIT")
                for r in rows:
                    (r[0], r[2], r[3], r[4], r[5], r[6], loads(r[7]), loads(r[8]))
                n += len(rows)
                if len(rows) < BATCH or (limit is not None and n >= limit):
                    return n
                after = rows[-1][0]

        return _Reader(read, conn.close)

    from psycopg.types.json import set_json_loads

    conn = pg_connect(target.pg_url, target.schema)  # type: ignore[arg-type]
    set_json_loads(loads, conn)
    sql = f"SELECT {_COLS} FROM events WHERE position > %s ORDER BY position LIMIT {BATCH}"

    def read_pg(limit: int | None) -> int:
        n, after = 0, 0
        while True:
            with conn.transaction():
                rows = conn.execute(sql, (after,)).fetchall()
            n += len(rows)  # psycopg has decoded data and metadata with orjson.loads already
            if len(rows) < BATCH or (limit is not None and n >= limit):
                return n
            after = rows[-1][0]

    return _Reader(read_pg, conn.close)


ENGINES = (SQLITE, POSTGRESQL)
CHANGES_JOB = False  # it only reads its job
