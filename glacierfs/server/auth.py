"""AWS Signature Version 4 verification for the `glacier` service (glacier-api.md §8).

We rebuild the canonical request from what arrived on the wire, using the client's own
SignedHeaders list, and compare signatures in constant time. For UploadArchive and
UploadMultipartPart the payload hash is the x-amz-content-sha256 header value; the body is
checked against it separately while it streams to disk.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from .errors import (
    IncompleteSignature,
    InvalidSignature,
    MissingAuthenticationToken,
    UnrecognizedClient,
)

SERVICE = "glacier"
MAX_CLOCK_SKEW = dt.timedelta(minutes=15)

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<sig>[0-9a-f]{64})\s*"
)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str


def _remove_dot_segments(path: str) -> str:
    # The same normalisation botocore applies before signing (RFC 3986 §5.2.4, and empty
    # segments dropped), so /-/vaults/.. on the wire is checked as /-.
    output: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if output:
                output.pop()
        elif segment and segment != ".":
            output.append(segment)
    trailing = "/" if path.endswith("/") and output else ""
    return "/" + "/".join(output) + trailing


def canonical_uri(raw_path: str) -> str:
    """botocore's non-S3 rule: normalise, then percent-encode the already encoded path again."""
    return quote(_remove_dot_segments(raw_path) or "/", safe="/~")


def canonical_query(raw_query: str) -> str:
    pairs = []
    for item in raw_query.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append(
            (quote(unquote(key), safe="-_.~"), quote(unquote(value.replace("+", " ")), safe="-_.~"))
        )
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _signing_key(secret: str, date: str, region: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, SERVICE, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def verify(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: dict[str, str],
    payload_hash: str | None,
    body: bytes,
    credentials: dict[str, Credentials],
    region: str,
    now: dt.datetime | None = None,
) -> Credentials:
    """Check one request's SigV4 signature; return the matching credentials or raise.

    `headers` maps lower-case names to values as received. `payload_hash` is None when the body
    (already read, small) must be hashed; otherwise it is the x-amz-content-sha256 value.
    """
    authorization = headers.get("authorization")
    if not authorization:
        raise MissingAuthenticationToken("Missing Authentication Token")
    match = _AUTH.fullmatch(authorization.strip())
    if not match:
        raise IncompleteSignature(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
            "for AWS4-HMAC-SHA256"
        )
    scope = match.group("cred").split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise IncompleteSignature(f"Credential is not well formed: {match.group('cred')}")
    access_key, date, scope_region, service, _ = scope
    creds = credentials.get(access_key)
    if creds is None:
        raise UnrecognizedClient("The security token included in the request is invalid.")
    if scope_region != region:
        raise InvalidSignature(
            f"Credential should be scoped to a valid region, not '{scope_region}'. "
            f"This endpoint serves '{region}'."
        )
    if service != SERVICE:
        raise InvalidSignature(f"Credential should be scoped to correct service: '{SERVICE}'.")

    amz_date = headers.get("x-amz-date") or headers.get("date", "")
    try:
        when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise IncompleteSignature(f"Invalid X-Amz-Date: {amz_date!r}") from None
    now = now or dt.datetime.now(dt.timezone.utc)
    if abs(now - when) > MAX_CLOCK_SKEW:
        raise InvalidSignature(
            f"Signature expired: {amz_date} is now earlier or later than the server time "
            f"{now:%Y%m%dT%H%M%SZ} by more than 15 minutes."
        )
    if not amz_date.startswith(date):
        raise InvalidSignature("Credential date does not match X-Amz-Date")

    signed = match.group("signed").split(";")
    if "host" not in signed:
        raise InvalidSignature("The host header must be signed")
    header_lines = []
    for name in signed:
        value = headers.get(name)
        if value is None:
            raise InvalidSignature(f"Signed header {name} is missing from the request")
        # WSGI hands us header bytes decoded as latin-1; botocore signed them as UTF-8 text.
        # Round-trip to the wire bytes so a non-ASCII value verifies (and is then judged by
        # the operation's own rules, e.g. descriptions must be printable ASCII).
        wire = value.encode("latin-1", "replace").decode("utf-8", "surrogateescape")
        header_lines.append(f"{name}:{_SPACES.sub(' ', wire.strip())}")
    if payload_hash is None:
        payload_hash = hashlib.sha256(body).hexdigest()
    canonical = "\n".join(
        [
            method,
            canonical_uri(raw_path),
            canonical_query(raw_query),
            "\n".join(header_lines) + "\n",
            ";".join(signed),
            payload_hash,
        ]
    )
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            f"{date}/{scope_region}/{SERVICE}/aws4_request",
            hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest(),
        ]
    )
    expected = hmac.new(
        _signing_key(creds.secret_key, date, scope_region), string_to_sign.encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, match.group("sig")):
        raise InvalidSignature(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )
    return creds
