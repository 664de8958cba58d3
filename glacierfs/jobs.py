"""Retrieval jobs from the command line: a vault's inventory, and one whole archive.

Glacier answers neither at once: a job is started, it runs for hours (an inventory, or a
Standard archive retrieval: 3-5 h; Expedited: minutes), and its output can be downloaded for
24 h after it completes. So:

- while waiting, the user is told what for, which job, since when, and how often we look;
- a job of the same kind that is already running, or finished and still downloadable (for an
  inventory: finished in the last REUSE_INVENTORY), is used instead of starting another:
  interrupting `glacierfs recover` and running it again does not start the wait over, nor
  pay for a second retrieval;
- a download whose connection breaks is downloaded again (DOWNLOAD_ATTEMPTS in all): a job's
  output can be fetched as often as needed while it lasts;
- an archive is checked twice: the tree hash the service sends with the bytes, and the tree
  hash of the bytes we wrote, both against the archive's tree hash from the inventory.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import botocore.exceptions
import urllib3.exceptions

from .config import format_size
from .errors import UserError
from .treehash import CHUNK, TreeHasher

log = logging.getLogger(__name__)

NOTE_EVERY = 15 * 60  # seconds between "still waiting" lines
# Glacier takes a vault's inventory about once a day, so an inventory job finished this
# recently most likely holds what a new one would, four hours sooner.
REUSE_INVENTORY = dt.timedelta(hours=6)
DOWNLOAD_ATTEMPTS = 3
# A connection that breaks mid-body: worth another download (urllib3's own error, if it
# reaches us unwrapped, is an HTTPError).
BROKEN_DOWNLOAD = (botocore.exceptions.BotoCoreError, ConnectionError,
                   http.client.HTTPException, urllib3.exceptions.HTTPError)


@dataclass(frozen=True)
class Inventory:
    date: str  # InventoryDate: when Glacier last took the inventory
    archives: list[dict]  # ArchiveId, ArchiveDescription, CreationDate, Size, SHA256TreeHash


def _inventory_job(job: dict) -> bool:
    """A whole-vault JSON inventory job that runs, or that succeeded lately."""
    params = job.get("InventoryRetrievalParameters") or {}
    return (job.get("Action") == "InventoryRetrieval"
            and (not job.get("Completed") or (job.get("StatusCode") == "Succeeded"
                                              and _age(job.get("CompletionDate"))
                                              < REUSE_INVENTORY))
            and (params.get("Format") or "JSON") == "JSON"
            and not any(params.get(k) for k in ("StartDate", "EndDate", "Limit", "Marker")))


def _age(iso: str | None) -> dt.timedelta:
    """How long ago an ISO 8601 time from the service was (forever if there is none)."""
    try:
        when = dt.datetime.fromisoformat((iso or "").replace("Z", "+00:00"))
    except ValueError:
        return dt.timedelta.max
    return dt.datetime.now(dt.timezone.utc) - when


def inventory(vault, poll_interval: float, echo: Callable[[str], None]) -> Inventory:
    """The vault's inventory (a running or recent inventory job is used instead of a new
    one)."""
    what = "the inventory of vault " + vault.name
    job_id = _find_job(vault, _inventory_job) or vault.start_job(
        {"Type": "inventory-retrieval", "Format": "JSON"})
    _wait(vault, job_id, what, poll_interval, echo, "Glacier takes about 4 hours")

    def read(output: dict) -> dict:
        try:
            return json.load(output["body"])
        except ValueError as error:
            raise UserError(f"{what} is not JSON: {error}") from None

    listing = _download(vault, job_id, what, echo, read)
    return Inventory(listing.get("InventoryDate") or "?", listing.get("ArchiveList") or [])


def _download(vault, job_id: str, what: str, echo: Callable[[str], None],
              read: Callable[[dict], object]):
    """read(output) of the job's output, downloaded again if its connection breaks."""
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        output = vault.job_output(job_id)
        try:
            return read(output)
        except BROKEN_DOWNLOAD as error:
            if attempt == DOWNLOAD_ATTEMPTS:
                raise UserError(f"the download of {what} broke {attempt} times; the last "
                                f"time: {error}", exit_code=1) from None
            echo(f"the download of {what} broke ({error}); downloading it again")
        finally:
            output["body"].close()


def retrieve(vault, archive: dict, target: Path, tier: str, poll_interval: float,
             echo: Callable[[str], None]) -> None:
    """Download a whole archive (an inventory entry) into `target`, checking its tree hash."""
    archive_id, size = archive["ArchiveId"], int(archive["Size"])
    expected = archive["SHA256TreeHash"]
    whole = f"0-{size - 1}"

    def same_retrieval(job: dict) -> bool:
        return (job.get("Action") == "ArchiveRetrieval" and job.get("ArchiveId") == archive_id
                and job.get("RetrievalByteRange") in (None, whole)
                and job.get("StatusCode") in ("InProgress", "Succeeded"))

    job_id = _find_job(vault, same_retrieval) or vault.initiate_retrieval(archive_id, tier)
    _wait(vault, job_id, f"archive {archive_id[:16]}... ({format_size(size)})", poll_interval,
          echo, {"Expedited": "Expedited retrievals take 1-5 minutes",
                 "Bulk": "Bulk retrievals take 5-12 hours"}.get(
                     tier, "Standard retrievals take 3-5 hours"))

    def read(output: dict) -> tuple[str | None, TreeHasher]:
        hasher = TreeHasher()
        with open(target, "wb") as out:
            while block := output["body"].read(CHUNK):
                hasher.update(block)
                out.write(block)
        return output.get("checksum"), hasher

    sent, hasher = _download(vault, job_id, f"archive {archive_id[:16]}...", echo, read)
    got = hasher.hexdigest()
    if sent is not None and sent != expected:
        raise UserError(f"archive {archive_id}: the vault sent tree hash {sent}, the inventory "
                        f"says {expected}", exit_code=1)
    if hasher.size != size or got != expected:
        raise UserError(f"archive {archive_id}: the bytes received ({hasher.size} bytes, tree "
                        f"hash {got}) are not the archive ({size} bytes, tree hash {expected})",
                        exit_code=1)


def _find_job(vault, wanted: Callable[[dict], bool]) -> str | None:
    """The newest job the vault lists that `wanted` accepts."""
    found = sorted((job for job in vault.jobs() if wanted(job)),
                   key=lambda job: job.get("CreationDate") or "")
    if found:
        log.info("using job %s (%s, started %s)", found[-1]["JobId"], found[-1]["StatusCode"],
                 found[-1].get("CreationDate"))
    return found[-1]["JobId"] if found else None


def _wait(vault, job_id: str, what: str, poll_interval: float, echo: Callable[[str], None],
          typical: str) -> dict:
    started = time.monotonic()
    noted = None
    while True:
        job = vault.job(job_id)
        if job.get("Completed"):
            if job.get("StatusCode") != "Succeeded":
                raise UserError(f"the job for {what} failed: {job.get('StatusMessage')}",
                                exit_code=1)
            if noted is not None:
                echo(f"{what}: ready after {_duration(time.monotonic() - started)}")
            else:  # a job run before (by an earlier, interrupted run, say)
                echo(f"{what}: using job {job_id[:16]}..., finished "
                     f"{job.get('CompletionDate', '?')}")
            return job
        now = time.monotonic()
        if noted is None:
            echo(f"waiting for {what}: job {job_id[:16]}... started "
                 f"{job.get('CreationDate', '?')}; {typical}. Checking every "
                 f"{poll_interval:g} s; if interrupted, running this again waits for the "
                 "same job")
            noted = now
        elif now - noted >= NOTE_EVERY:
            echo(f"still waiting for {what} ({_duration(now - started)} so far)")
            noted = now
        time.sleep(poll_interval)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
