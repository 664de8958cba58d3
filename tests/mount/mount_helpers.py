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


def assert_cp_fails_cleanly(m, tmp_path, name: str, size: int, fault: str) -> str:
    """With `fault` set, cp of a `size`-byte file fails with its errno text on stderr, the
    file is gone from the mount, no upload is left open and no archive made; returns the
    mount log's error lines for the file."""
    import subprocess

    source = tmp_path / f"{name}.src"
    source.write_bytes(pattern(size, size))
    m.set_faults(fault)
    try:
        result = subprocess.run(["cp", str(source), str(m.path / name)], capture_output=True,
                                text=True, timeout=300)
    finally:
        m.set_faults("")
    assert result.returncode != 0
    stderr = result.stderr.strip().splitlines()
    assert len(stderr) == 1, result.stderr
    assert stderr[0].startswith("cp: ") and name in stderr[0]
    assert stderr[0].endswith("Input/output error"), stderr[0]
    assert name not in os.listdir(m.path)
    assert open_uploads(m.glacier, m.vault) == []
    assert name not in archives_by_path(m.glacier, m.vault)
    errors = error_lines(m.log(), name)
    assert len(errors) == 1, errors or m.log()[-3000:]
    return errors[0]


def assert_cp_works(m, tmp_path, name: str, size: int) -> None:
    import subprocess

    data = pattern(size, size + 1)
    source = tmp_path / f"{name}.src"
    source.write_bytes(data)
    result = subprocess.run(["cp", str(source), str(m.path / name)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert os.stat(m.path / name).st_size == size
    assert_archive(m.glacier, m.vault, name, data)
    assert open_uploads(m.glacier, m.vault) == []


def tracebacks(log: str) -> list[str]:
    """The log record that each traceback in `log` belongs to (empty: no traceback)."""
    lines = log.splitlines()
    found = []
    for index, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            owner = next((lines[i] for i in range(index - 1, -1, -1)
                          if TIMESTAMPED.match(lines[i])), "?")
            found.append(owner[:200])
    return found
