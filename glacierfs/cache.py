"""Part files on the cache disk.

A part lives in one of three places, and moves between them by hard link, never by copy, so
each byte written to the mount is written to the cache disk once. A move links the file into
its new place, commits the new index row, and only then removes the old name: a crash at any
point leaves at least one indexed copy (never a file that no index row names).

  staging/   being written: a plain file we pwrite() into at any offset
  pending    diskcache with eviction 'none': full and hashed, waiting for or being uploaded.
             A part the vault does not have yet can never be evicted.
  uploaded   diskcache, least-recently-used, size-limited: in the vault, kept for reads
             (parts just uploaded, and parts restored from the vault: restore.py)

Backpressure: bytes in staging + pending never exceed the cache size; reserve() blocks until
uploads make room. The uploaded cache gets whatever the cache size leaves over.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

import diskcache
from diskcache.core import MODE_BINARY

from .sqlite import sync_wal

log = logging.getLogger(__name__)


def fsync_path(path) -> None:
    """fsync a file or a directory by name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _MovedFile:
    """A value for diskcache that is an existing file to be linked into the cache."""

    def __init__(self, path: str) -> None:
        self.path = path


class _LinkingDisk(diskcache.Disk):
    """diskcache storage that adopts a finished part file by hard link instead of copying it;
    the caller removes the old name once the new row is committed.

    Files go into 256 directories (xx/NAME.val), not diskcache's 65,536 (xx/yy/NAME.val):
    there nearly every new small file made a directory (and its eviction removed it again),
    a metadata write that cost as much as the rest of the move. Rows store the relative
    name, so files of the older layout stay readable.
    """

    def filename(self, key=diskcache.core.UNKNOWN, value=diskcache.core.UNKNOWN):
        name = os.path.join(os.urandom(1).hex(), os.urandom(15).hex() + ".val")
        return name, os.path.join(self._directory, name)

    def store(self, value, read, key=diskcache.core.UNKNOWN):
        if isinstance(value, _MovedFile):
            filename, full_path = self.filename(key, value)
            try:
                os.link(value.path, full_path)
            except FileNotFoundError:  # its directory is new (or was emptied and removed)
                os.makedirs(os.path.dirname(full_path), exist_ok=True)
                os.link(value.path, full_path)
            return os.path.getsize(full_path), MODE_BINARY, filename, None
        return super().store(value, read, key)


class PartCache:
    def __init__(self, directory: Path, size_limit: int) -> None:
        self.directory = Path(directory)
        self.size_limit = size_limit
        self.staging = self.directory / "staging"
        self.staging.mkdir(parents=True, exist_ok=True)
        # Rows of unsent parts: synchronous=NORMAL, so a commit survives kill -9 but a power cut
        # only once the WAL is synced. Syncing every commit (FULL) made sealing a part take
        # 13-15 ms under a copy's disk load, with the file's lock held. A power cut only has
        # to spare what fsync(2) covered: make_durable() syncs the WAL, and seal(durable=True)
        # syncs it before the part's staging name goes.
        self.pending = diskcache.Cache(
            str(self.directory / "pending"), disk=_LinkingDisk, eviction_policy="none",
            size_limit=1 << 62, sqlite_synchronous=1,
        )
        # The uploaded cache only holds copies of what the vault has: NORMAL is enough (a row
        # lost to a power cut leaves a file the next mount sweeps).
        self.uploaded = diskcache.Cache(
            str(self.directory / "uploaded"), disk=_LinkingDisk,
            eviction_policy="least-recently-used", size_limit=size_limit, sqlite_synchronous=1,
            cull_limit=0,  # _trim_uploaded culls, against what the unsent parts leave over
        )
        self._room = threading.Condition()
        self._reserved = 0  # bytes of parts in staging or pending

    def close(self) -> None:
        self.pending.close()
        self.uploaded.close()

    # ---- backpressure ---------------------------------------------------------------------

    def reserve(self, nbytes: int, give_up=lambda: False) -> bool:
        """Wait until `nbytes` more fit in staging + pending; False if give_up() turned true."""
        with self._room:
            while self._reserved + nbytes > self.size_limit and self._reserved > 0:
                if give_up():
                    return False
                self._room.wait(timeout=1.0)
            self._reserved += nbytes
            return True

    def take(self, nbytes: int) -> None:
        """Reserve without waiting (zero-filled holes found at close, rare)."""
        with self._room:
            self._reserved += nbytes

    def release(self, nbytes: int) -> None:
        with self._room:
            self._reserved -= nbytes
            self._room.notify_all()

    @property
    def reserved(self) -> int:
        with self._room:
            return self._reserved

    # ---- where a part is ------------------------------------------------------------------

    def staging_path(self, key: str) -> Path:
        return self.staging / key

    def _cached_path(self, cache: diskcache.Cache, key: str) -> str | None:
        handle = cache.get(key, read=True)
        if handle is None:
            return None
        with handle:
            return handle.name

    def path(self, key: str) -> str | None:
        """Where the part's bytes are now, wherever that is; None if it is not cached."""
        staged = self.staging_path(key)
        if staged.exists():
            return str(staged)
        return self._cached_path(self.pending, key) or self._cached_path(self.uploaded, key)

    # ---- moves ----------------------------------------------------------------------------

    def seal(self, key: str, durable: bool = False) -> str:
        """staging -> pending (the part is full); returns its new path. `durable`: the part
        holds bytes an fsync(2) covered, so its row must survive a power cut before the
        staging name (which the sync made durable) goes."""
        staged = self.staging_path(key)
        self.pending.set(key, _MovedFile(str(staged)))
        if durable:
            self._sync_pending_index()
        staged.unlink()
        return self._cached_path(self.pending, key)

    def mark_uploaded(self, key: str, nbytes: int) -> None:
        """pending (or staging: a small file sent straight from there at close) -> uploaded,
        freeing its reservation. Room is made before the part joins the LRU, so the trim
        takes older parts, never this one."""
        self.release(nbytes)  # first: the trim counts what unsent parts hold
        try:
            staged = self.staging_path(key)
            if staged.exists():
                self._trim_uploaded(incoming=staged.stat().st_size)
                self.uploaded.set(key, _MovedFile(str(staged)))
                staged.unlink()
            elif (path := self._cached_path(self.pending, key)) is not None:
                self._trim_uploaded(incoming=os.path.getsize(path))
                self.uploaded.set(key, _MovedFile(path))
                self.pending.delete(key)  # removes the row and the pending name
        except BaseException:
            # Not moved (a full disk): the part stays unsent, and whoever fails it releases
            # its reservation. Released twice, the count went negative.
            self.take(nbytes)
            raise

    def room_for_restore(self, incoming: int) -> str | None:
        """Make room in the uploaded cache for a restored file's `incoming` bytes, all at once
        (one part at a time, each trim could evict the file's parts adopted before it).
        Returns why not, evicting nothing: "never" if the cache cannot hold them at all,
        "now" if the unsent parts leave too little room at the moment."""
        if not self.can_ever_hold(incoming):
            return "never"
        if incoming + self._index_bytes() > self.size_limit - self.reserved:
            return "now"
        self._trim_uploaded(incoming)
        return None

    def can_ever_hold(self, incoming: int) -> bool:
        """Whether `incoming` restored bytes fit in the cache beside its index at all."""
        return incoming + self._index_bytes() <= self.size_limit

    def _index_bytes(self) -> int:
        """The uploaded cache's own SQLite pages, which its size limit counts too."""
        return self.uploaded.volume() - self.uploaded.reset("size")

    def adopt(self, key: str, path: str) -> None:
        """A part restored from the vault (and verified) -> uploaded, by hard link; then the
        old name goes. Kept for reading like any uploaded part, and evicted the same way.
        room_for_restore() made room for the whole file first."""
        self.uploaded.set(key, _MovedFile(path))
        os.unlink(path)

    def has(self, key: str) -> bool:
        """Whether the part is cached anywhere, without counting as a use for the LRU."""
        return self.staging_path(key).exists() or key in self.pending or key in self.uploaded

    def unseal(self, key: str, durable: bool = False) -> bool:
        """pending/uploaded -> staging, to write into a part again; False if evicted.
        `durable`: the part holds bytes an fsync(2) covered, so the staging name must survive
        a power cut before the old name goes."""
        target = self.staging_path(key)
        for cache in (self.pending, self.uploaded):
            path = self._cached_path(cache, key)
            if path is not None:
                os.link(path, target)
                if durable:
                    fsync_path(self.staging)
                cache.delete(key)  # removes the row and the old name
                return True
        return False

    def drop_uploaded_copy(self, key: str) -> bool:
        """Forget the copy of an uploaded part kept for reading (found corrupt); False if the
        part is not such a copy (unsent parts are never dropped here)."""
        path = self._cached_path(self.uploaded, key)
        if path is None:
            return False
        os.unlink(path)
        self.uploaded.delete(key)
        return True

    def drop_uploaded(self) -> bool:
        """The cache disk is full: give up every part kept only for reading (the vault has
        them). False if there was nothing to give up."""
        if not len(self.uploaded):
            return False
        keys = list(self.uploaded.iterkeys())
        log.warning("cache disk full: dropping %d uploaded part(s) kept for reading", len(keys))
        for key in keys:
            self.discard(key)
        return True

    def make_durable(self) -> None:
        """Part names and pending rows committed so far survive a power cut: fsync the
        directories part files live in and the pending index's WAL."""
        for directory in (self.staging, *self._part_directories()):
            fsync_path(directory)
        self._sync_pending_index()

    def _sync_pending_index(self) -> None:
        sync_wal(Path(self.pending.directory) / diskcache.core.DBNAME)

    def _part_directories(self) -> list[Path]:
        # Part files are one level down (xx/), or two in caches made before (xx/yy/).
        root = Path(self.pending.directory)
        return [root, *(p for p in root.rglob("*") if p.is_dir())]

    def keys(self, prefix: str) -> list[str]:
        """Every cached part key that starts with `prefix`, wherever it is."""
        found = {p.name for p in self.staging.glob(f"{prefix}*")}
        for cache in (self.pending, self.uploaded):
            found.update(k for k in cache.iterkeys() if isinstance(k, str)
                         and k.startswith(prefix))
        return sorted(found)

    def sweep_unindexed(self) -> int:
        """Remove part files no index row names. A move links the file into its new place
        before committing the row, so a crash in between leaves such a file; its bytes are
        still under the old name. Run only while no part is moving (at mount)."""
        removed = 0
        for cache in (self.pending, self.uploaded):
            indexed = set()
            for key in list(cache.iterkeys()):
                path = self._cached_path(cache, key)
                if path is not None:
                    indexed.add(os.path.realpath(path))
            for path in Path(cache.directory).rglob("*.val"):
                if os.path.realpath(path) not in indexed:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def unsent_keys(self) -> list[str]:
        """Keys of every part in staging or pending."""
        return sorted({p.name for p in self.staging.iterdir()} | set(self.pending.iterkeys()))

    def discard(self, key: str) -> None:
        """Forget a part wherever it is. The bytes go first and the index rows after: on a
        full disk, deleting a row needs room, which removing the file makes."""
        self.staging_path(key).unlink(missing_ok=True)
        for cache in (self.pending, self.uploaded):
            path = self._cached_path(cache, key)
            if path is not None:
                os.unlink(path)
            try:
                cache.delete(key)
            except sqlite3.OperationalError as error:  # a row naming no file: harmless
                log.warning("cache index: could not forget part %s: %s", key, error)

    def _trim_uploaded(self, incoming: int) -> None:
        """Make room in the uploaded cache for `incoming` more bytes: it gets what the cache
        size leaves over after the unsent parts. diskcache culls the least recently used ten
        at a time, so this runs before a part joins, or the part itself could go."""
        # Nearly always there is room: then this costs one read, not the two write
        # transactions of setting the limit and culling (diskcache's own cull on set is off:
        # cull_limit=0).
        room = max(self.size_limit - self.reserved - incoming, 0)
        if self.uploaded.volume() <= room:
            return
        if self.uploaded.size_limit != room:
            self.uploaded.reset("size_limit", room)
        self.uploaded.cull()
