"""Settings of a mount, validated once (frozen dataclasses)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

MiB = 1 << 20
GiB = 1 << 30
MAX_PARTS = 10_000

# 64 MiB parts: 10,000 parts then allow files up to 625 GiB (disk images fit), a part costs
# one request per 64 MiB (Glacier bills per request), and 4 parts in flight are 256 MiB of
# disk, not memory. Smaller parts (8 MiB, mountpoint-s3's default) would cap a file at 78 GiB.
DEFAULT_PART_SIZE = 64 * MiB
# 2 GiB of cache: 4 parts uploading + the part being written + room for the next ones, so a
# fast writer is throttled by the network, not by the cache, and recent files stay readable.
DEFAULT_CACHE_SIZE = 2 * GiB
DEFAULT_UPLOAD_THREADS = 4

_SIZE = re.compile(r"(\d+)\s*([KMGT]i?B?|B)?", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": MiB, "G": GiB, "T": 1 << 40}


def parse_size(text: str, what: str) -> int:
    """'64M', '64MiB', '2G', '1048576' -> bytes (binary units)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise UserError(f"{what}: {text!r} is not a size (examples: 1048576, 64M, 2GiB)")
    unit = (match.group(2) or "").upper()[:1]
    if unit == "B":
        unit = ""
    size = int(match.group(1)) * _UNITS[unit]
    if size >= 1 << 62:  # past what SQLite and the cache's counters hold
        raise UserError(f"{what}: {text!r} is too large")
    return size


# The files glacierfs keeps in a cache dir, beside the part caches (cache.py).
CATALOG_FILE = "catalog.sqlite3"
CACHE_LOCK_FILE = "lock"  # held by the mount (or recover) that uses the cache dir
LOG_FILE = "glacierfs.log"  # the mount's log, unless --log-file or --foreground says otherwise

# Control characters as a Python string writes them ("\n", "\t", "\x1b"): a file name may
# hold any of them, and shown raw one would split a line or drive the terminal.
_ESCAPED_CONTROLS = {code: repr(chr(code))[1:-1] for code in [*range(32), 127]}


def printable(text: str) -> str:
    """`text` with its control characters escaped, for a log line or a terminal."""
    return text.translate(_ESCAPED_CONTROLS)


def format_size(size: float) -> str:
    """1536 -> '1.5 KiB': binary units, as parse_size reads them."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def check_part_size(size: int) -> int:
    if size < MiB or size > 4 * GiB or size & (size - 1):
        raise UserError(
            f"--part-size must be 1 MiB x 2^n between 1 MiB and 4 GiB (Glacier's rule), "
            f"got {size} bytes"
        )
    return size


@dataclass(frozen=True)
class CacheConfig:
    directory: Path
    size: int = DEFAULT_CACHE_SIZE
    part_size: int = DEFAULT_PART_SIZE
    upload_threads: int = DEFAULT_UPLOAD_THREADS
    # close(2) returns once the content is safe in the cache; closer threads upload it (fs.py)
    async_close: bool = False

    def __post_init__(self) -> None:
        check_part_size(self.part_size)
        if self.upload_threads < 1 or self.upload_threads > 64:
            raise UserError(f"--upload-threads must be 1-64, got {self.upload_threads}")
        # One part being written, and at least one more on its way up: less cannot stream.
        if self.size < 2 * self.part_size:
            raise UserError(
                f"--cache-size ({self.size} bytes) must hold at least two parts "
                f"(2 x --part-size = {2 * self.part_size} bytes)"
            )

    @property
    def max_file_size(self) -> int:
        return MAX_PARTS * self.part_size


@dataclass(frozen=True)
class VaultConfig:
    vault: str
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    create_vault: bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,255}", self.vault):
            raise UserError(
                f"vault name {self.vault!r} is invalid: use 1-255 of a-z A-Z 0-9 _ - ."
            )


# Retrieval tiers (glacier-api.md §2.13). Typical times: Expedited 1-5 min, Standard 3-5 h,
# Bulk 5-12 h.
TIERS = ("Expedited", "Standard", "Bulk")
# A minute between two DescribeJob rounds: the fastest tier takes minutes, so a restore waits
# at most a minute more than it must, for one request a minute per job.
DEFAULT_RESTORE_POLL = 60.0
DEFAULT_SNAPSHOT_MINUTES = 15.0  # catalog snapshots while it changes (snapshot.py)


def tier_named(text: str) -> str | None:
    """' bulk' -> 'Bulk'; None for anything that is not a tier."""
    return next((tier for tier in TIERS if tier.lower() == text.strip().lower()), None)


def check_tier(text: str, what: str) -> str:
    """tier_named, or UserError for anything that is not a tier."""
    tier = tier_named(text)
    if tier is None:
        raise UserError(f"{what}: {text!r} is not a retrieval tier (use {', '.join(TIERS)})")
    return tier


@dataclass(frozen=True)
class RestoreConfig:
    poll_interval: float = DEFAULT_RESTORE_POLL  # seconds between two rounds of the poller
    on_read: str | None = None  # tier of a restore started by reading an uncached file

    def __post_init__(self) -> None:
        if not 0 < self.poll_interval <= 86400:
            raise UserError(f"--restore-poll must be more than 0 and at most 86400 seconds, "
                            f"got {self.poll_interval}")
        if self.on_read is not None:
            object.__setattr__(self, "on_read", check_tier(self.on_read, "--restore-on-read"))
