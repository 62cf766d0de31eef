"""Duration strings as the vendors write them.

Azure Batch writes ISO 8601 durations (``PT1H``, ``PT01H00M00S`` from the 15.x SDK, ``P10675199DT2H48M5.4775807S``
for "unlimited"); Blaxel writes Go-style durations (``30m``, ``1h30m``). Both are accepted and kept as written.
"""

from __future__ import annotations

import functools
import re
from datetime import timedelta

_ISO = re.compile(
    r"^P(?!$)(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?\Z"
)
_GO = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+\Z")
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
UNLIMITED = timedelta.max


def parse_duration(text: str) -> timedelta:
    """A ``timedelta`` for an ISO 8601 or Go-style duration; ``ValueError`` when it is neither."""
    # A job's tasks mostly repeat a few durations: short ones are parsed once each (bounded in number and size).
    return _parse_short(text) if len(text) <= 64 else _parse(text)


@functools.lru_cache(maxsize=1024)
def _parse_short(text: str) -> timedelta:
    return _parse(text)


def _parse(text: str) -> timedelta:
    m = _ISO.match(text)
    if m:
        parts = {k: float(v) for k, v in m.groupdict().items() if v is not None}
        try:
            return timedelta(
                weeks=parts.get("weeks", 0),
                days=parts.get("days", 0),
                hours=parts.get("hours", 0),
                minutes=parts.get("minutes", 0),
                seconds=parts.get("seconds", 0),
            )
        except OverflowError:
            return UNLIMITED
    if _GO.match(text):
        try:
            return timedelta(seconds=sum(float(n) * _GO_UNIT[u] for n, u in _GO_PART.findall(text)))
        except OverflowError:  # beyond timedelta's range (or infinite): as long as an ISO duration can be
            return UNLIMITED
    raise ValueError(f"{text!r} is not a duration (ISO 8601 such as PT1H, or 30m)")
