"""Snapshots of the catalog in the vault, so a lost cache dir can be rebuilt (`glacierfs recover`).

Lifecycle (docs/design.md, "Catalog snapshots"):

1. The mount takes a snapshot at unmount, and every --snapshot-interval minutes meanwhile, if
   the namespace changed since the last one: a counter that triggers bump on every change to
   `inodes` or `entries` (so "changed" survives restarts and crashes) is compared with the
   counter the last snapshot recorded.
2. The copy is made with SQLite's backup API from a separate read-only connection: in WAL mode
   that reader sees one committed state and neither waits for the mount nor blocks it.
3. The copy is gzipped and uploaded as one archive (multipart above the mount's part size)
   whose description is JSON that AWS's vault-to-S3 migration can decode (a "path") and that
   glacierfs recognises ("glacierfs": "catalog"). It has no inode: never in the namespace,
   never counted.
4. One transaction records it in `catalog_snapshots` and dooms (journal.py) every older
   snapshot whose successor is KEEP_REPLACED old; those are deleted after the commit, like any
   doomed archive.

A failure is a log line; the catalog stays "changed", so the next interval (or unmount, or
the next mount) tries again. Unmount waits for the upload but never fails because of it.
"""

from __future__ import annotations

import datetime as dt
import gzip
import itertools
import json
import logging
import shutil
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from .treehash import TreeHasher, combine_hex, file_hashes

log = logging.getLogger(__name__)

KIND = "catalog"
# A replaced snapshot stays in the vault until the one after it is this old. `glacierfs
# recover` finds snapshots in an inventory, which Glacier takes about once a day: the newest
# snapshot an inventory lists must still be there when recover asks for it. Deleting one
# sooner would save nothing: Glacier charges every archive for at least 90 days.
KEEP_REPLACED = dt.timedelta(days=2)
SNAPSHOT_DIR = ".glacierfs"  # the "path" prefix in descriptions; never a real directory

SCHEMA = [
    """
    -- The catalog's complete snapshots in the vault (snapshot.py): the newest is current. An
    -- older one is doomed (doomed_archives) once the one after it is KEEP_REPLACED old.
    CREATE TABLE IF NOT EXISTS catalog_snapshots (
        archive_id TEXT PRIMARY KEY,
        created    TEXT NOT NULL,      -- when the copy was taken (UTC), as in its description
        size       INTEGER NOT NULL,   -- bytes of the archive (gzip)
        tree_hash  TEXT NOT NULL,
        changes    INTEGER NOT NULL    -- catalog_changes.count in the copy
    )""",
    """
    -- One row: bumped by the triggers below on every change to the namespace. It differs
    -- from the newest snapshot's `changes` exactly when the catalog changed since that copy.
    CREATE TABLE IF NOT EXISTS catalog_changes (
        id    INTEGER PRIMARY KEY CHECK (id = 1),
        count INTEGER NOT NULL
    )""",
    "INSERT OR IGNORE INTO catalog_changes (id, count) VALUES (1, 0)",
    """
    -- This catalog's identity, written into each of its snapshots' descriptions: a vault
    -- mounted from two cache dirs (two machines) holds two catalogs' snapshots, and
    -- `glacierfs recover` must not take one's for the other's older ones (and doom them).
    CREATE TABLE IF NOT EXISTS catalog_identity (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        catalog_id TEXT NOT NULL       -- 16 hex digits, random
    )""",
    ("INSERT OR IGNORE INTO catalog_identity (id, catalog_id) "
     "VALUES (1, lower(hex(randomblob(8))))"),
] + [
    f"CREATE TRIGGER IF NOT EXISTS catalog_changed_{table}_{event.lower()} AFTER {event} ON "
    f"{table} BEGIN UPDATE catalog_changes SET count = count + 1 WHERE id = 1; END"
    for table in ("inodes", "entries") for event in ("INSERT", "UPDATE", "DELETE")
]


def ensure_schema(db) -> None:
    """Create the snapshot tables and triggers in a catalog database (a sqlite.Database)."""
    with db.transaction() as conn:
        for statement in SCHEMA:
            conn.execute(statement)


# ---- descriptions -------------------------------------------------------------------------

def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def describe(created: dt.datetime, catalog_id: str) -> str:
    """{"path": ".glacierfs/catalog-20261122T054754.325Z.sqlite.gz", "glacierfs": "catalog",
    "created": "2026-11-22T05:47:54.325Z", "catalog": "5f0c..."}: printable ASCII, far under
    1,024 characters."""
    compact = created.strftime("%Y%m%dT%H%M%S.") + f"{created.microsecond // 1000:03d}Z"
    return json.dumps({"path": f"{SNAPSHOT_DIR}/catalog-{compact}.sqlite.gz", "glacierfs": KIND,
                       "created": _stamp(created), "catalog": catalog_id})


def catalog_id(db) -> str:
    """The identity of a catalog (a sqlite.Database with the snapshot tables)."""
    return db.one("SELECT catalog_id FROM catalog_identity WHERE id = 1")["catalog_id"]


def same_catalog(fields: dict, other: dict) -> bool:
    """Whether two snapshots' description fields are one catalog's. Snapshots from before
    identities have none, and count as anyone's (as they did)."""
    return None in (fields.get("catalog"), other.get("catalog")) or (
        fields["catalog"] == other["catalog"])


def described(description: str | None) -> dict | None:
    """The fields of a snapshot's description; None for any other description."""
    try:
        fields = json.loads(description or "")
    except ValueError:
        return None
    return fields if is_snapshot(fields) else None


def is_snapshot(fields) -> bool:
    """Decoded JSON description fields that name a catalog snapshot (the one test of it)."""
    return (isinstance(fields, dict) and fields.get("glacierfs") == KIND
            and isinstance(fields.get("created"), str) and isinstance(fields.get("path"), str))


# ---- taking one ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    archive_id: str
    created: str
    size: int
    tree_hash: str
    changes: int
    path: str  # the description's path, for log lines


def copy_catalog(catalog_path: Path, target: Path) -> int:
    """A consistent copy of the catalog (backup API, from a read-only connection), as a plain
    single-file database. Returns the change counter in the copy."""
    target.unlink(missing_ok=True)
    source = sqlite3.connect(f"{catalog_path.absolute().as_uri()}?mode=ro", uri=True,
                             timeout=60)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)  # one step: one read transaction, one committed state
            copy.execute("PRAGMA journal_mode=DELETE")
            row = copy.execute("SELECT count FROM catalog_changes WHERE id = 1").fetchone()
        finally:
            copy.close()
    finally:
        source.close()
    return row[0] if row else 0


def compress(source: Path, target: Path) -> None:
    # mtime=0 and no name in the header: the same catalog gives the same bytes.
    with (open(source, "rb") as src, open(target, "wb") as raw,
          gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out):
        shutil.copyfileobj(src, out, 1 << 20)


def upload(vault, path: Path, description: str, part_size: int) -> tuple[str, str, int]:
    """Upload a file as one archive: UploadArchive up to `part_size`, multipart above.
    Returns (archive id, tree hash, size)."""
    size = path.stat().st_size
    if size <= part_size:
        tree, plain = file_hashes(path, plain=True)
        return vault.upload_archive_file(path, plain, tree, description), tree, size
    upload_id = vault.initiate(part_size, description)
    try:
        hashes = []
        with open(path, "rb") as src:
            for first in range(0, size, part_size):
                data = src.read(part_size)
                part = TreeHasher()
                part.update(data)
                confirmed = vault.upload_part(upload_id, first, len(data), data,
                                              part.hexdigest())
                if confirmed != part.hexdigest():
                    raise OSError(f"the vault computed tree hash {confirmed} for the part at "
                                  f"{first}, we sent {part.hexdigest()}")
                hashes.append(part.hexdigest())
        tree_hash = combine_hex(hashes)
        return vault.complete(upload_id, size, tree_hash), tree_hash, size
    except BaseException:
        try:
            vault.abort(upload_id)
        except Exception as error:  # noqa: BLE001 - the first error is the one to report
            log.warning("catalog snapshot: could not abort upload %s: %s", upload_id, error)
        raise


class Snapshotter:
    """A mount's catalog snapshots: the thread that takes them every `interval` seconds while
    the catalog changes, and the last one at unmount (stop)."""

    def __init__(self, fs, catalog_path: Path, work_dir: Path, part_size: int,
                 interval: float) -> None:
        self.fs = fs  # GlacierFS: its vault, its catalog's database, delete_archives()
        self.db = fs.catalog.db
        self.catalog_path = catalog_path
        self.work_dir = work_dir
        self.part_size = part_size
        self.interval = interval  # seconds; 0 = only at unmount
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one snapshot at a time
        self._thread: threading.Thread | None = None
        ensure_schema(self.db)

    def start(self) -> Snapshotter:
        if self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="catalog-snapshot",
                                            daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.take_if_changed()

    def stop(self) -> None:
        """At unmount: let a snapshot in progress finish, then take the last one if the
        catalog changed. Never raises: unmount must not fail because of a snapshot."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.take_if_changed(final=True)

    def changed(self) -> bool:
        count = self.db.one("SELECT count FROM catalog_changes WHERE id = 1")["count"]
        last = self.db.one("SELECT changes FROM catalog_snapshots ORDER BY created DESC "
                           "LIMIT 1")
        if last is None:  # never snapshotted: worth one if anything is in it
            return count > 0 or self.db.one("SELECT 1 FROM entries LIMIT 1") is not None
        return last["changes"] != count

    def take_if_changed(self, final: bool = False) -> Snapshot | None:
        with self._lock:
            try:
                if not self.changed():
                    return None
                # At unmount, an unreachable vault is not waited for (glacierfs umount would
                # sit silent for minutes): the next mount takes the snapshot.
                return self.take(self.fs.vault.impatient() if final else self.fs.vault)
            except Exception as error:  # noqa: BLE001 - a log line, and a retry later
                retry = ("at the next mount" if final or self.interval <= 0 else
                         f"in {self.interval / 60:g} minutes")
                log.warning("catalog snapshot failed: %s; trying again %s", error, retry)
                return None

    def take(self, vault) -> Snapshot:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        copy = self.work_dir / "catalog-copy.sqlite3"
        packed = self.work_dir / "catalog-copy.sqlite3.gz"
        created = dt.datetime.now(dt.timezone.utc)
        try:
            changes = copy_catalog(self.catalog_path, copy)
            compress(copy, packed)
            description = describe(created, catalog_id(self.db))
            archive_id, tree_hash, size = upload(vault, packed, description, self.part_size)
        finally:
            copy.unlink(missing_ok=True)
            packed.unlink(missing_ok=True)
        snapshot = Snapshot(archive_id, _stamp(created), size, tree_hash, changes,
                            json.loads(description)["path"])
        doomed = record(self.fs.catalog, snapshot)
        log.info("catalog snapshot %s uploaded: archive %s, %d bytes", snapshot.path,
                 archive_id, size)
        self.fs.delete_archives(doomed)
        return snapshot


def record(catalog, snapshot: Snapshot, older: list[Snapshot] = ()) -> list[str]:
    """In one transaction: `snapshot` is the catalog's newest snapshot (`older`: ones it does
    not know yet, as recover finds them), and every snapshot whose successor is KEEP_REPLACED
    old is doomed. Returns the doomed archive ids (to delete after the commit)."""
    # Durable: after a power cut the catalog still names its snapshot (else it is a stray).
    with catalog.db.transaction(durable=True) as conn:
        for row in (*older, snapshot):
            conn.execute("INSERT OR REPLACE INTO catalog_snapshots (archive_id, created, size, "
                         "tree_hash, changes) VALUES (?, ?, ?, ?, ?)",
                         (row.archive_id, row.created, row.size, row.tree_hash, row.changes))
        rows = conn.execute("SELECT archive_id, created FROM catalog_snapshots "
                            "ORDER BY created").fetchall()
        replaced_before = _stamp(dt.datetime.now(dt.timezone.utc) - KEEP_REPLACED)
        doomed = [row for row, successor in itertools.pairwise(rows)
                  if successor["created"] <= replaced_before]
        for row in doomed:
            catalog.journal.doom(row["archive_id"], f"{SNAPSHOT_DIR}/catalog of {row['created']}"
                                 .encode())
            conn.execute("DELETE FROM catalog_snapshots WHERE archive_id = ?",
                         (row["archive_id"],))
    return [row["archive_id"] for row in doomed]
