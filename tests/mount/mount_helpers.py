"""Helpers shared by the real-mount tests (not fixtures: those are in conftest.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from glacierfs.treehash import tree_hash
from tests.vault_helpers import archives_by_path, retrieve

MiB = 1 << 20
PART = MiB  # the mount factory's default --part-size


def cost(before: dict, after: dict) -> dict:
    """Requests per operation made between two stats() snapshots (zero counts left out)."""
    delta = {op: after.get(op, 0) - before.get(op, 0) for op in set(before) | set(after)}
    return {op: n for op, n in delta.items() if n}


def pattern(size: int, seed: int) -> bytes:
    """Deterministic, non-repeating-looking bytes (cheaper than urandom to reproduce)."""
    import random

    return random.Random(seed).randbytes(size)


def open_uploads(glacier, vault: str) -> list[dict]:
    return glacier.list_multipart_uploads(vaultName=vault)["UploadsList"]


def assert_archive(glacier, vault: str, path: str, data: bytes,
                   archives: dict | None = None) -> dict:
    """The vault holds one archive described as `path` with exactly `data`."""
    archives = archives if archives is not None else archives_by_path(glacier, vault)
    assert path in archives, f"no archive for {path!r}; have {sorted(archives)}"
    archive = archives[path]
    assert archive["Size"] == len(data)
    assert archive["SHA256TreeHash"] == tree_hash(data)
    body, checksum = retrieve(glacier, vault, archive["ArchiveId"])
    assert len(body) == len(data)
    assert body == data
    assert checksum == tree_hash(data)
    return archive


def fuse_mounts() -> list[str]:
    """Mount points of every FUSE mount in /proc/mounts."""
    with open("/proc/mounts") as mounts:
        return [line.split()[1] for line in mounts if "fuse" in line.split()[2]]


def mount_count(path: Path) -> int:
    target = os.path.realpath(path.parent) + "/" + path.name
    return sum(1 for point in fuse_mounts() if point == target)


def error_lines(log: str, needle: str) -> list[str]:
    """Log lines at ERROR level that contain `needle`."""
    return [line for line in log.splitlines() if " ERROR " in line and needle in line]


TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")


def continuation_lines(log: str) -> list[str]:
    """Log lines that are not a log record's first line (tracebacks, multi-line messages)."""
    return [line for line in log.splitlines() if line and not TIMESTAMPED.match(line)]
