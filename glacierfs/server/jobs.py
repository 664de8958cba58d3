"""Retrieval jobs of the local vault service: archive and inventory retrieval (§2.13-§2.16, §6).

A job's output is fixed when the job starts: an archive job hard-links the archive's blob, an
inventory job writes the inventory of the archives present at that moment. The job then reads as
InProgress until `--job-delay` seconds have passed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass
from typing import Iterator

from .. import treehash
from .database import encode_marker, iso_ms, iso_seconds, marker_position
from .errors import (InvalidParameterValue, MissingParameterValue, ResourceNotFound,
                     SerializationError)
from .store import LIST_DEFAULTS, UPLOAD_ID_BYTES, Store, new_id
from . import validation

TIERS = ("Expedited", "Standard", "Bulk")
_RANGE_HEADER = re.compile(r"bytes=(\d*)-(\d*)")


# JobParameters members and their JSON types (the model's shapes); the rest are not read.
_STRING_MEMBERS = ("Type", "Tier", "Description", "SNSTopic", "ArchiveId",
                   "RetrievalByteRange", "Format")
_INVENTORY_MEMBERS = ("StartDate", "EndDate", "Limit", "Marker")


def _check_member_types(params: dict) -> None:
    """A member of the wrong JSON type is the protocol's SerializationException, before any
    rule reads it (it was a 500, which clients retry)."""
    filters = params.get("InventoryRetrievalParameters")
    if filters is not None and not isinstance(filters, dict):
        raise SerializationError("InventoryRetrievalParameters must be a JSON object")
    members = [(name, params) for name in _STRING_MEMBERS]
    members += [(name, filters) for name in _INVENTORY_MEMBERS if filters]
    for name, where in members:
        if where.get(name) is not None and not isinstance(where[name], str):
            raise SerializationError(f"{name} must be a string")


@dataclass
class JobOutput:
    status: int  # 200 or 206
    headers: list[tuple[str, str]]
    body: Iterator[bytes]


def _parse_date(value: str, name: str) -> float:
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParameterValue(f"Invalid {name}: {value}. Use ISO 8601, e.g. "
                                    "2013-03-20T17:03:43Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


class Jobs:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.config = store.config
        self.db = store.db
        self.blobs = store.blobs

    # ---- InitiateJob --------------------------------------------------------------------

    def initiate(self, vault: str, params: dict) -> str:
        vault_row = self.store.vault_row(vault)
        if not isinstance(params, dict):
            raise InvalidParameterValue("Job parameters must be a JSON object")
        if "jobParameters" in params and isinstance(params["jobParameters"], dict):
            params = params["jobParameters"]  # the DG syntax block's wrapper (§9.5)
        _check_member_types(params)
        kind = params.get("Type")
        if kind is None:
            raise MissingParameterValue("Required parameter Type is missing")
        tier = params.get("Tier") or "Standard"
        if tier not in TIERS:
            raise InvalidParameterValue(f"Invalid Tier: {tier}. Use one of {', '.join(TIERS)}")
        description = validation.description(params.get("Description"), "job description")
        now = self.store.clock()
        row = {
            "job_id": new_id(UPLOAD_ID_BYTES),
            "vault_id": vault_row["id"],
            "description": description or None,
            "tier": tier,
            "sns_topic": params.get("SNSTopic"),
            "created_at": now,
            "ready_at": now + self.config.job_delay,
        }
        if kind == "archive-retrieval":
            row.update(self._archive_job(vault_row, params))
        elif kind == "inventory-retrieval":
            row.update(self._inventory_job(vault_row, params, now))
        elif kind == "select":
            raise InvalidParameterValue("Select jobs are not supported by this server")
        else:
            raise InvalidParameterValue(f"Invalid job type: {kind}")
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        try:
            with self.db.transaction() as conn:
                conn.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", tuple(row.values()))
        except BaseException:
            self.blobs.remove(row.get("output_blob"))
            raise
        return row["job_id"]

    def _archive_job(self, vault_row, params: dict) -> dict:
        for bad in ("Format", "InventoryRetrievalParameters"):
            if params.get(bad) is not None:
                raise InvalidParameterValue(f"{bad} is only valid for inventory-retrieval jobs")
        archive_id = params.get("ArchiveId")
        if not archive_id:
            raise MissingParameterValue("Required parameter ArchiveId is missing")
        archive = self.store.archive_row(vault_row, archive_id)
        size = archive["size"]
        first, last = 0, size - 1
        if params.get("RetrievalByteRange") is not None:
            first, last = validation.byte_range(params["RetrievalByteRange"])
            if not treehash.is_megabyte_aligned(first, last, size):
                raise InvalidParameterValue(
                    f"The byte range is not megabyte aligned: {params['RetrievalByteRange']}. "
                    f"The start must be a multiple of 1048576 and the end one less than a "
                    f"multiple of 1048576 or the last byte of the archive ({size - 1})"
                )
        if (first, last) == (0, size - 1):
            output_hash = archive["tree_hash"]
        elif treehash.is_tree_hash_aligned(first, last, size):
            output_hash = self.blobs.tree_hash_range(archive["blob"], first, last)
        else:
            output_hash = None
        return {
            "action": "ArchiveRetrieval",
            "archive_id": archive_id,
            "archive_size": size,
            "archive_hash": archive["tree_hash"],
            "archive_description": archive["description"],
            "range_first": first,
            "range_last": last,
            "output_hash": output_hash,
            "output_blob": self.blobs.link(archive["blob"]),
            "output_size": last - first + 1,
            "content_type": "application/octet-stream",
        }

    def _inventory_job(self, vault_row, params: dict, now: float) -> dict:
        for bad in ("ArchiveId", "RetrievalByteRange"):
            if params.get(bad) is not None:
                raise InvalidParameterValue(f"{bad} is not valid for inventory-retrieval jobs")
        fmt = params.get("Format") or "JSON"
        if fmt not in ("JSON", "CSV"):
            raise InvalidParameterValue(f"Invalid Format: {fmt}. Use JSON or CSV")
        filters = params.get("InventoryRetrievalParameters") or {}
        start = filters.get("StartDate")
        end = filters.get("EndDate")
        limit = filters.get("Limit")
        marker = filters.get("Marker")
        sql = "SELECT * FROM archives WHERE vault_id = ? AND deleted_at IS NULL"
        args: list = [vault_row["id"]]
        if start is not None:
            sql += " AND created_at >= ?"
            args.append(_parse_date(start, "StartDate"))
        if end is not None:
            sql += " AND created_at < ?"
            args.append(_parse_date(end, "EndDate"))
        if marker:
            sql += " AND id >= ?"
            args.append(marker_position("inventory", marker, "inventory marker"))
        count = None
        if limit is not None:
            try:
                count = validation.whole_number(limit)
            except ValueError:
                count = 0
            if count < 1:
                raise InvalidParameterValue(f"Invalid Limit: {limit}. It must be at least 1")
        sql += " ORDER BY id"
        rows = self.db.query(sql, tuple(args))
        next_marker = None
        if count is not None and len(rows) > count:
            next_marker = encode_marker("inventory", rows[count]["id"])
            rows = rows[:count]

        # Taking an inventory is what updates DescribeVault's counts (§2.2).
        totals = self.db.one(
            "SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM archives "
            "WHERE vault_id = ? AND deleted_at IS NULL",
            (vault_row["id"],),
        )
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE vaults SET last_inventory_at = ?, inventory_count = ?, "
                "inventory_size = ? WHERE id = ?",
                (now, totals["n"], totals["bytes"], vault_row["id"]),
            )

        archives = [
            {
                "ArchiveId": r["archive_id"],
                "ArchiveDescription": r["description"],
                "CreationDate": iso_ms(r["created_at"]),
                "Size": r["size"],
                "SHA256TreeHash": r["tree_hash"],
            }
            for r in rows
        ]
        if fmt == "JSON":
            data = json.dumps(
                {
                    "VaultARN": self.config.vault_arn(vault_row["name"]),
                    "InventoryDate": iso_seconds(now),
                    "ArchiveList": archives,
                }
            ).encode()
            content_type = "application/json"
        else:
            data = _inventory_csv(archives)
            content_type = "text/csv"
        temp = self.blobs.new_temp()
        with open(temp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        echo = {"Format": fmt, "StartDate": start, "EndDate": end,
                "Limit": str(limit) if limit is not None else None, "Marker": next_marker}
        return {
            "action": "InventoryRetrieval",
            "output_blob": self.blobs.commit(temp),
            "output_size": len(data),
            "content_type": content_type,
            "inventory_params": json.dumps(echo),
        }

    def fail(self, job_id: str, message: str) -> None:
        """Make a job end Failed with this StatusMessage (fault kind job-fails)."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE jobs SET failure = ? WHERE job_id = ?", (message, job_id))

    # ---- DescribeJob / ListJobs ---------------------------------------------------------

    def _job_row(self, vault: str, job_id: str):
        vault_row = self.store.vault_row(vault)
        row = self.db.one(
            "SELECT * FROM jobs WHERE job_id = ? AND vault_id = ?", (job_id, vault_row["id"])
        )
        if row is None:
            raise ResourceNotFound(f"The job ID was not found: {job_id}")
        return vault_row, row

    def _status(self, row) -> str:
        if self.store.clock() < row["ready_at"]:
            return "InProgress"
        return "Failed" if row["failure"] else "Succeeded"

    def _description(self, vault_name: str, row) -> dict:
        status = self._status(row)
        done = status != "InProgress"
        archive = row["action"] == "ArchiveRetrieval"
        whole = archive and (row["range_first"], row["range_last"]) == (0, row["archive_size"] - 1)
        messages = {"InProgress": "Operation in progress.", "Succeeded": "Succeeded",
                    "Failed": row["failure"]}
        return {
            "JobId": row["job_id"],
            "JobDescription": row["description"],
            "Action": row["action"],
            "ArchiveId": row["archive_id"],
            "VaultARN": self.config.vault_arn(vault_name),
            "CreationDate": iso_ms(row["created_at"]),
            "Completed": done,
            "StatusCode": status,
            "StatusMessage": messages[status],
            "ArchiveSizeInBytes": row["archive_size"],
            "InventorySizeInBytes": row["output_size"] if (done and not archive) else None,
            "SNSTopic": row["sns_topic"],
            "CompletionDate": iso_ms(row["ready_at"]) if done else None,
            # §5.3: a whole archive's is hidden until the job is done; a range's is known
            "SHA256TreeHash": row["output_hash"] if done or not whole else None,
            "ArchiveSHA256TreeHash": row["archive_hash"],
            "RetrievalByteRange": (
                f"{row['range_first']}-{row['range_last']}" if archive else None
            ),
            "Tier": row["tier"],
            "InventoryRetrievalParameters": (
                json.loads(row["inventory_params"]) if row["inventory_params"] else None
            ),
            "JobOutputPath": None,
            "SelectParameters": None,
            "OutputLocation": None,
        }

    def describe(self, vault: str, job_id: str) -> dict:
        _, row = self._job_row(vault, job_id)
        return self._description(vault, row)

    def list(self, vault: str, marker: str | None, limit: str | None, statuscode: str | None,
             completed: str | None) -> dict:
        vault_row = self.store.vault_row(vault)
        count = validation.list_limit(limit, LIST_DEFAULTS["jobs"], LIST_DEFAULTS["jobs"])
        if statuscode is not None and statuscode not in ("InProgress", "Succeeded", "Failed"):
            raise InvalidParameterValue(f"The job status code is not valid: {statuscode}")
        if completed is not None and completed not in ("true", "false"):
            raise InvalidParameterValue(f"The value for completed is not valid: {completed}")
        start = marker_position("job", marker)
        rows = self.db.query(
            "SELECT * FROM jobs WHERE vault_id = ? AND id >= ? ORDER BY id",
            (vault_row["id"], start),
        )
        selected = []
        for row in rows:
            status = self._status(row)
            if statuscode is not None and status != statuscode:
                continue
            if completed is not None and (status != "InProgress") != (completed == "true"):
                continue
            selected.append(row)
            if len(selected) > count:
                break
        return {
            "JobList": [self._description(vault, r) for r in selected[:count]],
            "Marker": encode_marker("job", selected[count]["id"]) if len(selected) > count
            else None,
        }

    # ---- GetJobOutput -------------------------------------------------------------------

    def output(self, vault: str, job_id: str, range_header: str | None) -> JobOutput:
        _, row = self._job_row(vault, job_id)
        status = self._status(row)
        if status == "InProgress":
            raise InvalidParameterValue(
                f"The job is not currently available for download: {job_id}"
            )
        if status == "Failed":
            raise InvalidParameterValue(f"The job failed and has no output: {job_id}")
        size = row["output_size"]
        offset = row["range_first"] or 0  # output byte 0 is this byte of the blob
        first, last, partial = 0, size - 1, False
        if range_header:
            first, last = _parse_range(range_header, size)
            partial = True
        headers = [
            ("Content-Type", row["content_type"]),
            ("Content-Length", str(last - first + 1)),
            ("Accept-Ranges", "bytes"),
        ]
        if partial:
            headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
        if row["action"] == "ArchiveRetrieval":
            if row["archive_description"]:
                headers.append(("x-amz-archive-description", row["archive_description"]))
            checksum = self._output_checksum(row, first, last)
            if checksum:
                headers.append(("x-amz-sha256-tree-hash", checksum))
        body = self.blobs.read_range(row["output_blob"], offset + first, offset + last)
        return JobOutput(206 if partial else 200, headers, body)

    def _output_checksum(self, row, first: int, last: int) -> str | None:
        """The tree hash header: only when job range and download are tree-hash aligned (§5.3)."""
        if row["output_hash"] is None:
            return None  # the job's own range is not a node of the archive's tree
        absolute_first = row["range_first"] + first
        absolute_last = row["range_first"] + last
        if not treehash.is_tree_hash_aligned(absolute_first, absolute_last, row["archive_size"]):
            return None
        if (first, last) == (0, row["output_size"] - 1):
            return row["output_hash"]
        return self.blobs.tree_hash_range(row["output_blob"], absolute_first, absolute_last)


def _parse_range(header: str, size: int) -> tuple[int, int]:
    match = _RANGE_HEADER.fullmatch(header.strip())
    if not match or (match.group(1) == "" and match.group(2) == ""):
        raise InvalidParameterValue(f"Invalid Range: {header}")
    if match.group(1) == "":  # bytes=-N: the last N bytes
        first, last = max(size - int(match.group(2)), 0), size - 1
    else:
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else size - 1
    last = min(last, size - 1)
    if first > last:
        raise InvalidParameterValue(f"Invalid Range: {header}. The output is {size} bytes")
    return first, last


def _csv_field(value) -> str:
    text = str(value)
    if "," in text or '"' in text:
        return '"' + text.replace('"', '\\"') + '"'
    return text


def _inventory_csv(archives: list[dict]) -> bytes:
    """CSV as the service writes it (§6.1): a header row; a field with `,` or `"` is quoted,
    `"` inside it is written `\\"`, and a backslash is left alone (so no csv module dialect)."""
    lines = ["ArchiveId,ArchiveDescription,CreationDate,Size,SHA256TreeHash"]
    for a in archives:
        lines.append(",".join(_csv_field(a[k]) for k in
                              ("ArchiveId", "ArchiveDescription", "CreationDate", "Size",
                               "SHA256TreeHash")))
    return ("\n".join(lines) + "\n").encode()
