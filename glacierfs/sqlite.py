"""One SQLite connection behind a lock, in WAL mode.

Shared by the local vault service and the mount's catalog: every statement is short, so one
connection and one lock are simpler than a pool and fast enough.

Durability. Every commit survives kill -9 (WAL). Surviving power loss needs an fdatasync of the
WAL: with `always_durable` (the service) every commit does one (synchronous=FULL). The catalog
instead marks the transactions that must survive a power cut (`durable=True`: an archive
recorded, an archive doomed before DeleteArchive, an fsync(2)) and the others (a chmod, a
create, a rename) ride along with the next durable one, as metadata does on a local
filesystem. A sync of the WAL makes every earlier commit durable too, since the WAL is
written in order.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# An INTEGER column holds a signed 64-bit number, so a time in nanoseconds runs from
# 1677-09-21 to 2262-04-11.
INTEGER_MIN, INTEGER_MAX = -(1 << 63), (1 << 63) - 1


def storable_ns(ns: int) -> int:
    """A time in ns, clamped to what an INTEGER column holds. Linux filesystems clamp a time
    they cannot store the same way (the kernel's timestamp_truncate; ext4 at 2446), rather
    than refuse it: `touch -d 2300-01-01` works on them."""
    return min(max(ns, INTEGER_MIN), INTEGER_MAX)


def sync_wal(database: Path | str) -> None:
    """Make every commit so far to a WAL-mode database survive a power cut (whatever its
    `synchronous`): the WAL holds them in order, and a checkpoint syncs what it copies."""
    try:
        fd = os.open(f"{database}-wal", os.O_RDONLY)
    except FileNotFoundError:  # checkpointed and removed: the database file has it
        return
    try:
        # fdatasync, as SQLite does for its own syncs: the WAL's pages and its size, without
        # an inode write for the mtime (the WAL is rewritten in place after a checkpoint).
        os.fdatasync(fd)
    finally:
        os.close(fd)


class Database:
    def __init__(self, path: Path, schema: str, always_durable: bool = True) -> None:
        self._path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._depth = 0  # transaction nesting of the thread holding the lock
        self._durable = False  # the open transaction must survive a power cut
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={'FULL' if always_durable else 'NORMAL'}")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(schema)

    @contextmanager
    def transaction(self, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One atomic change; with `durable`, one that survives a power cut once this returns.
        A transaction opened inside another (same thread) joins it, so the catalog and the
        journal change together in one commit, durable if any part of it asked to be."""
        with self._lock:
            if self._depth:
                self._depth += 1
                self._durable = self._durable or durable
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            self._durable = durable
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0
            self._conn.execute("COMMIT")
            must_sync = self._durable
        # The sync waits for the disk, so it runs after the lock is released: the mount's
        # lookups (a dozen per file rsync writes) need not wait for it. This transaction is
        # durable when the call returns, as promised; a thread that acts on another thread's
        # change (a doomed archive, a recorded one) has synced its own transaction first, and
        # that sync covers every earlier commit.
        if must_sync:
            sync_wal(self._path)

    def query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def one(self, sql: str, args: tuple = ()) -> sqlite3.Row | None:
        rows = self.query(sql, args)
        return rows[0] if rows else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
