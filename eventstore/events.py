"""The shapes that cross the event log's boundary: scopes, new events, recorded events, checkpoints."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Sequence

from .errors import ValidationError

if TYPE_CHECKING:
    from .task import Task

_SCOPE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a task lives: a workspace, a job in it, an execution of that job."""

    workspace: str
    job: str
    execution: str = "default"

    def __post_init__(self) -> None:
        for name in ("workspace", "job", "execution"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _SCOPE_PART.match(value):
                raise ValidationError(
                    name,
                    f"{value!r} is not a valid {name} (1 to 128 letters, digits, '.', '_', ':' or '-', "
                    "starting with a letter or digit)",
                )

    def __str__(self) -> str:
        return f"{self.workspace}/{self.job}/{self.execution}"


class Expect(enum.Enum):
    """Expected stream versions that are not a number."""

    ANY = "any version"
    NO_STREAM = "no stream yet"

    def __str__(self) -> str:
        return self.value


ExpectedVersion = int | Expect


@dataclass(frozen=True, slots=True)
class NewEvent:
    type: str
    data: Mapping[str, Any]
    schema_version: int = 1


@dataclass(frozen=True, slots=True)
class StreamAppend:
    """Events for one stream, with the version the stream must be at before they are written."""

    scope: Scope
    stream: str
    events: Sequence[NewEvent]
    expected: ExpectedVersion = Expect.ANY


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a reader of the whole log stands.

    On PostgreSQL the log is read in (transaction id, position) order so that an event committed late with a lower
    position is never skipped; on SQLite writers are serial and ``txid`` is always 0.
    """

    txid: int = 0
    position: int = 0

    def as_tuple(self) -> tuple[int, int]:
        return (self.txid, self.position)


START = Checkpoint()


class RecordedEvent(NamedTuple):
    """An event as the log holds it. Immutable; a named tuple because replay makes millions of them."""

    position: int
    scope: Scope
    stream: str
    version: int
    type: str
    schema_version: int
    data: Mapping[str, Any]
    metadata: Mapping[str, Any]
    txid: int = 0
    scope_id: int = 0  # the database id of ``scope`` (projections key their rows by it)

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.txid, self.position)

    @property
    def request_id(self) -> str | None:
        return self.metadata.get("requestId")

    @property
    def recorded_at(self) -> str:
        return self.metadata["recordedAt"]

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-ready document of the event within its stream (the native API's and the command line's
        shape); ``requestId`` only when the append had one."""
        out: dict[str, Any] = {
            "position": self.position,
            "version": self.version,
            "type": self.type,
            "schemaVersion": self.schema_version,
            "recordedAt": self.recorded_at,
            "data": dict(self.data),
        }
        if self.request_id:
            out["requestId"] = self.request_id
        return out


@dataclass(frozen=True, slots=True)
class AppendResult:
    events: tuple[RecordedEvent, ...]
    deduplicated: bool = False
    request_id: str | None = None
    # The tasks after the events, of the streams an inline projection folded from the states they were decided
    # from (``projection.DecidedStates``): the commands return these instead of folding the events again.
    states: Mapping[tuple[Scope, str], Task] = field(default_factory=dict)

    @property
    def last_position(self) -> int:
        return max((e.position for e in self.events), default=0)

    def versions(self) -> dict[tuple[Scope, str], int]:
        out: dict[tuple[Scope, str], int] = {}
        for e in self.events:
            out[(e.scope, e.stream)] = max(out.get((e.scope, e.stream), 0), e.version)
        return out


@dataclass(slots=True)
class Batch:
    """One batch of the whole log, and the checkpoint to read the next batch from."""

    events: list[RecordedEvent] = field(default_factory=list)
    checkpoint: Checkpoint = START
