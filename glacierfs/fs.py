"""The filesystem: operations on paths and handles over the catalog, cache and uploads.

Imports no FUSE module: fuse_ops.py adapts it to mfusepy (libfuse 3), and tests drive it directly. Paths and
names are bytes. Every refusal is an FsError with an errno (errors.py).

Close policy (docs/SEMANTICS.md): a file opened for writing becomes its archive on the first
flush() from the process that opened it after at least one write through the handle, so
close(2) in the writer returns the upload's result. A flush before any write does nothing:
shells and dd open, dup2 and close the original descriptor before writing. Flushes from other
processes (a forked child closing its copy) do nothing. release() finishes a writer that was
never flushed by its opener (and an empty file). After that, writes through the same open
file description (a dup'd descriptor) fail with EBADF.

With --async-close, close(2) returns once the content is safe in the cache (every part sealed,
the final size and tree hash journaled): a closer thread uploads it, and a failed upload is
retried from the cache, as recovery after a crash would. The file reads and stats as written
meanwhile; opening it for writing or truncating it waits for that upload.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from . import recovery, treehash
from .cache import PartCache
from .catalog import HIDDEN_NAME, ROOT_INO, Catalog, Inode
from .config import CacheConfig
from .description import describe
from .errors import FsError
from .restore import XATTRS, Restores
from .sqlite import storable_ns
from .upload import FileUpload, UploadPool
from .vault import Vault

log = logging.getLogger(__name__)

BLOCK = 512
# --async-close: closes whose uploads may wait for a closer thread, per upload thread. More
# make close(2) wait: the cache bounds their bytes, this bounds their number.
BACKGROUND_CLOSES_PER_THREAD = 8
RETRY_FIRST_DELAY = 5.0  # seconds before a failed background upload is tried again
RETRY_MAX_DELAY = 600.0
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR
# An open for writing waits this long for another writer's release (the kernel sends it after
# close(2) returns) before it gives EBUSY.
RELEASE_WAIT = 2.0
SEED_BLOCK = 1 << 20  # bytes copied at a time when a write reopens an archived file


@dataclass
class Handle:
    ino: int
    path: bytes
    opener_pid: int
    writer: FileUpload | None = None
    finished: bool = False
    error: FsError | None = None
    verified_parts: set[int] = field(default_factory=set)


def _inherited(parent: Inode, mode: int, gid: int) -> tuple[int, int]:
    """(mode, gid) of a new entry: in a setgid directory it takes the directory's group,
    and a new directory the setgid bit too, as on any Unix file system."""
    if parent.mode & stat.S_ISGID:
        return mode | (stat.S_ISGID if stat.S_ISDIR(mode) else 0), parent.gid
    return mode, gid


class GlacierFS:
    def __init__(self, catalog: Catalog, cache: PartCache, vault: Vault, config: CacheConfig,
                 pool: UploadPool) -> None:
        self.catalog = catalog
        self.journal = catalog.journal
        self.cache = cache
        self.vault = vault
        self.config = config
        self.pool = pool
        self._handles: dict[int, Handle] = {}
        self._hidden: set[int] = set()  # open files libfuse hid (catalog.hidden_while_open)
        self._writers: dict[int, FileUpload] = {}  # ino -> its open writer
        self._next_fh = itertools.count(1)
        self._lock = threading.Lock()
        self._writer_gone = threading.Condition(self._lock)  # a writer left _writers
        # --async-close: ino -> the closer thread's work on that file's upload.
        self._background: dict[int, Future] = {}
        self._closers = (ThreadPoolExecutor(config.upload_threads, "closer")
                         if config.async_close else None)
        self._close_slots = threading.BoundedSemaphore(
            BACKGROUND_CLOSES_PER_THREAD * config.upload_threads)
        self._stopping = threading.Event()  # shutdown: failed uploads stop retrying
        # Restores (restore.py): its poller is started by mount.py once the mount is live.
        self.restores = Restores(catalog, cache, vault, config.part_size)

    def shutdown(self) -> None:
        """Stop restoring (the next mount goes on), finish every open writer (the mount is
        going away) and every upload after close (one last try for a failing one; what still
        fails stays in the journal for the next mount), then stop the pool."""
        self.restores.stop()
        # First: a close below may wait for a closer slot that a failing upload holds.
        self._stopping.set()
        for fh in list(self._handles):
            try:
                self.release(fh)
            except FsError:
                pass
        if self._closers is not None:
            self._closers.shutdown(wait=True)
        self.pool.shutdown()

    def status(self) -> dict:
        """What `glacierfs status` shows (statusfile.py): each open writer's progress, and the
        cache use in bytes."""
        with self._lock:
            writers = list(self._writers.values())
        return {
            "writers": [writer.progress() for writer in writers],
            "restores": self.restores.progress(),
            "cache": {"reserved": self.cache.reserved, "uploaded": self.cache.uploaded.volume(),
                      "limit": self.cache.size_limit},
        }

    # ---- attributes and directories -------------------------------------------------------

    def getattr(self, path: bytes) -> dict:
        return self._attributes(self.catalog.resolve(path))

    def _attributes(self, node: Inode) -> dict:
        size = node.size
        mtime_ns, ctime_ns = node.mtime_ns, node.ctime_ns
        writer = self._writers.get(node.ino)
        if writer is not None:
            size = writer.size
            mtime_ns = max(mtime_ns, writer.modified_ns)
            ctime_ns = max(ctime_ns, writer.modified_ns)  # a write changes both, as anywhere
        links = 2 + self.catalog.subdirectory_count(node.ino) if node.is_dir else 1
        return {
            "st_ino": node.ino,
            "st_mode": node.mode,
            "st_nlink": links,
            "st_uid": node.uid,
            "st_gid": node.gid,
            "st_size": size,
            "st_blocks": -(-size // BLOCK),
            "st_blksize": self.config.part_size if not node.is_dir else 4096,
            "st_atime_ns": mtime_ns,
            "st_mtime_ns": mtime_ns,
            "st_ctime_ns": ctime_ns,
        }

    def readdir(self, path: bytes) -> list[bytes]:
        node = self.catalog.resolve(path)
        if not node.is_dir:
            raise FsError(errno.ENOTDIR, f"{path!r} is not a directory")
        return [b".", b".."] + [name for name, _ in self.catalog.children(node.ino)]

    def mkdir(self, path: bytes, mode: int, uid: int, gid: int) -> None:
        parent, name = self.catalog.resolve_parent(path)
        mode, gid = _inherited(parent, stat.S_IFDIR | (mode & 0o7777), gid)
        self.catalog.create(parent.ino, name, mode, uid, gid)

    def symlink(self, path: bytes, target: bytes, uid: int, gid: int) -> None:
        parent, name = self.catalog.resolve_parent(path)
        mode, gid = _inherited(parent, stat.S_IFLNK | 0o777, gid)
        self.catalog.create(parent.ino, name, mode, uid, gid, symlink=target)

    def readlink(self, path: bytes) -> bytes:
        node = self.catalog.resolve(path)
        if node.symlink is None:
            raise FsError(errno.EINVAL, f"{path!r} is not a symbolic link")
        return node.symlink

    def mknod(self, path: bytes, mode: int, uid: int, gid: int, pid: int) -> None:
        """mknod(2) of a regular file is an empty file; fifos, sockets and devices are not
        kept (EPERM, as for hard links: not ENOSYS, which reads as a bug)."""
        if not stat.S_ISREG(mode):
            raise FsError(errno.EPERM, f"{path!r}: only files, directories and symbolic links "
                          "are kept")
        self.release(self.create(path, mode, uid, gid, pid))

    def link(self, target: bytes, path: bytes) -> None:
        raise FsError(errno.EPERM, "hard links are not supported: one archive has one name")

    def chmod(self, path: bytes, mode: int) -> None:
        self.catalog.set_attributes(self.catalog.resolve(path).ino, mode=mode)

    def chown(self, path: bytes, uid: int, gid: int) -> None:
        self.catalog.set_attributes(self.catalog.resolve(path).ino, uid=uid, gid=gid)

    def utimens(self, path: bytes, mtime_ns: int | None) -> None:
        """Set the modification time (now if None); atime is not kept (it reads as mtime)."""
        node = self.catalog.resolve(path)
        mtime_ns = time.time_ns() if mtime_ns is None else storable_ns(mtime_ns)
        writer = self._writers.get(node.ino)
        if writer is not None:
            # Before the catalog: recording the archive reads it inside its transaction, so
            # whichever commits last, this time stays. Later writes move it, as on any fs.
            writer.modified_ns = mtime_ns
        self.catalog.set_attributes(node.ino, mtime_ns=mtime_ns)

    def unlink(self, path: bytes) -> None:
        parent, name = self.catalog.resolve_parent(path)
        with self.catalog.db.transaction():
            node = self.catalog.unlink(parent.ino, name)
            doomed = self._doom(node.archive_id, path)
        self._forget(node, doomed)

    def rmdir(self, path: bytes) -> None:
        parent, name = self.catalog.resolve_parent(path)
        self.catalog.rmdir(parent.ino, name)

    def rename(self, old: bytes, new: bytes) -> None:
        old_parent, old_name = self.catalog.resolve_parent(old)
        new_parent, new_name = self.catalog.resolve_parent(new)
        with self.catalog.db.transaction():
            replaced = self.catalog.rename(old_parent.ino, old_name, new_parent.ino, new_name)
            doomed = self._doom(replaced.archive_id if replaced else None, new)
            if HIDDEN_NAME.fullmatch(new_name):  # libfuse hiding an open file unlinked?
                moved = self.catalog.lookup(new_parent.ino, new_name)
                with self._lock:
                    hidden = any(handle.ino == moved for handle in self._handles.values())
                    if hidden:
                        self._hidden.add(moved)
                if hidden:
                    self.catalog.mark_hidden(moved)
        if replaced is not None:
            self._forget(replaced, doomed)

    def _doom(self, archive_id: str | None, path: bytes) -> list[str]:
        """Inside the transaction that stops naming an archive: journal it for deletion."""
        if not archive_id:
            return []
        self.journal.doom(archive_id, path)
        return [archive_id]

    def _forget(self, node: Inode, doomed: list[str]) -> None:
        """After the catalog no longer holds `node`'s content: delete it from vault and cache.
        (A writer still open on the inode has its own parts; _finish dooms what it makes.)"""
        self.delete_archives(doomed)
        self._drop_cached(node)

    def delete_archives(self, archive_ids: list[str] | None = None) -> None:
        """Delete doomed archives (these, or every one the journal holds) from the vault."""
        if archive_ids is not None and not archive_ids:
            return  # most calls: the change doomed nothing
        for archive_id, path in self.journal.doomed():
            if archive_ids is not None and archive_id not in archive_ids:
                continue
            try:
                self.vault.delete_archive(archive_id)
            except Exception as error:  # kept in the journal: the next mount tries again
                log.warning("%s: archive %s could not be deleted yet: %s",
                            path.decode("utf-8", "backslashreplace"), archive_id, error)
                continue
            self.journal.deleted(archive_id)

    def _drop_cached(self, node: Inode) -> None:
        if node.cache_key and node.part_size:
            for index in range(max(1, -(-node.size // node.part_size))):
                self.cache.discard(f"{node.cache_key}.{index}")

    def statfs(self) -> dict:
        files, used = self.catalog.totals()
        block = 4096
        # A vault has no fixed capacity: report a large, constant size minus what we hold,
        # so `df` works and tools that check free space before copying are not refused.
        total_blocks = (1 << 50) // block
        used_blocks = -(-used // block)
        return {
            "f_bsize": block, "f_frsize": block, "f_blocks": total_blocks,
            "f_bfree": total_blocks - used_blocks, "f_bavail": total_blocks - used_blocks,
            "f_files": 1 << 32, "f_ffree": (1 << 32) - files, "f_favail": (1 << 32) - files,
            "f_namemax": 255,
        }

    # ---- opening --------------------------------------------------------------------------

    def create(self, path: bytes, mode: int, uid: int, gid: int, pid: int) -> int:
        parent, name = self.catalog.resolve_parent(path)
        mode, gid = _inherited(parent, stat.S_IFREG | (mode & 0o7777), gid)
        node = fh = None
        try:
            with self.catalog.db.transaction():  # the new name and its journal entry, together
                node = self.catalog.create(parent.ino, name, mode, uid, gid)
                fh = self._open_writer(node, path, pid)
        except BaseException:
            # The commit failed (a full disk): the inode number goes back to SQLite, and the
            # next create gets it; its writer must not stay registered (EBUSY for good).
            if fh is not None:  # (else nothing of ours was registered)
                with self._lock:
                    self._handles.pop(fh, None)
                    self._writers.pop(node.ino, None)
            raise
        return fh

    def open(self, path: bytes, flags: int, pid: int) -> int:
        node = self.catalog.resolve(path)
        if node.is_dir:
            raise FsError(errno.EISDIR, f"{path!r} is a directory")
        if flags & WRITE_FLAGS:
            self._wait_for_background_close(node.ino, path)
            if not self._wait_for_release(node.ino):
                raise FsError(errno.EBUSY, f"{path!r} is already open for writing")
            node = self.catalog.resolve(path)  # that release may have recorded a content
            if node.state == "stored" and node.size > 0 and not flags & os.O_TRUNC:
                raise FsError(errno.EPERM, f"{path!r}: archives are immutable; open with "
                              "O_TRUNC to replace the content")
            return self._open_writer(node, path, pid)
        return self._new_handle(Handle(node.ino, path, pid))

    def _open_writer(self, node: Inode, path: bytes, pid: int) -> int:
        writer = self._new_writer(node, path)
        return self._new_handle(Handle(node.ino, path, pid, writer=writer))

    def _new_writer(self, node: Inode, path: bytes) -> FileUpload:
        """A writer for `node`, registered and journaled; EBUSY if it has one."""
        ino = node.ino
        writer = FileUpload(
            self.vault, self.cache, self.pool, self.config, self.journal,
            describe=lambda: describe(self.catalog.path_of(ino), self._mtime_of(ino)),
            display_path=path.decode("utf-8", "backslashreplace"),
        )
        with self._lock:
            if ino in self._writers:
                raise FsError(errno.EBUSY, f"{path!r} is already open for writing")
            self._writers[ino] = writer
        try:
            self.journal.begin(writer.cache_key, ino, self.config.part_size)
        except BaseException:
            with self._lock:
                self._writers.pop(ino, None)
            raise
        return writer

    def _wait_for_release(self, ino: int) -> bool:
        """Whether `ino` has no writer, waiting up to RELEASE_WAIT seconds for it to go.
        The kernel sends release after close(2) has returned, so `touch f; echo x > f` or
        mktemp then a write would otherwise find the first writer still there."""
        with self._writer_gone:
            return self._writer_gone.wait_for(lambda: ino not in self._writers, RELEASE_WAIT)

    def _mtime_of(self, ino: int) -> float:
        writer = self._writers.get(ino)
        return (writer.modified_ns if writer is not None else time.time_ns()) / 1e9

    def _new_handle(self, handle: Handle) -> int:
        with self._lock:
            fh = next(self._next_fh)
            self._handles[fh] = handle
        return fh

    def _handle(self, fh: int) -> Handle:
        try:
            return self._handles[fh]
        except KeyError:
            raise FsError(errno.EBADF, f"no open file {fh}") from None

    # ---- data -----------------------------------------------------------------------------

    def write(self, fh: int, data: bytes, offset: int) -> int:
        handle = self._handle(fh)
        if handle.writer is None:
            raise FsError(errno.EBADF, f"{handle.path!r} is not open for writing")
        if handle.error is not None:
            raise handle.error
        if handle.finished:
            self._write_again(handle)
        return handle.writer.write(data, offset)

    def _write_again(self, handle: Handle) -> None:
        """A write through an open file whose archive is complete: pages of a mapping written
        back after close(fd) (mmap, close, store into the mapping), or a dup'd descriptor.
        Refusing it would lose those bytes, silently for munmap. So a new content starts
        from the archived one, as an overwrite: the next flush of the opener or the release
        completes it, and the old archive is doomed."""
        self._wait_for_background_close(handle.ino, handle.path)
        node = self.catalog.inode(handle.ino)
        writer = self._new_writer(node, handle.path)
        try:
            for offset in range(0, node.size, SEED_BLOCK):
                writer.write(self._read_stored(handle, node, SEED_BLOCK, offset), offset)
        except FsError:
            writer.abort()
            self._drop_writer(node.ino)
            self.give_up(writer.cache_key, node.ino)  # the archived content stays
            raise
        handle.writer, handle.finished = writer, False

    def truncate(self, path: bytes, length: int, fh: int | None = None) -> None:
        node = self.catalog.resolve(path)
        if node.is_dir:
            raise FsError(errno.EISDIR, f"{path!r} is a directory")
        self._wait_for_background_close(node.ino, path)
        writer = self._writers.get(node.ino)
        if writer is not None:
            writer.truncate(length)
            return
        if length == node.size:
            return
        if length != 0:
            raise FsError(errno.EPERM, f"{path!r}: archives are immutable; only truncating to "
                          "0 bytes (or opening with O_TRUNC and writing) changes a stored file")
        # `truncate -s 0`: the file is now empty, which lives in the catalog only.
        with self.catalog.db.transaction():
            self.catalog.set_stored(node.ino, 0, None, None, self.config.part_size, "", [])
            doomed = self._doom(node.archive_id, path)
        self._forget(node, doomed)

    def read(self, fh: int, size: int, offset: int) -> bytes:
        handle = self._handle(fh)
        writer = self._writers.get(handle.ino)
        if writer is not None:
            return writer.read(size, offset)
        return self._read_stored(handle, self.catalog.inode(handle.ino), size, offset)

    def _read_stored(self, handle: Handle, node: Inode, size: int, offset: int) -> bytes:
        """Bytes of a stored file, from its cached parts (each verified once per handle)."""
        end = min(offset + size, node.size)
        if offset >= end:
            return b""
        out = bytearray()
        hashes = None
        position = offset
        while position < end:
            index = position // node.part_size
            part_start = index * node.part_size
            key = f"{node.cache_key}.{index}"
            path = self.cache.path(key) if node.cache_key else None
            if path is None:  # logs how to restore it (or starts that: --restore-on-read)
                raise self.restores.refuse_read(node, handle.path)
            if index not in handle.verified_parts:
                hashes = hashes or self.catalog.part_hashes(node.ino)
                self._verify_part(handle, node, index, path, hashes)
            take = min(end, part_start + node.part_size) - position
            with open(path, "rb") as src:
                out += os.pread(src.fileno(), take, position - part_start)
            position += take
        return bytes(out)

    def _verify_part(self, handle: Handle, node: Inode, index: int, path: str,
                     hashes: dict[int, tuple[int, str]]) -> None:
        """A cached part is read only if it still hashes to what was uploaded. A corrupt copy
        is dropped (this read fails with EIO): the file is then not cached, as after an
        eviction, so reads say ENODATA and a restore brings the part back from the vault."""
        expected = hashes.get(index)
        if expected is None or treehash.file_hashes(path)[0] != expected[1]:
            shown = handle.path.decode("utf-8", "backslashreplace")
            if expected is not None and self.cache.drop_uploaded_copy(f"{node.cache_key}.{index}"):
                log.error("%s: cached part %d does not match its tree hash; dropped it from "
                          "the cache (the vault has it: restore the file to read it)",
                          shown, index)
            else:
                log.error("%s: cached part %d does not match its tree hash; not reading it",
                          shown, index)
            raise FsError(errno.EIO, f"{handle.path!r}: cached part {index} is corrupt")
        handle.verified_parts.add(index)

    # ---- closing --------------------------------------------------------------------------

    def flush(self, fh: int, pid: int) -> None:
        handle = self._handle(fh)
        writer = handle.writer
        if (writer is not None and not handle.finished and pid == handle.opener_pid
                and writer.writes):
            self._finish(handle)
        if handle.error is not None:
            raise handle.error

    def release(self, fh: int) -> None:
        handle = self._handle(fh)
        try:
            if handle.writer is not None and not handle.finished:
                self._finish(handle)
        finally:
            with self._lock:
                self._handles.pop(fh, None)
                # The last close of a hidden file: libfuse unlinks it next. If it does not
                # (someone else named an open file so), it is no leftover.
                unhide = handle.ino in self._hidden and not any(
                    other.ino == handle.ino for other in self._handles.values())
                if unhide:
                    self._hidden.discard(handle.ino)
            if unhide:
                self.catalog.unmark_hidden(handle.ino)

    def fsync(self, fh: int) -> None:
        handle = self._handle(fh)
        if handle.writer is not None and not handle.finished:
            handle.writer.sync()

    def _finish(self, handle: Handle) -> None:
        """Turn a writer into an archive and record it; errors are kept for close(2). With
        --async-close only the local half runs here, and a closer thread does the rest."""
        writer = handle.writer
        handle.finished = True
        try:
            has_content = writer.prepare_close()
            if has_content and self._closers is not None:
                self._close_in_background(handle.ino, handle.path, writer)
                return
            archive_id = writer.finish_close() if has_content else None
        except FsError as error:
            handle.error = error
            self._drop_writer(handle.ino)
            self.give_up(writer.cache_key, handle.ino)
            raise
        self._record(handle.ino, handle.path, writer, archive_id)

    def _record(self, ino: int, path: bytes, writer: FileUpload,
                archive_id: str | None) -> None:
        try:
            self.record_archive(writer.cache_key, ino, path, writer.size, archive_id,
                                writer.tree_hash, self.config.part_size, writer.part_hashes(),
                                modified_ns=lambda: writer.modified_ns)
        finally:  # only now: until the catalog has the content, stat and read use the writer
            self._drop_writer(ino)

    def _drop_writer(self, ino: int) -> None:
        with self._lock:
            self._writers.pop(ino, None)
            self._writer_gone.notify_all()

    # ---- closing in the background (--async-close) ----------------------------------------

    def _close_in_background(self, ino: int, path: bytes, writer: FileUpload) -> None:
        self._close_slots.acquire()
        with self._lock:  # the closer pops its entry under this lock: never before it is in
            self._background[ino] = self._closers.submit(self._upload_after_close, ino, path,
                                                         writer)

    def _upload_after_close(self, ino: int, path: bytes, writer: FileUpload) -> None:
        try:
            try:
                archive_id = writer.finish_close(keep_on_failure=True)
            except FsError as error:
                log.error("%s: the upload failed after close returned (%s); the content stays "
                          "in the cache and the upload is tried again", writer.path,
                          error.reason)
                self._retry_upload(ino, writer)
            else:
                self._record(ino, path, writer, archive_id)
        except Exception:  # a bug: the journal still has the upload, the next mount ends it
            log.exception("%s: finishing the upload after close failed", writer.path)
        finally:
            with self._lock:
                self._background.pop(ino, None)
            self._close_slots.release()

    def _retry_upload(self, ino: int, writer: FileUpload) -> None:
        """Finish a failed upload from the cache and the journal (recovery.finish_upload),
        with growing pauses; at shutdown, one last try, then the next mount goes on."""
        delay = RETRY_FIRST_DELAY
        while True:
            stopping = self._stopping.wait(delay)
            try:
                recovery.finish_upload(self, writer.cache_key, lambda: writer.modified_ns)
            except Exception as error:
                if stopping:
                    log.warning("%s: still not uploaded; the next mount finishes it from the "
                                "cache: %s", writer.path, error)
                    return
                delay = min(2 * delay, RETRY_MAX_DELAY)
                log.warning("%s: upload failed again, next try in %.0f s: %s", writer.path,
                            delay, error)
                continue
            self._drop_writer(ino)
            log.info("%s: uploaded on a later try", writer.path)
            return

    def _wait_for_background_close(self, ino: int, path: bytes) -> None:
        """A file whose close returned before its upload changes again only after that upload:
        wait for it. While a failed one waits to be tried again: EBUSY."""
        future = self._background.get(ino)
        while future is not None:
            writer = self._writers.get(ino)
            if writer is not None and writer.state == "failed":
                raise FsError(errno.EBUSY, f"{path!r}: its upload failed and will be tried "
                              "again; it cannot change until then")
            try:
                future.result(timeout=0.5)
                return
            except TimeoutError:
                continue

    def record_archive(self, cache_key: str, ino: int, path: bytes, size: int,
                       archive_id: str | None, tree_hash: str | None, part_size: int,
                       parts: list[tuple[int, str]], modified_ns=None) -> None:
        """A content is complete in the vault: in one transaction, put it on its inode (with
        the time `modified_ns()` gives, read inside it), end its upload in the journal and doom
        the archive it replaces; then delete that one."""
        with self.catalog.db.transaction():
            if self.catalog.exists(ino):
                old = self.catalog.inode(ino)
                self.catalog.set_stored(ino, size, archive_id, tree_hash, part_size, cache_key,
                                        parts, modified_ns() if modified_ns else None)
                doomed = self._doom(old.archive_id if old.archive_id != archive_id else None,
                                    path)
            else:  # unlinked or replaced while it was written: nothing names it
                old = None
                doomed = self._doom(archive_id, path)
            superseded = self.journal.supersede(cache_key, ino)
            self.journal.end(cache_key)
        self.delete_archives(doomed)
        if old is not None and old.cache_key and old.cache_key != cache_key:
            self._drop_cached(old)
        for entry in superseded:
            recovery.settle_superseded(self, entry, path)

    def give_up(self, cache_key: str, ino: int) -> None:
        """A content that will never be an archive: a new file that never made it goes away;
        a file being overwritten keeps its old content."""
        with self.catalog.db.transaction():
            self.journal.end(cache_key)
            if self.catalog.exists(ino) and self.catalog.inode(ino).state == "writing":
                self.catalog.remove(ino)

    # ---- extended attributes: restores (restore.py) ---------------------------------------

    def getxattr(self, path: bytes, name: str) -> bytes:
        if name not in XATTRS:  # checked first: the kernel asks for security.* names often
            raise FsError(errno.ENODATA, f"{path!r}: no attribute {name}")
        node = self.catalog.resolve(path)
        return self.restores.getxattr(node, name, self._uploading(node))

    def listxattr(self, path: bytes) -> list[str]:
        # None listed, though getxattr answers for them (as CephFS does with its virtual
        # attributes): `rsync -aX` into the mount would try to remove them every run, and
        # `cp -a` or `rsync -aX` out of it would copy them onto every file.
        self.catalog.resolve(path)
        return []

    def setxattr(self, path: bytes, name: str, value: bytes) -> None:
        node = self.catalog.resolve(path)
        self.restores.setxattr(node, path, name, value, self._uploading(node))

    def removexattr(self, path: bytes, name: str) -> None:
        self.catalog.resolve(path)
        raise FsError(errno.ENOTSUP, f"{path!r}: {name} cannot be removed")

    def _uploading(self, node: Inode) -> bool:
        return node.state == "writing" or node.ino in self._writers

    def root(self) -> Inode:
        return self.catalog.inode(ROOT_INO)
