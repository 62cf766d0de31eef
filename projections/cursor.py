"""Signed cursors: base64url of a small JSON document (the last key of a page, a fingerprint of the query it belongs
to, the time it was issued) and an HMAC of it under a key the store keeps.

A cursor is never authority: it only says where a page ended. The caller's own credentials and path decide the
scope, and a cursor of another query, an old one, or a tampered one is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from typing import Any, Callable

import orjson
from sqlalchemy import select
from sqlalchemy.engine import Engine

from eventstore import ValidationError
from eventstore.dialects import dialect_for
from eventstore.engine import write_transaction

from .tables import settings

DEFAULT_MAX_AGE = 24 * 3600
_SKEW = 300  # seconds of clock difference tolerated between servers sharing a store


class CursorError(ValidationError):
    def __init__(self, message: str) -> None:
        super().__init__("cursor", message)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def fingerprint(*parts: Any) -> str:
    """A short, stable digest of a query's defining parts."""
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


class CursorCodec:
    def __init__(self, key: bytes, *, max_age: float = DEFAULT_MAX_AGE, clock: Callable[[], float] = time.time):
        self._key = key
        self.max_age = max_age
        self.clock = clock

    def encode(self, doc: Any, query_fingerprint: str) -> str:
        body = orjson.dumps({"d": doc, "f": query_fingerprint, "t": int(self.clock())})
        mac = hmac.new(self._key, body, hashlib.sha256).digest()[:16]
        return f"{_b64(body)}.{_b64(mac)}"

    def decode(self, token: str, query_fingerprint: str) -> Any:
        if not isinstance(token, str) or token.count(".") != 1 or len(token) > 4096:
            raise CursorError("not a cursor of this store")
        body_text, mac_text = token.split(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (binascii.Error, ValueError):
            raise CursorError("not a cursor of this store") from None
        expected = hmac.new(self._key, body, hashlib.sha256).digest()[:16]
        # Base64 text has other spellings of the same bytes (the unused low bits of the last character, '+' and '/'
        # for '-' and '_'): only the spelling this store issued is its cursor.
        canonical = _b64(body) == body_text and _b64(mac) == mac_text
        if not canonical or not hmac.compare_digest(mac, expected):
            raise CursorError("the cursor was altered or was not issued by this store")
        try:
            doc = orjson.loads(body)
            issued, bound = int(doc["t"]), doc["f"]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise CursorError("not a cursor of this store") from None
        if bound != query_fingerprint:
            raise CursorError("the cursor belongs to another query (scope, sort, q or filter differ)")
        now = self.clock()
        if issued > now + _SKEW:
            raise CursorError("the cursor was issued in the future")
        if now - issued > self.max_age:
            raise CursorError(f"the cursor expired (cursors are valid for {_lifetime(self.max_age)})")
        return doc["d"]


def _lifetime(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} hours"
    return f"{int(seconds)} seconds"


def store_key(engine: Engine) -> bytes:
    """The store's cursor signing key, made once (by whichever process opens the store first) and kept."""
    dialect = dialect_for(engine)
    with write_transaction(engine) as conn:
        conn.execute(
            dialect.insert_ignoring_conflicts(
                settings, [{"name": "cursor_key", "value": _b64(secrets.token_bytes(32))}]
            )
        )
        value = conn.execute(select(settings.c.value).where(settings.c.name == "cursor_key")).scalar_one()
    return _unb64(value)
