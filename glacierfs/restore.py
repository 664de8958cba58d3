"""Restores: archives brought back from the vault into the read cache, through retrieval jobs.

A file whose parts are not in the cache reads as ENODATA until it is restored
(docs/SEMANTICS.md). A restore is asked for through the extended attribute
`user.glacier.restore` (`glacierfs restore` sets it on each file), or by a read when the mount
has --restore-on-read. `user.glacier.state` tells how far it got. A restore's life (the row
in `restores`, SCHEMA below):

  waiting      setxattr started an archive-retrieval job (InitiateJob, the whole archive, the
               tier asked for) and the row committed with its id. The poller thread
               (restore_poller.py) asks DescribeJob every --restore-poll seconds.
  downloading  the job Succeeded, and its archive tree hash is the catalog's: GetJobOutput range
               by range. A range is never more than a part (RANGE at most), so each range is one
               node of the archive's tree and the vault sends its tree hash; bytes that do not
               hash to it (or to the part hash recorded at upload) are refused and fetched
               again. Each verified range is fsynced in restore/ and recorded before the next.
  (finished)   every part is read back and hashed; the parts must combine to the archive's tree
               hash. They move into the `uploaded` cache by hard link, and the part hashes, the
               cache key and the end of the restore commit together: reads then take fs.py's
               verified read path, like any cached part.
  failed       given up, and said so: on the file (`archived error=...`), in the status file
               and at ERROR in the log. Setting `user.glacier.restore` again tries again.

A job that fails or expires (output is kept 24 h) is replaced by a new one; verified ranges are
kept, as the archive is immutable. After MAX_JOBS jobs in a row without one verified range the
restore fails. A dropped connection or a refused range is fetched again (RANGE_ATTEMPTS times,
then the job counts as not delivering). A vault that cannot be reached is only waited for.
All of it is in the catalog database and CACHE_DIR/restore/, so kill -9 or an unmount in the
middle goes on where it was at the next mount.

Locks: Restores._lock guards the in-memory maps (restores being started, bytes of the range in
flight, the memo of attribute values). It is never held across a request, and never while
taking Database._lock (the other order happens: changed() runs after a commit, and may run
inside a caller's transaction).
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import secrets
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import TIERS, RestoreConfig, tier_named
from .errors import FsError, errno_for
from .vault import is_not_found

if TYPE_CHECKING:  # catalog.py imports SCHEMA from here
    from .cache import PartCache
    from .catalog import Catalog, Inode
    from .vault import Vault

log = logging.getLogger(__name__)

SCHEMA = """
-- Restores asked for and not finished, one per file. The row goes away in the transaction that
-- records the restored parts on the inode, or with the inode (unlink), or when the inode holds
-- another archive (overwritten meanwhile).
CREATE TABLE IF NOT EXISTS restores (
    ino          INTEGER PRIMARY KEY REFERENCES inodes(ino) ON DELETE CASCADE,
    archive_id   TEXT NOT NULL,
    tree_hash    TEXT,               -- the archive's: the catalog's, else the job's
    size         INTEGER NOT NULL,
    part_size    INTEGER NOT NULL,   -- the content's part layout (the catalog's, else the mount's)
    cache_key    TEXT NOT NULL,      -- part files are CACHE_KEY.INDEX, in restore/ then the cache
    tier         TEXT NOT NULL,
    -- 'waiting' = the job runs at the vault (or job_id IS NULL: a new job is to be started);
    -- 'downloading' = the job Succeeded, its output is being fetched; 'failed' = given up.
    state        TEXT NOT NULL CHECK (state IN ('waiting', 'downloading', 'failed')),
    job_id       TEXT,
    job_started_ns INTEGER,          -- when job_id was initiated
    requested_ns INTEGER NOT NULL,
    jobs         INTEGER NOT NULL DEFAULT 1,  -- jobs started since the last verified range
    error        TEXT                -- the last trouble; for 'failed', why it was given up
);

-- Ranges of the job output verified and fsynced into restore/CACHE_KEY.INDEX.
CREATE TABLE IF NOT EXISTS restore_ranges (
    ino       INTEGER NOT NULL REFERENCES restores(ino) ON DELETE CASCADE,
    first     INTEGER NOT NULL,      -- first byte in the archive, a multiple of the range size
    size      INTEGER NOT NULL,
    tree_hash TEXT NOT NULL,
    PRIMARY KEY (ino, first)
);
"""

MiB = 1 << 20
# Download unit: what a dropped connection costs again, and the grain of resuming. 8 MiB is a
# second or two on a slow line, and 8 ranges of a default 64 MiB part.
RANGE = 8 * MiB
RANGE_ATTEMPTS = 5  # fetches of one range (backoff 0.5 s doubling, 8 s at most) per job
MAX_JOBS = 3  # jobs in a row that deliver no verified range before the restore fails
REFUSAL_LOG_EVERY = 60.0  # seconds between two WARNING lines for reads refused on one file
MEMO_SECONDS = 1.0  # an attribute value is served again for this long (see getxattr)

STATE = "user.glacier.state"
RESTORE = "user.glacier.restore"
XATTRS = (STATE, RESTORE)


def gone(archive_id: str) -> str:
    """The error of a restore given up because the vault no longer has the archive."""
    return f"the vault no longer has archive {archive_id}"


def failed(row: Restore | None, node: Inode) -> bool:
    """Whether the last restore of the file's content failed."""
    return row is not None and row.state == "failed" and row.archive_id == node.archive_id


def failed_for_good(row: Restore | None, node: Inode) -> bool:
    """Whether the file's restore failed because its archive is gone: asking again is futile."""
    return failed(row, node) and gone(row.archive_id) in (row.error or "")


@dataclass(frozen=True)
class Restore:
    ino: int
    archive_id: str
    tree_hash: str | None
    size: int
    part_size: int
    cache_key: str
    tier: str
    state: str
    job_id: str | None
    job_started_ns: int | None
    requested_ns: int
    jobs: int
    error: str | None

    @property
    def range_size(self) -> int:
        return min(self.part_size, RANGE)

    def ranges(self) -> list[tuple[int, int]]:
        """(first byte, size) of each download range, in order."""
        step = self.range_size
        return [(first, min(step, self.size - first)) for first in range(0, self.size, step)]

    def parts(self) -> int:
        return -(-self.size // self.part_size)


def _iso(ns: int | None) -> str:
    if ns is None:
        return "-"
    return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_tier(value: bytes) -> str | None:
    return tier_named(value.decode("ascii", "replace").strip().strip("\0"))


class Restores:
    """Every restore of one mount: the xattr interface, and the poller thread."""

    def __init__(self, catalog: Catalog, cache: PartCache, vault: Vault, part_size: int) -> None:
        self.catalog = catalog
        self.db = catalog.db
        self.cache = cache
        self.vault = vault
        self.part_size = part_size  # the layout for a content that has none recorded
        self.directory = Path(cache.directory) / "restore"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config = RestoreConfig()
        self.mountpoint: Path | None = None
        self._lock = threading.Lock()
        self._starting: set[int] = set()
        self._in_flight: dict[int, int] = {}  # ino -> bytes of the range being downloaded
        self._memo: dict[tuple[int, str], tuple[float, bytes]] = {}
        self._refusals_said: dict[int, float] = {}  # ino -> when its refusal was last logged
        self._poller = None

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self, config: RestoreConfig, mountpoint: Path | None = None) -> Restores:
        """Start the poller (FUSE init, after the fork); it resumes what a crash left."""
        from .restore_poller import Poller

        self.config = config
        self.mountpoint = mountpoint
        self._poller = Poller(self).start()
        return self

    def stop(self) -> None:
        """Stop the poller; a download in flight is left for the next mount."""
        if self._poller is not None:
            left = len(self.rows(("waiting", "downloading")))
            if left:
                log.info("stopping: %d restore(s) go on at the next mount", left)
            self._poller.stop()

    # ---- extended attributes --------------------------------------------------------------

    def getxattr(self, node: Inode, name: str, uploading: bool) -> bytes:
        """The value of one of XATTRS; ENODATA for a name without a value.

        The kernel asks for a value's size, then for the value: both answers must be the same
        length, or the second call fails with ERANGE. The value of a restore in progress
        changes as bytes arrive, so it is served again for MEMO_SECONDS, unless the restore
        changed state meanwhile. (Other values change only with the state.)"""
        if not stat.S_ISREG(node.mode):
            raise FsError(errno.ENODATA, f"inode {node.ino}: only files have {name}")
        now = time.monotonic()
        with self._lock:
            memo = self._memo.get((node.ino, name))
        if memo is not None and now - memo[0] < MEMO_SECONDS:
            return memo[1]
        if name == STATE:
            value = self.describe(node, uploading).encode()
        else:
            row = self.row(node.ino)
            if row is None or not self.active(row, node):
                raise FsError(errno.ENODATA, f"inode {node.ino}: no restore is running")
            value = row.tier.encode()
        if value.startswith(b"restoring"):
            with self._lock:
                if len(self._memo) > 4096:
                    self._memo.clear()
                self._memo[(node.ino, name)] = (now, value)
        return value

    def setxattr(self, node: Inode, path: bytes, name: str, value: bytes,
                 uploading: bool) -> None:
        if name != RESTORE:
            raise FsError(errno.ENOTSUP, f"{name} cannot be set; only {RESTORE}")
        if stat.S_ISDIR(node.mode):
            raise FsError(errno.EISDIR, f"{path!r}: a directory; restore its files "
                          "(`glacierfs restore DIR` does)")
        tier = parse_tier(value)
        if tier is None:
            raise FsError(errno.EINVAL, f"{path!r}: {value!r} is not a tier: "
                          f"{', '.join(TIERS)}")
        self.request(node, path, tier, uploading)

    def describe(self, node: Inode, uploading: bool) -> str:
        """`user.glacier.state`: the state, then key=value fields; `error=` comes last and
        runs to the end."""
        if uploading:
            return "uploading"
        row = self.row(node.ino)
        if row is not None and self.active(row, node):
            phase = "downloading" if row.state == "downloading" else "waiting"
            return (f"restoring phase={phase} tier={row.tier} job={row.job_id or '-'} "
                    f"started={_iso(row.job_started_ns)} downloaded={self.downloaded(row)} "
                    f"size={row.size}")
        if self.is_cached(node):
            return "cached"
        if failed(row, node):
            return f"archived error={' '.join((row.error or '?').split())}"
        return "archived"

    def is_cached(self, node: Inode) -> bool:
        if node.size == 0:
            return True
        if not node.cache_key or not node.part_size:
            return False
        count = -(-node.size // node.part_size)
        return all(self.cache.has(f"{node.cache_key}.{index}") for index in range(count))

    # ---- starting a restore ---------------------------------------------------------------

    def request(self, node: Inode, path: bytes, tier: str, uploading: bool) -> str:
        """Start restoring a file, unless there is nothing to do. Returns what happened:
        'started', 'restoring' (already), 'cached' or 'uploading' (its data is local)."""
        shown = self.shown(path)
        if uploading:
            return "uploading"
        if self.is_cached(node):
            log.debug("%s: cached already; nothing to restore", shown)
            return "cached"
        with self._lock:
            if node.ino in self._starting:
                return "restoring"
            self._starting.add(node.ino)
        try:
            row = self.row(node.ino)
            if row is not None and self.active(row, node):
                log.info("%s: being restored already (job %s)", shown, row.job_id)
                return "restoring"
            if not self.cache.can_ever_hold(node.size):
                log.warning("%s: %d bytes cannot be restored into a cache of %d bytes: mount "
                            "with a larger --cache-size", shown, node.size, self.cache.size_limit)
                raise FsError(errno.EFBIG, f"{path!r} is larger than the cache")
            try:
                job_id = self.vault.initiate_retrieval(node.archive_id, tier)
            except Exception as error:  # noqa: BLE001 - logged; its errno goes to the caller
                log.warning("%s: could not start a restore (archive %s): %s", shown,
                            node.archive_id, error)
                if not is_not_found(error):
                    raise FsError(errno_for(error), f"{path!r}: InitiateJob failed") from None
                # No job will ever bring it back: said on the file (`archived error=`), in the
                # status file and in the hint of a refused read. The file is there; its
                # archive is not (ENOENT would say the file is gone).
                self._begin(node, tier, None, failed=gone(node.archive_id))
                raise FsError(errno.EIO, f"{path!r}: the vault has no such archive") from None
            self._begin(node, tier, job_id)
        finally:
            with self._lock:
                self._starting.discard(node.ino)
        log.info("%s: restore started: tier %s, job %s, %d bytes", shown, tier, job_id,
                 node.size)
        if self._poller is not None:
            self._poller.wake()
        return "started"

    def _begin(self, node: Inode, tier: str, job_id: str | None,
               failed: str | None = None) -> None:
        """Record a restore whose job started, or (failed=why) one given up at its start."""
        now = time.time_ns()
        state = "waiting" if failed is None else "failed"
        with self.db.transaction() as conn:
            old = self.row(node.ino)
            if old is not None and old.archive_id == node.archive_id:  # keep verified ranges
                conn.execute(
                    "UPDATE restores SET tier = ?, state = ?, job_id = ?, job_started_ns = ?, "
                    "requested_ns = ?, jobs = 1, error = ? WHERE ino = ?",
                    (tier, state, job_id, now, now, failed, node.ino))
            else:
                conn.execute("DELETE FROM restores WHERE ino = ?", (node.ino,))
                conn.execute(
                    "INSERT INTO restores (ino, archive_id, tree_hash, size, part_size, "
                    "cache_key, tier, state, job_id, job_started_ns, requested_ns, error) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (node.ino, node.archive_id, node.tree_hash, node.size,
                     node.part_size or self.part_size,
                     node.cache_key or secrets.token_hex(12), tier, state, job_id, now, now,
                     failed))
        self.changed(node.ino)

    def refuse_read(self, node: Inode, path: bytes) -> FsError:
        """A read found a part that is not cached: the log line says what to do (or, with
        --restore-on-read, starts a restore); the read gets ENODATA either way."""
        shown = self.shown(path)
        row = self.row(node.ino)
        # A program that retries the read must not flood the log: once a minute per file.
        level = logging.WARNING if self._say_refusal(node.ino) else logging.DEBUG
        if row is not None and self.active(row, node):
            log.log(level, "%s: not readable yet: being restored (tier %s, job %s, %d of %d "
                    "bytes downloaded); reads work once `getfattr -n %s` says cached", shown,
                    row.tier, row.job_id, self.downloaded(row), row.size, STATE)
        elif self.config.on_read and not failed(row, node):
            try:
                self.request(node, path, self.config.on_read, uploading=False)
                log.warning("%s: its data is only in the vault (archive %s); --restore-on-read "
                            "started a %s restore: reads fail with ENODATA until it is cached",
                            shown, node.archive_id, self.config.on_read)
            except FsError as error:
                log.warning("%s: its data is only in the vault (archive %s), and "
                            "--restore-on-read could not start a restore: %s", shown,
                            node.archive_id, error)
        elif failed_for_good(row, node):
            log.log(level, "%s: not readable: its data is not in the cache, and the vault no "
                    "longer has its archive %s (deleted outside glacierfs?), so no restore can "
                    "bring it back; remove the file, or write it again from another copy",
                    shown, node.archive_id)
        else:
            last = f" (the last restore failed: {row.error})" if failed(row, node) else ""
            log.log(level, "%s: its data is only in the vault (archive %s), not in the "
                    "cache%s; restore it with `glacierfs restore %s` or `setfattr -n %s -v "
                    "Standard %s`, then read it again", shown, node.archive_id, last, shown,
                    RESTORE, shown)
        return FsError(errno.ENODATA, f"{path!r} is not cached")

    def _say_refusal(self, ino: int) -> bool:
        """Whether a refused read of this file is worth a WARNING (REFUSAL_LOG_EVERY)."""
        now = time.monotonic()
        with self._lock:
            if now - self._refusals_said.get(ino, -REFUSAL_LOG_EVERY) < REFUSAL_LOG_EVERY:
                return False
            if len(self._refusals_said) > 10_000:  # forget old ones; a minute is all it keeps
                self._refusals_said = {i: t for i, t in self._refusals_said.items()
                                       if now - t < REFUSAL_LOG_EVERY}
            self._refusals_said[ino] = now
            return True

    # ---- what the status file shows -------------------------------------------------------

    def progress(self) -> list[dict]:
        done = {r["ino"]: r["bytes"] for r in self.db.query(
            "SELECT ino, SUM(size) AS bytes FROM restore_ranges GROUP BY ino")}
        with self._lock:
            in_flight = dict(self._in_flight)
        return [{
            "path": self.catalog.path_of(row.ino).decode("utf-8", "backslashreplace"),
            "state": row.state,
            "tier": row.tier,
            "job_id": row.job_id,
            # a restore between jobs (the last failed, the next not started) has no start
            "started": row.job_started_ns / 1e9 if row.job_started_ns and row.job_id else None,
            "requested": row.requested_ns / 1e9,
            "size": row.size,
            "bytes_downloaded": done.get(row.ino, 0) + in_flight.get(row.ino, 0),
            "error": row.error,
        } for row in self.rows()]

    # ---- rows -----------------------------------------------------------------------------

    def row(self, ino: int) -> Restore | None:
        row = self.db.one("SELECT * FROM restores WHERE ino = ?", (ino,))
        return Restore(**dict(row)) if row is not None else None

    def rows(self, states: tuple[str, ...] = ("waiting", "downloading", "failed")
              ) -> list[Restore]:
        marks = ", ".join("?" for _ in states)
        rows = self.db.query(f"SELECT * FROM restores WHERE state IN ({marks}) "
                             "ORDER BY requested_ns", states)
        return [Restore(**dict(row)) for row in rows]

    @staticmethod
    def active(row: Restore, node: Inode) -> bool:
        return row.state != "failed" and row.archive_id == node.archive_id

    def ranges(self, ino: int) -> dict[int, tuple[int, str]]:
        rows = self.db.query("SELECT first, size, tree_hash FROM restore_ranges WHERE ino = ?",
                             (ino,))
        return {r["first"]: (r["size"], r["tree_hash"]) for r in rows}

    def downloaded(self, row: Restore) -> int:
        with self._lock:
            in_flight = self._in_flight.get(row.ino, 0)
        return sum(size for size, _ in self.ranges(row.ino).values()) + in_flight

    def update(self, ino: int, **values) -> None:
        columns = ", ".join(f"{name} = ?" for name in values)
        with self.db.transaction() as conn:
            conn.execute(f"UPDATE restores SET {columns} WHERE ino = ?", (*values.values(), ino))
        self.changed(ino)

    def changed(self, ino: int) -> None:
        with self._lock:
            for name in XATTRS:
                self._memo.pop((ino, name), None)

    def shown(self, path: bytes) -> str:
        text = path.decode("utf-8", "backslashreplace")
        return f"{self.mountpoint}{text}" if self.mountpoint is not None else text

    def staged(self, row: Restore, index: int) -> Path:
        return self.directory / f"{row.cache_key}.{index}"

    def in_flight(self, ino: int, nbytes: int | None) -> None:
        """Bytes of the range being downloaded (None: none is), for progress."""
        with self._lock:
            if nbytes is None:
                self._in_flight.pop(ino, None)
            else:
                self._in_flight[ino] = nbytes
