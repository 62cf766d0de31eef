"""The catch-up projector: follows the whole log from a stored checkpoint and applies it to a projection's tables.

Inline projections follow the log inside each append. A catch-up projector follows it afterwards, in batches, as
any reader of the whole log does (``EventLog.read_all``: on PostgreSQL in (txid, position) order below the commit
horizon, so that no event that commits late is ever passed over). After each batch it stores its checkpoint in
``projection_checkpoints`` in the same transaction as the batch's writes, so that a projector that stops (or
crashes) resumes exactly where its tables stand. Rebuilds (``rebuild.py``) fill fresh tables with one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from eventstore import START, Checkpoint, EventLog, RecordedEvent

from .snapshot_tables import projection_checkpoints
from .snapshots import now_iso
from .version import PROJECTION_VERSION

Progress = Callable[[int], None]


@dataclass(frozen=True)
class StoredCheckpoint:
    name: str
    checkpoint: Checkpoint
    projection_version: int
    status: str
    detail: str
    updated_at: str

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> StoredCheckpoint:
        return cls(
            row["name"], Checkpoint(int(row["txid"]), int(row["position"])), int(row["projection_version"]),
            row["status"], row["detail"], row["updated_at"],
        )


def load_checkpoint(conn: Connection, name: str) -> StoredCheckpoint | None:
    t = projection_checkpoints
    row = conn.execute(select(t).where(t.c.name == name)).mappings().first()
    return StoredCheckpoint.of(row) if row else None


def save_checkpoint(conn: Connection, name: str, checkpoint: Checkpoint, *, status: str, detail: str | None = None,
                    version: int = PROJECTION_VERSION) -> None:
    """Store a checkpoint (``detail`` None: keep the stored one)."""
    t = projection_checkpoints
    values: dict[str, Any] = {
        "txid": checkpoint.txid,
        "position": checkpoint.position,
        "projection_version": version,
        "status": status,
        "updated_at": now_iso(),
    }
    if detail is not None:
        values["detail"] = detail
    if conn.execute(update(t).where(t.c.name == name).values(values)).rowcount == 0:
        conn.execute(t.insert().values({"name": name, "detail": "", **values}))


def delete_checkpoint(conn: Connection, name: str) -> None:
    conn.execute(projection_checkpoints.delete().where(projection_checkpoints.c.name == name))


class CatchUpProjector:
    """Applies the log after its stored checkpoint to ``projection`` (anything with ``apply(conn, events)`` that
    tolerates an event it already reflects, like ``TaskProjection(catch_up=True)``)."""

    def __init__(self, log: EventLog, projection: Any, name: str, *, batch_size: int = 5000) -> None:
        self.log = log
        self.projection = projection
        self.name = name
        self.batch_size = batch_size

    def checkpoint(self) -> Checkpoint:
        with self.log.reading() as conn:
            stored = load_checkpoint(conn, self.name)
        return stored.checkpoint if stored else START

    def apply(self, conn: Connection, events: list[RecordedEvent], status: str = "catching-up") -> Checkpoint:
        """Apply one batch and store the checkpoint after it, in ``conn``'s transaction."""
        self.projection.apply(conn, events)
        checkpoint = events[-1].checkpoint
        save_checkpoint(conn, self.name, checkpoint, status=status)
        return checkpoint

    def run(self, *, progress: Progress | None = None) -> int:
        """Follow the log until it is caught up (a batch comes back short); returns how many events were read."""
        after = self.checkpoint()
        done = 0
        while True:
            batch = self.log.read_all(after, limit=self.batch_size)
            if batch.events:
                with self.log.writing() as conn:
                    after = self.apply(conn, batch.events)
                done += len(batch.events)
                if progress:
                    progress(len(batch.events))
            if len(batch.events) < self.batch_size:
                return done
