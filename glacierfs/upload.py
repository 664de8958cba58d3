"""One file's way into the vault: parts on the cache disk, hashed as data arrives, uploaded as
soon as each is full by a bounded pool, completed on close.

Part states (Part.state):
    staged     in cache staging/, writable; hashes fed by in-order writes
    queued     full: handed to the sealer, which finishes its hashes, moves it into the
               pending cache and hands it to the pool
    uploading  a worker is sending it
    uploaded   the vault has it (and confirmed our tree hash); the file moved to 'uploaded'
A write into a queued/uploading/uploaded part waits for any seal or upload in flight, moves
the part back to staging (if still cached) and it is sent again when full (a re-upload
replaces the range). File states: open -> closing -> complete | failed(errno). Failed is
sticky: every later write and the close return the same errno, and the multipart upload is
aborted.

Every step that a crash must not forget is recorded in the journal (journal.py) first: a
sealed part's tree hash, the upload id, each part the vault confirmed, and 'closing' with the
final size and tree hash before the last part goes out.

Lock order: FileUpload.lock, then the cache's condition. Never wait for cache room or for a
worker while holding FileUpload.lock.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NoReturn

from . import treehash
from .cache import PartCache, fsync_path
from .config import MAX_PARTS, CacheConfig
from .errors import FsError, UploadFailed, errno_for
from .journal import Journal
from .vault import Vault

log = logging.getLogger(__name__)
CHUNK = treehash.CHUNK
# Writes this large are hashed in the background (HashFeeder); smaller ones cost less to hash
# than to hand over, which matters for many small files.
BACKGROUND_HASH_MIN = 256 << 10


class _ChunkHasher:
    """SHA-256 of one 1 MiB leaf, fed while writes arrive in order; else recomputed at seal."""

    __slots__ = ("hasher", "next_offset", "in_order")

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.next_offset = 0
        self.in_order = True


@dataclass
class Part:
    index: int
    key: str
    state: str = "staged"
    size: int = 0  # highest byte written + 1, within the part
    covered: list[list[int]] = field(default_factory=list)  # merged [start, end) ranges
    chunks: dict[int, _ChunkHasher] = field(default_factory=dict)
    content: "hashlib._Hash | None" = field(default_factory=hashlib.sha256)  # None: out of order
    content_next: int = 0
    leaves: list[bytes] = field(default_factory=list)
    tree_hash: str = ""
    sha256: str = ""
    future: Future | None = None
    reopened: bool = False  # written again after sealing: sealed once more only at close
    fd: int | None = None  # the staging file, open while the part is staged
    hashing: list[Future] = field(default_factory=list)  # HashFeeder updates of this part

    def staging_fd(self, path) -> int:
        if self.fd is None:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        return self.fd

    def close_fd(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def cover(self, start: int, end: int) -> None:
        merged: list[list[int]] = []
        for a, b in sorted(self.covered + [[start, end]]):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self.covered = merged

    def full(self, part_size: int) -> bool:
        return self.covered == [[0, part_size]]


Updates = list[tuple["hashlib._Hash", memoryview]]


class HashFeeder:
    """Feeds written bytes to their hashers on background threads, in the order given.

    cp writes one block at a time and waits for each reply, so whatever the FUSE write handler
    does is on the copy's critical path. Hashing each byte twice (the part's SHA-256 for the
    signed request, and its tree-hash leaf) is the biggest cost there. hashlib releases the GIL,
    so here the two hashes run on both cores while the next block is already on its way in.
    Two lanes, one thread each, serve every file: the part SHA-256s go to one, the leaves to the
    other, and each lane's FIFO keeps every hasher's updates in write order. At most `limit`
    bytes wait (memory stays flat); feed() blocks beyond that.
    """

    def __init__(self, limit: int = 16 << 20) -> None:
        self._lanes = [ThreadPoolExecutor(max_workers=1, thread_name_prefix="hash")
                       for _ in range(2)]
        self._limit = limit
        self._waiting = 0
        self._room = threading.Condition()

    def feed(self, content: Updates, leaves: Updates) -> list[Future]:
        """Queue hasher.update(data) for each pair; the futures are done once they all are."""
        sizes = [sum(len(data) for _, data in updates) for updates in (content, leaves)]
        with self._room:
            while self._waiting and self._waiting + sum(sizes) > self._limit:
                self._room.wait()
            self._waiting += sum(sizes)
        return [lane.submit(self._update, updates, nbytes)
                for lane, updates, nbytes in zip(self._lanes, (content, leaves), sizes) if updates]

    def _update(self, updates, nbytes: int) -> None:
        try:
            for hasher, data in updates:
                hasher.update(data)
        finally:
            with self._room:
                self._waiting -= nbytes
                self._room.notify_all()

    def shutdown(self) -> None:
        for executor in self._lanes:
            executor.shutdown(wait=True)


class UploadPool:
    """The bounded pool of upload workers, the hash feeder and the sealer, shared by every
    open file."""

    def __init__(self, threads: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="upload")
        self.hashes = HashFeeder()
        # Seals full parts in the order they filled (FileUpload._seal_in_background).
        self.sealer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seal")

    def submit(self, fn, *args) -> Future:
        return self.executor.submit(fn, *args)

    def shutdown(self) -> None:
        self.sealer.shutdown(wait=True)
        self.executor.shutdown(wait=True)
        self.hashes.shutdown()


class FileUpload:
    """The content of one file opened for writing, on its way to becoming one archive."""

    def __init__(self, vault: Vault, cache: PartCache, pool: UploadPool, config: CacheConfig,
                 journal: Journal, describe, display_path: str) -> None:
        self.vault = vault
        self.cache = cache
        self.pool = pool
        self.journal = journal  # the caller records begin(); this class records the rest
        self.part_size = config.part_size
        self.max_size = config.max_file_size
        self.describe = describe  # () -> archive description, asked at initiate/close time
        self.path = display_path  # for log lines
        self.cache_key = secrets.token_hex(12)
        self.lock = threading.RLock()
        self.parts: dict[int, Part] = {}
        self.size = 0
        self.upload_id: str | None = None
        self.error: FsError | None = None
        self.state = "open"
        self.archive_id: str | None = None
        self.tree_hash: str | None = None
        self.modified_ns = time.time_ns()
        self.started = time.time()  # for the upload rate `glacierfs status` shows
        self.writes = 0  # write() calls so far; close policy in fs.py
        self.synced_size = 0  # the size at the last fsync(2): those bytes survive a power cut
        # The archive's tree hash, fed each part's leaves as parts seal in order. None once a
        # sealed part was rewritten: its old leaves are in it, so close rebuilds from parts.
        self._running: treehash.TreeHasher | None = treehash.TreeHasher()
        self._next_leaf_part = 0
        self._sealed_leaves: dict[int, list[bytes]] = {}
        self._sealing: list[Future] = []  # full parts handed to the sealer
        self._single = False  # set at close: the content goes out as one UploadArchive

    # ---- writing --------------------------------------------------------------------------

    def _check(self) -> None:
        if self.error is not None:
            raise self.error
        if self.state != "open":
            raise FsError(errno.EBADF, f"{self.path}: file already closed and uploaded")

    def write(self, data: bytes, offset: int) -> int:
        self.writes += 1
        end = offset + len(data)
        if end > self.max_size:
            self._fail(FsError(errno.EFBIG,
                               f"{self.path}: {end} bytes is over {MAX_PARTS} parts of "
                               f"{self.part_size} bytes; remount with a larger --part-size"))
            self.abort()
            raise self.error
        position = offset
        view = memoryview(data)
        try:
            while position < end:
                index = position // self.part_size
                part_start = index * self.part_size
                take = min(end, part_start + self.part_size) - position
                self._write_part(index, position - part_start, view[position - offset:
                                                                    position - offset + take])
                position += take
        except FsError:
            raise
        except Exception as error:  # the cache or journal failed under us: the file is lost
            err = errno_for(error)
            self._fail(FsError(err, f"{self.path}: write failed: {os.strerror(err)} ({error})"))
            raise self.error from None
        return len(data)

    def _write_part(self, index: int, offset: int, data: memoryview) -> None:
        part = self._writable_part(index)
        with self.lock:
            self._check()
            self._store(part, offset, data)
            self._hash_in_order(part, offset, data)
            part.cover(offset, offset + len(data))
            part.size = max(part.size, offset + len(data))
            self.size = max(self.size, index * self.part_size + part.size)
            self.modified_ns = time.time_ns()
            if part.full(self.part_size) and not part.reopened:
                # Sealing waits for the part's hashing to catch up and commits two index
                # rows: done here, it held this write's reply (and cp) for ~17 ms per part.
                part.state = "queued"
                part.future = self.pool.sealer.submit(self._seal_in_background, part)
                self._sealing.append(part.future)

    def _store(self, part: Part, offset: int, data: memoryview) -> None:
        """pwrite into the staged part (one open fd per part: no open/close per write). A full
        cache disk first gives up the uploaded parts kept for reading; if that is not enough
        the file fails with ENOSPC (sticky: close must not complete a file with a gap)."""
        try:
            try:
                os.pwrite(part.staging_fd(self.cache.staging_path(part.key)), data, offset)
            except OSError as error:
                if error.errno != errno.ENOSPC or not self.cache.drop_uploaded():
                    raise
                os.pwrite(part.staging_fd(self.cache.staging_path(part.key)), data, offset)
        except OSError as error:
            self._fail(FsError(error.errno or errno.EIO,
                               f"{self.path}: cannot write to the cache: {error.strerror}"))
            raise self.error from None

    def _writable_part(self, index: int) -> Part:
        """The staged part `index`, creating it (after waiting for cache room) or taking it
        back from the pending/uploaded cache. Called without the lock."""
        while True:
            with self.lock:
                self._check()
                part = self.parts.get(index)
                if part is not None and part.state == "staged":
                    return part
                in_flight = part.future if part is not None else None
            if part is None:
                if not self.cache.reserve(self.part_size, give_up=lambda: self.error is not None):
                    self._check()
                with self.lock:
                    if index in self.parts:  # another writer made it meanwhile
                        self.cache.release(self.part_size)
                        continue
                    return self._new_part(index)
            if in_flight is not None:
                try:
                    in_flight.result()
                except Exception:
                    pass  # a failure is sticky in self.error; _check() raises it
            with self.lock:
                self._check()
                if part.state in ("queued", "uploading"):
                    continue
                self._reopen(part)
                return part

    def _new_part(self, index: int) -> Part:
        """A new, empty staged part (its cache room already reserved). Under the lock."""
        part = Part(index, f"{self.cache_key}.{index}")
        part.staging_fd(self.cache.staging_path(part.key))  # creates the file
        self.parts[index] = part
        return part

    def _reopen(self, part: Part) -> None:
        """Write again into a part that was sealed: only while the cache still holds it."""
        if not self.cache.unseal(part.key, durable=self._has_synced_bytes(part)):
            log.warning("%s: a write into part %d refused (ENOTSUP): that part is in the "
                        "vault and no longer cached, so it cannot be rewritten", self.path,
                        part.index)
            raise FsError(errno.ENOTSUP, f"{self.path}: part {part.index} is already in the "
                          "vault and no longer cached; glacierfs cannot rewrite it")
        if part.state == "uploaded":
            self.cache.reserve(self.part_size)  # it counts as unsent again
        log.info("%s: rewriting part %d, it will be uploaded again", self.path, part.index)
        self.journal.part_reopened(self.cache_key, part.index)
        self._running = None
        part.state = "staged"
        part.reopened = True
        part.future = None
        part.content = None  # its SHA-256 is recomputed from the file at the next seal

    def _hash_in_order(self, part: Part, offset: int, data: memoryview) -> None:
        """Feed the chunk hashers and the part's SHA-256 while the bytes arrive in order. Which
        hashers get the bytes is decided here, in write order; large writes are hashed by the
        HashFeeder, small ones here unless the feeder still has updates of this part."""
        content: Updates = []
        leaves: Updates = []
        if part.content is not None:
            if offset == part.content_next:
                content.append((part.content, data))
                part.content_next += len(data)
            else:
                part.content = None
        position = offset
        end = offset + len(data)
        while position < end:
            chunk_index = position // CHUNK
            chunk_end = min(end, (chunk_index + 1) * CHUNK)
            hasher = part.chunks.setdefault(chunk_index, _ChunkHasher())
            if hasher.in_order and position - chunk_index * CHUNK == hasher.next_offset:
                leaves.append((hasher.hasher, data[position - offset:chunk_end - offset]))
                hasher.next_offset += chunk_end - position
            else:
                hasher.in_order = False
            position = chunk_end
        part.hashing = [future for future in part.hashing if not future.done()]
        if len(data) >= BACKGROUND_HASH_MIN or part.hashing:
            part.hashing += self.pool.hashes.feed(content, leaves)
        else:
            for hasher, piece in content + leaves:
                hasher.update(piece)

    @staticmethod
    def _hashed(part: Part) -> None:
        """Wait until the HashFeeder has fed everything written to this part."""
        for future in part.hashing:
            future.result()
        part.hashing = []

    def truncate(self, length: int) -> None:
        """Set the size: growing leaves zeros; shrinking only cuts parts still being written."""
        with self.lock:
            self._check()
            if length > self.max_size:
                raise FsError(errno.EFBIG, f"{self.path}: {length} bytes is over {MAX_PARTS} "
                              f"parts of {self.part_size} bytes")
            if length < self.size:
                affected = [(i, p) for i, p in sorted(self.parts.items())
                            if i * self.part_size + p.size > length]
                for index, part in affected:  # check them all first: a refusal changes nothing
                    if part.state != "staged":
                        raise FsError(errno.ENOTSUP, f"{self.path}: cannot shrink into part "
                                      f"{index}, it is already on its way to the vault")
                for index, part in affected:
                    keep = max(length - index * self.part_size, 0)
                    if keep == 0 and index * self.part_size >= length:
                        del self.parts[index]  # wholly beyond the new end
                        part.close_fd()
                        self.cache.discard(part.key)
                        self.cache.release(self.part_size)
                        continue
                    os.truncate(self.cache.staging_path(part.key), keep)
                    part.size = keep
                    part.covered = [[a, min(b, keep)] for a, b in part.covered if a < keep]
                    part.content = None  # the running content hash no longer matches
                    for chunk in part.chunks.values():
                        chunk.in_order = False
                if length < self.synced_size:
                    self.journal.cut(self.cache_key, length)
                    self.synced_size = length
            self.size = length
            self.modified_ns = time.time_ns()

    def read(self, size: int, offset: int) -> bytes:
        """Read back data of a file still being written (holes read as zeros)."""
        with self.lock:
            end = min(offset + size, self.size)
            out = bytearray()
            position = offset
            while position < end:
                index = position // self.part_size
                start = index * self.part_size
                take = min(end, start + self.part_size) - position
                part = self.parts.get(index)
                data = b""  # a part never written is a hole: zeros
                if part is not None:
                    path = self.cache.path(part.key)
                    if path is None:
                        raise FsError(errno.ENODATA, f"{self.path}: part {index} was uploaded "
                                      "and has left the cache")
                    with open(path, "rb") as src:
                        data = os.pread(src.fileno(), take, position - start)
                out += data.ljust(take, b"\0")
                position += take
            return bytes(out)

    def sync(self) -> None:
        """fsync(2): everything written so far durable in the cache and the journal, so a
        power cut recovers the file with this content (recovery.py)."""
        with self.lock:
            self._check()
            for part in self.parts.values():
                if part.state == "uploaded":
                    continue  # the vault has it
                if part.fd is not None:
                    os.fsync(part.fd)
                elif (path := self.cache.path(part.key)) is not None:
                    fsync_path(path)
            self.cache.make_durable()
            self.journal.synced(self.cache_key, self.size)
            self.synced_size = self.size

    # ---- sealing and uploading ------------------------------------------------------------

    def _seal(self, part: Part, journal: bool = True, to_pending: bool = True) -> None:
        """The part is complete: finish its hashes, move it to the pending cache."""
        path = self.cache.staging_path(part.key)
        size = part.size
        self._hashed(part)
        count = -(-size // CHUNK) if size else 1
        leaves = []
        for chunk_index in range(count):
            hasher = part.chunks.get(chunk_index)
            chunk_len = min(CHUNK, size - chunk_index * CHUNK) if size else 0
            if hasher is None or not hasher.in_order or hasher.next_offset != chunk_len:
                leaves.append(self._rehash_chunk(path, chunk_index, chunk_len))
            else:
                leaves.append(hasher.hasher.digest())
        if part.content is not None and part.content_next == size:
            part.sha256 = part.content.hexdigest()
        else:
            part.sha256 = treehash.file_hashes(path, tree=False, plain=True)[1]
        part.leaves = leaves
        part.chunks = {}  # done; a rewrite after _reopen starts fresh hashers
        part.tree_hash = treehash.combine(leaves).hex()
        part.close_fd()
        if to_pending:
            self.cache.seal(part.key, durable=self._has_synced_bytes(part))
        if journal:
            self.journal.part_sealed(self.cache_key, part.index, size, part.tree_hash)
        part.state = "queued"
        if self._running is not None:
            self._sealed_leaves[part.index] = leaves
            while self._next_leaf_part in self._sealed_leaves:
                for leaf in self._sealed_leaves.pop(self._next_leaf_part):
                    self._running.add_leaf(leaf)
                self._next_leaf_part += 1

    def _has_synced_bytes(self, part: Part) -> bool:
        """Whether an fsync(2) covered some of this part's bytes (they must survive a power
        cut while the part moves between the cache's places)."""
        return self.synced_size > part.index * self.part_size

    def _seal_in_background(self, part: Part) -> None:
        """A full part, on the sealer thread: seal it, then hand it to the upload pool. Writers
        of a queued part wait for part.future: this one, then the upload's (set under the
        lock, before this returns)."""
        self._hashed(part)  # without the lock: nobody writes into a queued part
        with self.lock:
            if self.error is not None:
                return
            try:
                self._seal(part)
            except Exception as error:  # the cache or journal failed under us
                err = errno_for(error)
                self._fail(FsError(err, f"{self.path}: part {part.index}: cannot seal it: "
                                   f"{os.strerror(err)} ({error})"))
                return
            part.future = None
            self._submit(part)

    @staticmethod
    def _rehash_chunk(path, chunk_index: int, length: int) -> bytes:
        # Only for chunks written out of order or with holes: read the chunk back once.
        with open(path, "rb") as src:
            data = os.pread(src.fileno(), length, chunk_index * CHUNK)
        return hashlib.sha256(data.ljust(length, b"\0")).digest()

    def _submit(self, part: Part) -> None:
        """Hand a queued part to the pool; the first one initiates the multipart upload."""
        with self.lock:
            if part.future is not None or part.state != "queued" or self.error is not None:
                return
            if self.upload_id is None:
                try:
                    self.upload_id = self.vault.initiate(self.part_size, self.describe())
                    self.journal.initiated(self.cache_key, self.upload_id)
                    log.debug("%s: multipart upload %s", self.path, self.upload_id)
                except Exception as error:
                    self._fail(UploadFailed(f"{self.path}: initiate failed: {error}",
                                            errno_for(error)))
                    return
            part.future = self.pool.submit(self._upload_part, part)

    def _upload_part(self, part: Part) -> None:
        with self.lock:
            if self.error is not None:
                return
            part.state = "uploading"
            path = self.cache.path(part.key)
            upload_id = self.upload_id
        try:
            confirmed = self.vault.upload_part_file(upload_id, part.index * self.part_size, path,
                                                    part.size, part.sha256, part.tree_hash)
            if confirmed != part.tree_hash:
                raise UploadFailed(f"{self.path}: part {part.index}: the vault computed tree "
                                   f"hash {confirmed}, we sent {part.tree_hash}")
        except Exception as error:
            self._fail(error if isinstance(error, FsError) else UploadFailed(
                f"{self.path}: part {part.index} upload failed: {error}", errno_for(error)))
            return
        with self.lock:
            # Move the file first: anyone who sees "uploaded" finds it in the uploaded cache.
            self.cache.mark_uploaded(part.key, self.part_size)
            part.state = "uploaded"
            try:
                self.journal.part_uploaded(self.cache_key, part.index, part.tree_hash)
            except Exception as error:  # the catalog disk: recovery would ask ListParts
                self._fail(FsError(errno_for(error), f"{self.path}: journal: {error}"))

    def _fail(self, error: FsError) -> None:
        with self.lock:
            if self.error is None:
                self.error = error
                log.error("%s", error.reason)

    # ---- closing --------------------------------------------------------------------------

    def prepare_close(self) -> bool:
        """Close's local half: seal every part and journal the final size and tree hash. From
        here on a crash loses nothing: recovery finishes the upload from the cache. False for
        an empty file, which has nothing to upload."""
        with self.lock:
            failed = self.error
            if failed is None:
                self._check()
                self.state = "closing"
        if failed is not None:  # a worker failed earlier: clean up, report the same error
            self.abort()
            raise failed
        try:
            for sealing in self._sealing:  # every full part's leaves in the running hash
                sealing.result()
            if self.error is not None:
                raise self.error
            self._single = self.upload_id is None and self.size <= self.part_size
            # A small file goes out at once from staging: no trip through the pending cache.
            sealed = self._seal_the_rest(to_pending=not self._single)
            if self.size == 0:
                return False
            self.tree_hash = self._written_tree_hash()
            # One commit for 'closing' and the parts sealed just now (for a small file, all).
            self.journal.closing(self.cache_key, self.size, self.tree_hash, self._single,
                                 [(p.index, p.size, p.tree_hash) for p in sealed])
            return True
        except Exception as error:
            self._give_up(error, keep=False)

    def finish_close(self, keep_on_failure: bool = False) -> str:
        """Close's remote half: send what is left and complete the archive; its id. If that
        fails and `keep_on_failure`, the parts stay in the cache and the upload in the vault
        (the content was promised: recovery finishes it); otherwise both are dropped."""
        try:
            if self._single:
                return self._upload_single()
            for part in self._ordered_parts():
                self._submit(part)
            for part in self._ordered_parts():
                if part.future is not None:
                    part.future.result()
            if self.error is not None:
                raise self.error
            return self._complete()
        except Exception as error:
            self._give_up(error, keep=keep_on_failure)

    def _give_up(self, error: Exception, keep: bool) -> NoReturn:
        failure = error if isinstance(error, FsError) else UploadFailed(
            f"{self.path}: {error}", errno_for(error))
        self._fail(failure)
        if keep:
            self._stop()
        else:
            self.abort()
        raise self.error from None

    def _seal_the_rest(self, to_pending: bool) -> list[Part]:
        """At close: seal every part still staged (holes exist as zeros; the last part may be
        short). Their journal records are left to the caller."""
        sealed = []
        with self.lock:
            last = (self.size - 1) // self.part_size if self.size else -1
            for index in range(last + 1):
                if index not in self.parts:  # a hole never written: zeros
                    self.cache.take(self.part_size)
                    self._new_part(index)
                part = self.parts[index]
                if part.state == "staged":
                    part.size = min(self.part_size, self.size - index * self.part_size)
                    os.ftruncate(part.staging_fd(self.cache.staging_path(part.key)), part.size)
                    self._seal(part, journal=False, to_pending=to_pending)
                    sealed.append(part)
        return sealed

    def _ordered_parts(self) -> list[Part]:
        with self.lock:
            return [self.parts[i] for i in sorted(self.parts)]

    def _upload_single(self) -> str:
        part = self.parts[0]
        archive_id = self.vault.upload_archive_file(self.cache.path(part.key), part.sha256,
                                                    part.tree_hash, self.describe())
        self.cache.mark_uploaded(part.key, self.part_size)
        part.state = "uploaded"
        return self._completed(archive_id, part.tree_hash)

    def _written_tree_hash(self) -> str:
        """The tree hash of everything written, from the leaves hashed as data arrived."""
        if self._running is None:  # a part was rewritten: rebuild from every part's leaves
            self._running = treehash.TreeHasher()
            for part in self._ordered_parts():
                for leaf in part.leaves:
                    self._running.add_leaf(leaf)
        return self._running.hexdigest()

    def _complete(self) -> str:
        combined = treehash.combine_hex([p.tree_hash for p in self._ordered_parts()])
        if combined != self.tree_hash:
            raise UploadFailed(f"{self.path}: part hashes combine to {combined} but the data "
                               f"written hashes to {self.tree_hash}; not completing")
        archive_id = self.vault.complete(self.upload_id, self.size, self.tree_hash)
        return self._completed(archive_id, self.tree_hash)

    def _completed(self, archive_id: str, tree_hash: str) -> str:
        with self.lock:
            self.archive_id = archive_id
            self.tree_hash = tree_hash
            self.state = "complete"
        log.info("%s: archived, %d bytes, %d part(s)", self.path, self.size, len(self.parts))
        return archive_id

    def progress(self) -> dict:
        """A snapshot for `glacierfs status` (statusfile.py). The lock is held across an
        InitiateMultipartUpload request, so this waits for it only briefly: without it, a
        count may be one part state behind, which a progress display can live with."""
        locked = self.lock.acquire(timeout=0.05)
        try:
            parts = list(self.parts.values())
            states = [part.state for part in parts]
            return {
                "id": self.cache_key,
                "path": self.path,
                "started": self.started,
                "state": self.state,
                "upload_id": self.upload_id,
                "size": self.size,
                "parts": max(len(parts), -(-self.size // self.part_size)),
                "parts_uploaded": states.count("uploaded"),
                "parts_in_flight": states.count("uploading"),
                "parts_queued": states.count("queued"),
                "bytes_uploaded": sum(p.size for p in parts if p.state == "uploaded"),
            }
        finally:
            if locked:
                self.lock.release()

    def part_hashes(self) -> list[tuple[int, str]]:
        return [(p.size, p.tree_hash) for p in self._ordered_parts()]

    def _halt(self, drop: bool) -> tuple[list[Part], str | None]:
        """Stop this file's I/O: close its part files (under the lock: a writer checks the
        sticky error first), mark it failed, and wait for part uploads still running. Returns
        its parts and upload id; with `drop`, takes both off the file, so a second call finds
        nothing left to release."""
        with self.lock:
            parts, upload_id = list(self.parts.values()), self.upload_id
            if drop:
                self.parts, self.upload_id = {}, None
            for part in parts:
                part.close_fd()
            if self.state != "complete":
                self.state = "failed"
        for part in parts:
            if part.future is not None:
                try:
                    part.future.result()
                except Exception:
                    pass
        return parts, upload_id

    def _stop(self) -> None:
        """Stop after a failed upload whose content must not be lost: keep every part in the
        cache (reads still find them) and the multipart upload in the vault, and free the
        cache reservations: recovery (recovery.finish_upload) takes over from the journal,
        outside them."""
        parts, _ = self._halt(drop=False)
        for part in parts:
            if part.state != "uploaded":
                self.cache.release(self.part_size)

    def abort(self) -> None:
        """Give up: abort the multipart upload (best effort) and drop unsent parts."""
        parts, upload_id = self._halt(drop=True)
        if upload_id is not None:
            try:
                self.vault.abort(upload_id)
            except Exception as error:  # the orphan sweep (issue 5) finds it later
                log.warning("%s: could not abort upload %s: %s", self.path, upload_id, error)
        for part in parts:
            if part.state != "uploaded":
                try:
                    self.cache.discard(part.key)
                except OSError as error:  # left for the next mount's recovery to drop
                    log.warning("%s: could not remove part %d from the cache: %s", self.path,
                                part.index, error)
                self.cache.release(self.part_size)




