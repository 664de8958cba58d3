"""After a crash: finish every upload the journal holds, delete doomed archives, find orphans.

Runs when a mount starts, before the filesystem is served, so nothing else touches these files
meanwhile. For each journaled upload (docs/design.md has the crash table):

- its file was unlinked meanwhile: abort the upload, drop its parts;
- otherwise the content is what the cache holds (like a local filesystem after a crash): for
  'closing' exactly the final size and tree hash recorded at close, for 'writing' everything
  written so far, holes reading as zeros. Each cached part is checked against the tree hash the
  journal recorded when it was sealed; a part the cache lost is taken from the vault only if
  the journal says the vault confirmed it and ListParts still shows that hash;
- an upload the vault still has gets only its missing parts, then Complete (a Complete that
  already happened is repeated, which returns the same archive: no second archive). If the
  vault forgot it (expired, aborted), a new one is started from the cached parts;
- anything that cannot be proven right is not completed: the file fails with a log line (a new
  file disappears, an overwritten file keeps its old content).
Errors talking to the vault are not per-file failures: they stop the mount with a message, and
the journal is left for the next try.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from . import treehash
from .archive_names import described_path
from .description import describe
from .journal import JournalEntry
from .vault import error_code, is_not_found

log = logging.getLogger(__name__)


# What the vault answers a repeated Complete of an upload it never completed: it does not
# know the upload (expired, aborted), or its parts do not make that archive.
REFUSED_COMPLETE = {"ResourceNotFoundException", "InvalidParameterValueException",
                    "MissingParameterValueException"}


class Unrecoverable(Exception):
    """This file's content cannot be put together and proven right."""


@dataclass
class _Part:
    index: int
    size: int
    tree_hash: str
    sha256: str = ""
    key: str | None = None  # its file in the cache, if the cache has it (and it is sound)
    in_vault: bool = False  # the upload in the vault has this part with this hash
    corrupt: bool = False  # the cache has it, but not as it was written


def recover(fs) -> int:
    """Finish or settle every journaled upload of `fs` (a GlacierFS), then delete doomed
    archives. Returns how many uploads were settled."""
    _remove_hidden_leftovers(fs)
    entries = fs.journal.entries()
    if entries:
        log.info("finishing %d upload(s) interrupted by a crash", len(entries))
    for entry in entries:
        _Recovery(fs, entry).run()
    _settle_unjournaled_writers(fs)
    _sweep_unsent_parts(fs)
    fs.delete_archives()
    return len(entries)


def finish_upload(fs, cache_key: str, modified_ns=None) -> None:
    """Finish (or settle) one journaled upload while the mount runs: that of a close that had
    returned before its upload failed (--async-close, fs.py). Vault errors propagate (try
    again later); a content that cannot be proven right is given up, as after a crash.
    `modified_ns()`, if given, is the file's modification time to record with it."""
    for entry in fs.journal.entries():
        if entry.cache_key == cache_key:
            _Recovery(fs, entry, modified_ns).run()


def settle_superseded(fs, entry: JournalEntry, path: bytes) -> None:
    """Clean up after an upload that a later content of its file replaced (journal.supersede
    took it out of the journal): abort it, or delete its archive if it became one, and drop
    its parts. Best effort: what a failure leaves, the next mount sweeps (parts) or lists as
    an orphan (an upload)."""
    shown = path.decode("utf-8", "backslashreplace")
    log.warning("%s: an earlier content whose recording failed is replaced by the one just "
                "recorded; dropping its upload (an archive it made in one request stays in "
                "the vault, unnamed)", shown)
    try:
        _Recovery(fs, entry).settle_unnamed()
    except Exception as error:  # noqa: BLE001 - the journal no longer holds it either way
        log.warning("%s: the replaced upload could not be cleaned up: %s", shown, error)


def find_orphans(vault, journal) -> list[dict]:
    """Multipart uploads in the vault that the journal does not know, each with its 'Path'
    decoded from the description where it names one."""
    known = journal.upload_ids()
    orphans = [u for u in vault.list_uploads() if u["MultipartUploadId"] not in known]
    for upload in orphans:
        upload["Path"] = described_path(upload.get("ArchiveDescription") or "")
    return orphans


def _remove_hidden_leftovers(fs) -> None:
    # No file is open before a mount starts: a file libfuse hid because it was unlinked while
    # open, still there, was deleted while open when the daemon died. Finish the deletion.
    for path in fs.catalog.hidden_leftovers():
        log.info("%s: deleted while open when the mount stopped; removing it",
                 path.decode("utf-8", "backslashreplace"))
        fs.unlink(path)


def _sweep_unsent_parts(fs) -> None:
    # Every upload is settled now, so nothing in staging or pending belongs to anyone: these
    # are parts a failed file could not remove (a full disk), or index rows naming no file.
    for key in fs.cache.unsent_keys():
        log.info("cache: removing leftover part %s", key)
        fs.cache.discard(key)
    if removed := fs.cache.sweep_unindexed():
        log.info("cache: removed %d part file(s) a crash left unindexed", removed)


def _settle_unjournaled_writers(fs) -> None:
    # A new file whose journal entry never committed (a catalog from before the journal):
    # it had no content in the vault, so it is an empty file, as on a local filesystem.
    for row in fs.catalog.db.query("SELECT ino FROM inodes WHERE state = 'writing' AND ino "
                                   "NOT IN (SELECT ino FROM uploads)"):
        fs.catalog.set_stored(row["ino"], 0, None, None, fs.config.part_size, "", [])


class _Recovery:
    def __init__(self, fs, entry: JournalEntry, modified_ns=None) -> None:
        self.fs = fs
        self.entry = entry
        self.modified_ns = modified_ns
        self.part_size = entry.part_size
        self.upload_id = entry.upload_id
        exists = fs.catalog.exists(entry.ino)
        self.exists = exists
        self.path = fs.catalog.path_of(entry.ino) if exists else b"(removed)"
        self.shown = self.path.decode("utf-8", "backslashreplace")

    def run(self) -> None:
        if not self.exists:
            self._settle_removed()
            return
        try:
            local = self._cached_parts()
            size = self._size(local)
            if size == 0:
                self._settle_empty()
                return
            parts = self._plan(local, size)
            archive_id, tree_hash = self._upload(parts, size)
        except Unrecoverable as why:
            log.error("%s: cannot be recovered after the crash: %s; %s", self.shown, why,
                      "it keeps its previous content" if self._overwrite() else
                      "the file is removed")
            self._drop()
            return
        self.fs.record_archive(self.entry.cache_key, self.entry.ino, self.path, size,
                               archive_id, tree_hash, self.part_size,
                               [(p.size, p.tree_hash) for p in parts], self.modified_ns)
        log.info("recovered %s: %d bytes", self.shown, size)

    # ---- what the cache holds -------------------------------------------------------------

    def _cached_parts(self) -> dict[int, str]:
        """index -> cache key of every part file of this upload still in the cache."""
        prefix = f"{self.entry.cache_key}."
        return {int(key[len(prefix):]): key for key in self.fs.cache.keys(prefix)
                if self.fs.cache.path(key) is not None}

    def _size(self, local: dict[int, str]) -> int:
        if self.entry.state == "closing":
            return self.entry.size
        ends = [self.entry.size]  # at the last fsync: may end in a hole
        for index, key in local.items():
            ends.append(index * self.part_size + os.path.getsize(self.fs.cache.path(key)))
        for index, part in self.entry.parts.items():
            ends.append(index * self.part_size + part.size)
        return max(ends)

    def _settle_removed(self) -> None:
        # Its name went while the upload ran.
        if self.settle_unnamed():
            log.info("%s: removed after its upload completed; deleting the archive", self.shown)
        else:
            log.info("%s: removed while it was being written; dropping its upload", self.shown)

    def settle_unnamed(self) -> bool:
        """Nothing will name this content (its file was removed, or a later content replaced
        it): it is never recorded. An upload that completed can no longer be aborted (Glacier
        refuses, and the mount would never start): Complete, repeated, gives the archive, which
        is doomed and deleted; any other upload is aborted. Its parts and its journal row go.
        Returns whether it had completed."""
        archive_id = self._completed_before()
        if archive_id is None:
            self._drop()
            return False
        with self.fs.catalog.db.transaction():
            self.fs.journal.doom(archive_id, self.path)
            self.fs.journal.end(self.entry.cache_key)
        self.fs.delete_archives([archive_id])
        self._discard_parts()
        return True

    def _overwrite(self) -> bool:
        return self.fs.catalog.inode(self.entry.ino).state == "stored"

    def _settle_empty(self) -> None:
        if self._overwrite():  # opened with O_TRUNC, nothing written yet: keep the old content
            log.info("%s: nothing was written before the crash; it keeps its content",
                     self.shown)
            self._drop()
        else:
            self.fs.record_archive(self.entry.cache_key, self.entry.ino, self.path, 0, None,
                                   None, self.part_size, [])
            log.info("recovered %s: 0 bytes", self.shown)

    def _plan(self, local: dict[int, str], size: int) -> list[_Part]:
        """Every part of the content: its hashes, and where its bytes are."""
        cache = self.fs.cache
        count = (size + self.part_size - 1) // self.part_size
        for index in [i for i in local if i >= count]:  # cut off by a truncate
            cache.discard(local.pop(index))
        parts = []
        for index in range(count):
            part_size = min(self.part_size, size - index * self.part_size)
            journaled = self.entry.parts.get(index)
            key = local.get(index)
            if key is None and journaled is None:  # never written: a hole of zeros
                key = f"{self.entry.cache_key}.{index}"
                open(cache.staging_path(key), "wb").close()
            if key is None:  # only the vault can have it (checked against ListParts later)
                parts.append(_Part(index, journaled.size, journaled.tree_hash))
                continue
            staged = cache.staging_path(key)
            if staged.exists():  # still being written at the crash: take it as it is
                os.truncate(staged, part_size)
                cache.seal(key)
            tree_hash, sha256 = treehash.file_hashes(cache.path(key), plain=True)
            if os.path.getsize(cache.path(key)) != part_size:
                raise Unrecoverable(f"cached part {index} has the wrong size")
            if journaled is not None and tree_hash != journaled.tree_hash:
                # Corrupt. The vault may still have the part as written (checked later).
                log.warning("%s: cached part %d does not match the tree hash recorded when it "
                            "was written", self.shown, index)
                parts.append(_Part(index, journaled.size, journaled.tree_hash, corrupt=True))
                continue
            parts.append(_Part(index, part_size, tree_hash, sha256, key))
            self.fs.journal.part_sealed(self.entry.cache_key, index, part_size, tree_hash)
        return parts

    # ---- what the vault holds -------------------------------------------------------------

    def _upload(self, parts: list[_Part], size: int) -> tuple[str, str]:
        tree_hash = treehash.combine_hex([p.tree_hash for p in parts])
        if self.entry.tree_hash and tree_hash != self.entry.tree_hash:
            raise Unrecoverable(f"the cached parts hash to {tree_hash}, but the data written "
                                f"hashed to {self.entry.tree_hash}")
        vault = self.fs.vault
        archive_id = self._completed_before()
        if archive_id is not None:
            for part in parts:
                if part.key is not None:
                    self.fs.cache.mark_uploaded(part.key, 0)
            return archive_id, tree_hash
        held = self._vault_parts()
        for part in parts:
            part.in_vault = held.get(part.index * self.part_size) == (part.size, part.tree_hash)
        missing = [p for p in parts if not p.in_vault and p.key is None]
        if missing:
            part = missing[0]
            raise Unrecoverable(
                f"cached part {part.index} is corrupt and the vault does not have it"
                if part.corrupt else
                f"part {part.index} left the cache and the vault does not have it")
        if self.upload_id is None and len(parts) == 1:
            return self._upload_single(parts[0]), tree_hash
        if self.upload_id is None:
            self.upload_id = vault.initiate(self.part_size, self._description())
            self.fs.journal.initiated(self.entry.cache_key, self.upload_id)
        for part in parts:
            if not part.in_vault:
                self._send(part)
            elif part.key is not None:  # sent before the crash: cache it as uploaded
                self.fs.cache.mark_uploaded(part.key, 0)
        return vault.complete(self.upload_id, size, tree_hash), tree_hash

    def _completed_before(self) -> str | None:
        """The archive, if the crash may have come after Complete (closing, every part
        confirmed): repeating Complete gives the same archive, and fails if it never
        happened."""
        entry = self.entry
        count = -(-entry.size // self.part_size)
        if self.upload_id is None or entry.state != "closing" or not entry.tree_hash or not all(
                i in entry.parts and entry.parts[i].uploaded for i in range(count)):
            return None
        try:
            return self.fs.vault.complete(self.upload_id, entry.size, entry.tree_hash)
        except Exception as error:
            # Only the vault's no (the upload is unknown, or cannot be completed so) says
            # Complete never happened. Anything else (503, throttling after botocore's
            # retries) says nothing: taken as a no, a completed file whose parts left the
            # cache was given up. It stops the mount instead, the journal kept for next time.
            if error_code(error) not in REFUSED_COMPLETE:
                raise
        return None

    def _vault_parts(self) -> dict[int, tuple[int, str]]:
        if self.upload_id is None:
            return {}
        try:
            return self.fs.vault.list_parts(self.upload_id)
        except Exception as error:
            if not is_not_found(error):
                raise
        log.warning("%s: the vault no longer has upload %s (expired or aborted); starting a "
                    "new one from the cache", self.shown, self.upload_id)
        self.upload_id = None
        self.fs.journal.initiated(self.entry.cache_key, None)
        return {}

    def _send(self, part: _Part) -> None:
        path = self.fs.cache.path(part.key)
        confirmed = self.fs.vault.upload_part_file(self.upload_id, part.index * self.part_size,
                                                   path, part.size, part.sha256, part.tree_hash)
        if confirmed != part.tree_hash:
            raise Unrecoverable(f"the vault computed tree hash {confirmed} for part "
                                f"{part.index}, the cache has {part.tree_hash}")
        self.fs.cache.mark_uploaded(part.key, 0)
        self.fs.journal.part_uploaded(self.entry.cache_key, part.index, part.tree_hash)

    def _upload_single(self, part: _Part) -> str:
        if self.entry.single:
            # `single` is journaled at close, before the request: it may never have left.
            log.warning("%s: it may have been sent as one archive by an earlier try (cut short "
                        "by a crash or a failure), with no confirmed result; if that request "
                        "had arrived, the vault now holds it twice (`glacierfs inventory` lists "
                        "archives the catalog does not know)", self.shown)
        archive_id = self.fs.vault.upload_archive_file(self.fs.cache.path(part.key),
                                                       part.sha256, part.tree_hash,
                                                       self._description())
        self.fs.cache.mark_uploaded(part.key, 0)
        return archive_id

    def _description(self) -> str:
        return describe(self.path, self.fs.catalog.inode(self.entry.ino).mtime_ns / 1e9)

    # ---- giving up ------------------------------------------------------------------------

    def _drop(self) -> None:
        if self.upload_id is not None:
            try:
                self.fs.vault.abort(self.upload_id)
            except Exception as error:
                if not is_not_found(error):
                    raise
        self._discard_parts()
        self.fs.give_up(self.entry.cache_key, self.entry.ino)

    def _discard_parts(self) -> None:
        for key in self.fs.cache.keys(f"{self.entry.cache_key}."):
            self.fs.cache.discard(key)
