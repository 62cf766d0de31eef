"""Request authentication: Azure Batch SharedKey, AWS Signature Version 4 and bearer secrets.

Every scheme ends in a :class:`~api.credentials.Credential`, whose workspace is the only one the request reaches.
Signatures are recomputed from the request as received (the raw path, the query, the headers, the body) and compared
in constant time; the request's date must be within ``MAX_SKEW`` of the server's clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Callable
from urllib.parse import parse_qs, parse_qsl, quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from .credentials import Credential, CredentialStore

MAX_SKEW = timedelta(minutes=15)


class AuthFailure(Exception):
    """The request is not authenticated; the message says why (never which secret was expected)."""


async def _lookup(creds: CredentialStore, get: Callable[[], object]):
    """An in-memory lookup, of a table loaded less than ``MAX_AGE`` seconds ago (a revoked credential is refused
    within that long); on a miss, one reload of the table (rate-limited); each reload off the event loop."""
    if creds.stale():
        await run_in_threadpool(creds.refresh)
    found = get()
    if not found and await run_in_threadpool(creds.maybe_reload):
        found = get()
    return found


def _raw_path(request: Request) -> str:
    raw = request.scope.get("raw_path")
    if raw:
        return raw.decode("latin-1")
    return quote(request.scope.get("root_path", "") + request.scope["path"])


def _raw_query(request: Request) -> str:
    return request.scope.get("query_string", b"").decode("latin-1")


def _check_skew(moment: datetime, now: datetime, what: str) -> None:
    if abs(now - moment) > MAX_SKEW:
        raise AuthFailure(f"the request's {what} {moment.isoformat()} is more than 15 minutes from the server's clock")


# -- Azure Batch SharedKey -----------------------------------------------------------------------------------------

_SHARED_KEY_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)
_SHARED_KEY = re.compile(r"^SharedKey\s+([^:\s]+):(\S+)$")


def shared_key_strings(request: Request, account: str) -> list[str]:
    """The strings the client may have signed.

    The Azure SDKs sign ``content-length`` as they know it when signing (a request without a body signs ``0`` for
    anything but GET and HEAD, while the transport may still add the header), and some REST callers lower-case the
    query parameter names as the REST documentation says: every such reading is a candidate.

    Every value of the request is signed: a header sent more than once signs its values joined with commas, in the
    order received, and a query parameter sent more than once its values sorted and joined with commas (as the REST
    documentation says). The SDKs send neither twice, and sign the same string; an added second value (a fresh
    ``ocp-date`` before a stale one, a second ``maxresults``) no longer passes under another value's signature.
    """
    headers: dict[str, str] = {}
    for k, v in request.headers.items():
        if v:
            k = k.lower()
            headers[k] = f"{headers[k]},{v}" if k in headers else v
    method = request.method.upper()
    lengths = {headers.get("content-length", ""), "" if method in ("GET", "HEAD") else "0"}
    ocp = "".join(f"{k}:{v}\n" for k, v in sorted((k, v) for k, v in headers.items() if "ocp-" in k))
    resource = f"/{account}{_raw_path(request)}"
    parsed = parse_qs(_raw_query(request))
    queries = {"".join(f"\n{k}:{_joined(v)}" for k, v in sorted(parsed.items()))}
    lowered: dict[str, list[str]] = {}
    for k, v in parsed.items():
        lowered.setdefault(k.lower(), []).extend(v)
    queries.add("".join(f"\n{k}:{_joined(v)}" for k, v in sorted(lowered.items())))
    out = []
    for length in sorted(lengths):
        values = [length if h == "content-length" else headers.get(h, "") for h in _SHARED_KEY_HEADERS]
        head = method + "\n" + "\n".join(values) + "\n" + ocp + resource
        out.extend(head + q for q in sorted(queries))
    return out


def _joined(values: list[str]) -> str:
    """A query parameter's values as SharedKey signs them (``parse_qs`` keeps no blank value)."""
    return values[0] if len(values) == 1 else ",".join(sorted(values))


def shared_key_signature(key: bytes, string_to_sign: str) -> str:
    return base64.b64encode(hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).digest()).decode()


async def authenticate_shared_key(request: Request, creds: CredentialStore, now: datetime | None = None) -> Credential:
    header = request.headers.get("authorization")
    if not header:
        raise AuthFailure("the Authorization header is missing (SharedKey ACCOUNT:SIGNATURE is required)")
    m = _SHARED_KEY.match(header.strip())
    if not m:
        raise AuthFailure("the Authorization header is not 'SharedKey ACCOUNT:SIGNATURE'")
    account, signature = m.groups()
    date = request.headers.get("ocp-date") or request.headers.get("date")
    if not date:
        raise AuthFailure("the request has no ocp-date (or Date) header")
    try:
        moment = parsedate_to_datetime(date)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    except (TypeError, ValueError, IndexError):
        raise AuthFailure(f"ocp-date {date!r} is not an RFC 1123 date") from None
    _check_skew(moment, now or datetime.now(UTC), "ocp-date")
    strings = shared_key_strings(request, account)
    given = signature.encode()

    def matching() -> Credential | None:
        for cred in creds.for_workspace(account, reload=False):
            try:
                key = cred.key_bytes
            except (binascii.Error, ValueError):
                continue
            ok = False
            for s in strings:
                ok |= hmac.compare_digest(shared_key_signature(key, s).encode(), given)
            if ok:
                return cred
        return None

    # A miss reloads the table once (rate-limited): also when the account has keys, one of which another process
    # may have just added (a rotation), not only when it has none.
    found = await _lookup(creds, matching)
    if found is None:
        raise AuthFailure("the signature does not match the account's key")
    return found  # type: ignore[return-value]


# -- AWS Signature Version 4 -----------------------------------------------------------------------------------------

_SIGV4 = re.compile(r"^AWS4-HMAC-SHA256\s+(.*)$", re.S)
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _normalize_path(path: str) -> str:
    if not path:
        return "/"
    out: list[str] = []
    for part in path.split("/"):
        if part and part != ".":
            if part == "..":
                if out:
                    out.pop()
            else:
                out.append(part)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and out else ""
    return first + "/".join(out) + last


def _canonical_queries(raw: str) -> list[str]:
    """The canonical query string as botocore builds it from the URL, and as the SigV4 specification defines it."""
    if not raw:
        return [""]
    as_sent = sorted(tuple(p.partition("=")[::2]) for p in raw.split("&"))
    decoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in parse_qsl(raw, keep_blank_values=True))
    out = ["&".join(f"{k}={v}" for k, v in as_sent)]
    spec = "&".join(f"{k}={v}" for k, v in decoded)
    if spec != out[0]:
        out.append(spec)
    return out


def _sigv4_parts(header: str) -> dict[str, str]:
    m = _SIGV4.match(header.strip())
    if not m:
        raise AuthFailure("the Authorization header is not AWS4-HMAC-SHA256")
    parts: dict[str, str] = {}
    for item in m.group(1).split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            parts[name.strip()] = value.strip()
    for name in ("Credential", "SignedHeaders", "Signature"):
        if not parts.get(name):
            raise AuthFailure(f"the Authorization header has no {name}")
    return parts


def sigv4_signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


async def authenticate_sigv4(
    request: Request, body: bytes, creds: CredentialStore, *, service: str, now: datetime | None = None
) -> Credential:
    header = request.headers.get("authorization")
    if not header:
        raise AuthFailure("the request is not signed (the Authorization header is missing)")
    parts = _sigv4_parts(header)
    scope = parts["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise AuthFailure("the Credential is not KEY/DATE/REGION/SERVICE/aws4_request")
    key_id, day, region, svc, _ = scope
    if svc != service:
        raise AuthFailure(f"the credential is scoped to service {svc!r}, not {service!r}")
    stamp = request.headers.get("x-amz-date")
    try:
        if stamp:
            moment = datetime.strptime(stamp, _AMZ_DATE).replace(tzinfo=UTC)
        elif request.headers.get("date"):
            moment = parsedate_to_datetime(request.headers["date"])
            if moment.tzinfo is None:  # "-0000": a time in UTC (RFC 2822), which Python leaves naive
                moment = moment.replace(tzinfo=UTC)
            stamp = moment.astimezone(UTC).strftime(_AMZ_DATE)
        else:
            raise AuthFailure("the request has no X-Amz-Date header")
    except (TypeError, ValueError, IndexError):
        raise AuthFailure("X-Amz-Date is not a date of the form 20240101T000000Z") from None
    if stamp[:8] != day:
        raise AuthFailure("the credential's date is not the request's date")
    _check_skew(moment, now or datetime.now(UTC), "X-Amz-Date")
    signed = [h.strip().lower() for h in parts["SignedHeaders"].split(";") if h.strip()]
    if "host" not in signed:
        raise AuthFailure("SignedHeaders must include host")
    canonical_headers = ""
    for name in signed:
        values = request.headers.getlist(name)
        if not values:
            raise AuthFailure(f"the signed header {name!r} is not in the request")
        canonical_headers += f"{name}:{','.join(' '.join(v.split()) for v in values)}\n"
    payload = request.headers.get("x-amz-content-sha256")
    if payload is None or (
        payload != "UNSIGNED-PAYLOAD" and not hmac.compare_digest(payload, hashlib.sha256(body).hexdigest())
    ):
        payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    path = quote(_normalize_path(_raw_path(request)), safe="/~")
    cred = await _lookup(creds, lambda: creds.by_key_id(key_id, reload=False))
    if cred is None:
        raise AuthFailure("the security token included in the request is invalid")
    key = sigv4_signing_key(cred.secret, day, region, svc)
    given = parts["Signature"].encode()
    ok = False
    for query in _canonical_queries(_raw_query(request)):
        canonical = "\n".join([request.method.upper(), path, query, canonical_headers, ";".join(signed), payload])
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                stamp,
                f"{day}/{region}/{svc}/aws4_request",
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        ok |= hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest().encode(), given)
    if not ok:
        raise AuthFailure(
            "the request signature we calculated does not match the signature you provided; check your secret key"
        )
    return cred


# -- bearer --------------------------------------------------------------------------------------------------------


def bearer_token(value: str | None) -> str:
    if not value:
        raise AuthFailure("a bearer token is required")
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthFailure("the authorization is not 'Bearer SECRET'")
    return token


async def authenticate_bearer(token: str, creds: CredentialStore) -> Credential:
    cred = await _lookup(creds, lambda: creds.by_secret(token, reload=False))
    if cred is None:
        raise AuthFailure("the token is not a valid credential")
    return cred
