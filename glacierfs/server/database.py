"""The local vault service's metadata: one SQLite file in WAL mode, the schema documents itself.

Blob names point into blobs.BlobStore. Client-chosen strings (vault names, descriptions) are
only ever values in these tables, never paths.
"""

from __future__ import annotations

import base64
import datetime as dt

from ..sqlite import Database
from .errors import InvalidParameterValue
from .validation import whole_number

__all__ = ["Database", "SCHEMA", "iso_ms", "iso_seconds", "encode_marker", "decode_marker",
           "marker_position"]

SCHEMA = """
-- One row per vault. Counts shown by DescribeVault are those of the last inventory, as on the
-- service; this server takes an inventory whenever an inventory-retrieval job starts.
CREATE TABLE IF NOT EXISTS vaults (
    id                INTEGER PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,      -- validated: [A-Za-z0-9_.-]{1,255}
    created_at        REAL NOT NULL,             -- unix seconds
    last_inventory_at REAL,                      -- NULL = no inventory taken yet
    inventory_count   INTEGER NOT NULL DEFAULT 0,-- archives at the last inventory
    inventory_size    INTEGER NOT NULL DEFAULT 0,-- their bytes at the last inventory
    last_write_at     REAL                       -- last archive created or deleted; NULL = never
);

-- Archives. A deleted archive keeps its row as a tombstone (deleted_at set, blob NULL) so that a
-- second DeleteArchive succeeds, as the service's is idempotent.
CREATE TABLE IF NOT EXISTS archives (
    id          INTEGER PRIMARY KEY,             -- creation order
    archive_id  TEXT NOT NULL UNIQUE,            -- 138 chars, URL-safe alphabet
    vault_id    INTEGER NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
    description TEXT NOT NULL,                   -- '' = none given
    size        INTEGER NOT NULL,
    tree_hash   TEXT NOT NULL,                   -- lowercase hex
    created_at  REAL NOT NULL,
    blob        TEXT,                            -- NULL once deleted; composite if multipart
    deleted_at  REAL                             -- NULL = present
);
CREATE INDEX IF NOT EXISTS archives_by_vault ON archives(vault_id, id);

-- Multipart uploads. state: 'in_progress' -> 'completed' (archive_id set, kept for a repeated
-- Complete) or 'aborted' (kept so a second Abort succeeds for a while). Rows that stop being in
-- progress, and in-progress rows idle longer than the expiry, are purged by the sweeper.
CREATE TABLE IF NOT EXISTS uploads (
    id               INTEGER PRIMARY KEY,        -- creation order, used for markers
    upload_id        TEXT NOT NULL UNIQUE,       -- 92 chars, URL-safe alphabet
    vault_id         INTEGER NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
    description      TEXT,                       -- NULL = none given
    part_size        INTEGER NOT NULL,           -- 1 MiB x 2^n
    created_at       REAL NOT NULL,
    last_activity_at REAL NOT NULL,              -- initiate or last part; drives expiry
    state            TEXT NOT NULL CHECK (state IN ('in_progress', 'completed', 'aborted')),
    archive_id       TEXT,                       -- set when completed
    archive_size     INTEGER,                    -- set when completed
    archive_hash     TEXT                        -- set when completed
);

-- Parts of in-progress uploads; re-uploading a range replaces its row and blob.
CREATE TABLE IF NOT EXISTS parts (
    upload_id  INTEGER NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    first_byte INTEGER NOT NULL,
    last_byte  INTEGER NOT NULL,                 -- inclusive
    tree_hash  TEXT NOT NULL,
    blob       TEXT NOT NULL,
    PRIMARY KEY (upload_id, first_byte)
);

-- Jobs. StatusCode is derived: InProgress until ready_at, then Succeeded (or Failed when
-- failure is set). Output is a blob of its own (a hard link for archive jobs), so deleting the
-- archive later does not take a finished job's output away.
CREATE TABLE IF NOT EXISTS jobs (
    id               INTEGER PRIMARY KEY,
    job_id           TEXT NOT NULL UNIQUE,       -- 92 chars, URL-safe alphabet
    vault_id         INTEGER NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
    action           TEXT NOT NULL CHECK (action IN ('ArchiveRetrieval', 'InventoryRetrieval')),
    description      TEXT,
    tier             TEXT NOT NULL,
    sns_topic        TEXT,
    created_at       REAL NOT NULL,
    ready_at         REAL NOT NULL,              -- created_at + the server's --job-delay
    failure          TEXT,                       -- NULL = succeeds when ready
    archive_id       TEXT,                       -- archive jobs
    archive_size     INTEGER,
    archive_hash     TEXT,
    range_first      INTEGER,                    -- archive jobs: retrieved range, inclusive
    range_last       INTEGER,
    output_hash      TEXT,                       -- tree hash of the output when tree-hash aligned
    output_blob      TEXT,
    output_size      INTEGER,
    content_type     TEXT NOT NULL,
    archive_description TEXT,                    -- archive jobs: sent back by GetJobOutput
    inventory_params TEXT                        -- inventory jobs: JSON echo, Marker = next page
);
CREATE INDEX IF NOT EXISTS jobs_by_vault ON jobs(vault_id, id);
"""


def iso_ms(ts: float) -> str:
    """The service's date format: ISO 8601 UTC with milliseconds and Z."""
    when = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def iso_seconds(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_marker(kind: str, value: int | str) -> str:
    """Markers are opaque to clients: a kind tag stops one list's marker being used in another."""
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def decode_marker(kind: str, marker: str) -> str | None:
    try:
        text = base64.urlsafe_b64decode(marker + "=" * (-len(marker) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    tag, _, value = text.partition(":")
    return value if tag == kind else None


def marker_position(kind: str, marker: str | None, what: str = "marker") -> int:
    """The row position one of our `kind` markers names (0 without one). Anything else
    (tampered, another list's, past SQLite's integers, which made the query fail with a 500)
    is InvalidParameterValue."""
    if not marker:
        return 0
    value = decode_marker(kind, marker)
    try:
        if value is not None and len(value) <= 18:
            return whole_number(value)
    except ValueError:
        pass
    raise InvalidParameterValue(f"Invalid {what}: {marker}")
