"""Request validation rules of the Glacier service (glacier-api.md §3), one function per rule."""

from __future__ import annotations

import re

from .errors import InvalidParameterValue, MissingParameterValue

MiB = 1 << 20
GiB = 1 << 30
MIN_PART_SIZE = MiB
MAX_PART_SIZE = 4 * GiB
MAX_PARTS = 10_000
MAX_ARCHIVE_SIZE = 4 * GiB  # one UploadArchive request (§3.7)
MAX_DESCRIPTION = 1024

_VAULT_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,255}")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/\*")
_BYTE_RANGE = re.compile(r"(\d+)-(\d+)")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def vault_name(name: str) -> str:
    if not _VAULT_NAME.fullmatch(name):
        raise InvalidParameterValue(
            f"Invalid vault name: {name}. Vault names are 1-255 characters from "
            "a-z, A-Z, 0-9, '_', '-' and '.'"
        )
    return name


def description(value: str | None, what: str = "archive description") -> str:
    if value is None:
        return ""
    if len(value) > MAX_DESCRIPTION:
        raise InvalidParameterValue(
            f"Invalid {what}: it is {len(value)} characters long; the limit is {MAX_DESCRIPTION}"
        )
    for ch in value:
        if not 0x20 <= ord(ch) <= 0x7E:
            raise InvalidParameterValue(
                f"Invalid {what}: character {ch!r} is not printable ASCII (0x20-0x7E)"
            )
    return value


def whole_number(value: str) -> int:
    """Plain ASCII digits as an int; ValueError for anything int() would also take (a sign,
    spaces, '1_048_576', other scripts' digits), which the service refuses."""
    if not (value.isascii() and value.isdigit()):
        raise ValueError(value)
    return int(value)


def part_size(value: str | None) -> int:
    try:
        size = whole_number(value) if value is not None else 0
    except ValueError:
        size = 0
    if size < MIN_PART_SIZE or size > MAX_PART_SIZE or size & (size - 1):
        raise InvalidParameterValue(
            f"Invalid part size: {size}. Part size must not be null, must be a power of two and "
            f"be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes."
        )
    return size


def tree_hash_header(value: str | None, header: str = "x-amz-sha256-tree-hash") -> str:
    if value is None:
        raise MissingParameterValue(f"Required header {header} is missing")
    if not _HEX64.fullmatch(value):
        raise InvalidParameterValue(f"Invalid {header}: {value}")
    return value.lower()


def content_length(value: str | None) -> int:
    if value is None or value == "":
        raise MissingParameterValue("Required header Content-Length is missing")
    try:
        return whole_number(value)
    except ValueError:
        raise InvalidParameterValue(f"Invalid Content-Length: {value}") from None


def content_range(value: str | None, length: int, part: int) -> tuple[int, int]:
    """Check an UploadMultipartPart Content-Range against the body and the part size (§3.3)."""
    if value is None:
        raise MissingParameterValue("Required header Content-Range is missing")
    match = _CONTENT_RANGE.fullmatch(value)
    if not match:
        raise InvalidParameterValue(f"Invalid Content-Range: {value}")
    first, last = int(match.group(1)), int(match.group(2))
    if first > last:
        raise InvalidParameterValue(f"Invalid Content-Range: {value}")
    if last - first + 1 != length:
        raise InvalidParameterValue(
            f"Content-Range: {value} is incompatible with Content-Length: {length}"
        )
    if first % part or length > part:
        raise InvalidParameterValue(
            f"Invalid Content-Range: {value}. The range must start at a multiple of the part "
            f"size ({part}) and be no longer than it"
        )
    number = first // part + 1
    if number > MAX_PARTS:
        raise InvalidParameterValue(
            f"This is part number {number} for the current multipart upload. "
            f"It exceeds the limit of {MAX_PARTS} parts."
        )
    return first, last


def byte_range(value: str) -> tuple[int, int]:
    match = _BYTE_RANGE.fullmatch(value.strip())
    if not match or int(match.group(1)) > int(match.group(2)):
        raise InvalidParameterValue(f"Invalid RetrievalByteRange: {value}")
    return int(match.group(1)), int(match.group(2))


def list_limit(value: str | None, default: int, maximum: int) -> int:
    """The `limit` query parameter: a whole number >= 1; above the maximum it is clamped."""
    if value is None or value == "":
        return default
    try:
        limit = whole_number(value)
    except ValueError:
        raise InvalidParameterValue(f"Invalid limit: {value}. It must be a whole number") from None
    if limit < 1:
        raise InvalidParameterValue(f"Invalid limit: {value}. It must be at least 1")
    return min(limit, maximum)
