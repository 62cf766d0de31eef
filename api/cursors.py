"""The read side's cursor error, under one name for every router."""

from __future__ import annotations

from projections.cursor import CursorError

__all__ = ["CursorError"]
