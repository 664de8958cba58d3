"""The local catalog: names, directories, metadata, and what each file's archive is.

Glacier archives are nameless and immutable, so the namespace lives here, in SQLite (WAL,
synchronous=FULL): a change is durable when the call that made it returns. Names are bytes
(any byte but '/' and NUL, up to 255).
"""

from __future__ import annotations

import errno
import re
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import FsError
from .journal import SCHEMA as JOURNAL_SCHEMA
from .journal import Journal
from .restore import SCHEMA as RESTORE_SCHEMA
from .sqlite import Database

ROOT_INO = 1
NAME_MAX = 255
FILE_TYPE_BITS = 0o170000  # the S_IFMT mask of st_mode
MAX_JOINED_NAMES = 48  # resolve() looks paths this deep up in one query

SCHEMA = """
-- Every file and directory; ino 1 is the root directory.
CREATE TABLE IF NOT EXISTS inodes (
    ino        INTEGER PRIMARY KEY,
    mode       INTEGER NOT NULL,       -- st_mode: file type bits and permission bits
    uid        INTEGER NOT NULL,
    gid        INTEGER NOT NULL,
    size       INTEGER NOT NULL DEFAULT 0,
    mtime_ns   INTEGER NOT NULL,
    ctime_ns   INTEGER NOT NULL,
    -- Files only. 'writing' = a new file whose first content is not in the vault yet (its
    -- upload is in the journal);
    -- 'stored' = content durable: in the archive below, or empty (archive_id NULL, size 0).
    -- Directories are always 'stored'.
    state      TEXT NOT NULL CHECK (state IN ('writing', 'stored')),
    archive_id TEXT,                   -- NULL = no archive (directory, empty file, or writing)
    tree_hash  TEXT,                   -- the archive's SHA-256 tree hash, hex
    part_size  INTEGER,                -- part size the content was cut into (cache layout)
    cache_key  TEXT,                   -- prefix of this content's part files in the cache
    symlink    BLOB                    -- symbolic links: the target; NULL for everything else
);

-- Directory entries: (parent, name) -> inode.
CREATE TABLE IF NOT EXISTS entries (
    parent INTEGER NOT NULL REFERENCES inodes(ino),
    name   BLOB NOT NULL,
    ino    INTEGER NOT NULL REFERENCES inodes(ino),
    PRIMARY KEY (parent, name)
);
CREATE INDEX IF NOT EXISTS entries_by_ino ON entries(ino);

-- Tree hash of each part of a file's current content, so cached parts can be verified on read.
CREATE TABLE IF NOT EXISTS parts (
    ino       INTEGER NOT NULL REFERENCES inodes(ino) ON DELETE CASCADE,
    idx       INTEGER NOT NULL,        -- part number from 0; covers [idx*part_size, ...)
    size      INTEGER NOT NULL,
    tree_hash TEXT NOT NULL,
    PRIMARY KEY (ino, idx)
);

-- Files libfuse renamed to .fuse_hidden + 16 hex digits (HIDDEN_NAME) because they were
-- unlinked while open; it unlinks that name at the last close, and a crash before that leaves
-- it, which the next mount removes. A file someone named so (another FUSE filesystem's
-- leftover, backed up) is not here, and stays.
CREATE TABLE IF NOT EXISTS hidden_while_open (
    ino INTEGER PRIMARY KEY REFERENCES inodes(ino) ON DELETE CASCADE
);
"""
HIDDEN_NAME = re.compile(rb"\.fuse_hidden[0-9a-f]{16}")


@dataclass(frozen=True)
class Inode:
    ino: int
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    state: str
    archive_id: str | None
    tree_hash: str | None
    part_size: int | None
    cache_key: str | None
    symlink: bytes | None

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


def _check_name(name: bytes) -> None:
    if not name or b"/" in name or b"\0" in name or name in (b".", b".."):
        raise FsError(errno.EINVAL, f"invalid name {name!r}")
    if len(name) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG, f"name is {len(name)} bytes; the limit is {NAME_MAX}")


def _given(owner: int | None) -> int | None:
    """chown's uid or gid, None when it is to stay: chown(2) passes -1 for that."""
    return None if owner is None or owner < 0 else owner


class Catalog:
    def __init__(self, path: Path, uid: int, gid: int) -> None:
        # Power-cut durability per transaction (sqlite.py): the ones marked durable are an
        # archive recorded (set_stored), an archive doomed (journal.doom) and fsync(2).
        self.db = Database(path, SCHEMA + JOURNAL_SCHEMA + RESTORE_SCHEMA,
                           always_durable=False)
        self.journal = Journal(self.db)  # same database: both can change in one transaction
        # Directory ino -> how many subdirectories it has (its st_nlink is 2 + that). Counting
        # reads every child, and the kernel asks for a directory's attributes after each file
        # written into it: in a directory of 10,000 files that was a millisecond per file.
        # Any change to directories clears it (_directories_changed, inside the change's
        # transaction); a count read across a change is not kept (the generation moved).
        self._subdirectories: dict[int, int] = {}
        self._generation = 0
        self._counts_lock = threading.Lock()
        if self.db.one("SELECT ino FROM inodes WHERE ino = ?", (ROOT_INO,)) is None:
            now = time.time_ns()
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO inodes (ino, mode, uid, gid, mtime_ns, ctime_ns, state) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'stored')",
                    (ROOT_INO, stat.S_IFDIR | 0o755, uid, gid, now, now),
                )

    def close(self) -> None:
        self.db.close()

    # ---- lookups --------------------------------------------------------------------------

    def inode(self, ino: int) -> Inode:
        row = self.db.one("SELECT * FROM inodes WHERE ino = ?", (ino,))
        if row is None:
            raise FsError(errno.ENOENT, f"inode {ino} not found")
        return Inode(**dict(row))

    def mark_hidden(self, ino: int) -> None:
        """libfuse hid this open file, unlinked, under a HIDDEN_NAME (hidden_while_open)."""
        with self.db.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO hidden_while_open (ino) VALUES (?)", (ino,))

    def unmark_hidden(self, ino: int) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM hidden_while_open WHERE ino = ?", (ino,))

    def hidden_leftovers(self) -> list[bytes]:
        """Paths of files hidden while open that are still there (their last close never
        came: the mount stopped)."""
        rows = self.db.query("SELECT e.parent, e.name FROM entries AS e JOIN hidden_while_open "
                             "AS h ON h.ino = e.ino")
        return [self.path_of(row["parent"]).rstrip(b"/") + b"/" + bytes(row["name"])
                for row in rows]

    def lookup(self, parent: int, name: bytes) -> int | None:
        row = self.db.one("SELECT ino FROM entries WHERE parent = ? AND name = ?", (parent, name))
        return row["ino"] if row else None

    def resolve(self, path: bytes) -> Inode:
        """Inode of an absolute path like b'/a/b'; ENOENT / ENOTDIR as a kernel would say."""
        names = [name for name in path.split(b"/") if name]
        if not names:
            return self.inode(ROOT_INO)
        # The kernel asks for attributes ~10 times per file rsync writes, so this is the
        # mount's most frequent catalog read, and a third of those asks are for a name that does
        # not exist yet (rsync and mkstemp look before they create). One query answers both: the
        # directories on the way are inner-joined (only directories have entries, so a match
        # passed through directories only), the last name is left-joined, so a row without a
        # leaf means "the directory is there, the name is not". SQLite joins at most 64
        # tables: deeper paths, and paths whose directories are missing, take the walk.
        if len(names) > MAX_JOINED_NAMES:
            return self._walk(path, names)
        *directories, leaf = names
        leaf_joins = (" LEFT JOIN entries leaf ON leaf.parent = p.ino AND leaf.name = ?"
                      " LEFT JOIN inodes i ON i.ino = leaf.ino")
        if directories:
            joins = "".join(f" JOIN entries e{k} ON e{k}.parent = e{k - 1}.ino AND e{k}.name = ?"
                            for k in range(1, len(directories)))
            row = self.db.one(
                f"SELECT i.*, p.mode AS parent_mode FROM entries e0{joins} JOIN inodes p "
                f"ON p.ino = e{len(directories) - 1}.ino{leaf_joins} "
                f"WHERE e0.parent = ? AND e0.name = ?",
                (*directories[1:], leaf, ROOT_INO, directories[0]))
        else:
            row = self.db.one(f"SELECT i.*, p.mode AS parent_mode FROM inodes p{leaf_joins} "
                              f"WHERE p.ino = ?", (leaf, ROOT_INO))
        if row is None:
            return self._walk(path, names)
        fields = dict(row)
        if not stat.S_ISDIR(fields.pop("parent_mode")):
            raise FsError(errno.ENOTDIR, f"{path!r}: a component is not a directory")
        if fields["ino"] is None:
            if len(leaf) > NAME_MAX:
                raise FsError(errno.ENAMETOOLONG, f"{path!r}: a name is over {NAME_MAX} bytes")
            raise FsError(errno.ENOENT, f"{path!r} does not exist")
        return Inode(**fields)

    def _walk(self, path: bytes, names: list[bytes]) -> Inode:
        """Resolve one component at a time, to say which one is missing or not a directory."""
        ino, is_dir = ROOT_INO, True
        for name in names:
            if not is_dir:
                raise FsError(errno.ENOTDIR, f"{path!r}: a component is not a directory")
            if len(name) > NAME_MAX:
                raise FsError(errno.ENAMETOOLONG, f"{path!r}: a name is over {NAME_MAX} bytes")
            row = self.db.one("SELECT i.* FROM entries e JOIN inodes i ON i.ino = e.ino "
                              "WHERE e.parent = ? AND e.name = ?", (ino, name))
            if row is None:
                raise FsError(errno.ENOENT, f"{path!r} does not exist")
            node = Inode(**dict(row))
            ino, is_dir = node.ino, node.is_dir
        return node

    def resolve_parent(self, path: bytes) -> tuple[Inode, bytes]:
        head, _, name = path.rstrip(b"/").rpartition(b"/")
        parent = self.resolve(head or b"/")
        if not parent.is_dir:
            raise FsError(errno.ENOTDIR, f"{head!r} is not a directory")
        _check_name(name)
        return parent, name

    def exists(self, ino: int) -> bool:
        return self.db.one("SELECT 1 FROM inodes WHERE ino = ?", (ino,)) is not None

    def subdirectory_count(self, ino: int) -> int:
        with self._counts_lock:
            count = self._subdirectories.get(ino)
            generation = self._generation
        if count is not None:
            return count
        count = self.db.one(
            "SELECT COUNT(*) AS n FROM entries e JOIN inodes i ON i.ino = e.ino "
            "WHERE e.parent = ? AND (i.mode & ?) = ?", (ino, FILE_TYPE_BITS, stat.S_IFDIR))["n"]
        with self._counts_lock:
            if self._generation == generation:
                self._subdirectories[ino] = count
        return count

    def _directories_changed(self) -> None:
        with self._counts_lock:
            self._generation += 1
            self._subdirectories.clear()

    def _has_children(self, ino: int) -> bool:
        return self.db.one("SELECT 1 FROM entries WHERE parent = ? LIMIT 1", (ino,)) is not None

    def children(self, ino: int) -> list[tuple[bytes, int]]:
        rows = self.db.query("SELECT name, ino FROM entries WHERE parent = ? ORDER BY name",
                             (ino,))
        return [(bytes(r["name"]), r["ino"]) for r in rows]

    def path_of(self, ino: int) -> bytes:
        """The path of an inode (first link), for archive descriptions and log lines."""
        # One query: the chain of entries from the inode up to the root.
        rows = self.db.query(
            "WITH RECURSIVE up(ino, parent, name, depth) AS ("
            " SELECT ino, parent, name, 0 FROM entries WHERE ino = ?"
            " UNION ALL SELECT e.ino, e.parent, e.name, up.depth + 1 FROM entries e"
            " JOIN up ON e.ino = up.parent WHERE up.parent != ?)"
            " SELECT name FROM up ORDER BY depth DESC", (ino, ROOT_INO))
        return b"/" + b"/".join(bytes(row["name"]) for row in rows)

    def part_hashes(self, ino: int) -> dict[int, tuple[int, str]]:
        rows = self.db.query("SELECT idx, size, tree_hash FROM parts WHERE ino = ?", (ino,))
        return {r["idx"]: (r["size"], r["tree_hash"]) for r in rows}

    def totals(self) -> tuple[int, int]:
        row = self.db.one("SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM inodes")
        return row["n"], row["bytes"]

    # ---- changes --------------------------------------------------------------------------

    def create(self, parent: int, name: bytes, mode: int, uid: int, gid: int,
               symlink: bytes | None = None) -> Inode:
        """A new empty file ('writing'), directory or symlink, linked under parent."""
        _check_name(name)
        now = time.time_ns()
        state = "writing" if stat.S_ISREG(mode) else "stored"
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM entries WHERE parent = ? AND name = ?",
                            (parent, name)).fetchone():
                raise FsError(errno.EEXIST, f"{name!r} exists")
            # A fresh number, never one an upload in the journal still names: SQLite would
            # give a removed file's number to the next file, and the upload of the removed
            # one, finishing later, would then record its content on the new file.
            cursor = conn.execute(
                "INSERT INTO inodes (ino, mode, uid, gid, size, mtime_ns, ctime_ns, state, "
                "symlink) VALUES ((SELECT MAX(ino) + 1 FROM (SELECT MAX(ino) AS ino FROM "
                "inodes UNION ALL SELECT MAX(ino) FROM uploads)), ?, ?, ?, ?, ?, ?, ?, ?)",
                (mode, uid, gid, len(symlink or b""), now, now, state, symlink),
            )
            ino = cursor.lastrowid
            conn.execute("INSERT INTO entries (parent, name, ino) VALUES (?, ?, ?)",
                         (parent, name, ino))
            if stat.S_ISDIR(mode):
                self._directories_changed()
            conn.execute("UPDATE inodes SET mtime_ns = ?, ctime_ns = ? WHERE ino = ?",
                         (now, now, parent))
        return self.inode(ino)

    def set_stored(self, ino: int, size: int, archive_id: str | None, tree_hash: str | None,
                   part_size: int, cache_key: str, parts: list[tuple[int, str]],
                   mtime_ns: int | None = None) -> None:
        """The content is durable: record its archive and part hashes in one transaction (and
        its modification time, when the writer knows it)."""
        with self.db.transaction(durable=True) as conn:
            conn.execute(
                "UPDATE inodes SET state = 'stored', size = ?, archive_id = ?, tree_hash = ?, "
                "part_size = ?, cache_key = ?, mtime_ns = coalesce(?, mtime_ns), "
                "ctime_ns = max(ctime_ns, coalesce(?, mtime_ns)) WHERE ino = ?",
                (size, archive_id, tree_hash, part_size, cache_key, mtime_ns, mtime_ns, ino),
            )
            conn.execute("DELETE FROM parts WHERE ino = ?", (ino,))
            conn.executemany(
                "INSERT INTO parts (ino, idx, size, tree_hash) VALUES (?, ?, ?, ?)",
                [(ino, idx, psize, phash) for idx, (psize, phash) in enumerate(parts)],
            )

    def set_attributes(self, ino: int, mode: int | None = None, uid: int | None = None,
                       gid: int | None = None, mtime_ns: int | None = None) -> None:
        """chmod / chown / utimens: metadata only, never a re-upload."""
        with self.db.transaction() as conn:
            # One statement, which reads what it keeps: no lost update, and no read first.
            changed = conn.execute(
                "UPDATE inodes SET mode = COALESCE((mode & ?) | ?, mode), uid = COALESCE(?, uid), "
                "gid = COALESCE(?, gid), mtime_ns = COALESCE(?, mtime_ns), ctime_ns = ? "
                "WHERE ino = ?",
                (FILE_TYPE_BITS, None if mode is None else mode & 0o7777, _given(uid), _given(gid),
                 mtime_ns, time.time_ns(), ino),
            ).rowcount
        if not changed:
            raise FsError(errno.ENOENT, f"inode {ino} not found")

    def unlink(self, parent: int, name: bytes) -> Inode:
        """Remove a non-directory entry and its inode; returns what was removed."""
        with self.db.transaction() as conn:
            node = self._existing(parent, name)
            if node.is_dir:
                raise FsError(errno.EISDIR, f"{name!r} is a directory")
            self._drop(conn, parent, name, node.ino)
        return node

    def rmdir(self, parent: int, name: bytes) -> None:
        with self.db.transaction() as conn:
            node = self._existing(parent, name)
            if not node.is_dir:
                raise FsError(errno.ENOTDIR, f"{name!r} is not a directory")
            if self._has_children(node.ino):
                raise FsError(errno.ENOTEMPTY, f"{name!r} is not empty")
            self._drop(conn, parent, name, node.ino)
            self._directories_changed()

    def _existing(self, parent: int, name: bytes) -> Inode:
        ino = self.lookup(parent, name)
        if ino is None:
            raise FsError(errno.ENOENT, f"{name!r} does not exist")
        return self.inode(ino)

    def _drop(self, conn, parent: int, name: bytes, ino: int) -> None:
        now = time.time_ns()
        conn.execute("DELETE FROM entries WHERE parent = ? AND name = ?", (parent, name))
        conn.execute("DELETE FROM parts WHERE ino = ?", (ino,))
        conn.execute("DELETE FROM inodes WHERE ino = ?", (ino,))
        conn.execute("UPDATE inodes SET mtime_ns = ?, ctime_ns = ? WHERE ino = ?",
                     (now, now, parent))

    def rename(self, old_parent: int, old_name: bytes, new_parent: int,
               new_name: bytes) -> Inode | None:
        """Move an entry (a catalog change only); returns the inode it replaced, if any."""
        _check_name(new_name)
        with self.db.transaction() as conn:
            moving = self._existing(old_parent, old_name)
            ino = moving.ino
            if moving.is_dir:
                ancestor = new_parent
                while ancestor != ROOT_INO:  # a directory cannot move into itself
                    if ancestor == ino:
                        raise FsError(errno.EINVAL, "cannot move a directory into itself")
                    row = conn.execute("SELECT parent FROM entries WHERE ino = ?",
                                       (ancestor,)).fetchone()
                    ancestor = row["parent"] if row else ROOT_INO
            target_ino = self.lookup(new_parent, new_name)
            replaced = None
            if target_ino == ino:
                return None
            if target_ino is not None:
                replaced = self.inode(target_ino)
                if replaced.is_dir and not moving.is_dir:
                    raise FsError(errno.EISDIR, f"{new_name!r} is a directory")
                if moving.is_dir and not replaced.is_dir:
                    raise FsError(errno.ENOTDIR, f"{new_name!r} is not a directory")
                if replaced.is_dir and self._has_children(target_ino):
                    raise FsError(errno.ENOTEMPTY, f"{new_name!r} is not empty")
                self._drop(conn, new_parent, new_name, target_ino)
            now = time.time_ns()
            conn.execute("UPDATE entries SET parent = ?, name = ? WHERE parent = ? AND name = ?",
                         (new_parent, new_name, old_parent, old_name))
            if moving.is_dir:  # (a directory only ever replaces a directory)
                self._directories_changed()
            conn.execute("UPDATE inodes SET ctime_ns = ? WHERE ino = ?", (now, ino))
            conn.execute("UPDATE inodes SET mtime_ns = ?, ctime_ns = ? WHERE ino IN (?, ?)",
                         (now, now, old_parent, new_parent))
        return replaced

    def remove(self, ino: int) -> None:
        """Unlink every entry of an inode and delete it (a new file whose upload failed)."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM entries WHERE ino = ?", (ino,))
            self._directories_changed()  # rare, and the inode's type is not looked up
            conn.execute("DELETE FROM parts WHERE ino = ?", (ino,))
            conn.execute("DELETE FROM inodes WHERE ino = ?", (ino,))
