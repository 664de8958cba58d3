"""The restore poller: one thread that moves every restore on (restore.py has the states).

Each round (every --restore-poll seconds, or at once when a restore is asked for) it takes the
restores in the order they were asked for: starts a job where one is needed, asks DescribeJob
about a waiting one, and downloads and finishes a ready one before it goes to the next. A
round's trouble with the vault is logged and tried again the next round.

It holds no lock while it talks to the vault; what it changes goes through Restores, so the
memo of attribute values is cleared at each change of state.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from . import treehash
from .restore import MAX_JOBS, RANGE_ATTEMPTS, Restore, gone
from .vault import error_code, is_not_found, is_unreachable

if TYPE_CHECKING:
    from .catalog import Inode
    from .restore import Restores

log = logging.getLogger(__name__)

STOP_WAIT = 10.0  # seconds an unmount waits for the poller to leave a request


class _JobGone(Exception):
    """The job failed, expired, or stopped delivering: a new job is needed."""


class _RestoreFailed(Exception):
    """This restore cannot succeed (the vault holds other data than the catalog says)."""


class _Stopping(Exception):
    """The mount is going away: leave everything as it is, for the next mount."""


class _Dropped(Exception):
    """The file was removed, or holds another archive, since the restore began."""


class Poller:
    def __init__(self, restores: Restores) -> None:
        self.restores = restores
        self.db = restores.db
        self.catalog = restores.catalog
        self.cache = restores.cache
        self.vault = restores.vault
        self.directory = restores.directory
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="restore", daemon=True)
        self._body = None  # the job output being read, so stop() can cut it

    def start(self) -> Poller:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop at the next chunk; a range in flight is fetched again by the next mount. A
        download blocked on a slow connection is cut (its body closed), so unmounting does not
        wait for it; a request still waiting for its reply is left behind after STOP_WAIT."""
        self._stop.set()
        self._wake.set()
        body = self._body
        if body is not None:
            try:
                body.close()
            except Exception as error:  # noqa: BLE001 - closing is only a hurry-up
                log.debug("restore poller: closing the download in flight: %s", error)
        self._thread.join(timeout=STOP_WAIT)
        if self._thread.is_alive():
            log.warning("restore poller: still in a request after %s s; not waiting for it",
                        STOP_WAIT)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._sweep()
                for row in self.restores.rows(("waiting", "downloading")):
                    if self._stop.is_set():
                        return
                    self._advance(row)
            except Exception:  # the poller must go on; the next round tries again
                log.exception("restore poller: unexpected error; trying again in %s s",
                              self.restores.config.poll_interval)
            self._wake.wait(self.restores.config.poll_interval)

    def _sweep(self) -> None:
        """Failed restores of an archive the file no longer holds (overwritten), and staged
        part files that no restore names (finished, dropped, or removed files)."""
        with self.db.transaction() as conn:
            gone = conn.execute(
                "DELETE FROM restores WHERE state = 'failed' AND archive_id IS NOT "
                "(SELECT archive_id FROM inodes WHERE inodes.ino = restores.ino)").rowcount
        if gone:
            log.info("forgot %d failed restore(s) of content that was replaced since", gone)
        keys = {r["cache_key"] for r in self.db.query("SELECT cache_key FROM restores")}
        for path in self.directory.iterdir():
            if path.name.rpartition(".")[0] not in keys:
                path.unlink(missing_ok=True)

    def _advance(self, row: Restore) -> None:
        """One step for one restore: start a job, poll it, or download and finish."""
        shown = self.restores.shown(self.catalog.path_of(row.ino))
        node = self._current(row, shown)
        if node is None:
            return
        try:
            if row.job_id is None:
                row = self._new_job(row, shown, row.error or "no job")
                if row is None:
                    return
            if row.state == "waiting":
                job = self.vault.job(row.job_id)
                if job["StatusCode"] == "InProgress":
                    return
                if job["StatusCode"] != "Succeeded":
                    raise _JobGone(f"job {row.job_id} ended {job['StatusCode']}: "
                                   f"{job.get('StatusMessage')}")
                row = self._job_ready(row, job, shown)
            self._download(row, shown)
            self._finish(row, shown)
        except _Stopping:
            return
        except _Dropped:
            self._current(row, shown)  # drops it, and says so
        except _RestoreFailed as failure:
            self._fail(row, str(failure), shown)
        except _JobGone as gone:
            self._replace_job(row, shown, str(gone))
        except Exception as error:  # noqa: BLE001 - the vault's trouble: try again next round
            if is_not_found(error):
                self._replace_job(row, shown, f"job {row.job_id} is unknown to the vault "
                                  "(its output expired?)")
                return
            what = "waits for the vault" if is_unreachable(error) else "trouble"
            log.warning("%s: restore %s: %s; trying again in %s s", shown, what, error,
                        self.restores.config.poll_interval)
            self.restores.update(row.ino, error=str(error))

    def _replace_job(self, row: Restore, shown: str, reason: str) -> None:
        self.restores.update(row.ino, job_id=None, state="waiting", error=reason)
        self._new_job(self.restores.row(row.ino), shown, reason)

    def _current(self, row: Restore, shown: str) -> Inode | None:
        """The inode, if it still holds the archive being restored; else drop the restore."""
        node = self.catalog.inode(row.ino) if self.catalog.exists(row.ino) else None
        if node is not None and node.archive_id == row.archive_id:
            return node
        log.info("%s: its content changed while it was restored; restore of archive %s dropped",
                 shown, row.archive_id)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM restores WHERE ino = ? AND archive_id = ?",
                         (row.ino, row.archive_id))
        self.restores.changed(row.ino)
        return None

    def _new_job(self, row: Restore | None, shown: str, reason: str) -> Restore | None:
        """Replace a job that failed, expired or stopped delivering; fail the restore after
        MAX_JOBS in a row that delivered nothing."""
        if row is None:
            return None
        if row.jobs >= MAX_JOBS:
            self._fail(row, f"{reason}; {row.jobs} jobs in a row delivered nothing", shown)
            return None
        try:
            job_id = self.vault.initiate_retrieval(row.archive_id, row.tier)
        except Exception as error:  # noqa: BLE001 - next round tries again
            if is_not_found(error):  # no job will ever bring it back
                self._fail(row, f"{reason}; {gone(row.archive_id)}", shown)
                return None
            log.warning("%s: %s; a new job could not be started yet: %s", shown, reason, error)
            self.restores.update(row.ino, error=f"{reason}; InitiateJob: {error}")
            return None
        self.restores.update(row.ino, job_id=job_id, job_started_ns=time.time_ns(),
                             state="waiting", jobs=row.jobs + 1, error=reason)
        log.warning("%s: %s; started job %s (%d of at most %d in a row)", shown, reason,
                    job_id, row.jobs + 1, MAX_JOBS)
        return self.restores.row(row.ino)

    def _job_ready(self, row: Restore, job: dict, shown: str) -> Restore:
        archive_hash = job.get("ArchiveSHA256TreeHash")
        if row.tree_hash and archive_hash and archive_hash != row.tree_hash:
            raise _RestoreFailed(f"the vault's archive has tree hash {archive_hash}, the "
                                 f"catalog recorded {row.tree_hash}")
        self.restores.update(row.ino, state="downloading",
                             tree_hash=row.tree_hash or archive_hash)
        log.info("%s: job %s is ready; downloading %d bytes", shown, row.job_id, row.size)
        return self.restores.row(row.ino)

    def _fail(self, row: Restore, reason: str, shown: str) -> None:
        self.restores.update(row.ino, state="failed", error=reason)
        again = ("no restore can bring it back" if gone(row.archive_id) in reason
                 else f"`glacierfs restore {shown}` tries again")
        log.error("%s: restore failed: %s; %s", shown, reason, again)

    # ---- downloading ----------------------------------------------------------------------

    def _download(self, row: Restore, shown: str) -> None:
        done = self.restores.ranges(row.ino)
        expected = self.catalog.part_hashes(row.ino) if row.range_size == row.part_size else {}
        for first, size in row.ranges():
            if self._stop.is_set():
                raise _Stopping
            if first in done and self._staged_holds(row, first, size):
                continue
            part_hash = expected.get(first // row.part_size, (None, None))[1]
            self._fetch(row, first, size, part_hash, shown)

    def _staged_holds(self, row: Restore, first: int, size: int) -> bool:
        index, offset = divmod(first, row.part_size)
        try:
            return os.path.getsize(self.restores.staged(row, index)) >= offset + size
        except OSError:  # moved into the cache before a crash (_finish hashes it there), or lost
            return self.cache.has(f"{row.cache_key}.{index}")

    def _fetch(self, row: Restore, first: int, size: int, part_hash: str | None,
               shown: str) -> None:
        """Download one range until it verifies, then record it."""
        last = first + size - 1
        problem = ""
        for attempt in range(1, RANGE_ATTEMPTS + 1):
            try:
                digest = self._fetch_once(row, first, size, part_hash)
            except (_RestoreFailed, _Stopping):
                raise
            except Exception as error:  # sorted below
                if self._stop.is_set():
                    raise _Stopping from None  # stop() cut the connection
                if is_unreachable(error):
                    raise
                if is_not_found(error) or error_code(error) == "InvalidParameterValueException":
                    raise _JobGone(f"job {row.job_id}: GetJobOutput: {error}") from None
                problem = str(error) or type(error).__name__
            else:
                self._record(row, first, size, digest)
                return
            level = logging.WARNING if attempt < RANGE_ATTEMPTS else logging.ERROR
            log.log(level, "%s: range %d-%d of job %s refused: %s (attempt %d of %d)", shown,
                    first, last, row.job_id, problem, attempt, RANGE_ATTEMPTS)
            if self._stop.wait(min(0.5 * 2 ** (attempt - 1), 8.0)):
                raise _Stopping
        raise _JobGone(f"range {first}-{last} failed {RANGE_ATTEMPTS} times: {problem}")

    def _fetch_once(self, row: Restore, first: int, size: int, part_hash: str | None) -> str:
        index, offset = divmod(first, row.part_size)
        body, checksum = self.vault.job_output_range(row.job_id, first, first + size - 1)
        self._body = body
        hasher = treehash.TreeHasher()
        fd = os.open(self.restores.staged(row, index), os.O_WRONLY | os.O_CREAT, 0o600)
        got = 0
        try:
            with body:
                while chunk := body.read(treehash.CHUNK):
                    if self._stop.is_set():
                        raise _Stopping
                    os.pwrite(fd, chunk, offset + got)
                    hasher.update(chunk)
                    got += len(chunk)
                    self.restores.in_flight(row.ino, got)
            if got != size:
                raise ValueError(f"{got} bytes arrived, {size} expected")
            digest = hasher.hexdigest()
            if checksum is not None and checksum != digest:
                raise ValueError(f"the bytes hash to {digest}, the vault sent tree hash "
                                 f"{checksum} for them")
            if part_hash is not None and digest != part_hash:
                if checksum == digest:  # the vault agrees with the bytes: not a transfer error
                    raise _RestoreFailed(f"part {index} in the vault hashes to {digest}, it was "
                                         f"uploaded as {part_hash}")
                raise ValueError(f"the bytes hash to {digest}, part {index} was uploaded as "
                                 f"{part_hash}")
            os.fsync(fd)
            return digest
        finally:
            self._body = None
            os.close(fd)
            self.restores.in_flight(row.ino, None)

    def _record(self, row: Restore, first: int, size: int, digest: str) -> None:
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM restores r JOIN inodes i ON i.ino = r.ino WHERE "
                            "r.ino = ? AND r.archive_id = ? AND i.archive_id = r.archive_id",
                            (row.ino, row.archive_id)).fetchone() is None:
                raise _Dropped
            conn.execute("INSERT OR REPLACE INTO restore_ranges (ino, first, size, tree_hash) "
                         "VALUES (?, ?, ?, ?)", (row.ino, first, size, digest))
            # this job delivers: only jobs started after it count towards MAX_JOBS
            conn.execute("UPDATE restores SET jobs = 0, error = NULL WHERE ino = ?", (row.ino,))
        self.restores.changed(row.ino)

    # ---- finishing ------------------------------------------------------------------------

    def _finish(self, row: Restore, shown: str) -> None:
        """Every range is verified: check the parts as they are on disk against them and the
        archive's tree hash, move them into the cache, record them on the inode."""
        ranges = self.restores.ranges(row.ino)
        parts: list[tuple[int, str]] = []
        paths: list[tuple[str, str, bool]] = []  # (key, path, staged: still to be moved)
        for index in range(row.parts()):
            key = f"{row.cache_key}.{index}"
            start = index * row.part_size
            length = min(row.part_size, row.size - start)
            staged = self.restores.staged(row, index)
            path = str(staged) if staged.exists() else self.cache.path(key)  # moved before a crash
            expected = treehash.combine_hex([ranges[first][1] for first in sorted(ranges)
                                             if start <= first < start + length])
            digest = treehash.file_hashes(path)[0] if path is not None else None
            if path is None or os.path.getsize(path) != length or digest != expected:
                # what was verified on arrival is not on the disk any more: fetch it again
                log.warning("%s: part %d of the download is missing or changed on the cache "
                            "disk; fetching it again", shown, index)
                with self.db.transaction() as conn:
                    conn.execute("DELETE FROM restore_ranges WHERE ino = ? AND first >= ? AND "
                                 "first < ?", (row.ino, start, start + length))
                return
            parts.append((length, digest))
            paths.append((key, path, staged.exists()))
        archive_hash = treehash.combine_hex([digest for _, digest in parts])
        if row.tree_hash and archive_hash != row.tree_hash:
            raise _RestoreFailed(f"the parts combine to tree hash {archive_hash}, the archive's "
                                 f"is {row.tree_hash}")
        if self._current(row, shown) is None:
            return
        incoming = sum(os.path.getsize(path) for _, path, staged in paths if staged)
        if (short := self.cache.room_for_restore(incoming)) is not None:
            if short == "never":
                raise _RestoreFailed(f"the cache cannot hold its {incoming} bytes beside its "
                                     f"index (--cache-size {self.cache.size_limit}); mount "
                                     "with a larger --cache-size")
            reason = "waiting for room in the cache (parts not uploaded yet hold it)"
            if row.error != reason:  # said once, not at every poll
                log.warning("%s: downloaded and verified; %s", shown, reason)
                self.restores.update(row.ino, error=reason)
            return
        for key, path, staged in paths:
            if staged:
                self.cache.adopt(key, path)
        with self.db.transaction() as conn:
            # An overwrite could have recorded another archive since _current(): check again,
            # in the transaction that records the parts.
            node = self.catalog.inode(row.ino) if self.catalog.exists(row.ino) else None
            if node is None or node.archive_id != row.archive_id:
                raise _Dropped
            self.catalog.set_stored(row.ino, node.size, node.archive_id,
                                    node.tree_hash or archive_hash, row.part_size,
                                    row.cache_key, parts)
            conn.execute("DELETE FROM restores WHERE ino = ?", (row.ino,))
        self.restores.changed(row.ino)
        log.info("%s: restored: %d bytes in %d part(s), tree hash %s verified (job %s)", shown,
                 row.size, len(parts), archive_hash, row.job_id)
