"""Helpers for crash tests: read the journal, kill a mount daemon, count archives per path."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from glacierfs.mount import alive
from tests.mount.conftest import force_unmount
from tests.vault_helpers import file_archives


@dataclass
class JournalView:
    uploads: list[dict]
    parts: list[dict]
    doomed: list[dict]

    def states(self) -> list[str]:
        return [u["state"] for u in self.uploads]

    def uploaded_parts(self) -> int:
        return sum(p["uploaded"] for p in self.parts)


def journal(cache_dir: Path) -> JournalView:
    """The upload journal as the daemon left it (read-only; fine while it runs, WAL)."""
    db = sqlite3.connect(f"file:{cache_dir / 'catalog.sqlite3'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return JournalView(
            [dict(r) for r in db.execute("SELECT * FROM uploads")],
            [dict(r) for r in db.execute("SELECT * FROM upload_parts")],
            [dict(r) for r in db.execute("SELECT * FROM doomed_archives")],
        )
    finally:
        db.close()


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    """Wait for a precondition (not a timing assertion): fail only if it never happens."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except sqlite3.OperationalError:
            pass  # the journal is being created
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def kill9(m) -> None:
    """kill -9 the mount's daemon, then take the dead mount away (as a user would)."""
    pid = m.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), "the daemon to die")
    force_unmount(m.path, None)


def archive_counts(glacier, vault: str) -> Counter:
    """How many archives the vault holds per described path (duplicates show as > 1); catalog
    snapshots left out."""
    return Counter(json.loads(a["ArchiveDescription"])["path"]
                   for a in file_archives(glacier, vault))


def background(*command: str) -> subprocess.Popen:
    return subprocess.Popen([str(c) for c in command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def cached_part_files(cache_dir: Path, where: str) -> list[Path]:
    """Part files in one of the cache's places: 'staging', 'pending' or 'uploaded'."""
    root = cache_dir / where
    return sorted(p for p in root.rglob("*") if p.is_file() and (
        where == "staging" or p.suffix == ".val"))
