"""Malformed and mis-scoped signatures, each refused in its dialect with the reason, and nothing written.

- Azure Batch (SharedKey): an Authorization header of another scheme, a request without ``ocp-date`` or ``Date``, and
  a date that is not RFC 1123 each get 401 ``AuthenticationFailed`` whose ``AuthenticationErrorDetail`` says which;
  a refused task creation writes nothing. A signed request with a value added (a fresh ``ocp-date`` before its own
  stale one, a second query parameter) is refused: every value is signed.
- AWS HealthOmics (SigV4): a header without its Credential, SignedHeaders or Signature, a credential scope of
  another shape or service, a request without ``X-Amz-Date`` (or ``Date``), a date of another form or day than the
  credential's, SignedHeaders without ``host`` or naming a header the request lacks each get 403
  ``AccessDeniedException`` with the reason, before any key is looked at.

Signatures the SDKs make, and wrong keys, unknown accounts and stale dates, are in the dialects' own test modules.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime

import pytest

from tests.test_api_fixtures import HTTP, KEY_A, SECRET_A, WS_A, api_server, shared_key_sign  # noqa: F401

API_VERSION = "api-version=2025-06-01"


def _batch_detail(r) -> str:
    assert r.status_code == 401, r.text
    doc = r.json()
    assert doc["code"] == "AuthenticationFailed" and r.headers["request-id"]
    return {v["key"]: v["value"] for v in doc["values"]}["AuthenticationErrorDetail"]


def _create(api_server, job: str, headers: dict[str, str]):
    url = f"{api_server.url}/batch/jobs/{job}/tasks?{API_VERSION}"
    return HTTP.post(url, content=b'{"id": "t-1", "commandLine": "echo"}',
                     headers={"content-type": "application/json", **headers})


def _signed_create_headers(api_server, job: str) -> dict[str, str]:
    url = f"{api_server.url}/batch/jobs/{job}/tasks?{API_VERSION}"
    body = b'{"id": "t-1", "commandLine": "echo"}'
    return shared_key_sign("POST", url, WS_A, SECRET_A,
                           {"content-type": "application/json", "content-length": str(len(body))})


def _nothing_in(api_server, job: str) -> bool:
    """The job holds no task: asked for one, the service does not know the job at all."""
    url = f"{api_server.url}/batch/jobs/{job}/tasks/t-1?{API_VERSION}"
    r = HTTP.get(url, headers=shared_key_sign("GET", url, WS_A, SECRET_A, {}))
    return r.status_code == 404 and r.json()["code"] == "JobNotFound"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda h: {**h, "authorization": "Bearer " + SECRET_A}, "is not 'SharedKey ACCOUNT:SIGNATURE'"),
        (lambda h: {**h, "authorization": "SharedKey " + WS_A}, "is not 'SharedKey ACCOUNT:SIGNATURE'"),
        (lambda h: {k: v for k, v in h.items() if k != "ocp-date"}, "has no ocp-date (or Date) header"),
        (lambda h: {**h, "ocp-date": "yesterday at noon"}, "is not an RFC 1123 date"),
    ],
    ids=["another-scheme", "no-signature", "no-date", "not-a-date"],
)
def test_a_malformed_shared_key_request_is_refused_with_the_reason_and_writes_nothing(api_server, change, reason):
    job = api_server.unique()
    r = _create(api_server, job, change(_signed_create_headers(api_server, job)))
    assert reason in _batch_detail(r)
    assert _nothing_in(api_server, job)
    # the same request, signed as it was before the change, is accepted: the change is what was refused
    assert _create(api_server, job, _signed_create_headers(api_server, job)).status_code == 201


# -- SigV4 ------------------------------------------------------------------------------------------------------------


def _sigv4_headers(api_server, path: str, *, key_id: str = KEY_A, day: str | None = None, service: str = "omics",
                   signed: str = "host;x-amz-date", stamp: str | None = None, date: str | None = None) -> dict[str, str]:
    """A GET signed as SigV4 says, with the parts a test may spoil; with ``date``, dated by that ``Date`` header
    (RFC 1123) rather than ``X-Amz-Date``."""
    if date is not None:
        stamp = parsedate_to_datetime(date).replace(tzinfo=UTC).strftime("%Y%m%dT%H%M%SZ")
    stamp = stamp or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    day = day or stamp[:8]
    host = api_server.url.removeprefix("http://")
    values = {"host": host, "x-amz-date": stamp, "date": date or ""}
    names = signed.split(";")
    canonical_headers = "".join(f"{n}:{values.get(n, '')}\n" for n in names)
    canonical = "\n".join(["GET", path, "", canonical_headers, signed, hashlib.sha256(b"").hexdigest()])
    scope = f"{day}/us-east-1/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{SECRET_A}".encode()
    for part in (day, "us-east-1", service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    auth = f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={signed}, Signature={sig}"
    return {"Authorization": auth, "Date": date} if date is not None else {"Authorization": auth, "X-Amz-Date": stamp}


def _omics_refusal(r) -> str:
    assert r.status_code == 403, r.text
    assert r.headers["x-amzn-ErrorType"] == "AccessDeniedException"
    return r.json()["message"]


def _spoil(headers: dict[str, str], old: str, new: str) -> dict[str, str]:
    assert old in headers["Authorization"]
    return {**headers, "Authorization": headers["Authorization"].replace(old, new, 1)}


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda h: {**h, "Authorization": "AWS4-HMAC-SHA256 " + h["Authorization"].split(", ", 1)[1]},
         "has no Credential"),
        (lambda h: _spoil(h, ", SignedHeaders=host;x-amz-date", ""), "has no SignedHeaders"),
        (lambda h: {**h, "Authorization": h["Authorization"].rsplit(", ", 1)[0]}, "has no Signature"),
        (lambda h: _spoil(h, "/us-east-1/", "/"), "is not KEY/DATE/REGION/SERVICE/aws4_request"),
        (lambda h: _spoil(h, "/aws4_request", "/aws5_request"), "is not KEY/DATE/REGION/SERVICE/aws4_request"),
        (lambda h: {k: v for k, v in h.items() if k != "X-Amz-Date"}, "has no X-Amz-Date header"),
        (lambda h: {**h, "X-Amz-Date": "2026-12-06 10:00"}, "is not a date of the form 20240101T000000Z"),
    ],
    ids=["no-credential", "no-signed-headers", "no-signature", "short-scope", "not-aws4-request", "no-date",
         "not-a-date"],
)
def test_a_malformed_sigv4_header_is_refused_with_the_reason(api_server, spoil, reason):
    path = f"/omics/run/{api_server.unique_run()}/task"
    good = _sigv4_headers(api_server, path)
    passed = HTTP.get(api_server.url + path, headers=good)  # the unspoilt request is let in (to an unknown run)
    assert passed.status_code == 404 and passed.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    assert reason in _omics_refusal(HTTP.get(api_server.url + path, headers=spoil(good)))


def test_a_sigv4_signature_scoped_otherwise_than_the_request_is_refused_with_the_reason(api_server):
    path = f"/omics/run/{api_server.unique_run()}/task"
    url = api_server.url + path
    r = HTTP.get(url, headers=_sigv4_headers(api_server, path, service="s3"))
    assert "scoped to service 's3', not 'omics'" in _omics_refusal(r)
    r = HTTP.get(url, headers=_sigv4_headers(api_server, path, day="20200101"))
    assert "the credential's date is not the request's date" in _omics_refusal(r)
    r = HTTP.get(url, headers=_sigv4_headers(api_server, path, signed="x-amz-date"))
    assert "SignedHeaders must include host" in _omics_refusal(r)
    r = HTTP.get(url, headers=_sigv4_headers(api_server, path, signed="host;x-amz-date;x-amz-security-token"))
    assert "the signed header 'x-amz-security-token' is not in the request" in _omics_refusal(r)
    r = HTTP.get(url, headers=_sigv4_headers(api_server, path, key_id="TSNOSUCHKEY"))
    assert "the security token included in the request is invalid" in _omics_refusal(r)


# -- a signed request changed in what the signature must cover -------------------------------------------------------


def _stale_signed_get(api_server, url: str) -> dict[str, str]:
    """A GET signed an hour ago: refused alone, as too old."""
    return shared_key_sign("GET", url, WS_A, SECRET_A, {"ocp-date": formatdate(time.time() - 3600, usegmt=True)})


def test_a_second_ocp_date_does_not_let_an_old_shared_key_signature_through(api_server):
    """The date checked against the clock must be the date the signature covers: an old request sent again with a
    fresh ``ocp-date`` before its own is a replay, refused."""
    job = api_server.unique()
    assert _create(api_server, job, _signed_create_headers(api_server, job)).status_code == 201
    url = f"{api_server.url}/batch/jobs/{job}/tasks?{API_VERSION}"
    old = _stale_signed_get(api_server, url)
    assert "more than 15 minutes" in _batch_detail(HTTP.get(url, headers=old))
    replay = [(k, v) for k, v in old.items() if k != "ocp-date"]
    replay += [("ocp-date", formatdate(usegmt=True)), ("ocp-date", old["ocp-date"])]
    _batch_detail(HTTP.get(url, headers=replay))


def test_a_repeated_query_parameter_is_covered_by_the_shared_key_signature(api_server):
    """A query parameter sent twice is signed with both values (as Azure's canonicalization says): a signed request
    with a second ``maxresults`` (the value the service would act on) added is refused."""
    job = api_server.unique()
    assert _create(api_server, job, _signed_create_headers(api_server, job)).status_code == 201
    url = f"{api_server.url}/batch/jobs/{job}/tasks?{API_VERSION}&maxresults=1"
    headers = shared_key_sign("GET", url, WS_A, SECRET_A, {})
    assert HTTP.get(url, headers=headers).status_code == 200
    for extra in ("&maxresults=1000", "&MAXRESULTS=1000", "&api-version=2024-02-01.19.0"):
        _batch_detail(HTTP.get(url + extra, headers=headers))
    swapped = url.replace("maxresults=1", "MAXRESULTS=1&maxresults=1000")
    _batch_detail(HTTP.get(swapped, headers=headers))


def test_a_sigv4_request_dated_by_a_date_header_in_any_rfc_1123_zone_form_is_let_in(api_server):
    """``Date`` instead of ``X-Amz-Date``: ``GMT``, ``+0000`` and ``-0000`` (a time in UTC whose zone the sender does
    not know, which Python reads as a naive time) each sign in; a stale one is refused, never a 500."""
    path = f"/omics/run/{api_server.unique_run()}/task"
    now = formatdate(usegmt=True)
    for date in (now, now.replace("GMT", "+0000"), now.replace("GMT", "-0000")):
        r = HTTP.get(api_server.url + path, headers=_sigv4_headers(api_server, path, signed="host;date", date=date))
        assert r.status_code == 404 and r.headers["x-amzn-ErrorType"] == "ResourceNotFoundException", (date, r.text)
    stale = formatdate(time.time() - 3600, usegmt=True).replace("GMT", "-0000")
    r = HTTP.get(api_server.url + path, headers=_sigv4_headers(api_server, path, signed="host;date", date=stale))
    assert "X-Amz-Date" in _omics_refusal(r)
