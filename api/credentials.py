"""Credentials per workspace: a key id and a secret that reach one workspace and nothing else.

- Azure Batch (SharedKey): the workspace is the account name, the secret (base64) is the account key.
- HealthOmics (SigV4): the key id is the access key id, the secret is the secret access key.
- Blaxel and the native API (bearer): the secret itself, looked up by its SHA-256.

The server keeps the secrets because SharedKey and SigV4 signatures are HMACs it must recompute. Lookups are served
from memory; a miss reloads the table (at most once a second), so a credential created by ``taskstore credentials
create`` while the server runs is usable at once; and a table loaded ``MAX_AGE`` seconds ago is loaded again before
the next lookup, so a credential revoked by ``taskstore credentials revoke`` stops working within that long.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Column, MetaData, String, Table, delete, func, insert, select
from sqlalchemy.engine import Engine

from eventstore.engine import upgrade, write_transaction
from eventstore.errors import ValidationError
from eventstore.events import Scope

MIGRATIONS = Path(__file__).parent / "migrations" / "versions"
VERSION_TABLE = "api_version"
HEAD = "a0001"  # the newest revision in migrations/versions

metadata = MetaData()
credentials_table = Table(
    "api_credentials",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("workspace", String(128), nullable=False),
    Column("secret", String(128), nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("description", String(256), nullable=True),
)

_KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


@dataclass(frozen=True, slots=True)
class Credential:
    key_id: str
    workspace: str
    secret: str
    created_at: str = ""
    description: str | None = None

    @property
    def key_bytes(self) -> bytes:
        """The HMAC key of SharedKey: the secret, base64-decoded (as the Azure SDKs decode the account key)."""
        return base64.b64decode(self.secret)

    def as_json(self) -> dict[str, str]:
        return {"workspace": self.workspace, "keyId": self.key_id, "secret": self.secret}


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_key_id() -> str:
    return "TS" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(18))


def new_secret() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def migrate(engine: Engine) -> None:
    """Create (or upgrade) the api package's tables."""
    upgrade(engine, versions=MIGRATIONS, version_table=VERSION_TABLE, head=HEAD)


class CredentialStore:
    """The credentials table, with an in-memory index for the request path."""

    RELOAD_INTERVAL = 1.0  # seconds between two reloads at most
    MAX_AGE = 5.0  # seconds a loaded table is trusted: a revoked credential is refused within this long

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._by_key: dict[str, Credential] = {}
        self._by_workspace: dict[str, list[Credential]] = {}
        self._by_digest: dict[str, Credential] = {}
        self._loaded_at = float("-inf")  # when the table in memory was read (``stale``)
        self._tried_at = float("-inf")  # when a reload was last begun (``maybe_reload``'s rate limit)

    # -- writing -------------------------------------------------------------------------------------------------

    def create(
        self, workspace: str, *, secret: str | None = None, key_id: str | None = None, description: str | None = None
    ) -> Credential:
        """A new credential for ``workspace``; a random key id and secret unless given."""
        try:
            Scope(workspace, "job")
        except ValidationError as exc:
            raise ValueError(exc.reason) from None
        secret = secret if secret is not None else new_secret()
        try:
            if len(base64.b64decode(secret, validate=True)) < 16:
                raise ValueError
        except (binascii.Error, ValueError):
            raise ValueError("a secret is base64 of at least 16 bytes") from None
        key_id = key_id or new_key_id()
        if not (1 <= len(key_id) <= 32) or not (key_id.isascii() and key_id.isalnum()):  # 'É' is alnum too
            raise ValueError("a key id is 1 to 32 letters and digits")
        cred = Credential(
            key_id=key_id,
            workspace=workspace,
            secret=secret,
            created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            description=description,
        )
        with write_transaction(self.engine) as conn:
            conn.execute(
                insert(credentials_table).values(
                    key_id=cred.key_id,
                    workspace=cred.workspace,
                    secret=cred.secret,
                    secret_sha256=secret_digest(cred.secret),
                    created_at=cred.created_at,
                    description=description,
                )
            )
        self._add(cred)
        return cred

    def revoke(self, key_id: str) -> Credential | None:
        """Delete the credential ``key_id`` (None when there is none): refused from now on here, and by a service
        that loaded it within ``MAX_AGE`` seconds."""
        c = credentials_table.c
        with write_transaction(self.engine) as conn:
            row = conn.execute(select(credentials_table).where(c.key_id == key_id)).mappings().first()
            if row is None:
                return None
            conn.execute(delete(credentials_table).where(c.key_id == key_id))
        self._remove(key_id)
        return _credential(row)

    def listing(self, workspace: str | None = None) -> list[Credential]:
        """Every credential (of ``workspace``), read from the table, by workspace and creation."""
        c = credentials_table.c
        q = select(credentials_table).order_by(c.workspace, c.created_at, c.key_id)
        if workspace is not None:
            q = q.where(c.workspace == workspace)
        with self.engine.connect() as conn:
            return [_credential(r) for r in conn.execute(q).mappings()]

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(credentials_table)).scalar_one())

    # -- reading -------------------------------------------------------------------------------------------------

    # With ``reload=False`` a lookup never touches the database (for the event loop: see ``api.auth``).

    def by_key_id(self, key_id: str, *, reload: bool = True) -> Credential | None:
        return self._lookup(lambda: self._by_key.get(key_id), reload)

    def for_workspace(self, workspace: str, *, reload: bool = True) -> list[Credential]:
        return self._lookup(lambda: self._by_workspace.get(workspace), reload) or []

    def by_secret(self, secret: str, *, reload: bool = True) -> Credential | None:
        """The credential whose secret is ``secret`` (compared in constant time after the digest lookup)."""
        digest = secret_digest(secret)
        found = self._lookup(lambda: self._by_digest.get(digest), reload)
        if found is None or not hmac.compare_digest(found.secret.encode(), secret.encode()):
            return None
        return found

    def _lookup(self, get, reload: bool):
        found = get()
        if found is None and reload and self.maybe_reload():
            found = get()
        return found

    def stale(self) -> bool:
        """Whether the table was loaded ``MAX_AGE`` seconds ago or more (or never)."""
        return time.monotonic() - self._loaded_at >= self.MAX_AGE

    def refresh(self) -> bool:
        """Reload the table when it was read ``MAX_AGE`` seconds ago or more, one caller at a time (the others use
        the table as it is meanwhile); True when this call reloaded it."""
        return self._reload_unless_within("_loaded_at", self.MAX_AGE)

    def maybe_reload(self) -> bool:
        """Reload the table unless a reload began less than ``RELOAD_INTERVAL`` ago; True when it reloaded."""
        return self._reload_unless_within("_tried_at", self.RELOAD_INTERVAL)

    def _reload_unless_within(self, mark: str, seconds: float) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - getattr(self, mark) < seconds:
                return False
            setattr(self, mark, now)
        self.reload()
        return True

    def reload(self) -> None:
        started = time.monotonic()
        with self.engine.connect() as conn:
            rows = conn.execute(select(credentials_table)).mappings().all()
        creds = [_credential(r) for r in rows]
        by_key = {c.key_id: c for c in creds}
        by_ws: dict[str, list[Credential]] = {}
        for c in creds:
            by_ws.setdefault(c.workspace, []).append(c)
        by_digest = {secret_digest(c.secret): c for c in creds}
        with self._lock:
            self._by_key, self._by_workspace, self._by_digest = by_key, by_ws, by_digest
            self._loaded_at = max(self._loaded_at, started)

    def _add(self, cred: Credential) -> None:
        with self._lock:
            self._by_key = {**self._by_key, cred.key_id: cred}
            self._by_workspace = {
                **self._by_workspace,
                cred.workspace: [*self._by_workspace.get(cred.workspace, []), cred],
            }
            self._by_digest = {**self._by_digest, secret_digest(cred.secret): cred}

    def _remove(self, key_id: str) -> None:
        with self._lock:
            gone = self._by_key.get(key_id)
            if gone is None:
                return
            self._by_key = {k: v for k, v in self._by_key.items() if k != key_id}
            kept = [c for c in self._by_workspace.get(gone.workspace, []) if c.key_id != key_id]
            self._by_workspace = {**self._by_workspace, gone.workspace: kept}
            self._by_digest = {d: v for d, v in self._by_digest.items() if v.key_id != key_id}


def _credential(row) -> Credential:
    return Credential(row["key_id"], row["workspace"], row["secret"], row["created_at"], row["description"])


__all__ = ["Credential", "CredentialStore", "credentials_table", "migrate", "new_key_id", "new_secret"]
