"""The event log under concurrency.

(a) Many concurrent appenders, on both engines (file-backed SQLite and PostgreSQL): every acknowledged event is in
    the log exactly once, no unacknowledged one is, and stream versions stay gapless; concurrent commands on one task.
(b) PostgreSQL: gap-free reading. Transactions commit out of order, so a reader that followed positions alone could
    pass over an event that commits late with a lower position. ``EventLog.read_all`` stops below the oldest open
    transaction; these tests stagger commits and check the reader never skips anything.
(c) PostgreSQL: ``idle_in_transaction_session_timeout`` is set, and bounds how long an open transaction holds readers.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from eventstore import (
    START,
    ConcurrencyError,
    EventLog,
    Expect,
    IllegalTransition,
    NewEvent,
    Scope,
    StreamAppend,
    VersionMismatch,
)
from eventstore.log import iso, utc_now

SCOPE = Scope("ws", "job", "e")
THREADS = 8
APPENDS = 50


def run_threads(n: int, target) -> list[BaseException]:
    """Run ``target(i)`` in ``n`` threads released together; the exceptions none of them expected."""
    barrier = threading.Barrier(n)
    crashed: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            target(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            crashed.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    return crashed


def all_events(engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT position, stream, version, data FROM events ORDER BY position")))


def assert_streams_gapless(engine) -> None:
    with engine.connect() as conn:
        bad = conn.execute(
            text(
                "SELECT scope_id, stream, count(*), min(version), max(version) FROM events "
                "GROUP BY scope_id, stream HAVING count(*) <> max(version) OR min(version) <> 1"
            )
        ).all()
    assert bad == []


def settle(log: EventLog) -> None:
    """Wait (bounded) until no open transaction on the server holds readers of the whole log back."""
    deadline = time.monotonic() + 30
    while log.lag(START)["held_back"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.lag(START)["held_back"] == 0


def _data(row) -> dict:
    import orjson

    return orjson.loads(row.data) if isinstance(row.data, (str, bytes)) else row.data


# -- (a) many appenders ------------------------------------------------------------------------------------------


def test_every_acknowledged_append_is_in_the_log_exactly_once(database):
    engine = database.open_engine(pool_size=THREADS)
    try:
        log = EventLog(engine)
        log.append([StreamAppend(SCOPE, "setup", [NewEvent("Setup", {})])])  # the scope exists before the race
        acknowledged: dict[tuple[int, int, int], tuple[int, str, int]] = {}
        refused: list[tuple[tuple[int, int, int], BaseException]] = []
        lock = threading.Lock()

        def appender(t: int) -> None:
            own_version = 0
            for i in range(APPENDS):
                kind = i % 5
                if kind == 0:  # one stream every thread appends to, at any version
                    appends = [StreamAppend(SCOPE, "shared", [NewEvent("E", {"t": t, "i": i, "k": 0})])]
                elif kind == 1:  # two shared streams in one append, in an order that differs between threads
                    pair = ["pair-a", "pair-b"] if t % 2 else ["pair-b", "pair-a"]
                    appends = [
                        StreamAppend(SCOPE, s, [NewEvent("E", {"t": t, "i": i, "k": k})]) for k, s in enumerate(pair)
                    ]
                elif kind == 2:  # every thread tries to create the same stream: exactly one may
                    appends = [
                        StreamAppend(SCOPE, f"race-{i}", [NewEvent("E", {"t": t, "i": i, "k": 0})], Expect.NO_STREAM)
                    ]
                else:  # the thread's own stream, at the exact version it knows
                    appends = [
                        StreamAppend(
                            SCOPE, f"own-{t}",
                            [NewEvent("E", {"t": t, "i": i, "k": 0}), NewEvent("E", {"t": t, "i": i, "k": 1})],
                            own_version,
                        )
                    ]
                try:
                    result = log.append(appends)
                except Exception as exc:  # noqa: BLE001 - refused appends are checked below
                    with lock:
                        for a in appends:
                            for e in a.events:
                                refused.append(((e.data["t"], e.data["i"], e.data["k"]), exc))
                    continue
                with lock:
                    for e in result.events:
                        key = (e.data["t"], e.data["i"], e.data["k"])
                        assert key not in acknowledged
                        acknowledged[key] = (e.position, e.stream, e.version)
                if kind >= 3:
                    own_version += 2

        assert run_threads(THREADS, appender) == []

        # Only the losers of the NO_STREAM races were refused, each with a concurrency error.
        assert {type(exc) for _, exc in refused} <= {ConcurrencyError}
        assert all(key[1] % 5 == 2 for key, _ in refused)
        rows = all_events(engine)[1:]
        found = Counter((d["t"], d["i"], d["k"]) for d in map(_data, rows))
        assert all(n == 1 for n in found.values()), "an event is in the log twice"
        assert set(found) == set(acknowledged), "the log and the acknowledgements differ"
        assert not {key for key, _ in refused} & set(found)
        for row in rows:
            d = _data(row)
            assert acknowledged[(d["t"], d["i"], d["k"])] == (row.position, row.stream, row.version)
        # the appends that could not conflict all succeeded; each race had exactly one winner
        per_stream = Counter(row.stream for row in rows)
        assert per_stream["shared"] == THREADS * APPENDS // 5
        assert per_stream["pair-a"] == per_stream["pair-b"] == THREADS * APPENDS // 5
        assert all(per_stream[f"own-{t}"] == 2 * 2 * APPENDS // 5 for t in range(THREADS))
        assert all(per_stream[f"race-{i}"] == 1 for i in range(2, APPENDS, 5))
        assert len(refused) == (THREADS - 1) * APPENDS // 5
        assert_streams_gapless(engine)
        # a follower of the whole log reads every event once, each stream in version order
        settle(log)
        followed = list(log.iter_all(batch_size=97))
        assert sorted(e.position for e in followed) == [r.position for r in all_events(engine)]
        assert len({e.position for e in followed}) == len(followed)
        last_version: dict[str, int] = {}
        for e in followed:
            assert e.version == last_version.get(e.stream, 0) + 1
            last_version[e.stream] = e.version
    finally:
        engine.dispose()


def test_appends_to_the_same_streams_in_opposite_orders_all_succeed(database):
    """On PostgreSQL two such appends can deadlock; the loser is rolled back and must be retried, not reported."""
    engine = database.open_engine(pool_size=THREADS)
    try:
        log = EventLog(engine)
        log.append([StreamAppend(SCOPE, "setup", [NewEvent("Setup", {})])])
        streams = ["x", "y", "z"]

        def appender(t: int) -> None:
            for i in range(15):
                order = streams if (t + i) % 2 else streams[::-1]
                log.append([StreamAppend(SCOPE, s, [NewEvent("E", {"t": t, "i": i})]) for s in order])

        assert run_threads(6, appender) == []
        per_stream = Counter(r.stream for r in all_events(engine))
        assert [per_stream[s] for s in streams] == [6 * 15] * 3
        assert_streams_gapless(engine)
    finally:
        engine.dispose()


def test_concurrent_transitions_of_one_task_are_all_in_its_history(database):
    store = database.open_store()
    try:
        store.add_task(SCOPE, {"id": "T"})
        # everyone tries to start the same task: one succeeds, the others find it already starting
        outcomes: list[Any] = []

        def start(_i: int) -> None:
            try:
                outcomes.append(store.transition(SCOPE, "t", "starting"))
            except IllegalTransition as exc:
                outcomes.append(exc)

        assert run_threads(THREADS, start) == []
        started = [o for o in outcomes if not isinstance(o, Exception)]
        assert len(started) == 1 and started[0].version == 2
        assert all(o.current == "starting" for o in outcomes if isinstance(o, IllegalTransition))

        # many writers record conditions on it at once: each success is in the history, at the version it reported
        succeeded: dict[str, int] = {}
        failed: set[str] = set()
        lock = threading.Lock()

        def record(t: int) -> None:
            for i in range(10):
                tag = f"{t}.{i}"
                try:
                    task = store.record_condition(SCOPE, "t", {"type": f"C{t}", "message": tag})
                except ConcurrencyError:
                    with lock:
                        failed.add(tag)
                    continue
                with lock:
                    succeeded[tag] = task.version

        assert run_threads(THREADS, record) == []
        history = store.history(SCOPE, "t")
        assert [e.version for e in history] == list(range(1, len(history) + 1))
        recorded = {e.data["condition"]["message"]: e.version for e in history[2:]}
        assert recorded == succeeded
        assert not failed & set(recorded)
        assert store.get_task(SCOPE, "t").version == len(history) == 2 + len(succeeded)
    finally:
        store.close()


def test_concurrent_commands_with_an_expected_version_win_once_per_version(database):
    store = database.open_store()
    try:
        store.add_task(SCOPE, {"id": "t"})
        wins: list[tuple[int, str]] = []
        lock = threading.Lock()

        def contend(t: int) -> None:
            for i in range(5):
                seen = store.get_task(SCOPE, "t").version
                try:
                    task = store.record_condition(SCOPE, "t", {"type": "X", "message": f"{t}.{i}"},
                                                  expected_version=seen)
                except VersionMismatch as exc:
                    assert exc.expected == seen and exc.actual > seen
                    continue
                assert task.version == seen + 1
                with lock:
                    wins.append((task.version, f"{t}.{i}"))

        assert run_threads(THREADS, contend) == []
        history = store.history(SCOPE, "t")
        assert sorted(wins) == [(e.version, e.data["condition"]["message"]) for e in history[1:]]
        assert [e.version for e in history] == list(range(1, len(history) + 1))
    finally:
        store.close()


def test_concurrent_bulk_adds_of_overlapping_tasks_add_each_task_once(database):
    store = database.open_store()
    try:
        added: dict[int, list[str]] = {}

        def add(t: int) -> None:
            ids = [f"task-{(t + k) % THREADS}" for k in range(3)]  # each id is wanted by three threads
            try:
                added[t] = [task.task_id for task in store.add_tasks(SCOPE, [{"id": i} for i in ids])]
            except Exception as exc:  # noqa: BLE001
                assert type(exc).__name__ == "TaskExists"

        assert run_threads(THREADS, add) == []
        winners = [i for ids in added.values() for i in ids]
        assert len(winners) == len(set(winners))  # no task was added twice
        for t in range(THREADS):
            task_id = f"task-{t}"
            if task_id in winners:
                assert store.get_task(SCOPE, task_id).version == 1
                assert len(store.history(SCOPE, task_id)) == 1
        assert added, "at least one bulk add wins"
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM events")).scalar_one() == len(winners)
    finally:
        store.close()


# -- (b) gap-free reading on PostgreSQL --------------------------------------------------------------------------


class _RolledBack(Exception):
    pass


class HeldWriter:
    """A writer whose transaction inserts now and commits when told (``release``), in a thread of its own."""

    def __init__(self, log: EventLog, appends: list[StreamAppend]) -> None:
        self.log = log
        self.appends = appends
        self.inserted = threading.Event()
        self.release = threading.Event()
        self.recorded: list[Any] = []
        self.error: BaseException | None = None
        self.rollback = False
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            with self.log.writing() as conn:
                self.recorded, _ = self.log._append_in(conn, self.appends, {"recordedAt": iso(utc_now())})
                self.inserted.set()
                if not self.release.wait(30):
                    raise TimeoutError("never released")
                if self.rollback:
                    raise _RolledBack()
        except _RolledBack:
            pass
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
            self.inserted.set()

    def start(self) -> "HeldWriter":
        self.thread.start()
        assert self.inserted.wait(30)
        assert self.error is None, self.error
        return self

    def abort(self) -> None:
        self.rollback = True
        self.commit()

    def commit(self) -> None:
        self.release.set()
        self.thread.join(30)
        assert self.error is None, self.error


def test_a_reader_never_passes_an_event_that_commits_late_with_a_lower_position(postgresql_database):
    engine = postgresql_database.open_engine()
    try:
        log = EventLog(engine)
        log.append([StreamAppend(SCOPE, "setup", [NewEvent("Setup", {})])])
        settle(log)
        first = log.read_all()
        assert [e.type for e in first.events] == ["Setup"]
        checkpoint = first.checkpoint

        a = HeldWriter(log, [StreamAppend(SCOPE, "a", [NewEvent("A", {})])]).start()  # inserts first ...
        try:
            b = log.append([StreamAppend(SCOPE, "b", [NewEvent("B", {})])])  # ... but B commits first
            (a_event,), (b_event,) = a.recorded, b.events
            assert a_event.position < b_event.position and a_event.txid < b_event.txid

            # The hazard is real: following positions alone, B is readable now and A (lower position) is not.
            with engine.connect() as conn:
                naive = conn.execute(
                    text("SELECT type FROM events WHERE position > :p ORDER BY position"), {"p": checkpoint.position}
                ).scalars().all()
            assert naive == ["B"]

            # The log's reader does not return B while A is open, so it cannot move past A.
            held = log.read_all(checkpoint)
            assert held.events == [] and held.checkpoint == checkpoint
            assert list(log.iter_all(checkpoint)) == []
            assert log.head() == checkpoint
            lag = log.lag(checkpoint)
            assert lag["held_back"] >= 1 and lag["readable"] == 0
        finally:
            a.commit()

        settle(log)
        after = log.read_all(checkpoint)
        assert [(e.type, e.position) for e in after.events] == [("A", a_event.position), ("B", b_event.position)]
        assert log.read_all(after.checkpoint).events == []
        assert [e.type for e in log.iter_all()] == ["Setup", "A", "B"]
        assert log.lag(after.checkpoint) == {"readable": 0, "held_back": 0}
    finally:
        engine.dispose()


def test_a_reader_reads_past_a_writer_that_rolls_back(postgresql_database):
    engine = postgresql_database.open_engine()
    try:
        log = EventLog(engine)
        log.append([StreamAppend(SCOPE, "setup", [NewEvent("Setup", {})])])
        settle(log)
        checkpoint = log.read_all().checkpoint
        a = HeldWriter(log, [StreamAppend(SCOPE, "a", [NewEvent("A", {})])]).start()
        try:
            b = log.append([StreamAppend(SCOPE, "b", [NewEvent("B", {})])])
            assert log.read_all(checkpoint).events == []
        finally:
            a.abort()
        settle(log)
        after = log.read_all(checkpoint)
        assert [(e.type, e.position) for e in after.events] == [("B", b.events[0].position)]
        assert [e.type for e in log.iter_all()] == ["Setup", "B"]
    finally:
        engine.dispose()


def test_a_follower_of_the_log_misses_nothing_while_writers_commit_out_of_order(postgresql_database):
    engine = postgresql_database.open_engine(pool_size=8)
    try:
        log = EventLog(engine)
        log.append([StreamAppend(SCOPE, "setup", [NewEvent("Setup", {})])])
        writers_done = threading.Event()
        followed: list[Any] = []
        follower_errors: list[BaseException] = []

        def follow() -> None:
            checkpoint = START
            try:
                while True:
                    done = writers_done.is_set()
                    batch = log.read_all(checkpoint, limit=7)
                    for e in batch.events:
                        assert e.checkpoint.as_tuple() > checkpoint.as_tuple()
                    followed.extend(batch.events)
                    checkpoint = batch.checkpoint
                    if done and not batch.events and log.lag(checkpoint) == {"readable": 0, "held_back": 0}:
                        return
                    if not batch.events:
                        time.sleep(0.002)
            except BaseException as exc:  # noqa: BLE001
                follower_errors.append(exc)

        def write(t: int) -> None:
            rng = random.Random(t)
            for i in range(12):
                with log.writing() as conn:
                    log._append_in(
                        conn,
                        [StreamAppend(SCOPE, f"w{t}", [NewEvent("E", {"t": t, "i": i})], Expect.ANY)],
                        {"recordedAt": iso(utc_now())},
                    )
                    time.sleep(rng.random() * 0.01)  # hold the transaction open: commits land out of order

        follower = threading.Thread(target=follow)
        follower.start()
        try:
            assert run_threads(6, write) == []
        finally:
            writers_done.set()
            follower.join(60)
        assert not follower.is_alive() and follower_errors == []
        positions = [e.position for e in followed]
        assert len(positions) == len(set(positions)), "the follower read an event twice"
        assert sorted(positions) == [r.position for r in all_events(engine)], "the follower missed an event"
        assert len(positions) == 1 + 6 * 12
    finally:
        engine.dispose()


# -- (c) idle_in_transaction_session_timeout ---------------------------------------------------------------------


def test_idle_in_transaction_session_timeout_is_set_on_postgresql_connections(postgresql_database):
    engine = postgresql_database.open_engine()
    try:
        log = EventLog(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one() == "1min"
        with log.writing() as conn:  # the connections the log itself writes with
            assert conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one() == "1min"
    finally:
        engine.dispose()
    engine = postgresql_database.open_engine(idle_in_transaction_timeout_ms=2500)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one() == "2500ms"
    finally:
        engine.dispose()


def test_an_abandoned_transaction_holds_readers_back_only_until_the_timeout(postgresql_database):
    engine = postgresql_database.open_engine(idle_in_transaction_timeout_ms=300)
    try:
        log = EventLog(engine)
        log.append([StreamAppend(SCOPE, "setup", [NewEvent("Setup", {})])])
        settle(log)
        checkpoint = log.read_all().checkpoint
        abandoned = HeldWriter(log, [StreamAppend(SCOPE, "a", [NewEvent("A", {})])]).start()
        try:
            log.append([StreamAppend(SCOPE, "b", [NewEvent("B", {})])])
            # the server ends the idle transaction, rolling A back, and the reader moves on to B
            deadline = time.monotonic() + 30
            while not log.read_all(checkpoint).events and time.monotonic() < deadline:
                time.sleep(0.05)
            assert [e.type for e in log.read_all(checkpoint).events] == ["B"]
        finally:
            abandoned.release.set()
            abandoned.thread.join(30)
        assert isinstance(abandoned.error, DBAPIError)  # its commit failed: the session was ended
        assert [e.type for e in log.iter_all()] == ["Setup", "B"]
    finally:
        engine.dispose()


# -- (d) SQLite: how transactions begin ---------------------------------------------------------------------------


def _sqlite_log(tmp_path) -> EventLog:
    from eventstore.engine import open_engine

    return EventLog(open_engine(f"sqlite:///{tmp_path / 'begin.db'}"))


def _other_writer_can_begin(path) -> bool:
    """Whether a second connection gets the write lock at once (it waits at most 50 ms)."""
    import sqlite3

    other = sqlite3.connect(path, isolation_level=None, timeout=0.05)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


def test_sqlite_writers_hold_the_write_lock_from_their_first_statement(tmp_path):
    """``EventLog.writing`` and ``eventstore.engine.write_transaction`` begin with BEGIN IMMEDIATE: before the
    writer has read anything, no other writer can begin (so two writers never both read a version and then race
    to upgrade their locks). A read transaction takes no write lock."""
    from eventstore.engine import write_transaction

    log = _sqlite_log(tmp_path)
    path = tmp_path / "begin.db"
    try:
        assert _other_writer_can_begin(path)
        with log.writing() as conn:
            assert conn.connection.driver_connection.in_transaction
            assert not _other_writer_can_begin(path)
        with write_transaction(log.engine):
            assert not _other_writer_can_begin(path)
        with log.reading() as conn:
            assert conn.connection.driver_connection.in_transaction
            assert _other_writer_can_begin(path)
        assert _other_writer_can_begin(path)
    finally:
        log.engine.dispose()


def test_sqlite_reads_in_a_transaction_see_one_snapshot_and_plain_connections_begin_one_too(tmp_path):
    """``EventLog.reading`` and a plain ``engine.connect()`` (which begins on its first statement) each read one
    snapshot: an append committed meanwhile by another connection is not seen until the transaction ends."""
    log = _sqlite_log(tmp_path)
    one = [StreamAppend(SCOPE, "a", [NewEvent("Noted", {})], Expect.ANY)]
    count = "SELECT count(*) FROM events"
    try:
        log.append(one)
        with log.reading() as conn:
            before = conn.execute(text(count)).scalar_one()
            log.append(one)
            assert conn.execute(text(count)).scalar_one() == before
        with log.engine.connect() as conn:
            before = conn.execute(text(count)).scalar_one()
            assert conn.connection.driver_connection.in_transaction
            log.append(one)
            assert conn.execute(text(count)).scalar_one() == before
            conn.rollback()
            assert conn.execute(text(count)).scalar_one() == before + 1
    finally:
        log.engine.dispose()


class _LockNotTriedBy:
    """A lock that fails the test when one thread tries to take it (waiting for it would wait for itself)."""

    def __init__(self, lock: Any, thread: int) -> None:
        self.lock, self.thread = lock, thread

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        assert threading.get_ident() != self.thread, "a nested writer waited for the connection its thread holds"
        return self.lock.acquire(*args, **kwargs)

    def release(self) -> None:
        self.lock.release()


def test_sqlite_writers_of_one_process_take_turns_on_the_held_connection(tmp_path):
    """A writer of another thread waits for the log's held connection while a transaction is open on it, and gets
    it when that transaction ends; a nested transaction of the thread that holds it gets a connection of the pool
    at once (waiting for the held one would wait for itself)."""
    log = _sqlite_log(tmp_path)
    one = [StreamAppend(SCOPE, "a", [NewEvent("Noted", {})], Expect.ANY)]
    seen: list[Any] = []
    inside, done = threading.Event(), threading.Event()

    def other() -> None:
        inside.wait(10)
        with log.writing() as conn:  # the held connection, once the first writer is done with it
            seen.append(conn)
            conn.execute(text("SELECT 1"))
        done.set()

    try:
        with log.writing() as first:
            pass
        thread = threading.Thread(target=other)
        thread.start()
        with log.writing() as again:
            assert again is first  # free again: the same held connection
            inside.set()
            assert not done.wait(0.3)  # the other writer waits
            # nested, in this thread: a pooled connection at once, without trying the held connection's lock
            real = log._writer._lock
            log._writer._lock = _LockNotTriedBy(real, threading.get_ident())
            try:
                assert log._writer.acquire() is None
            finally:
                log._writer._lock = real
        thread.join(10)
        assert done.is_set() and seen == [first]
        log.append(one)
        with log.writing() as after:
            assert after is first
    finally:
        log.close()
        log.engine.dispose()


def _held_then_invalidated(log: EventLog) -> Any:
    """The log's held connection, taken once and then invalidated (as the pool does when its database went away)."""
    with log.writing() as held:
        pass
    held.invalidate()
    return held


def test_sqlite_a_held_connection_is_replaced_when_invalidated_and_given_back_on_close(tmp_path):
    log = _sqlite_log(tmp_path)
    one = [StreamAppend(SCOPE, "a", [NewEvent("Noted", {})], Expect.ANY)]
    try:
        first = _held_then_invalidated(log)
        log.append(one)
        with log.writing() as second:
            assert second is not first and not second.invalidated
        checked_out = log.engine.pool.checkedout()
        log.close()
        assert log.engine.pool.checkedout() == checked_out - 1
        with log.writing() as third:  # after close, a pooled connection per writer
            assert third is not second
        log.append(one)
        assert len(log.read_all(limit=10).events) == 2
    finally:
        log.engine.dispose()


def test_sqlite_a_held_connection_that_cannot_be_replaced_fails_that_append_only(tmp_path, monkeypatch):
    """When the held connection must be made anew (its database handle invalidated) and connecting fails, that
    append fails with the error and writes nothing; the held connection is not left taken, so the next append makes
    it and lands."""
    log = _sqlite_log(tmp_path)
    one = [StreamAppend(SCOPE, "a", [NewEvent("Noted", {})], Expect.ANY)]
    try:
        first = _held_then_invalidated(log)
        real_connect = log.engine.connect

        def connect_fails(*args, **kwargs):
            raise OSError("no more file handles")

        monkeypatch.setattr(log.engine, "connect", connect_fails)
        with pytest.raises(OSError, match="no more file handles"):
            log.append(one)
        assert not log._writer._lock.locked()  # given back: the next writer does not wait for it
        monkeypatch.setattr(log.engine, "connect", real_connect)
        log.append(one)
        with log.writing() as again:
            assert again is log._writer._conn and again is not first and not again.invalidated
        assert [e.stream for e in log.read_all(limit=10).events] == ["a"]
    finally:
        log.close()
        log.engine.dispose()


def test_sqlite_a_writer_waiting_for_the_held_connection_when_the_log_closes_writes_on_a_pooled_one(tmp_path):
    """``close()`` while a writer of another thread waits for the held connection: the waiter gets none (it writes
    on a connection of the pool, as every writer after close does), the held connection is given back, and the
    waiter's append lands once."""
    log = _sqlite_log(tmp_path)
    one = [StreamAppend(SCOPE, "a", [NewEvent("Noted", {})], Expect.ANY)]
    waiting, appended = threading.Event(), threading.Event()
    got: list[Any] = []
    real_acquire = log._writer.acquire

    def acquire() -> Any:
        if threading.current_thread() is not threading.main_thread():
            waiting.set()
        got.append(real_acquire())
        return got[-1]

    def other() -> None:
        log.append(one)  # waits for the held connection, which the log gives back meanwhile
        appended.set()

    try:
        log._writer.acquire = acquire  # type: ignore[method-assign]
        with log.writing() as held:
            writer = threading.Thread(target=other)
            writer.start()
            assert waiting.wait(10)
            assert not appended.wait(0.2)  # it waits for the held connection
            closer = threading.Thread(target=log.close)
            closer.start()
            closer.join(0.2)  # close waits for the held connection too, once it has said the log is closing
            assert log._writer._closed
        writer.join(10)
        closer.join(10)
        assert appended.is_set() and got == [held, None]  # the waiter got no held connection
        assert held.closed
        assert [e.stream for e in log.read_all(limit=10).events] == ["a"]
    finally:
        log.engine.dispose()


def test_sqlite_a_forked_process_writes_on_its_own_connection(tmp_path):
    """A process forked from one that holds a writing connection (the rebuild's seeding workers are) never uses
    its parent's database handle, nor waits for its parent's writers' turns: it makes its own, and both processes'
    appends land."""
    import multiprocessing

    from projections.seeding import can_fork

    if not can_fork():
        pytest.skip("this platform cannot fork")
    log = _sqlite_log(tmp_path)
    try:
        log.append([StreamAppend(SCOPE, "parent", [NewEvent("Noted", {})], Expect.ANY)])

        def child() -> None:
            log.engine.dispose(close=False)
            log._writer.wait = 0  # a child that tried its parent's taken lock gives up at once, for a pooled connection
            log.append([StreamAppend(SCOPE, "child", [NewEvent("Noted", {})], Expect.ANY)])
            own = log._writer._conn
            if own is None or own is held:
                os._exit(4)  # it did not write on a held connection of its own: it tried the parent's lock
            with log.writing() as conn:
                os._exit(0 if conn is own else 3)

        with log.writing() as held:
            pass
        # Forked while the parent's turn lock is taken (as by a thread of the parent between its statements; a fork
        # inside an open SQLite transaction is not safe at all): the child must not wait for that lock.
        log._writer._lock.acquire()
        try:
            proc = multiprocessing.get_context("fork").Process(target=child)
            proc.start()
            proc.join(30)
        finally:
            log._writer._lock.release()
        assert proc.exitcode == 0
        log.append([StreamAppend(SCOPE, "parent", [NewEvent("Noted", {})], Expect.ANY)])
        with log.writing() as conn:
            assert conn is held
        streams = Counter(e.stream for e in log.read_all(limit=10).events)
        assert streams == {"parent": 2, "child": 1}
    finally:
        log.close()
        log.engine.dispose()
