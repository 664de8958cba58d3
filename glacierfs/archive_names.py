"""What an archive's description says about the file it holds: a path and a time.

`glacierfs recover` names archives from their descriptions when no catalog snapshot covers
them. These are the forms it reads (first match wins):

- glacierfs's catalog snapshots: JSON with "glacierfs": "catalog" (snapshot.py). Not a file.
- JSON objects with a "path" or "Path" key: glacierfs's own ({"path", "mtime"}, see
  description.py) and the form AWS's vault-to-S3 migration reads. "mtime" if present.
- mt-aws-glacier: "mt2 " + base64url(JSON {"filename", "mtime": "YYYYMMDDTHHMMSSZ"}); "mt1" is
  the same with the JSON's UTF-8 encoded twice (mt-aws-glacier 0.80-0.84, its own spec).
- FastGlacier: "<m><v>4</v><p>BASE64(UTF-8 path)</p><lm>YYYYMMDDTHHMMSSZ</lm></m>"; before
  version 4, <p> holds the path itself (XML-escaped). A path ending in "/" is FastGlacier's
  marker of a folder.
- anything else: the description itself is the path.

A JSON path marked "truncated" (description.py cut it to fit) is only the beginning of the
name, so it is not used as one. A path is used only if it is a safe relative path: not empty,
not absolute, no NUL, no "." or ".." or empty component, each component at most 255 bytes.
Otherwise the archive has no usable name (`path` is None) and recover files it under its id
(rebuild.py).
"""

from __future__ import annotations

import base64
import binascii
import calendar
import dataclasses
import html
import json
import re
from dataclasses import dataclass

from .snapshot import is_snapshot
from .sqlite import storable_ns

NAME_MAX = 255


@dataclass(frozen=True)
class Described:
    kind: str  # 'snapshot', 'json', 'mt2', 'mt1', 'fastglacier', 'bare', 'none'
    path: tuple[bytes, ...] | None  # the components; None = no usable name
    mtime_ns: int | None = None  # from the description, if it has one
    is_dir: bool = False  # a FastGlacier folder marker
    truncated: bool = False  # glacierfs cut the path to fit ("truncated": true): not the name


_ISO = re.compile(r"\s*(\d{4})-?(\d\d)-?(\d\d)T(\d\d):?(\d\d):?(\d\d)(?:[.,](\d{1,9}))?Z\s*",
                  re.IGNORECASE)


def parse_time(text) -> int | None:
    """'2026-11-22T05:47:54.325Z' or '20261122T054754Z' (UTC) -> ns since the epoch."""
    match = _ISO.fullmatch(text) if isinstance(text, str) else None
    if not match:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        return None
    seconds = calendar.timegm((year, month, day, hour, minute, min(second, 59), 0, 0, 0))
    fraction = (match.group(7) or "").ljust(9, "0")
    return storable_ns(seconds * 1_000_000_000 + int(fraction))


def safe_path(text: str) -> tuple[bytes, ...] | None:
    """The components of a safe relative path, as bytes; None if it is not one.

    The text is encoded with surrogateescape, so a name that glacierfs described from
    non-UTF-8 bytes (description.py decodes with surrogateescape) comes back byte for byte."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None
    if not raw or raw.startswith(b"/") or b"\0" in raw:
        return None
    parts = tuple(raw.split(b"/"))
    if any(p in (b"", b".", b"..") or len(p) > NAME_MAX for p in parts):
        return None
    return parts


def _with_path(kind: str, path, mtime) -> Described:
    if not isinstance(path, str):
        return Described(kind, None)
    is_dir = kind == "fastglacier" and path.endswith("/") and len(path) > 1
    return Described(kind, safe_path(path[:-1] if is_dir else path), parse_time(mtime), is_dir)


def _b64(text: str, urlsafe: bool) -> bytes | None:
    text = text.strip()
    try:
        padded = text + "=" * (-len(text) % 4)
        return (base64.urlsafe_b64decode(padded) if urlsafe
                else base64.b64decode(padded, validate=True))
    except (binascii.Error, ValueError):
        return None


def _mt(description: str) -> Described | None:
    marker, _, data = description.partition(" ")
    if marker not in ("mt1", "mt2") or not data:
        return None
    raw = _b64(data, urlsafe=True)
    try:
        if marker == "mt1":  # UTF-8 encoded twice
            raw = raw.decode("utf-8").encode("latin-1")
        fields = json.loads(raw.decode("utf-8"))
    except (AttributeError, UnicodeError, ValueError):
        return Described(marker, None)
    if not isinstance(fields, dict):
        return Described(marker, None)
    return _with_path(marker, fields.get("filename"), fields.get("mtime"))


_FASTGLACIER = re.compile(r"\s*<m>\s*<v>\s*(\d+)\s*</v>\s*<p>(.*?)</p>\s*(?:<lm>(.*?)</lm>)?"
                          r"\s*</m>\s*", re.DOTALL)


def _fastglacier(description: str) -> Described | None:
    match = _FASTGLACIER.fullmatch(description)
    if not match:
        return None
    version, path, modified = int(match.group(1)), match.group(2), match.group(3)
    if version >= 4:
        raw = _b64(path, urlsafe=False)
        try:
            path = raw.decode("utf-8") if raw is not None else None
        except UnicodeDecodeError:
            path = None
    else:
        path = html.unescape(path)
    return _with_path("fastglacier", path, modified)


def _json(description: str) -> Described | None:
    try:
        fields = json.loads(description)
    except ValueError:
        return None
    if not isinstance(fields, dict):
        return None
    if is_snapshot(fields):
        return Described("snapshot", None, parse_time(fields["created"]))
    for key in ("path", "Path"):
        if key in fields:
            found = _with_path("json", fields[key], fields.get("mtime"))
            # description.py cut it: only a beginning
            return dataclasses.replace(found, truncated=fields.get("truncated") is True)
    return None


def decode(description: str | None) -> Described:
    """What `description` says; Described(kind='none', path=None) for an empty one."""
    description = description or ""
    if not description.strip():
        return Described("none", None)
    for reader in (_json, _mt, _fastglacier):
        found = reader(description)
        if found is not None:
            return found
    return _with_path("bare", description, None)


def described_path(description: str | None) -> str | None:
    """The path a JSON description ("path"/"Path", glacierfs's own form) names, for listings
    of uploads; None for any other description."""
    found = _json(description or "") if (description or "").strip() else None
    if found is None or found.kind != "json" or found.path is None:
        return None
    return b"/".join(found.path).decode("utf-8", "surrogateescape")
