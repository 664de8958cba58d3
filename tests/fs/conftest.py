"""The glacierfs core (GlacierFS over catalog, cache and uploads) against a real local vault.

No FUSE and no mocks: an in-process LocalVaultServer on loopback, a boto3 client over real
HTTP, and the vault read back through inventory and archive-retrieval jobs.

`make_fs(...)` builds one such rig (its own server, cache and catalog); every rig it built is
shut down at teardown (open writers finished, the upload pool stopped, the server stopped).
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from glacierfs.cache import PartCache
from glacierfs.catalog import Catalog
from glacierfs.config import CacheConfig, VaultConfig
from glacierfs.fs import GlacierFS
from glacierfs.server import LocalVaultServer, ServerConfig
from glacierfs.upload import FileUpload, UploadPool
from glacierfs.vault import Vault
from tests.vault_helpers import archives_by_path, inventory, retrieve

MiB = 1 << 20
KiB = 1 << 10
PART = MiB
BLOCK = 128 * KiB  # the write size FUSE hands us for big writes
VAULT = "v"
OPENER = 4242  # pid of the process that opens files in these tests
OTHER = 4343  # some other process (a forked child closing its copy of the descriptor)

NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})
RETRIES = Config(retries={"max_attempts": 5, "mode": "standard"})

UPLOAD_OPS = ("UploadArchive", "InitiateMultipartUpload", "UploadMultipartPart",
              "CompleteMultipartUpload", "AbortMultipartUpload")


def ref_tree_hash(data: bytes) -> str:
    """Glacier's SHA-256 tree hash, written out independently of glacierfs.treehash."""
    level = [hashlib.sha256(data[i:i + MiB]).digest() for i in range(0, len(data), MiB)]
    level = level or [hashlib.sha256(b"").digest()]
    while len(level) > 1:
        level = [hashlib.sha256(level[i] + level[i + 1]).digest() if i + 1 < len(level)
                 else level[i] for i in range(0, len(level), 2)]
    return level[0].hex()


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def wait_for(condition, timeout: float = 20.0, what: str = "condition") -> None:
    """Wait for a precondition (not a timing assertion): fail only if it never happens."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


@dataclass
class Rig:
    server: LocalVaultServer
    glacier: object  # boto3 client for inspecting the vault (not the one glacierfs uses)
    fs: GlacierFS
    cache: PartCache
    config: CacheConfig

    # ---- driving the filesystem -------------------------------------------------------

    def write_blocks(self, fh: int, data: bytes, start: int = 0, block: int = BLOCK) -> None:
        for offset in range(0, len(data), block):
            chunk = data[offset:offset + block]
            assert self.fs.write(fh, chunk, start + offset) == len(chunk)

    def store(self, path: bytes, data: bytes, block: int = BLOCK) -> None:
        """create, write in `block` writes, flush by the opener, release."""
        fh = self.fs.create(path, 0o644, 0, 0, pid=OPENER)
        self.write_blocks(fh, data, block=block)
        self.fs.flush(fh, pid=OPENER)
        self.fs.release(fh)

    def read_all(self, path: bytes, pid: int = OPENER) -> bytes:
        fh = self.fs.open(path, os.O_RDONLY, pid=pid)
        try:
            return self.fs.read(fh, self.fs.getattr(path)["st_size"] + 100, 0)
        finally:
            self.fs.release(fh)

    def writer(self, path: bytes) -> FileUpload:
        """The open writer of `path` (to wait for its parts' states)."""
        return self.fs._writers[self.fs.catalog.resolve(path).ino]

    # ---- looking at the vault ---------------------------------------------------------

    def upload_ops(self) -> dict[str, int]:
        requests = self.server.stats()["requests"]
        return {op: requests.get(op, 0) for op in UPLOAD_OPS}

    def archives(self) -> dict[str, dict]:
        return archives_by_path(self.glacier, VAULT)

    def inventory(self) -> list[dict]:
        return inventory(self.glacier, VAULT)

    def archive_of(self, path: bytes) -> tuple[dict, bytes, str | None]:
        """(inventory entry, content, tree hash the service sent) of the archive of `path`."""
        entry = self.archives()[path.decode().lstrip("/")]
        content, checksum = retrieve(self.glacier, VAULT, entry["ArchiveId"])
        return entry, content, checksum

    def uploads_in_progress(self) -> list[dict]:
        return self.glacier.list_multipart_uploads(vaultName=VAULT)["UploadsList"]

    def assert_archive(self, path: bytes, data: bytes) -> None:
        entry, content, checksum = self.archive_of(path)
        assert len(content) == len(data)
        assert content == data
        expected = ref_tree_hash(data)
        assert entry["Size"] == len(data)
        assert entry["SHA256TreeHash"] == expected
        assert checksum == expected
        node = self.fs.catalog.resolve(path)
        assert node.state == "stored"
        assert node.size == len(data)
        assert node.tree_hash == expected
        assert node.archive_id == entry["ArchiveId"]


@pytest.fixture
def make_fs(tmp_path: Path):
    rigs: list[Rig] = []

    def make(cache_parts: int = 64, faults: str = "", latency_ms: float = 0.0,
             retries: bool = False, upload_threads: int = 2, async_close: bool = False,
             patience: float = 0.0, catalog_dir: Path | None = None,
             cache_dir: Path | None = None) -> Rig:
        root = tmp_path / f"rig{len(rigs)}"
        server = LocalVaultServer(ServerConfig(data_dir=root / "srv", faults=faults,
                                               latency_ms=latency_ms)).start()
        try:
            client = boto3.client("glacier", config=RETRIES if retries else NO_RETRIES,
                                  **server.client_kwargs())
            vault = Vault(VaultConfig(VAULT), client=client, patience=patience)
            vault.check(create=True)
            config = CacheConfig(directory=cache_dir or root / "cache", size=cache_parts * PART,
                                 part_size=PART, upload_threads=upload_threads,
                                 async_close=async_close)
            cache = PartCache(config.directory, config.size)
            catalog = Catalog((catalog_dir or root) / "cat.db", 0, 0)
            fs = GlacierFS(catalog, cache, vault, config, UploadPool(config.upload_threads))
        except BaseException:
            server.stop()
            raise
        glacier = boto3.client("glacier", config=NO_RETRIES, **server.client_kwargs())
        rig = Rig(server, glacier, fs, cache, config)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        try:
            rig.fs.shutdown()
        finally:
            rig.cache.close()
            rig.fs.catalog.close()
            rig.server.stop()


@pytest.fixture
def rig(make_fs) -> Rig:
    """A rig with a roomy cache (64 parts of 1 MiB), 2 upload threads, retries off."""
    return make_fs()
