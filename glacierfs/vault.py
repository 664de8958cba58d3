"""A thin typed wrapper over the boto3 'glacier' client: the only module that talks to boto3.

Hashes are never computed here: the write path has them already (computed as data arrived),
and we hand both to botocore so it does not read a part again to hash it.
"""

from __future__ import annotations

import copy
import io
import logging
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import boto3
import botocore.exceptions
from botocore.config import Config

from .config import VaultConfig
from .errors import UserError

log = logging.getLogger(__name__)


SEND_BLOCK = 4 << 20

# How long the mount's uploads wait for an endpoint they cannot connect to at all (a network
# down, a restarting router), beyond botocore's own retries (some seconds). Such a request
# never left, so any operation can be sent again without doubling anything; meanwhile writes
# wait for room and close(2) waits, as on an NFS hard mount. After that, the file fails (EIO).
MOUNT_PATIENCE = 300.0

RETRIES = 4  # botocore's retries after a request's first try (waits of 0-1, 0-2 ... 0-8 s)


class PartBody(io.FileIO):
    """A part file opened for upload, carrying its SHA-256 for the x-amz-content-sha256 header.

    urllib3 reads a file body 16 KiB at a time, and every block re-takes the GIL, which the FUSE
    threads of this process also want: a 64 MiB part took 4,096 such hand-overs and uploads
    crawled. Reads here return up to 4 MiB at once (16 per 64 MiB; 16 MiB of buffers for 4
    upload threads), which every caller of read(n) handles: the HTTP layer sends what it gets.
    """

    content_sha256: str = ""

    def read(self, size: int = -1) -> bytes:
        return super().read(max(size, SEND_BLOCK) if size >= 0 else size)


def _use_our_content_sha256(params, **_) -> None:
    # Runs before botocore's add_glacier_checksums, which only hashes when the header is absent.
    body = params.get("body")
    if isinstance(body, PartBody) and body.content_sha256:
        params["headers"]["x-amz-content-sha256"] = body.content_sha256


class Vault:
    def __init__(self, config: VaultConfig, pool_size: int = 10, client=None,
                 retries: int = RETRIES, patience: float = 0.0, reach: dict | None = None) -> None:
        """`reach`: boto3.client keyword arguments naming the endpoint and keys (a local vault
        service's client_kwargs()); without it, the AWS chain, with config's endpoint, region
        and profile. `client` (tests) replaces both."""
        self.name = config.vault
        self.patience = patience  # seconds uploads wait for an unreachable endpoint
        self._outage_lock = threading.Lock()
        self._outage = False  # an upload is waiting for the endpoint (to log once per outage)
        if client is None:
            client = _client(config, retries, pool_size, reach)
        self.client = client
        for op in ("UploadArchive", "UploadMultipartPart"):
            client.meta.events.register_first(f"before-call.glacier.{op}",
                                              _use_our_content_sha256)

    # ---- vault ----------------------------------------------------------------------------

    def check(self, create: bool, missing: str = " (use --create-vault to create it)") -> None:
        """Make sure the vault is reachable and exists (or create it); UserError otherwise.
        `missing` is added to the message for a vault that does not exist."""
        with user_errors(self.name, missing):
            if create:
                self.client.create_vault(vaultName=self.name)
            self.client.describe_vault(vaultName=self.name)

    def archive_count(self) -> int:
        """The vault's archives as of its last inventory (Glacier takes one about daily)."""
        reply = self.client.describe_vault(vaultName=self.name)
        return int(reply.get("NumberOfArchives") or 0)

    # ---- archives -------------------------------------------------------------------------

    def upload_archive(self, body: PartBody, description: str, tree_hash: str) -> str:
        reply = self.client.upload_archive(
            vaultName=self.name, archiveDescription=description, body=body, checksum=tree_hash
        )
        return reply["archiveId"]

    def delete_archive(self, archive_id: str) -> None:
        """Delete an archive; one that is gone already counts as deleted."""
        try:
            self.client.delete_archive(vaultName=self.name, archiveId=archive_id)
        except botocore.exceptions.ClientError as error:
            if not is_not_found(error):
                raise

    # ---- multipart ------------------------------------------------------------------------

    def initiate(self, part_size: int, description: str) -> str:
        reply = self._patient(lambda: self.client.initiate_multipart_upload(
            vaultName=self.name, partSize=str(part_size), archiveDescription=description
        ))
        return reply["uploadId"]

    def upload_part(self, upload_id: str, first: int, size: int, body: PartBody,
                    tree_hash: str) -> str:
        """Upload one part; return the tree hash the vault computed for it."""
        reply = self.client.upload_multipart_part(
            vaultName=self.name, uploadId=upload_id,
            range=f"bytes {first}-{first + size - 1}/*", body=body, checksum=tree_hash,
        )
        return reply["checksum"]

    def upload_part_file(self, upload_id: str, first: int, path, size: int, sha256: str,
                         tree_hash: str) -> str:
        """upload_part of a part file whose hashes are known."""
        def send() -> str:
            with PartBody(path, "rb") as body:
                body.content_sha256 = sha256
                return self.upload_part(upload_id, first, size, body, tree_hash)
        return self._patient(send)

    def upload_archive_file(self, path, sha256: str, tree_hash: str, description: str) -> str:
        def send() -> str:
            with PartBody(path, "rb") as body:
                body.content_sha256 = sha256
                return self.upload_archive(body, description, tree_hash)
        return self._patient(send)

    def complete(self, upload_id: str, size: int, tree_hash: str) -> str:
        reply = self._patient(lambda: self.client.complete_multipart_upload(
            vaultName=self.name, uploadId=upload_id, archiveSize=str(size), checksum=tree_hash
        ))
        return reply["archiveId"]

    def impatient(self) -> Vault:
        """This vault (the same client), its requests not waiting for an unreachable
        endpoint: for what can as well be done later."""
        other = copy.copy(self)
        other.patience = 0.0
        return other

    def _patient(self, send):
        """send(), again and again while the endpoint cannot be connected to, for up to
        `patience` seconds (waits of 1, 2, 4 ... 30 s)."""
        deadline = None
        delay = 1.0
        while True:
            try:
                reply = send()
            except Exception as error:
                if not is_unreachable(error):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.patience
                if now + delay > deadline:
                    raise
                with self._outage_lock:
                    first, self._outage = not self._outage, True
                if first:
                    log.warning("cannot connect to the vault's endpoint (%s); uploads wait for "
                                "it, each for up to %d s", error, self.patience)
                time.sleep(delay)
                delay = min(2 * delay, 30.0)
                continue
            if deadline is not None:
                with self._outage_lock:
                    back, self._outage = self._outage, False
                if back:
                    log.warning("the vault's endpoint answers again; uploads go on")
            return reply

    def abort(self, upload_id: str) -> None:
        self.client.abort_multipart_upload(vaultName=self.name, uploadId=upload_id)

    def list_uploads(self) -> list[dict]:
        """Every multipart upload in progress in the vault (all pages)."""
        return self._all_pages(self.client.list_multipart_uploads, "UploadsList")

    def _all_pages(self, operation, key: str, **args) -> list[dict]:
        """The `key` items of every page of a marker-paginated list operation."""
        items: list[dict] = []
        marker = None
        while True:
            reply = operation(vaultName=self.name, **args, **({"marker": marker} if marker else {}))
            items += reply.get(key, [])
            marker = reply.get("Marker")
            if not marker:
                return items

    def list_parts(self, upload_id: str) -> dict[int, tuple[int, str]]:
        """The parts the vault holds for an upload: first byte -> (size, tree hash)."""
        parts: dict[int, tuple[int, str]] = {}
        for part in self._all_pages(self.client.list_parts, "Parts", uploadId=upload_id):
            first, last = (int(n) for n in part["RangeInBytes"].split("-"))
            parts[first] = (last - first + 1, part["SHA256TreeHash"])
        return parts

    # ---- retrieval jobs (jobs.py for recover/inventory; restore_poller.py) -------------------

    def start_job(self, parameters: dict) -> str:
        return self.client.initiate_job(vaultName=self.name, jobParameters=parameters)["jobId"]

    def job(self, job_id: str) -> dict:
        """DescribeJob: the job's GlacierJobDescription."""
        return self.client.describe_job(vaultName=self.name, jobId=job_id)

    def jobs(self) -> list[dict]:
        """Every job the vault still lists (all pages): in progress, or finished < 24 h ago."""
        return self._all_pages(self.client.list_jobs, "JobList")

    def job_output(self, job_id: str) -> dict:
        """GetJobOutput of a whole job: 'body' (a stream) and, for an archive, 'checksum' (the
        tree hash the service computed for those bytes)."""
        return self.client.get_job_output(vaultName=self.name, jobId=job_id)

    def initiate_retrieval(self, archive_id: str, tier: str) -> str:
        """Start an archive-retrieval job for the whole archive; its job id."""
        return self.start_job({"Type": "archive-retrieval", "ArchiveId": archive_id,
                               "Tier": tier})

    def job_output_range(self, job_id: str, first: int, last: int):
        """Bytes [first, last] of a finished job's output: (streaming body, the tree hash the
        vault sent for them, None when the range is not tree-hash aligned)."""
        reply = self.client.get_job_output(vaultName=self.name, jobId=job_id,
                                           range=f"bytes={first}-{last}")
        return reply["body"], reply.get("checksum")


def _client(config: VaultConfig, retries: int, pool_size: int, reach: dict | None):
    """The boto3 'glacier' client; a UserError for settings botocore refuses (an unknown
    profile or region, an endpoint that is not a URL)."""
    # botocore's legacy retry mode: 500, 502, 503, 504, throttling, Glacier's 408 and dropped
    # connections, with exponential backoff and jitter. Not its standard mode: that one also
    # keeps a client-wide retry quota, which a few requests failing for good (a 4 s outage)
    # used up, and from then on a single 500 failed a file without a retry.
    settings = Config(retries={"max_attempts": retries, "mode": "legacy"},
                      max_pool_connections=pool_size, connect_timeout=10, read_timeout=120)
    try:
        with user_errors(config.vault):
            if reach is not None:
                return boto3.client("glacier", config=settings, **reach)
            session = boto3.session.Session(profile_name=config.profile)
            return session.client("glacier", endpoint_url=config.endpoint_url,
                                  region_name=config.region, config=settings)
    except ValueError as error:  # botocore's "Invalid endpoint: ...", not one of its errors
        raise UserError(str(error)) from None


def is_not_found(error: BaseException) -> bool:
    """The vault does not know the archive or upload (deleted, aborted, expired)."""
    return (isinstance(error, botocore.exceptions.ClientError)
            and error.response["Error"]["Code"] == "ResourceNotFoundException")


def error_code(error: BaseException) -> str | None:
    """The service's error code (ResourceNotFoundException, ...), None for other errors."""
    if isinstance(error, botocore.exceptions.ClientError):
        return error.response["Error"]["Code"]
    return None


def is_unreachable(error: BaseException) -> bool:
    """No connection to the endpoint at all (after botocore's retries): wait, do not count."""
    return isinstance(error, (botocore.exceptions.EndpointConnectionError,
                              botocore.exceptions.ConnectTimeoutError))

@contextmanager
def user_errors(vault: str, missing: str = "") -> Iterator[None]:
    """botocore's errors inside the block become one-line UserErrors about `vault`; `missing`
    is added to the message for a vault that does not exist."""
    try:
        yield
    except botocore.exceptions.NoCredentialsError:
        raise UserError("no AWS credentials found (environment, profile or config "
                        "files)") from None
    except botocore.exceptions.EndpointConnectionError as error:
        raise UserError(f"cannot reach the Glacier endpoint: {error}") from None
    except botocore.exceptions.ClientError as error:
        code = error.response["Error"]["Code"]
        message = error.response["Error"].get("Message", "")
        # Not found may be the vault, or an archive or job in it: the message says which.
        if code == "ResourceNotFoundException" and ("vault" in message.lower() or not message):
            raise UserError(f"vault {vault!r} does not exist{missing}") from None
        raise UserError(f"vault {vault!r}: {code}: {message}") from None
    except botocore.exceptions.BotoCoreError as error:
        raise UserError(f"cannot use vault {vault!r}: {error}") from None
