"""The append-only event log: appends with expected versions, idempotent retries, and the three ways to read it."""

from __future__ import annotations

import gc
import hashlib
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Callable, Iterator, Mapping, Sequence

import orjson
from sqlalchemy import func, insert, select, tuple_
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.pool import StaticPool

from .dialects import dialect_for
from .engine import write_transaction
from .held_writer import HeldWriter
from .errors import ConcurrencyError, EventStoreError, IdempotencyConflict, ValidationError
from .events import (
    START,
    AppendResult,
    Batch,
    Checkpoint,
    Expect,
    RecordedEvent,
    Scope,
    StreamAppend,
)
from .projection import InlineProjection
from .schema import events, requests, scopes
from .task import Task
from .upcasting import Upcasters

Clock = Callable[[], datetime]


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector held off while a batch of decoded events is built.

    Decoding a batch allocates several tracked containers per event (the data's dicts and lists, the event tuple),
    so the collector runs a generation-0 pass every few hundred events, and older generations ever more often as
    the batch and its caller's results grow, looking for cycles that acyclic decoded JSON cannot have: measured at
    about half the time of decoding a batch. Held off, it runs once after the batch (the allocations still count
    towards its next pass). A collector another caller has disabled stays disabled.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


EVENT_COLUMNS = (  # every column of an event row, in the order decode() reads them
    events.c.position,
    events.c.txid,
    events.c.scope_id,
    events.c.stream,
    events.c.version,
    events.c.type,
    events.c.schema_version,
    events.c.data,
    events.c.metadata,
)
_STREAM_MAX = 64
_VERSION_MAX = 2**31 - 1  # the version column is 32-bit on PostgreSQL: the same bound on both engines
# How often an append is tried again when it lost a race that violated nothing the caller asked for: a stream expected
# at ANY version moved, or (PostgreSQL) a deadlock between concurrent appends to the same streams in another order.
_ATTEMPTS = 100
_DEADLOCK = "40P01"


class EventLog:
    """One database's event log.

    ``append`` is all or nothing: every stream's expectation is checked, every event inserted and every inline
    projection applied in one transaction, or nothing is.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        upcasters: Upcasters | None = None,
        projections: Sequence[InlineProjection] = (),
        clock: Clock = utc_now,
    ) -> None:
        self.engine = engine
        self.dialect = dialect_for(engine)
        self.upcasters = upcasters or Upcasters()
        self.projections: list[InlineProjection] = list(projections)
        self.clock = clock
        self._scope_ids: dict[Scope, int] = {}
        self._scopes: dict[int, Scope] = {}
        # Serial writers (SQLite) share one held connection when it is free (see ``held_writer``); not with a single
        # shared connection (in-memory SQLite), which readers use too.
        self._writer = (
            HeldWriter(engine) if self.dialect.serial_writers and not isinstance(engine.pool, StaticPool) else None
        )

    def close(self) -> None:
        """Give back the connection this log holds for writing (the engine itself is the caller's to dispose)."""
        if self._writer is not None:
            self._writer.close()

    # -- connections -------------------------------------------------------------------------------------------

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite); commits on success, rolls back on any exception."""
        held = self._writer.acquire() if self._writer is not None else None
        if held is not None:
            try:
                self.dialect.begin_write(held)
                with held.begin():
                    yield held
            finally:
                self._writer.release()  # type: ignore[union-attr]
            return
        with write_transaction(self.engine, self.dialect) as conn:
            yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read transaction: one consistent snapshot for everything read inside it (REPEATABLE READ on
        PostgreSQL, where READ COMMITTED would let each statement see newer commits; any SQLite transaction)."""
        conn_ = self.engine.connect()
        if self.dialect.read_isolation:
            conn_ = conn_.execution_options(isolation_level=self.dialect.read_isolation)
        with conn_ as conn:
            with conn.begin():
                yield conn

    @contextmanager
    def reading_one(self) -> Iterator[Connection]:
        """A connection for reads that are each one statement, consistent in itself: on PostgreSQL outside any
        transaction (autocommit: a lone statement sees one snapshot, and no BEGIN or COMMIT costs a round trip);
        on SQLite as :meth:`reading`. Never for two reads that must agree with each other."""
        iso = self.dialect.one_statement_isolation
        if iso is None:
            with self.reading() as conn:
                yield conn
            return
        with self.engine.connect().execution_options(isolation_level=iso) as conn:
            yield conn

    # -- appending ---------------------------------------------------------------------------------------------

    def append(
        self,
        appends: Sequence[StreamAppend],
        *,
        request_id: str | None = None,
        namespace: str = "",
        fingerprint: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        decided: Mapping[tuple[Scope, str], Task] | None = None,
    ) -> AppendResult:
        """Append events to one or more streams in one transaction.

        With ``request_id``, a second append with the same (namespace, request id) writes nothing and returns the
        first append's events (``deduplicated=True``); reusing the id for different content raises
        :class:`IdempotencyConflict`. ``fingerprint`` identifies the content; by default it is a hash of the events.

        ``decided``: the tasks the events were decided from, by (scope, stream), handed to the inline projections
        that can use them (``eventstore.projection.DecidedStates``) instead of reading them again. A projection uses
        one only when it is exactly the stream's state before the events (its version is the one before theirs,
        which the append's expected version makes the stream's version in this transaction).
        """
        self._validate(appends, request_id, namespace)
        if request_id is not None:
            fingerprint = fingerprint or _fingerprint(appends)
        return self._append(lambda _conn: (appends, decided), request_id, namespace, fingerprint, metadata)

    def decide_and_append(
        self,
        decide: Callable[[Connection], tuple[Sequence[StreamAppend], Mapping[tuple[Scope, str], Task] | None]],
        *,
        request_id: str | None = None,
        namespace: str = "",
        fingerprint: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        """Read, decide and append in one write transaction: ``decide(conn)`` reads the state it decides from
        through ``conn`` and returns the appends (with their expected versions) and the tasks it decided them from
        (as ``append``'s ``decided``). Anything it raises rolls the transaction back, writing nothing.

        One transaction instead of a read transaction and a write transaction. On SQLite the write lock is held from
        the read on, so what was read cannot move before the append; on PostgreSQL the expected versions still
        decide (a concurrent writer makes the append fail with :class:`ConcurrencyError`, and ``decide`` may be
        called again when only ``Expect.ANY`` streams moved). With ``request_id``, ``fingerprint`` is required (the
        content is not known before ``decide`` runs).
        """
        _check_request(namespace, request_id)
        if request_id is not None and fingerprint is None:
            raise ValueError("decide_and_append with a request id needs the fingerprint of its content")

        def decided_in(conn: Connection) -> tuple[Sequence[StreamAppend], Mapping[tuple[Scope, str], Task] | None]:
            appends, decided = decide(conn)
            self._validate(appends, request_id, namespace)
            return appends, decided

        return self._append(decided_in, request_id, namespace, fingerprint, metadata)

    def _append(
        self,
        decide: Callable[[Connection], tuple[Sequence[StreamAppend], Mapping[tuple[Scope, str], Task] | None]],
        request_id: str | None,
        namespace: str,
        fingerprint: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> AppendResult:
        if request_id is not None:
            found = self.find_request(namespace, request_id, fingerprint)
            if found is not None:
                return found
        meta: dict[str, Any] = {"recordedAt": iso(self.clock())}
        if request_id is not None:
            meta["requestId"] = request_id
        if metadata:
            meta.update(metadata)
        appends: Sequence[StreamAppend] = ()
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self.writing() as conn:
                    appends, decided = decide(conn)
                    recorded, scope_ids = self._append_in(conn, appends, meta)
                    if request_id is not None:
                        conn.execute(
                            insert(requests).values(
                                namespace=namespace,
                                request_id=request_id,
                                fingerprint=fingerprint,
                                positions=orjson.dumps([e.position for e in recorded]).decode(),
                                recorded_at=meta["recordedAt"],
                            )
                        )
                    states: dict[tuple[Scope, str], Task] = {}
                    for projection in self.projections:
                        # A DecidedStates projection takes the decided states; any other reads what it needs.
                        take_decided = getattr(projection, "apply_decided", None) if decided else None
                        if take_decided is not None:
                            states.update(take_decided(conn, recorded, decided) or {})
                        else:
                            projection.apply(conn, recorded)
                break
            except IntegrityError:
                # Another writer committed first: the same request id (a concurrent retry), or a version of a stream.
                if request_id is not None:
                    found = self.find_request(namespace, request_id, fingerprint)
                    if found is not None:
                        return found
                conflict = self._explain_conflict(appends)
                if conflict is not None:
                    raise conflict from None
                # Only streams expected at ANY version moved under us (PostgreSQL: concurrent writers to one
                # stream): nothing the caller asked for was violated, so decide their versions again.
                if attempt == _ATTEMPTS or not any(a.expected is Expect.ANY for a in appends):
                    raise
            except EventStoreError:
                # ``decide`` refused (an illegal transition, a version mismatch) or a stream was behind: when the same
                # request committed since this one last looked (a concurrent retry), the state it refused is the
                # first attempt's own doing, and the first attempt's result is the answer.
                if request_id is not None:
                    found = self.find_request(namespace, request_id, fingerprint)
                    if found is not None:
                        return found
                raise
            except OperationalError as exc:
                # PostgreSQL broke a deadlock by rolling this append back: nothing was written, so try again.
                if getattr(exc.orig, "sqlstate", None) != _DEADLOCK or attempt == _ATTEMPTS:
                    raise
        for scope, sid in scope_ids.items():
            self._remember_scope(scope, sid)
        return AppendResult(tuple(recorded), request_id=request_id, states=states)

    def _validate(self, appends: Sequence[StreamAppend], request_id: str | None, namespace: str) -> None:
        _check_request(namespace, request_id)
        if not appends:
            raise ValidationError("appends", "nothing to append")
        seen: set[tuple[Scope, str]] = set()
        for a in appends:
            if not a.events:
                raise ValidationError("events", f"no events for stream {a.stream!r}")
            if not a.stream or len(a.stream) > _STREAM_MAX:
                raise ValidationError("stream", f"stream ids are 1 to {_STREAM_MAX} characters")
            if (a.scope, a.stream) in seen:
                raise ValidationError("stream", f"stream {a.stream!r} appears twice in one append")
            if isinstance(a.expected, int) and (isinstance(a.expected, bool) or a.expected < 0):
                raise ValidationError("expected", f"expected version {a.expected!r} is not a version")
            if isinstance(a.expected, int) and a.expected + len(a.events) > _VERSION_MAX:
                raise ValidationError("expected", f"expected version {a.expected!r} is beyond the versions of a stream "
                                                  f"(at most {_VERSION_MAX:,})")
            seen.add((a.scope, a.stream))

    def _append_in(
        self, conn: Connection, appends: Sequence[StreamAppend], meta: dict[str, Any]
    ) -> tuple[list[RecordedEvent], dict[Scope, int]]:
        scope_ids = self._ensure_scopes(conn, {a.scope for a in appends})
        # Only streams expected at ANY version are read first (to number their events). An exact expectation is
        # checked by the insert itself: its rows go in only if the stream holds version ``expected`` (the insert's
        # ``after``), and the unique (scope, stream, version) key refuses them if it holds a later one; versions
        # have no gaps, so between the two the stream is exactly at ``expected``. NO_STREAM: the key alone.
        loose = [(scope_ids[a.scope], a.stream) for a in appends if a.expected is Expect.ANY]
        current = self._current_versions(conn, loose) if loose else {}
        rows: list[dict[str, Any]] = []
        for a in appends:
            sid = scope_ids[a.scope]
            if a.expected is Expect.NO_STREAM:
                start = after = 0  # the unique (scope, stream, version) key refuses a second version 1
            elif a.expected is Expect.ANY:
                start, after = current.get((sid, a.stream)) or 0, 0
            else:
                start = after = a.expected
            for offset, ev in enumerate(a.events, 1):
                rows.append(
                    {
                        "scope_id": sid,
                        "stream": a.stream,
                        "version": start + offset,
                        "type": ev.type,
                        "schema_version": ev.schema_version,
                        "data": ev.data,
                        "metadata": meta,
                        "after": after,
                    }
                )
        inserted = self.dialect.insert_events(conn, events, rows)
        if inserted is None or None in inserted:
            # A stream was behind the version its append expected: nothing of this transaction will commit.
            raise self._behind(conn, appends, scope_ids, rows, inserted)
        recorded: list[RecordedEvent] = []
        by_id = {v: k for k, v in scope_ids.items()}
        for row, (position, txid) in zip(rows, inserted):
            recorded.append(
                RecordedEvent(
                    position=position,
                    scope=by_id[row["scope_id"]],
                    stream=row["stream"],
                    version=row["version"],
                    type=row["type"],
                    schema_version=row["schema_version"],
                    data=row["data"],
                    metadata=meta,
                    txid=txid or 0,
                    scope_id=row["scope_id"],
                )
            )
        return recorded, scope_ids

    def _behind(
        self,
        conn: Connection,
        appends: Sequence[StreamAppend],
        scope_ids: dict[Scope, int],
        rows: list[dict[str, Any]],
        inserted: list[tuple[int, int] | None] | None,
    ) -> ConcurrencyError:
        """The ConcurrencyError of an append whose guarded insert left rows out (with the streams' versions now)."""
        exact = [a for a in appends if isinstance(a.expected, int) and a.expected > 0]
        if inserted is not None:  # the dialect says which rows it left out
            left_out = {(r["scope_id"], r["stream"]) for r, got in zip(rows, inserted) if got is None}
            exact = [a for a in exact if (scope_ids[a.scope], a.stream) in left_out]
        # Read in this transaction, where the streams whose rows went in are already past their expectation: a
        # stream left out is one still below it (it did not hold version ``expected``).
        current = self._current_versions(conn, [(scope_ids[a.scope], a.stream) for a in exact])
        for a in exact:
            actual = current.get((scope_ids[a.scope], a.stream))
            if (actual or 0) < a.expected:  # type: ignore[operator]
                return _conflict(a, actual)
        # The stream caught up after the insert looked (a concurrent writer committed meanwhile): still a conflict.
        a = exact[0]
        return _conflict(a, current.get((scope_ids[a.scope], a.stream)))

    def _ensure_scopes(self, conn: Connection, wanted: set[Scope]) -> dict[Scope, int]:
        found = {s: self._scope_ids[s] for s in wanted if s in self._scope_ids}
        missing = [s for s in wanted if s not in found]
        if missing:
            conn.execute(
                self.dialect.insert_ignoring_conflicts(
                    scopes, [{"workspace": s.workspace, "job": s.job, "execution": s.execution} for s in missing]
                )
            )
            for s in missing:
                found[s] = self._lookup_scope_id(conn, s)  # type: ignore[assignment]
        # The caller caches these only after its transaction commits.
        return found

    def _lookup_scope_id(self, conn: Connection, scope: Scope) -> int | None:
        if scope in self._scope_ids:
            return self._scope_ids[scope]
        sid = conn.execute(
            select(scopes.c.id).where(
                scopes.c.workspace == scope.workspace, scopes.c.job == scope.job, scopes.c.execution == scope.execution
            )
        ).scalar()
        return sid

    def _remember_scope(self, scope: Scope, sid: int) -> None:
        self._scope_ids[scope] = sid
        self._scopes[sid] = scope

    def _current_versions(self, conn: Connection, keys: list[tuple[int, str]]) -> dict[tuple[int, str], int]:
        by_scope: dict[int, list[str]] = {}
        for sid, stream in keys:
            by_scope.setdefault(sid, []).append(stream)
        out: dict[tuple[int, str], int] = {}
        for sid, streams in by_scope.items():
            for stream, version in self.dialect.stream_versions(conn, events, sid, streams).items():
                out[(sid, stream)] = version
        return out

    def _explain_conflict(self, appends: Sequence[StreamAppend]) -> ConcurrencyError | None:
        """The expectation a failed append violated, or None when every exact and NO_STREAM expectation holds."""
        with self.reading() as conn:
            ids = {a.scope: self._lookup_scope_id(conn, a.scope) for a in appends}
            keys = [(ids[a.scope], a.stream) for a in appends if ids[a.scope] is not None]
            current = self._current_versions(conn, keys) if keys else {}  # type: ignore[arg-type]
        for a in appends:
            actual = current.get((ids[a.scope], a.stream))  # type: ignore[arg-type]
            if a.expected is Expect.NO_STREAM and actual is not None:
                return _conflict(a, actual)
            if isinstance(a.expected, int) and (actual or 0) != a.expected:
                return _conflict(a, actual)
        return None

    # -- idempotency -------------------------------------------------------------------------------------------

    def find_request(self, namespace: str, request_id: str, fingerprint: str | None = None) -> AppendResult | None:
        """The result of an append already committed with this request id, or None."""
        _check_request(namespace, request_id)
        with self.reading() as conn:
            row = conn.execute(
                select(requests.c.fingerprint, requests.c.positions).where(
                    requests.c.namespace == namespace, requests.c.request_id == request_id
                )
            ).first()
            if row is None:
                return None
            if fingerprint is not None and row.fingerprint != fingerprint:
                raise IdempotencyConflict(request_id)
            positions = orjson.loads(row.positions)
            found = self._events_at(conn, positions)
        return AppendResult(tuple(found), deduplicated=True, request_id=request_id)

    def _events_at(self, conn: Connection, positions: list[int]) -> list[RecordedEvent]:
        out: list[RecordedEvent] = []
        for chunk in _chunks(positions, 500):
            rows = conn.execute(select(*EVENT_COLUMNS).where(events.c.position.in_(chunk)).order_by(events.c.position))
            out.extend(self.decode(conn, r) for r in rows)
        return out

    # -- reading -----------------------------------------------------------------------------------------------

    def scope_id(self, scope: Scope, conn: Connection | None = None) -> int | None:
        """The database id of a scope, or None when nothing was ever appended to it."""
        if scope in self._scope_ids:
            return self._scope_ids[scope]
        if conn is None:
            with self.reading() as c:
                sid = self._lookup_scope_id(c, scope)
        else:
            sid = self._lookup_scope_id(conn, scope)
        if sid is not None:
            self._remember_scope(scope, sid)
        return sid

    def scope_of(self, conn: Connection, sid: int) -> Scope:
        scope = self._scopes.get(sid)
        if scope is None:
            row = conn.execute(select(scopes).where(scopes.c.id == sid)).one()
            scope = Scope(row.workspace, row.job, row.execution)
            self._remember_scope(scope, sid)
        return scope

    def read_stream(
        self,
        scope: Scope,
        stream: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        conn: Connection | None = None,
    ) -> list[RecordedEvent]:
        """One stream's events in version order (a task's history)."""
        if conn is None:
            with self.reading() as c:
                return self.read_stream(scope, stream, from_version=from_version, to_version=to_version, conn=c)
        sid = self.scope_id(scope, conn)
        if sid is None:
            return []
        q = select(*EVENT_COLUMNS).where(
            events.c.scope_id == sid, events.c.stream == stream, events.c.version >= from_version
        )
        if to_version is not None:
            q = q.where(events.c.version <= to_version)
        return [self.decode(conn, r) for r in conn.execute(q.order_by(events.c.version))]

    def read_streams(
        self, scope: Scope, streams: Sequence[str], *, conn: Connection | None = None
    ) -> dict[str, list[RecordedEvent]]:
        """Several streams of one scope at once, each in version order; absent streams map to empty lists."""
        if conn is None:
            with self.reading() as c:
                return self.read_streams(scope, streams, conn=c)
        out: dict[str, list[RecordedEvent]] = {s: [] for s in streams}
        sid = self.scope_id(scope, conn)
        if sid is None:
            return out
        for chunk in _chunks(list(out), 500):
            q = (
                select(*EVENT_COLUMNS)
                .where(events.c.scope_id == sid, events.c.stream.in_(chunk))
                .order_by(events.c.stream, events.c.version)
            )
            for r in conn.execute(q):
                out[r.stream].append(self.decode(conn, r))
        return out

    def stream_version(self, scope: Scope, stream: str) -> int | None:
        with self.reading() as conn:
            sid = self.scope_id(scope, conn)
            if sid is None:
                return None
            return self._current_versions(conn, [(sid, stream)]).get((sid, stream))

    def read_scope(
        self, scope: Scope, *, after: int = 0, limit: int = 1000, conn: Connection | None = None
    ) -> list[RecordedEvent]:
        """One scope's events in position order, ``limit`` at a time after position ``after``."""
        if conn is None:
            with self.reading() as c:
                return self.read_scope(scope, after=after, limit=limit, conn=c)
        sid = self.scope_id(scope, conn)
        if sid is None:
            return []
        q = (
            select(*EVENT_COLUMNS)
            .where(events.c.scope_id == sid, events.c.position > after)
            .order_by(events.c.position)
            .limit(limit)
        )
        return [self.decode(conn, r) for r in conn.execute(q)]

    def iter_scope(self, scope: Scope, *, after: int = 0, batch_size: int = 1000) -> Iterator[RecordedEvent]:
        while True:
            batch = self.read_scope(scope, after=after, limit=batch_size)
            yield from batch
            if len(batch) < batch_size:
                return
            after = batch[-1].position

    def read_all(self, after: Checkpoint = START, *, limit: int = 1000) -> Batch:
        """The next ``limit`` events of the whole log after ``after``, and the checkpoint to continue from.

        On PostgreSQL only events below the commit horizon are returned, so a reader that keeps its checkpoint
        never misses an event that commits late with a lower position.
        """
        with self.reading() as conn:
            found = self.decode_rows(conn, self.dialect.read_log(conn, after.as_tuple(), limit))
        return Batch(found, found[-1].checkpoint if found else after)

    def iter_all(self, after: Checkpoint = START, *, batch_size: int = 1000) -> Iterator[RecordedEvent]:
        """The whole log after ``after``, read ``batch_size`` rows per read transaction, each event decoded as it
        is taken: a reader that does not keep the events never holds more than one batch of rows (strings and
        numbers, which the garbage collector does not track) and the event in hand."""
        while True:
            with self.reading() as conn:
                rows = self.dialect.read_log(conn, after.as_tuple(), batch_size)
                for sid in {r[2] for r in rows} - self._scopes.keys():
                    self.scope_of(conn, sid)
            yield from self._decoded(None, rows)
            if len(rows) < batch_size:
                return
            after = Checkpoint(rows[-1][1] or 0, rows[-1][0])

    def head(self) -> Checkpoint:
        """The checkpoint of the last event a reader may read now."""
        with self.reading() as conn:
            horizon = self.dialect.horizon(conn)
            q = select(events.c.txid, events.c.position)
            if horizon is None:
                row = conn.execute(q.order_by(events.c.position.desc()).limit(1)).first()
            else:
                row = conn.execute(
                    q.where(events.c.txid < horizon).order_by(events.c.txid.desc(), events.c.position.desc()).limit(1)
                ).first()
        return Checkpoint(row.txid or 0, row.position) if row else START

    def lag(self, checkpoint: Checkpoint) -> dict[str, int]:
        """How far a reader at ``checkpoint`` is behind: events it may read now, and events committed but held back
        behind a still-open transaction (PostgreSQL)."""
        with self.reading() as conn:
            horizon = self.dialect.horizon(conn)
            if horizon is None:
                readable = conn.execute(
                    select(func.count()).select_from(events).where(events.c.position > checkpoint.position)
                ).scalar_one()
                return {"readable": readable, "held_back": 0}
            after = tuple_(events.c.txid, events.c.position) > tuple_(*checkpoint.as_tuple())
            readable = conn.execute(
                select(func.count()).select_from(events).where(after, events.c.txid < horizon)
            ).scalar_one()
            held = conn.execute(
                select(func.count()).select_from(events).where(events.c.txid >= horizon)
            ).scalar_one()
        return {"readable": readable, "held_back": held}

    def decode_rows(self, conn: Connection, rows: Sequence[tuple]) -> list[RecordedEvent]:
        """Driver rows of ``EVENT_COLUMNS`` with ``data`` and ``metadata`` as JSON text (``Dialect.read_log``), as
        ``decode`` makes them: the same events, built for replay's rate.

        Whole-log readers decode millions of events, so the per-row work here is kept to what the result needs:
        one ``orjson.loads`` of the data, the upcasting test as one lookup in ``Upcasters.current_versions`` (the
        chain runs only for an older shape), and the tuple built directly (``RecordedEvent`` is a named tuple; its
        generated ``__new__`` costs more than the rest). Rows with the same metadata text (every event of one
        append has the same document) share one decoded mapping, as the events an append returns already do;
        like the events themselves, it is not to be changed.
        """
        with gc_paused():
            return self._decode_rows(conn, rows)

    def _decode_rows(self, conn: Connection, rows: Sequence[tuple]) -> list[RecordedEvent]:
        return list(self._decoded(conn, rows))

    def _decoded(self, conn: Connection | None, rows: Sequence[tuple]) -> Iterator[RecordedEvent]:
        """``decode_rows``'s events one by one; without ``conn``, every row's scope must be known already."""
        loads = orjson.loads
        current = self.upcasters.current_versions()
        upcast = self.upcasters.upcast
        scopes_ = self._scopes
        new = tuple.__new__
        metas: dict[Any, Any] = {}
        for position, txid, scope_id, stream, version, type_, schema_version, data, metadata in rows:
            data = loads(data)
            if schema_version < current.get(type_, 1):
                schema_version, data = upcast(type_, schema_version, data)
            meta = metas.get(metadata)
            if meta is None:
                meta = metas[metadata] = loads(metadata)
            scope = scopes_.get(scope_id) or self.scope_of(conn, scope_id)  # type: ignore[arg-type]
            yield new(RecordedEvent, (position, scope, stream, version, type_, schema_version, data, meta, txid or 0,
                                      scope_id))

    def decode(self, conn: Connection, r: Row) -> RecordedEvent:
        """A row of ``EVENT_COLUMNS`` as readers see it: its scope, and its data upcast to the current shape."""
        position, txid, scope_id, stream, version, type_, schema_version, data, metadata = r
        if schema_version < self.upcasters.current_version(type_):
            schema_version, data = self.upcasters.upcast(type_, schema_version, data)
        scope = self._scopes.get(scope_id) or self.scope_of(conn, scope_id)
        return RecordedEvent(
            position, scope, stream, version, type_, schema_version, data, metadata, txid or 0, scope_id
        )


def _conflict(a: StreamAppend, actual: int | None) -> ConcurrencyError:
    return ConcurrencyError(f"{a.scope}/{a.stream}", a.expected, actual, scope=a.scope, key=a.stream)


def _check_request(namespace: str, request_id: str | None) -> None:
    for name, value in (("requestId", request_id), ("namespace", namespace)):
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > 128 or "\x00" in value or (name == "requestId" and not value):
            raise ValidationError(name, "must be 1 to 128 characters without NUL characters")
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:  # a lone surrogate: the database driver cannot send it
                raise ValidationError(name, "must be valid Unicode (no lone surrogates)") from None


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _fingerprint(appends: Sequence[StreamAppend]) -> str:
    body = [
        [str(a.scope), a.stream, str(a.expected), [[e.type, e.schema_version, e.data] for e in a.events]]
        for a in appends
    ]
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
