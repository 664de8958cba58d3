"""Vaults, archives and multipart uploads of the local vault service (glacier-api.md §2-§3).

Lock order: an upload's own lock (held while a part is committed and during Complete), then the
database lock (held only for single statements or short transactions). Request bodies are
streamed to disk with no lock held.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import BinaryIO

from .. import treehash
from .blobs import BlobStore, Ingested
from .config import ServerConfig
from .database import SCHEMA, Database, encode_marker, iso_ms, marker_position
from .errors import (
    InvalidParameterValue,
    LimitExceeded,
    MissingParameterValue,
    ResourceNotFound,
    vault_not_found,
)
from . import validation

ARCHIVE_ID_BYTES = 103  # 138 URL-safe characters, as the service's archive ids
UPLOAD_ID_BYTES = 69  # 92 characters, as upload and job ids
LIST_DEFAULTS = {"vaults": 10, "uploads": 50, "parts": 50, "jobs": 50}
MAX_VAULTS = 1000  # per account, as the service (glacier-api.md §2.1)
# Finished uploads stay answerable (repeat Complete, repeat Abort) this long, then go.
FINISHED_UPLOAD_GRACE = 3600.0
SWEEP_INTERVAL = 1.0


def new_id(nbytes: int) -> str:
    return secrets.token_urlsafe(nbytes)


class Store:
    def __init__(self, config: ServerConfig, clock=time.time) -> None:
        self.config = config
        self.clock = clock
        data_dir = Path(config.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(data_dir / "glacierfs-server.sqlite3", SCHEMA)
        self.blobs = BlobStore(data_dir)
        self._upload_locks: dict[int, threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()
        self._last_sweep = 0.0
        self.sweep(force=True)
        self.blobs.sweep(self._referenced_blobs())

    # ---- housekeeping -------------------------------------------------------------------

    def _referenced_blobs(self) -> set[str]:
        names = set()
        for sql in (
            "SELECT blob FROM archives WHERE blob IS NOT NULL",
            "SELECT blob FROM parts",
            "SELECT output_blob AS blob FROM jobs WHERE output_blob IS NOT NULL",
        ):
            names.update(row["blob"] for row in self.db.query(sql))
        return names

    def sweep(self, force: bool = False) -> None:
        """Expire idle uploads and forget finished ones; cheap enough to call per request."""
        now = self.clock()
        if not force and now - self._last_sweep < SWEEP_INTERVAL:
            return
        self._last_sweep = now
        idle = now - self.config.upload_expiry
        with self.db.transaction() as conn:
            blobs = [
                r["blob"]
                for r in conn.execute(
                    "SELECT p.blob FROM parts p JOIN uploads u ON u.id = p.upload_id "
                    "WHERE u.state = 'in_progress' AND u.last_activity_at < ?",
                    (idle,),
                )
            ]
            conn.execute(
                "DELETE FROM uploads WHERE (state = 'in_progress' AND last_activity_at < ?) "
                "OR (state != 'in_progress' AND last_activity_at < ?)",
                (idle, now - FINISHED_UPLOAD_GRACE),
            )
            # Job output stays downloadable for at least 24 h after completion (§3.5).
            old_jobs = [
                r["output_blob"]
                for r in conn.execute(
                    "SELECT output_blob FROM jobs WHERE ready_at < ?", (now - 24 * 3600,)
                )
            ]
            conn.execute("DELETE FROM jobs WHERE ready_at < ?", (now - 24 * 3600,))
        for name in blobs + old_jobs:
            self.blobs.remove(name)

    def _upload_lock(self, row_id: int) -> threading.Lock:
        with self._locks_guard:
            return self._upload_locks[row_id]

    # ---- vaults -------------------------------------------------------------------------

    def vault_row(self, name: str):
        row = self.db.one("SELECT * FROM vaults WHERE name = ?", (name,))
        if row is None:
            raise vault_not_found(self.config.vault_arn(name))
        return row

    def create_vault(self, name: str) -> None:
        validation.vault_name(name)
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM vaults WHERE name = ?", (name,)).fetchone():
                return  # creating a vault that exists succeeds and changes nothing
            if conn.execute("SELECT COUNT(*) FROM vaults").fetchone()[0] >= MAX_VAULTS:
                raise LimitExceeded(f"The maximum number of vaults ({MAX_VAULTS}) for this "
                                    "account has been reached")
            conn.execute("INSERT INTO vaults (name, created_at) VALUES (?, ?)",
                         (name, self.clock()))

    def describe_vault_row(self, row) -> dict:
        inventoried = row["last_inventory_at"] is not None
        return {
            "VaultARN": self.config.vault_arn(row["name"]),
            "VaultName": row["name"],
            "CreationDate": iso_ms(row["created_at"]),
            "LastInventoryDate": iso_ms(row["last_inventory_at"]) if inventoried else None,
            "NumberOfArchives": row["inventory_count"],
            "SizeInBytes": row["inventory_size"],
        }

    def describe_vault(self, name: str) -> dict:
        return self.describe_vault_row(self.vault_row(name))

    def list_vaults(self, marker: str | None, limit: str | None) -> dict:
        count = validation.list_limit(limit, LIST_DEFAULTS["vaults"], LIST_DEFAULTS["vaults"])
        start = ""
        if marker:
            prefix = self.config.vault_arn("")
            if not marker.startswith(prefix):
                raise InvalidParameterValue(f"Invalid marker: {marker}")
            start = marker[len(prefix):]
        rows = self.db.query(
            "SELECT * FROM vaults WHERE name >= ? ORDER BY name LIMIT ?", (start, count + 1)
        )
        more = rows[count:] if len(rows) > count else []
        return {
            "VaultList": [self.describe_vault_row(r) for r in rows[:count]],
            "Marker": self.config.vault_arn(more[0]["name"]) if more else None,
        }

    def delete_vault(self, name: str) -> None:
        row = self.db.one("SELECT * FROM vaults WHERE name = ?", (name,))
        if row is None:
            return  # idempotent, as on the service
        present = self.db.one(
            "SELECT COUNT(*) AS n FROM archives WHERE vault_id = ? AND deleted_at IS NULL",
            (row["id"],),
        )["n"]
        written_since_inventory = row["last_write_at"] is not None and (
            row["last_inventory_at"] is None or row["last_write_at"] > row["last_inventory_at"]
        )
        if present or written_since_inventory:
            raise InvalidParameterValue(
                f"Vault not empty or recently written to: {self.config.vault_arn(name)}"
            )
        with self.db.transaction() as conn:
            blobs = [
                r[0]
                for r in conn.execute(
                    "SELECT p.blob FROM parts p JOIN uploads u ON u.id = p.upload_id "
                    "WHERE u.vault_id = ? UNION ALL SELECT output_blob FROM jobs "
                    "WHERE vault_id = ? AND output_blob IS NOT NULL",
                    (row["id"], row["id"]),
                )
            ]
            conn.execute("DELETE FROM vaults WHERE id = ?", (row["id"],))
        for name_ in blobs:
            self.blobs.remove(name_)

    # ---- archives -----------------------------------------------------------------------

    def _check_body(self, body: Ingested, tree_hash: str, content_sha256: str | None) -> None:
        if content_sha256 is not None and body.sha256 != content_sha256.lower():
            raise InvalidParameterValue(
                f"Checksum mismatch for x-amz-content-sha256: expected {content_sha256}, "
                f"computed {body.sha256}"
            )
        if body.tree_hash != tree_hash:
            raise InvalidParameterValue(
                f"Checksum mismatch: expected {tree_hash}, computed {body.tree_hash}"
            )

    def _add_archive(self, conn, vault_id: int, description: str, size: int, tree_hash: str,
                     blob: str) -> str:
        archive_id = new_id(ARCHIVE_ID_BYTES)
        now = self.clock()
        conn.execute(
            "INSERT INTO archives (archive_id, vault_id, description, size, tree_hash, "
            "created_at, blob) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (archive_id, vault_id, description, size, tree_hash, now, blob),
        )
        conn.execute("UPDATE vaults SET last_write_at = ? WHERE id = ?", (now, vault_id))
        return archive_id

    def upload_archive(self, vault: str, description: str, stream: BinaryIO, length: int,
                       tree_hash: str, content_sha256: str | None) -> str:
        vault_id = self.vault_row(vault)["id"]
        if length < 1 or length > validation.MAX_ARCHIVE_SIZE:
            raise InvalidParameterValue(f"Invalid Content-Length: {length}")
        body = self.blobs.ingest(stream, length)
        try:
            self._check_body(body, tree_hash, content_sha256)
            blob = self.blobs.commit(body.temp_path)
        except BaseException:
            self.blobs.discard(body.temp_path)
            raise
        try:
            with self.db.transaction() as conn:
                return self._add_archive(conn, vault_id, description, length, tree_hash, blob)
        except BaseException:
            self.blobs.remove(blob)
            raise

    def archive_row(self, vault_row, archive_id: str):
        """A present archive of this vault, or the service's errors."""
        row = self.db.one("SELECT * FROM archives WHERE archive_id = ?", (archive_id,))
        if row is not None and row["vault_id"] != vault_row["id"]:
            raise InvalidParameterValue(
                f"Invalid vault name: {self.config.vault_arn(vault_row['name'])}"
            )
        if row is None or row["deleted_at"] is not None:
            raise ResourceNotFound(f"The archive ID was not found: {archive_id}")
        return row

    def delete_archive(self, vault: str, archive_id: str) -> None:
        vault_row = self.vault_row(vault)
        row = self.db.one("SELECT * FROM archives WHERE archive_id = ?", (archive_id,))
        if row is not None and row["deleted_at"] is not None and row["vault_id"] == vault_row["id"]:
            return  # deleting twice is not an error
        row = self.archive_row(vault_row, archive_id)
        now = self.clock()
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE archives SET deleted_at = ?, blob = NULL WHERE id = ?", (now, row["id"])
            )
            conn.execute("UPDATE vaults SET last_write_at = ? WHERE id = ?", (now, row["vault_id"]))
        self.blobs.remove(row["blob"])

    # ---- multipart uploads --------------------------------------------------------------

    def initiate_upload(self, vault: str, description: str | None, part_size: int) -> str:
        vault_id = self.vault_row(vault)["id"]
        upload_id = new_id(UPLOAD_ID_BYTES)
        now = self.clock()
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO uploads (upload_id, vault_id, description, part_size, created_at, "
                "last_activity_at, state) VALUES (?, ?, ?, ?, ?, ?, 'in_progress')",
                (upload_id, vault_id, description, part_size, now, now),
            )
        return upload_id

    def upload_row(self, vault_row, upload_id: str, states=("in_progress",)):
        row = self.db.one(
            "SELECT * FROM uploads WHERE upload_id = ? AND vault_id = ?",
            (upload_id, vault_row["id"]),
        )
        if row is None or row["state"] not in states:
            raise ResourceNotFound(f"The upload ID was not found: {upload_id}")
        return row

    def upload_part(self, vault: str, upload_id: str, content_range: str | None, stream: BinaryIO,
                    length: int, tree_hash: str, content_sha256: str | None) -> str:
        vault_row = self.vault_row(vault)
        upload = self.upload_row(vault_row, upload_id)
        first, last = validation.content_range(content_range, length, upload["part_size"])
        body = self.blobs.ingest(stream, length)
        try:
            self._check_body(body, tree_hash, content_sha256)
            blob = self.blobs.commit(body.temp_path)
        except BaseException:
            self.blobs.discard(body.temp_path)
            raise
        replaced = None
        try:
            with self._upload_lock(upload["id"]):
                # Re-check: the upload may have been aborted or completed while we read.
                self.upload_row(vault_row, upload_id)
                with self.db.transaction() as conn:
                    old = conn.execute(
                        "SELECT blob FROM parts WHERE upload_id = ? AND first_byte = ?",
                        (upload["id"], first),
                    ).fetchone()
                    replaced = old["blob"] if old else None
                    conn.execute(
                        "INSERT OR REPLACE INTO parts (upload_id, first_byte, last_byte, "
                        "tree_hash, blob) VALUES (?, ?, ?, ?, ?)",
                        (upload["id"], first, last, tree_hash, blob),
                    )
                    conn.execute(
                        "UPDATE uploads SET last_activity_at = ? WHERE id = ?",
                        (self.clock(), upload["id"]),
                    )
        except BaseException:
            self.blobs.remove(blob)
            raise
        self.blobs.remove(replaced)
        return body.tree_hash

    def complete_upload(self, vault: str, upload_id: str, archive_size: str | None,
                        tree_hash: str) -> tuple[str, str]:
        vault_row = self.vault_row(vault)
        upload = self.upload_row(vault_row, upload_id, states=("in_progress", "completed"))
        if archive_size is None:
            raise MissingParameterValue("Required header x-amz-archive-size is missing")
        try:
            size = validation.whole_number(archive_size)
        except ValueError:
            raise InvalidParameterValue(f"Invalid x-amz-archive-size: {archive_size}") from None
        with self._upload_lock(upload["id"]):
            upload = self.upload_row(vault_row, upload_id, states=("in_progress", "completed"))
            if upload["state"] == "completed":
                # A repeated Complete returns the same archive (the call is idempotent).
                if upload["archive_size"] == size and upload["archive_hash"] == tree_hash:
                    return upload["archive_id"], tree_hash
                raise InvalidParameterValue(
                    f"The upload ID was already completed with another size or tree hash: "
                    f"{upload_id}"
                )
            parts = self.db.query(
                "SELECT * FROM parts WHERE upload_id = ? ORDER BY first_byte", (upload["id"],)
            )
            self._check_parts_cover(parts, upload["part_size"], size)
            combined = treehash.combine_hex([p["tree_hash"] for p in parts])
            if combined != tree_hash:
                raise InvalidParameterValue(f"Invalid x-amz-sha256-tree-hash: {tree_hash}")
            # The parts' blobs, linked into one composite blob: no byte is copied (blobs.py).
            blob = self.blobs.compose([p["blob"] for p in parts])
            try:
                with self.db.transaction() as conn:
                    archive_id = self._add_archive(
                        conn, vault_row["id"], upload["description"] or "", size, tree_hash,
                        blob
                    )
                    conn.execute(
                        "UPDATE uploads SET state = 'completed', archive_id = ?, "
                        "archive_size = ?, archive_hash = ?, last_activity_at = ? WHERE id = ?",
                        (archive_id, size, tree_hash, self.clock(), upload["id"]),
                    )
                    conn.execute("DELETE FROM parts WHERE upload_id = ?", (upload["id"],))
            except BaseException:
                self.blobs.remove(blob)
                raise
        for part in parts:
            self.blobs.remove(part["blob"])
        return archive_id, tree_hash

    @staticmethod
    def _check_parts_cover(parts, part_size: int, size: int) -> None:
        if not parts:  # an archive holds at least 1 byte, as UploadArchive enforces
            raise InvalidParameterValue("No parts were uploaded: an archive needs at least "
                                        "1 byte")
        expected = 0
        for index, part in enumerate(parts):
            if part["first_byte"] != expected:
                raise InvalidParameterValue(
                    f"Missing range: bytes {expected}-{part['first_byte'] - 1} were never uploaded"
                )
            length = part["last_byte"] - part["first_byte"] + 1
            if length != part_size and index != len(parts) - 1:
                raise InvalidParameterValue(
                    f"Part {part['first_byte']}-{part['last_byte']} is {length} bytes; every "
                    f"part but the last must be the part size ({part_size})"
                )
            expected = part["last_byte"] + 1
        if expected != size:
            if expected < size:
                raise InvalidParameterValue(
                    f"Missing range: bytes {expected}-{size - 1} were never uploaded"
                )
            raise InvalidParameterValue(
                f"Invalid x-amz-archive-size: {size}. The uploaded parts add up to {expected} bytes"
            )

    def abort_upload(self, vault: str, upload_id: str) -> None:
        vault_row = self.vault_row(vault)
        upload = self.upload_row(vault_row, upload_id, states=("in_progress", "aborted",
                                                               "completed"))
        if upload["state"] == "completed":
            raise InvalidParameterValue(
                f"The upload ID was already completed and cannot be aborted: {upload_id}"
            )
        with self._upload_lock(upload["id"]):
            with self.db.transaction() as conn:
                blobs = [
                    r["blob"]
                    for r in conn.execute(
                        "SELECT blob FROM parts WHERE upload_id = ?", (upload["id"],)
                    )
                ]
                conn.execute("DELETE FROM parts WHERE upload_id = ?", (upload["id"],))
                conn.execute(
                    "UPDATE uploads SET state = 'aborted', last_activity_at = ? WHERE id = ?",
                    (self.clock(), upload["id"]),
                )
        for name in blobs:
            self.blobs.remove(name)

    def _upload_entry(self, vault_name: str, row) -> dict:
        return {
            "MultipartUploadId": row["upload_id"],
            "VaultARN": self.config.vault_arn(vault_name),
            "ArchiveDescription": row["description"],
            "PartSizeInBytes": row["part_size"],
            "CreationDate": iso_ms(row["created_at"]),
        }

    def list_uploads(self, vault: str, marker: str | None, limit: str | None) -> dict:
        vault_row = self.vault_row(vault)
        count = validation.list_limit(limit, LIST_DEFAULTS["uploads"], LIST_DEFAULTS["uploads"])
        start = marker_position("upload", marker)
        rows = self.db.query(
            "SELECT * FROM uploads WHERE vault_id = ? AND state = 'in_progress' AND id >= ? "
            "ORDER BY id LIMIT ?",
            (vault_row["id"], start, count + 1),
        )
        return {
            "UploadsList": [self._upload_entry(vault, r) for r in rows[:count]],
            "Marker": encode_marker("upload", rows[count]["id"]) if len(rows) > count else None,
        }

    def list_parts(self, vault: str, upload_id: str, marker: str | None,
                   limit: str | None) -> dict:
        vault_row = self.vault_row(vault)
        upload = self.upload_row(vault_row, upload_id)
        count = validation.list_limit(limit, LIST_DEFAULTS["parts"], LIST_DEFAULTS["parts"])
        start = marker_position("part", marker)
        rows = self.db.query(
            "SELECT * FROM parts WHERE upload_id = ? AND first_byte >= ? ORDER BY first_byte "
            "LIMIT ?",
            (upload["id"], start, count + 1),
        )
        listing = self._upload_entry(vault, upload)
        listing.update(
            Parts=[
                {"RangeInBytes": f"{r['first_byte']}-{r['last_byte']}",
                 "SHA256TreeHash": r["tree_hash"]}
                for r in rows[:count]
            ],
            Marker=encode_marker("part", rows[count]["first_byte"]) if len(rows) > count else None,
        )
        return listing

