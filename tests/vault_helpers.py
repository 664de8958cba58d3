"""Reading a vault back through boto3, for tests: inventory and archive retrieval jobs."""

from __future__ import annotations

import json
import time


def wait_for_job(glacier, vault: str, job_id: str, timeout: float = 60.0) -> None:
    """Until the job has completed (at once with --job-delay 0, the service's default)."""
    deadline = time.monotonic() + timeout
    while not glacier.describe_job(vaultName=vault, jobId=job_id)["Completed"]:
        assert time.monotonic() < deadline, f"job {job_id} did not complete"
        time.sleep(0.1)


def inventory(glacier, vault: str) -> list[dict]:
    """Archives present now (the local service takes the inventory when the job starts)."""
    job = glacier.initiate_job(vaultName=vault, jobParameters={"Type": "inventory-retrieval"})
    wait_for_job(glacier, vault, job["jobId"])
    output = glacier.get_job_output(vaultName=vault, jobId=job["jobId"])
    return json.loads(output["body"].read())["ArchiveList"]


def retrieve(glacier, vault: str, archive_id: str) -> tuple[bytes, str | None]:
    """An archive's bytes and the tree hash the service sent with them."""
    job = glacier.initiate_job(vaultName=vault, jobParameters={
        "Type": "archive-retrieval", "ArchiveId": archive_id})
    wait_for_job(glacier, vault, job["jobId"])
    output = glacier.get_job_output(vaultName=vault, jobId=job["jobId"])
    return output["body"].read(), output.get("checksum")


def file_archives(glacier, vault: str) -> list[dict]:
    """The inventory without the mount's catalog snapshots (glacierfs/snapshot.py)."""
    return [a for a in inventory(glacier, vault)
            if json.loads(a["ArchiveDescription"]).get("glacierfs") != "catalog"]


def archives_by_path(glacier, vault: str) -> dict[str, dict]:
    """Files' archives (catalog snapshots left out), keyed by the "path" in each archive's JSON
    description."""
    return {json.loads(a["ArchiveDescription"])["path"]: a for a in file_archives(glacier, vault)}
