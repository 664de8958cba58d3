"""The upload journal: every file content on its way to the vault, and every archive waiting
to be deleted, recorded so that a crash at any point loses nothing and leaks nothing.

It lives in the catalog's SQLite database (the same connection), so a journal change and a
catalog change can commit together. Each record is committed (it survives kill -9) before the
action that depends on it; the ones that must also survive a power cut are marked durable
(sqlite.py): the archive recorded, an archive doomed, fsync(2). The others fall back safely:
a lost 'uploaded' mark is found again with ListParts, a lost upload id leaves an orphan that
the mount reports, and an unclosed file without fsync(2) is as a local filesystem leaves it.

- a row in `uploads` exists from the moment a file is opened for writing;
- a part is recorded 'full' (with its tree hash) when it is sealed, 'uploaded' only after the
  vault confirmed that tree hash;
- 'closing' (with the size and tree hash of everything written) before the last part is sent
  and the upload completed;
- the archive id, the inode's new content and the end of the upload commit in one transaction,
  which also dooms the archive the inode held before; the doomed archive is deleted after that.
  Unlinking a file dooms its archive in the transaction that removes its name.

recovery.py reads this after a crash; docs/design.md has the crash table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .sqlite import Database

SCHEMA = """
-- One row per file content being written or uploaded. The row goes away in the transaction
-- that records the finished archive on the inode (or when the content is given up).
CREATE TABLE IF NOT EXISTS uploads (
    cache_key  TEXT PRIMARY KEY,      -- names the content's part files: CACHE_KEY.INDEX
    ino        INTEGER NOT NULL,      -- the file it becomes (may be unlinked meanwhile)
    part_size  INTEGER NOT NULL,
    -- 'writing' = open; 'closing' = close() began: size and tree_hash are final.
    state      TEXT NOT NULL CHECK (state IN ('writing', 'closing')),
    upload_id  TEXT,                  -- the multipart upload, once initiated
    single     INTEGER NOT NULL DEFAULT 0,  -- closing as one UploadArchive request
    size       INTEGER NOT NULL DEFAULT 0,  -- writing: size at the last fsync; closing: final
    tree_hash  TEXT,                  -- closing: tree hash of all the data written
    started_ns INTEGER NOT NULL
);

-- The parts of an upload that are full (sealed, hash known) or confirmed by the vault.
-- A part written again after sealing loses its row until it is sealed again.
CREATE TABLE IF NOT EXISTS upload_parts (
    cache_key TEXT NOT NULL REFERENCES uploads(cache_key) ON DELETE CASCADE,
    idx       INTEGER NOT NULL,       -- part number from 0
    size      INTEGER NOT NULL,
    tree_hash TEXT NOT NULL,
    uploaded  INTEGER NOT NULL DEFAULT 0,  -- 1 once the vault confirmed this tree hash
    PRIMARY KEY (cache_key, idx)
);

-- Archives no file names any more (unlinked, replaced, or finished after their file was
-- removed), recorded before DeleteArchive is sent and removed once the vault confirmed it.
CREATE TABLE IF NOT EXISTS doomed_archives (
    archive_id TEXT PRIMARY KEY,
    path       BLOB NOT NULL,         -- the file it held, for log lines
    since_ns   INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class JournalPart:
    index: int
    size: int
    tree_hash: str
    uploaded: bool


@dataclass(frozen=True)
class JournalEntry:
    cache_key: str
    ino: int
    part_size: int
    state: str
    upload_id: str | None
    single: bool
    size: int
    tree_hash: str | None
    parts: dict[int, JournalPart] = field(default_factory=dict)


class Journal:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- one upload, as it goes -----------------------------------------------------------

    def begin(self, cache_key: str, ino: int, part_size: int) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO uploads (cache_key, ino, part_size, state, started_ns) "
                "VALUES (?, ?, ?, 'writing', ?)", (cache_key, ino, part_size, time.time_ns()))

    def part_sealed(self, cache_key: str, index: int, size: int, tree_hash: str) -> None:
        # A part sealed again with the same bytes (recovery checks every cached part) is still
        # the part the vault confirmed: only a new tree hash unconfirms it. Resetting it made
        # a second recovery miss that Complete had happened, and give the file up.
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO upload_parts (cache_key, idx, size, tree_hash) "
                         "VALUES (?, ?, ?, ?) ON CONFLICT (cache_key, idx) DO UPDATE SET "
                         "uploaded = uploaded AND tree_hash = excluded.tree_hash AND "
                         "size = excluded.size, size = excluded.size, "
                         "tree_hash = excluded.tree_hash", (cache_key, index, size, tree_hash))

    def part_reopened(self, cache_key: str, index: int) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM upload_parts WHERE cache_key = ? AND idx = ?",
                         (cache_key, index))

    def initiated(self, cache_key: str, upload_id: str | None) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE uploads SET upload_id = ? WHERE cache_key = ?",
                         (upload_id, cache_key))

    def part_uploaded(self, cache_key: str, index: int, tree_hash: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE upload_parts SET uploaded = 1 WHERE cache_key = ? AND idx = ? "
                         "AND tree_hash = ?", (cache_key, index, tree_hash))

    def synced(self, cache_key: str, size: int) -> None:
        with self.db.transaction(durable=True) as conn:  # fsync(2)
            conn.execute("UPDATE uploads SET size = ? WHERE cache_key = ?", (size, cache_key))

    def cut(self, cache_key: str, size: int) -> None:
        """A truncate below the size the last fsync recorded: recovery takes that size, and
        would grow the file back with zeros."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE uploads SET size = ? WHERE cache_key = ? AND size > ?",
                         (size, cache_key, size))

    def closing(self, cache_key: str, size: int, tree_hash: str, single: bool,
                sealed: list[tuple[int, int, str]] = ()) -> None:
        """close() began: the final size and tree hash, with the parts sealed by the close
        (index, size, tree hash), in one commit."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE uploads SET state = 'closing', size = ?, tree_hash = ?, "
                         "single = ? WHERE cache_key = ?",
                         (size, tree_hash, int(single), cache_key))
            for index, part_size, part_hash in sealed:
                self.part_sealed(cache_key, index, part_size, part_hash)

    def supersede(self, cache_key: str, ino: int) -> list[JournalEntry]:
        """Inside the transaction that records `cache_key` on `ino`: end the uploads of `ino`
        begun before it, and return them. Such an upload is one whose own recording failed
        (a bug, a full disk) before the file was written again: recorded later (the next
        mount finishes every upload the journal holds) it would undo the newer content."""
        older = [row["cache_key"] for row in self.db.query(
            "SELECT cache_key FROM uploads WHERE ino = ? AND cache_key != ? AND started_ns <= "
            "(SELECT started_ns FROM uploads WHERE cache_key = ?)", (ino, cache_key, cache_key))]
        if not older:
            return []  # nearly always: one query per recorded file
        entries = [entry for entry in self.entries() if entry.cache_key in older]
        for key in older:
            self.end(key)
        return entries

    def end(self, cache_key: str) -> None:
        """The content is recorded on its inode, or given up: forget the upload."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM uploads WHERE cache_key = ?", (cache_key,))

    # ---- after a crash --------------------------------------------------------------------

    def entries(self) -> list[JournalEntry]:
        rows = self.db.query("SELECT * FROM uploads ORDER BY started_ns")
        parts: dict[str, dict[int, JournalPart]] = {}
        for row in self.db.query("SELECT * FROM upload_parts ORDER BY cache_key, idx"):
            parts.setdefault(row["cache_key"], {})[row["idx"]] = JournalPart(
                row["idx"], row["size"], row["tree_hash"], bool(row["uploaded"]))
        return [
            JournalEntry(row["cache_key"], row["ino"], row["part_size"], row["state"],
                         row["upload_id"], bool(row["single"]), row["size"], row["tree_hash"],
                         parts.get(row["cache_key"], {}))
            for row in rows
        ]

    def upload_ids(self) -> set[str]:
        rows = self.db.query("SELECT upload_id FROM uploads WHERE upload_id IS NOT NULL")
        return {row["upload_id"] for row in rows}

    # ---- archives to delete ---------------------------------------------------------------

    def doom(self, archive_id: str, path: bytes) -> None:
        # Durable before DeleteArchive: a power cut must not bring back a name whose archive
        # is gone. The transaction it joins (the unlink, rename, overwrite) is durable with it.
        with self.db.transaction(durable=True) as conn:
            conn.execute("INSERT OR IGNORE INTO doomed_archives (archive_id, path, since_ns) "
                         "VALUES (?, ?, ?)", (archive_id, path, time.time_ns()))

    def doomed(self) -> list[tuple[str, bytes]]:
        rows = self.db.query("SELECT archive_id, path FROM doomed_archives ORDER BY since_ns")
        return [(row["archive_id"], bytes(row["path"])) for row in rows]

    def deleted(self, archive_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM doomed_archives WHERE archive_id = ?", (archive_id,))
