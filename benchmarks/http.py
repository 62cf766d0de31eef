"""Question 8 (issue 4, "Speed"): list pages and task counts through the HTTP service, against the same calls in
process.

The service (``api.create_app`` over ``open_store(url, snapshot_every=None, background_snapshots=False)``, what
``taskstore serve`` runs) is served by uvicorn in a process of its own, bound by uvicorn to a free port of 127.0.0.1,
log level warning, no access log, with a credential for the job's workspace created beforehand through
``api.credentials``. The load generator is bounded and local: a minimal HTTP/1.1 client (:class:`RawClient`: one
keep-alive socket, the request written whole, the answer read by its Content-Length, as wrk does), from 1 and from 4
threads (a connection each), a fixed number of requests per case (300 in quick mode, 2,000 in full mode) after a
warm-up, stopped early only by a time bound. Measured: a list page of 50 (createdAt:desc) at the first page and at
a deep page (the middle of the job, reached by a cursor the store's codec signs) through the native ``/v1`` API and
the Blaxel dialect; the count summary (validated) through ``/v1 …/counts`` and Azure Batch ``taskcounts``
(SharedKey, signed per request); and, side by side in the same run, the same operations in process
(``TaskQueries.list_tasks`` and ``TaskQueries.counts`` from 1 and 4 threads on one store). So that every side of a
case samples the same moments of a shared machine, with one client the sides take turns request by request (their
order rotating from round to round), with 4 clients in turns of 25 requests (50 in full mode). ``GET /healthz`` (no
authentication, no database) is the floor of one request through uvicorn on this machine; the same request through
``httpx.Client`` shows what a full Python HTTP client adds on the client's side (about 0.5 to 0.8 ms here), which
is not the service's and which the goal therefore does not count.

Each row pools every timed request of its case: *median* is the p50 latency, *min* and *max* the fastest and
slowest request; the p99, the number of requests and the difference from the in-process p50 (and p10, which a
shared machine moves less) are in the *per* column; the rate is the measured requests per second (with one client
the requests over the sum of their times, with 4 over the wall time of the side's turns), and the ratio is the
in-process p50 over this p50. The goal is judged with one
client (the latency one request adds); with 4 clients the client threads, the server and the database share the
machine's cores, so those rows show throughput and queueing, not the HTTP layer alone.
"""

from __future__ import annotations

import base64
import gc
import multiprocessing
import os
import secrets
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .harness import (
    POSTGRESQL,
    SCOPE_PARTS,
    SQLITE,
    Comparison,
    Context,
    Measurement,
    SimulatedJob,
)

KEY = "http"
TITLE = "HTTP: list pages and task counts through the service, against the same calls in process"
GOAL = ("the HTTP layer adds less than 1 ms at p50 to the in-process figure (one client, keep-alive; the issue "
        "states it at 1,000,000 tasks, it is judged here at every size)")
UNIT = "request"
ENGINES = (SQLITE, POSTGRESQL)
CHANGES_JOB = False  # it only reads its job (the credential it makes is the service's, not the job's)
LIMIT = 50
SORT = "createdAt:desc"
CLIENTS = (1, 4)
BATCH_API_VERSION = "2024-07-01.20.0"
GOAL_TEXT = "p50 within the in-process p50 + 1 ms (1 client)"
ADDED = 1e-3  # the goal: what HTTP may add at p50


@dataclass
class Side:
    """One contender of a case: ``make(i)`` gives thread ``i`` its call and a check of the call's answer (the check
    runs after the timer stopped, on the first answer of every thread in every chunk; a request that does not answer
    200 fails at once)."""

    name: str
    make: Callable[[int], tuple[Callable[[], Any], Callable[[Any], None]]]
    baseline: str | None = None  # the in-process side it is compared with


def requests_per_case(cfg: Any) -> int:
    return 20 if cfg.smoke else 300 if cfg.quick else 2000


def chunk_size(cfg: Any) -> int:
    """Requests per chunk: the warm-up unit, and with several clients the turn of a side."""
    return 5 if cfg.smoke else 25 if cfg.quick else 50


def case_bound(cfg: Any) -> float:
    """Seconds a case (every side of one operation at one client count) may take before its chunks stop early."""
    return 60.0 if cfg.quick else 600.0


def label(what: str, clients: int) -> str:
    return f"{what} ({clients} client{'s' if clients > 1 else ''})"


class RawResponse:
    def __init__(self, url: str, status_code: int, content: bytes) -> None:
        self.url, self.status_code, self.content = url, status_code, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        import orjson

        return orjson.loads(self.content)


class RawClient:
    """The load generator's client: HTTP/1.1 over one keep-alive TCP connection, a GET written in one ``sendall``,
    the answer read up to its headers and then exactly Content-Length bytes (the service always sends one). Nothing
    else: no connection pool, URL model or header objects, so that what a request costs is the service's."""

    def __init__(self, base_url: str, timeout: float = 30) -> None:
        parts = urlsplit(base_url)
        self.host = parts.netloc
        self.address = (parts.hostname, parts.port)
        self.timeout = timeout
        self.sock: Any = None
        self.buf = b""
        self._connect()

    def _connect(self) -> None:
        import socket

        if self.sock is not None:
            self.sock.close()
        self.sock = socket.create_connection(self.address, timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def get(self, path: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> RawResponse:
        from urllib.parse import urlencode

        target = path + ("&" if "?" in path else "?") + urlencode(params) if params else path
        head = f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\n"
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        request = (head + "\r\n").encode()
        try:
            return self._exchange(target, request)
        except ConnectionError:
            # The server closes a keep-alive connection that sat idle (uvicorn: after 5 s), as every keep-alive
            # client knows: a GET is sent again once, on a new connection.
            self._connect()
            return self._exchange(target, request)

    def _exchange(self, target: str, request: bytes) -> RawResponse:
        self.sock.sendall(request)
        buf, sock = self.buf, self.sock
        while (end := buf.find(b"\r\n\r\n")) < 0:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            buf += chunk
        lines = buf[:end].split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(int(v) for k, _, v in (ln.partition(b":") for ln in lines[1:]) if k.lower() == b"content-length")
        body_end = end + 4 + length
        while len(buf) < body_end:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            buf += chunk
        self.buf = buf[body_end:]
        return RawResponse(target, status, buf[end + 4 : body_end])

    def close(self) -> None:
        self.sock.close()


def run(ctx: Context, engine: str, size: int) -> list[Measurement]:
    import httpx

    from api.credentials import CredentialStore, migrate
    from projections.listing import _order, key_of
    from projections.queries import TaskQueries
    from taskstore import open_store

    cfg = ctx.cfg
    ctx.status(f"{KEY} · {engine} · {size:,}")
    out: list[Measurement] = []
    with ctx.dbs.fresh(engine, SimulatedJob(), size, changes=CHANGES_JOB) as target:
        store = open_store(target.url, schema=target.schema, snapshot_every=None, background_snapshots=False)
        server: _Server | None = None
        clients: list[Any] = []
        full_clients: list[Any] = []
        try:
            scope = target.scope()
            workspace, job, execution = SCOPE_PARTS
            migrate(store.engine)
            secret = base64.b64encode(secrets.token_bytes(32)).decode()
            cred = CredentialStore(store.engine).create(workspace, secret=secret, description="benchmarks.http")
            # the deep page: the cursor a client holds after walking to the middle of the job
            sid = store.log.scope_id(scope)
            view = store.queries.view
            from sqlalchemy import select

            with store.log.reading() as conn:
                row = conn.execute(select(view).where(view.c.scope_id == sid).order_by(*_order(view.c, SORT))
                                   .offset(size // 2 - 1).limit(1)).mappings().first()
            fp = TaskQueries.query_fingerprint(scope, SORT, None, None)
            deep = store.cursors.encode({"k": key_of(row, SORT)}, fp)

            ctx.status(f"{KEY} · {engine} · {size:,} · starting the server")
            server = _Server(target.url, target.schema)
            clients = [RawClient(server.url, timeout=30) for _ in range(max(CLIENTS))]
            full_clients = [httpx.Client(base_url=server.url, timeout=30) for _ in range(max(CLIENTS))]
            bearer = {"Authorization": f"Bearer {secret}"}
            blaxel = {"X-Blaxel-Authorization": f"Bearer {secret}", "X-Blaxel-Workspace": workspace}
            tasks = f"/v1/jobs/{job}/executions/{execution}/tasks"
            btasks = f"/blaxel/v0/jobs/{job}/executions/{execution}/tasks"
            counts_url = f"/v1/jobs/{job}/executions/{execution}/counts"
            batch_url = f"/batch/jobs/{job}/taskcounts?api-version={BATCH_API_VERSION}"
            key = cred.key_bytes
            queries = store.queries

            def in_process_page(cursor: str | None) -> Any:
                def check(page: Any) -> None:
                    if len(page.items) != LIMIT or page.total != size:
                        raise AssertionError(f"a page of {len(page.items)} tasks of {page.total}")

                def make(_i: int) -> Any:
                    return (lambda: queries.list_tasks(scope, sort=SORT, limit=LIMIT, cursor=cursor)), check
                return make

            def http_page(path: str, headers: dict[str, str], items: str, cursor: str | None):
                params = {"limit": str(LIMIT), "sort": SORT, **({"cursor": cursor} if cursor else {})}

                def check(r: Any) -> None:
                    doc = r.json()
                    if len(doc[items]) != LIMIT:
                        raise AssertionError(f"GET {path}: a page of {len(doc[items])} tasks")

                def make(i: int) -> Any:
                    client = clients[i]
                    return (lambda: ok(client.get(path, params=params, headers=headers))), check
                return make

            statuses: set[str] = set()  # what the count answers said of their validation

            def validated(total: int, status: str) -> None:
                if total != size:
                    raise AssertionError(f"counts: {total} tasks in a job of {size}")
                statuses.add(status)

            def in_process_counts(_i: int) -> Any:
                return (lambda: queries.counts(scope)), (lambda s: validated(s.total, s.validation_status))

            def v1_counts(i: int) -> Any:
                client = clients[i]

                def check(r: Any) -> None:
                    doc = r.json()
                    validated(doc["total"], doc["validationStatus"])
                return (lambda: ok(client.get(counts_url, headers=bearer))), check

            def batch_counts(i: int) -> Any:
                client = clients[i]

                def check(r: Any) -> None:
                    doc = r.json()
                    c = doc["taskCounts"]
                    validated(c["active"] + c["running"] + c["completed"], doc["validationStatus"])
                # signed per request, as a Batch client does (inside the timed call: about 20 µs)
                return (lambda: ok(client.get(batch_url, headers=shared_key_headers("GET", batch_url, workspace,
                                                                                     key)))), check

            def healthz(i: int) -> Any:
                client = clients[i]
                return (lambda: ok(client.get("/healthz"))), (lambda _r: None)

            def healthz_httpx(i: int) -> Any:
                client = full_clients[i]
                return (lambda: ok(client.get("/healthz"))), (lambda _r: None)

            first_in = "in process: TaskQueries.list_tasks, first page"
            deep_in = "in process: TaskQueries.list_tasks, deep page by cursor"
            counts_in = "in process: TaskQueries.counts (validated)"
            cases: list[list[Side]] = [
                [Side(first_in, in_process_page(None)),
                 Side("GET /v1 …/tasks, first page", http_page(tasks, bearer, "tasks", None), first_in),
                 Side("GET /blaxel/v0 …/tasks, first page", http_page(btasks, blaxel, "data", None), first_in)],
                [Side(deep_in, in_process_page(deep)),
                 Side("GET /v1 …/tasks, deep page by cursor", http_page(tasks, bearer, "tasks", deep), deep_in),
                 Side("GET /blaxel/v0 …/tasks, deep page by cursor", http_page(btasks, blaxel, "data", deep),
                      deep_in)],
                [Side(counts_in, in_process_counts),
                 Side("GET /v1 …/counts", v1_counts, counts_in),
                 Side("GET /batch …/taskcounts (SharedKey)", batch_counts, counts_in)],
                [Side("GET /healthz (no auth, no database): the floor", healthz),
                 Side("GET /healthz through httpx: a full Python HTTP client's floor", healthz_httpx)],
            ]
            total = requests_per_case(cfg)
            per_chunk = chunk_size(cfg)
            chunks = -(-total // per_chunk)
            for sides in cases:
                for n in CLIENTS:
                    ctx.status(f"{KEY} · {engine} · {size:,} · {sides[0].name} · {n} client(s)")
                    got = _interleaved(sides, n, warmup=cfg.warmup, chunks=chunks, per_chunk=per_chunk,
                                       bound=case_bound(cfg))
                    base_p50 = {}
                    for side in sides:
                        lat, wall, stopped = got[side.name]
                        if side.baseline is None and lat:
                            base_p50[side.name] = (statistics.median(lat), percentile(lat, 10))
                    for side in sides:
                        lat, wall, stopped = got[side.name]
                        out.append(_measurement(engine, size, side, n, lat, wall, stopped,
                                                base_p50.get(side.baseline) if side.baseline else None))
            ctx.note(KEY, f"The server is uvicorn {_uvicorn_flavour()}; the client is the benchmark's RawClient (and "
                     f"for the second floor row httpx {_version('httpx')}) in the benchmark's own process, so client "
                     f"threads, server and database share the machine's {os.cpu_count()} cores.")
            if statuses != {"validated"}:
                ctx.note(KEY, f"{engine}, {size:,} tasks: the count answers said {', '.join(sorted(statuses))}.")
            ctx.note(KEY, "The job is the same simulated job as questions 6 and 7 (built once per run from the "
                     "job template, not through the API, see the notes); the server opens it with "
                     "snapshot_every=None and background_snapshots=False, like the in-process store.")
        finally:
            for c in [*clients, *full_clients]:
                c.close()
            if server is not None:
                server.stop()
            store.close()
    return out


def _measurement(engine: str, size: int, side: Side, clients: int, lat: list[float], wall: float, stopped: bool,
                 base: tuple[float, float] | None) -> Measurement:
    if not lat:
        return Measurement(KEY, label(side.name, clients), engine, size, UNIT, [], 0,
                           skipped="the time bound stopped it before any timed request")
    p50 = statistics.median(lat)
    p99 = percentile(lat, 99)
    rps = len(lat) / wall if wall > 0 else 0.0
    parts = [f"p99 {_ms(p99)}", f"{len(lat):,} requests"]
    if base is not None:
        # the p10 difference too: on a shared machine it moves less than the p50's
        p10 = percentile(lat, 10) - base[1]
        parts.insert(1, f"p50 {_signed_ms(p50 - base[0])} over in process (p10 {_signed_ms(p10)})")
    if stopped:
        parts.append("stopped by the time bound")
    name = label(side.name, clients)
    m = Measurement(
        KEY, name, engine, size, UNIT,
        # the latency distribution as its 101 percentiles (0: fastest, 50: p50, 100: slowest): median, min and
        # max of these are the p50, the fastest and the slowest request
        distribution(lat),
        # requests per unit of median time, so that ``rate`` (events_per_unit / median) is the measured
        # requests per second
        rps * p50,
        [Comparison(label(side.baseline, clients))] if side.baseline else [],
        note="; ".join(parts),
        rate_unit="requests",
    )
    if side.baseline is not None and clients == 1 and base is not None:
        m.limit = (base[0] + ADDED, GOAL_TEXT)
    return m


def ok(r: Any) -> Any:
    """A response (RawClient's or httpx's) that must be a 200."""
    if r.status_code != 200:
        raise AssertionError(f"GET {getattr(r, 'url', '?')}: {r.status_code} {r.text[:300]}")
    return r


def _ms(s: float) -> str:
    return f"{s * 1e3:.2f} ms"


def _signed_ms(s: float) -> str:
    return ("+" if s >= 0 else "−") + _ms(abs(s))


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def distribution(values: list[float]) -> list[float]:
    return [round(percentile(values, p), 9) for p in range(101)]


# -- the load generator --------------------------------------------------------------------------------------------


def _interleaved(sides: list[Side], clients: int, *, warmup: int, chunks: int, per_chunk: int,
                 bound: float) -> dict[str, tuple[list[float], float, bool]]:
    """Warm-up chunks, then ``chunks`` timed chunks of ``per_chunk`` requests for every side. With one client the
    sides take turns request by request (the latency comparison: every side samples the same moments of a shared
    machine); with several, chunk by chunk (throughput: all clients of one side at once). Returns side ->
    (latencies, wall seconds of the timed requests, stopped by the bound)."""
    calls = {s.name: [s.make(i) for i in range(clients)] for s in sides}
    out: dict[str, tuple[list[float], float, bool]] = {s.name: ([], 0.0, False) for s in sides}
    deadline = time.monotonic() + bound
    if clients == 1:
        return _round_robin({s.name: calls[s.name][0] for s in sides}, warmup + chunks, warmup, per_chunk, deadline)
    for c in range(warmup + chunks):
        timed = c >= warmup
        count = per_chunk
        for s in sides:
            gc.collect()
            lat, wall, stopped = _chunk(calls[s.name], count, deadline)
            if timed:
                prev = out[s.name]
                out[s.name] = (prev[0] + lat, prev[1] + wall, prev[2] or stopped)
    return out


def _round_robin(calls: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]], chunks: int, warmup: int,
                 per_chunk: int, deadline: float) -> dict[str, tuple[list[float], float, bool]]:
    """One client: one request of every side in turn, ``per_chunk`` rounds a chunk; the wall time of a side is the
    sum of its requests' times (they run one after the other). The order of the sides rotates from round to round:
    a request right after another side's is slower than one after its own kind (caches, the server's thread pool),
    and rotating spreads that over every side alike."""
    lats: dict[str, list[float]] = {name: [] for name in calls}
    stopped = False
    perf = time.perf_counter
    items = list(calls.items())
    for c in range(chunks):
        gc.collect()
        for k in range(per_chunk):
            if time.monotonic() > deadline:
                stopped = True
                break
            turn = (c * per_chunk + k) % len(items)
            for name, (call, check) in items[turn:] + items[:turn]:
                t = perf()
                answer = call()
                dt = perf() - t
                if c >= warmup:
                    lats[name].append(dt)
                if k == 0:
                    check(answer)
    return {name: (lat, sum(lat), stopped) for name, lat in lats.items()}


def _chunk(calls: list[tuple[Callable[[], Any], Callable[[Any], None]]], count: int,
           deadline: float) -> tuple[list[float], float, bool]:
    """``count`` requests shared by ``len(calls)`` threads, each its own call (its own keep-alive connection), all
    released together; returns the latencies, the wall time from the release to the last answer, and whether the
    deadline stopped it early."""
    n = len(calls)
    shares = [count // n + (1 if i < count % n else 0) for i in range(n)]
    lats: list[list[float]] = [[] for _ in range(n)]
    errors: list[BaseException] = []
    stopped = [False]
    gate = threading.Barrier(n + 1)
    perf = time.perf_counter

    def work(i: int) -> None:
        (call, check), mine = calls[i], lats[i]
        try:
            gate.wait()
            for k in range(shares[i]):
                if time.monotonic() > deadline:
                    stopped[0] = True
                    return
                t = perf()
                answer = call()
                mine.append(perf() - t)
                if k == 0:
                    check(answer)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    gate.wait()
    t0 = perf()
    for t in threads:
        t.join()
    wall = perf() - t0
    if errors:
        raise errors[0]
    return [x for m in lats for x in m], wall, stopped[0]


def shared_key_headers(method: str, path_and_query: str, account: str, key: bytes) -> dict[str, str]:
    """Azure Batch SharedKey for a request without a body, as the Batch REST documentation describes it (the
    signature itself by ``api.auth.shared_key_signature``, which the server checks with)."""
    from api.auth import shared_key_signature

    date = formatdate(usegmt=True)
    parts = urlsplit(path_and_query)
    text = method + "\n" + "\n" * 10 + "\n" + f"ocp-date:{date}\n" + f"/{account}{parts.path}"
    text += "".join(f"\n{k}:{v}" for k, v in sorted(parse_qsl(parts.query)))
    return {"ocp-date": date, "Authorization": f"SharedKey {account}:{shared_key_signature(key, text)}"}


# -- the server process --------------------------------------------------------------------------------------------


def _serve(url: str, schema: str | None, conn: Any) -> None:
    """In the server process: what ``taskstore serve`` does, on a port uvicorn picks and reports."""
    import uvicorn

    from api import create_app
    from taskstore import open_store

    store = open_store(url, schema=schema, snapshot_every=None, background_snapshots=False)
    try:
        app = create_app(store)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False,
                                lifespan="off")
        server = uvicorn.Server(config)

        def report() -> None:
            while not server.started:
                if server.should_exit:
                    return
                time.sleep(0.01)
            conn.send(server.servers[0].sockets[0].getsockname()[1])

        threading.Thread(target=report, daemon=True).start()
        server.run()
    finally:
        store.close()


class _Server:
    """uvicorn serving the store at ``url`` in a process of its own (spawned: the benchmark's threads and open
    connections stay behind)."""

    def __init__(self, url: str, schema: str | None) -> None:
        mp = multiprocessing.get_context("spawn")
        ours, theirs = mp.Pipe()
        self.process = mp.Process(target=_serve, args=(url, schema, theirs), daemon=True, name="taskstore-http")
        self.process.start()
        deadline = time.monotonic() + 60
        while not ours.poll(0.1):
            if not self.process.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the HTTP server did not start")
        self.port = ours.recv()
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()  # SIGTERM: uvicorn's graceful shutdown
            self.process.join(15)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def _uvicorn_flavour() -> str:
    """Which event loop and HTTP parser uvicorn picks here ('auto' takes uvloop and httptools when installed)."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"{_version('uvicorn')} ({loop} event loop, {parser} HTTP parser)"


# -- the chart -----------------------------------------------------------------------------------------------------


def chart(ms: list[Measurement], path: Any) -> bool:
    """p50 (dot) to p99 (bar end) of every row, one panel per engine and job size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [m for m in ms if m.samples and not m.skipped]
    if not ok:
        return False
    panels = sorted({(m.size, m.engine) for m in ok}, key=lambda p: (p[0], p[1] != SQLITE))
    rows = max(len([m for m in ok if (m.size, m.engine) == p]) for p in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, max(4.5, 0.3 * rows + 1.5) * len(panels)), squeeze=False)
    for ax, (size, engine) in zip((a[0] for a in axes), panels):
        mine = [m for m in ok if (m.size, m.engine) == (size, engine)]
        for i, m in enumerate(mine):
            p50 = m.samples[50] * 1e3
            p99 = m.samples[99] * 1e3
            color = "C0" if m.operation.startswith("in process") else ("C7" if "healthz" in m.operation else "C3")
            ax.plot([p50, p99], [i, i], color=color, linewidth=2, alpha=0.6)
            ax.plot([p50], [i], "o", color=color)
            ax.plot([p99], [i], "|", color=color, markersize=10)
        ax.set_yticks(range(len(mine)), [m.operation.replace("TaskQueries.", "") for m in mine], fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("ms per request: p50 (dot) to p99 (bar end), log scale; blue in process, red through HTTP")
        ax.set_title(f"{engine}, job of {size:,} tasks", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(TITLE, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
