"""Helpers of the recover tests: jobs that wait (the service runs with --job-delay), the
catalog snapshots in a vault, `glacierfs recover` / `glacierfs inventory`, and a tree's
metadata as lstat sees it."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

from tests.mount.conftest import aws_env, run_glacierfs

POLL = "0.2"  # --poll-interval of recover / inventory in tests


def wait_job(glacier, vault: str, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = glacier.describe_job(vaultName=vault, jobId=job_id)
        if job["Completed"]:
            assert job["StatusCode"] == "Succeeded", job
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not complete")


def inventory(glacier, vault: str) -> list[dict]:
    job_id = glacier.initiate_job(vaultName=vault,
                                  jobParameters={"Type": "inventory-retrieval"})["jobId"]
    wait_job(glacier, vault, job_id)
    output = glacier.get_job_output(vaultName=vault, jobId=job_id)
    return json.loads(output["body"].read())["ArchiveList"]


def retrieve(glacier, vault: str, archive_id: str) -> bytes:
    job_id = glacier.initiate_job(vaultName=vault, jobParameters={
        "Type": "archive-retrieval", "ArchiveId": archive_id})["jobId"]
    wait_job(glacier, vault, job_id)
    return glacier.get_job_output(vaultName=vault, jobId=job_id)["body"].read()


def snapshots(glacier, vault: str) -> list[dict]:
    """Inventory entries of the catalog snapshots, each with its description's fields."""
    found = []
    for archive in inventory(glacier, vault):
        try:
            fields = json.loads(archive["ArchiveDescription"])
        except ValueError:
            continue
        if isinstance(fields, dict) and fields.get("glacierfs") == "catalog":
            found.append({**archive, "fields": fields})
    return found


def by_description_path(glacier, vault: str) -> dict[str, dict]:
    found = {}
    for archive in inventory(glacier, vault):
        try:
            found[json.loads(archive["ArchiveDescription"])["path"]] = archive
        except (ValueError, KeyError, TypeError):
            pass
    return found


def glacierfs_cmd(serve, command: str, vault: str, cache_dir: Path, *extra: str):
    return run_glacierfs(command, vault, "--endpoint-url", serve.endpoint_url,
                         "--cache-dir", str(cache_dir), "--poll-interval", POLL, *extra,
                         env=aws_env(serve.data_dir), timeout=300)


def tree(root: Path) -> dict[str, tuple]:
    """relative path -> (mode, size, mtime_ns, symlink target or None), root included."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames] if dirpath == str(root) else [
                *dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            target = os.readlink(path) if stat.S_ISLNK(info.st_mode) else None
            rel = os.path.normpath(os.path.relpath(path, root))
            seen[rel] = (stat.filemode(info.st_mode), info.st_size, info.st_mtime_ns, target)
    return seen
