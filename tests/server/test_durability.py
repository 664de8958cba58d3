"""What survives a restart or a kill -9 of `glacierfs serve`, upload expiry, and path safety.

Every server here is a real `glacierfs serve` child process (the serve_process fixture stops
or kills each one at teardown).
"""

from __future__ import annotations

import configparser
import http.client
import io
import os
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.exceptions
import pytest
from botocore.config import Config

from glacierfs.treehash import tree_hash

MiB = 1 << 20
# botocore's `max_attempts` counts *retries*; total_max_attempts=1 means one attempt, no retry.
RETRIES_OFF = Config(retries={"total_max_attempts": 1, "mode": "standard"})
QUIET = ("--log-level", "warning")


def _retrieve(glacier, vault: str, archive_id: str) -> bytes:
    job_id = glacier.initiate_job(vaultName=vault, jobParameters={
        "Type": "archive-retrieval", "ArchiveId": archive_id})["jobId"]
    assert glacier.describe_job(vaultName=vault, jobId=job_id)["StatusCode"] == "Succeeded"
    return glacier.get_job_output(vaultName=vault, jobId=job_id)["body"].read()


def _put_part(glacier, vault: str, upload_id: str, data: bytes, first: int):
    reply = glacier.upload_multipart_part(
        vaultName=vault, uploadId=upload_id, range=f"bytes {first}-{first + len(data) - 1}/*",
        body=data,
    )
    assert reply["checksum"] == tree_hash(data)
    return reply


def _all_parts(glacier, vault: str, upload_id: str) -> list[dict]:
    return glacier.list_parts(vaultName=vault, uploadId=upload_id)["Parts"]


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


# ---- clean restart ----------------------------------------------------------------------------


def test_restart_keeps_vaults_archives_and_uploads(serve_process, tmp_path):
    data_dir = tmp_path / "data"
    first = serve_process(*QUIET, data_dir=data_dir)
    glacier = first.client(config=RETRIES_OFF)
    glacier.create_vault(vaultName="keep")
    glacier.create_vault(vaultName="also-keep")
    archive = os.urandom(MiB + 123)
    archive_id = glacier.upload_archive(vaultName="keep", archiveDescription="first archive",
                                        body=archive)["archiveId"]
    upload_id = glacier.initiate_multipart_upload(
        vaultName="keep", partSize=str(MiB), archiveDescription="unfinished")["uploadId"]
    parts = [os.urandom(MiB), os.urandom(MiB), os.urandom(4321)]
    _put_part(glacier, "keep", upload_id, parts[0], 0)
    _put_part(glacier, "keep", upload_id, parts[1], MiB)
    assert first.stop() == 0

    second = serve_process(*QUIET, data_dir=data_dir)
    glacier = second.client(config=RETRIES_OFF)
    names = [v["VaultName"] for v in glacier.list_vaults()["VaultList"]]
    assert names == ["also-keep", "keep"]
    assert _retrieve(glacier, "keep", archive_id) == archive

    uploads = glacier.list_multipart_uploads(vaultName="keep")["UploadsList"]
    assert [(u["MultipartUploadId"], u["ArchiveDescription"], u["PartSizeInBytes"])
            for u in uploads] == [(upload_id, "unfinished", MiB)]
    assert _all_parts(glacier, "keep", upload_id) == [
        {"RangeInBytes": f"0-{MiB - 1}", "SHA256TreeHash": tree_hash(parts[0])},
        {"RangeInBytes": f"{MiB}-{2 * MiB - 1}", "SHA256TreeHash": tree_hash(parts[1])},
    ]
    _put_part(glacier, "keep", upload_id, parts[2], 2 * MiB)
    whole = b"".join(parts)
    done = glacier.complete_multipart_upload(
        vaultName="keep", uploadId=upload_id, archiveSize=str(len(whole)),
        checksum=tree_hash(whole))
    assert done["checksum"] == tree_hash(whole)
    assert _retrieve(glacier, "keep", done["archiveId"]) == whole
    assert glacier.list_multipart_uploads(vaultName="keep")["UploadsList"] == []


# ---- kill -9 while a part is streaming ---------------------------------------------------------


class _StallingBody(io.BytesIO):
    """A part body that, once armed (at send time), stops after `stall_at` bytes until released."""

    def __init__(self, data: bytes, stall_at: int) -> None:
        super().__init__(data)
        self.stall_at = stall_at
        self.armed = False
        self.stalled = threading.Event()
        self.release = threading.Event()

    def read(self, size=-1):
        if self.armed and self.tell() >= self.stall_at:
            self.stalled.set()
            self.release.wait(60)
            raise ConnectionAbortedError("test released the stalled upload")
        if self.armed and size is not None and size >= 0:
            size = min(size, self.stall_at - self.tell())
        elif self.armed:
            size = self.stall_at - self.tell()
        return super().read(size)


def test_kill9_during_part_upload_keeps_acknowledged_parts(serve_process, tmp_path):
    data_dir = tmp_path / "data"
    part_size = 4 * MiB
    server = serve_process(*QUIET, data_dir=data_dir)
    glacier = server.client(config=RETRIES_OFF)
    glacier.create_vault(vaultName="v")
    upload_id = glacier.initiate_multipart_upload(
        vaultName="v", partSize=str(part_size))["uploadId"]
    parts = [os.urandom(part_size) for _ in range(3)] + [os.urandom(MiB + 77)]
    for index in range(3):
        _put_part(glacier, "v", upload_id, parts[index], index * part_size)

    # A fourth, full-size part streams half way (well past the server's first 1 MiB read),
    # then stalls; the server is killed while it waits for the rest.
    in_flight = os.urandom(part_size)
    body = _StallingBody(in_flight, stall_at=part_size // 2 + MiB // 2)
    sender = server.client(config=RETRIES_OFF)
    sender.meta.events.register(
        "before-send.glacier.UploadMultipartPart", lambda **_: setattr(body, "armed", True))
    outcome: dict = {}

    def upload():
        try:
            outcome["result"] = sender.upload_multipart_part(
                vaultName="v", uploadId=upload_id,
                range=f"bytes {3 * part_size}-{4 * part_size - 1}/*", body=body)
        except Exception as error:  # noqa: BLE001 - the connection dies, that is the point
            outcome["error"] = error

    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    try:
        assert body.stalled.wait(30), "the part upload never started streaming"
        # The server has begun writing the part to DATA_DIR/tmp: wait until bytes are there.
        deadline = time.monotonic() + 30
        while not any(p.stat().st_size > 0 for p in (data_dir / "tmp").iterdir()):
            assert time.monotonic() < deadline, "no partial part appeared in DATA_DIR/tmp"
            time.sleep(0.05)
        server.kill9()
    finally:
        body.release.set()
        thread.join(30)
    assert not thread.is_alive()
    assert "result" not in outcome, "a part the server never finished was acknowledged"

    restarted = serve_process(*QUIET, data_dir=data_dir)
    glacier = restarted.client(config=RETRIES_OFF)
    assert list((data_dir / "tmp").iterdir()) == []
    assert _all_parts(glacier, "v", upload_id) == [
        {"RangeInBytes": f"{i * part_size}-{(i + 1) * part_size - 1}",
         "SHA256TreeHash": tree_hash(parts[i])}
        for i in range(3)
    ]
    _put_part(glacier, "v", upload_id, parts[3], 3 * part_size)
    whole = b"".join(parts)
    done = glacier.complete_multipart_upload(
        vaultName="v", uploadId=upload_id, archiveSize=str(len(whole)),
        checksum=tree_hash(whole))
    assert done["checksum"] == tree_hash(whole)
    assert _retrieve(glacier, "v", done["archiveId"]) == whole
    assert list((data_dir / "tmp").iterdir()) == []


def test_kill9_between_parts_keeps_acknowledged_parts(serve_process, tmp_path):
    data_dir = tmp_path / "data"
    server = serve_process(*QUIET, data_dir=data_dir)
    glacier = server.client(config=RETRIES_OFF)
    glacier.create_vault(vaultName="v")
    upload_id = glacier.initiate_multipart_upload(vaultName="v", partSize=str(MiB))["uploadId"]
    parts = [os.urandom(MiB), os.urandom(MiB), os.urandom(10)]
    _put_part(glacier, "v", upload_id, parts[0], 0)
    _put_part(glacier, "v", upload_id, parts[1], MiB)
    server.kill9()

    restarted = serve_process(*QUIET, data_dir=data_dir)
    glacier = restarted.client(config=RETRIES_OFF)
    assert [p["SHA256TreeHash"] for p in _all_parts(glacier, "v", upload_id)] == [
        tree_hash(parts[0]), tree_hash(parts[1])]
    _put_part(glacier, "v", upload_id, parts[2], 2 * MiB)
    whole = b"".join(parts)
    archive_id = glacier.complete_multipart_upload(
        vaultName="v", uploadId=upload_id, archiveSize=str(len(whole)),
        checksum=tree_hash(whole))["archiveId"]
    assert _retrieve(glacier, "v", archive_id) == whole
    assert list((data_dir / "tmp").iterdir()) == []


# ---- upload expiry -----------------------------------------------------------------------------


def test_idle_upload_expires(serve_process, tmp_path):
    server = serve_process(*QUIET, "--upload-expiry", "1", data_dir=tmp_path / "data")
    glacier = server.client(config=RETRIES_OFF)
    glacier.create_vault(vaultName="v")
    upload_id = glacier.initiate_multipart_upload(vaultName="v", partSize=str(MiB))["uploadId"]
    listed = glacier.list_multipart_uploads(vaultName="v")["UploadsList"]
    assert [u["MultipartUploadId"] for u in listed] == [upload_id]

    time.sleep(2.5)
    assert glacier.list_multipart_uploads(vaultName="v")["UploadsList"] == []
    with pytest.raises(glacier.exceptions.ResourceNotFoundException) as excinfo:
        glacier.upload_multipart_part(vaultName="v", uploadId=upload_id,
                                      range="bytes 0-9/*", body=b"0123456789")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(glacier.exceptions.ResourceNotFoundException):
        glacier.list_parts(vaultName="v", uploadId=upload_id)


# ---- vault names cannot reach outside the data dir -------------------------------------------


def _signed_raw(server, method: str, path: str, body: bytes = b"", headers=None):
    """Send a SigV4-signed request with exactly this (unnormalised) path."""
    creds = configparser.ConfigParser()
    creds.read(server.data_dir / "credentials")
    credentials = botocore.credentials.Credentials(
        creds["default"]["aws_access_key_id"], creds["default"]["aws_secret_access_key"])
    parts = urlsplit(server.endpoint_url)
    request = botocore.awsrequest.AWSRequest(
        method, server.endpoint_url + path, data=body,
        headers={"x-amz-glacier-version": "2012-06-01", **(headers or {})})
    botocore.auth.SigV4Auth(credentials, "glacier", "us-east-1").add_auth(request)
    sent = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()}
    sent["Host"] = parts.netloc
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in sent.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        reply = conn.getresponse()
        reply.read()
        return reply.status
    finally:
        conn.close()


def test_absurd_vault_names_stay_inside_data_dir(serve_process, tmp_path):
    data_dir = tmp_path / "outer" / "inner" / "data"
    server = serve_process(*QUIET, data_dir=data_dir)
    glacier = server.client(config=RETRIES_OFF)
    outside_before = {p for p in _files_under(tmp_path) if data_dir not in p.parents
                      and p != data_dir}

    payload = b"escape attempt"
    for name in ("..", ".", "%2e%2e", "..%2F..%2Fescape", "../../escape", "a/../../../escape"):
        try:
            glacier.create_vault(vaultName=name)
            glacier.upload_archive(vaultName=name, body=payload)
            glacier.initiate_multipart_upload(vaultName=name, partSize=str(MiB))
        except botocore.exceptions.ClientError as error:
            assert error.response["ResponseMetadata"]["HTTPStatusCode"] < 500, error.response
    for path in ("/-/vaults/%2e%2e", "/-/vaults/%2E%2E/archives", "/-/vaults/..%2F..%2Fescape",
                 "/-/vaults/../../escape", "/-/vaults/%2e%2e%2f%2e%2e%2fescape"):
        status = _signed_raw(server, "PUT", path)
        assert status < 500, (path, status)
        status = _signed_raw(
            server, "POST", path.rstrip("/") + ("" if path.endswith("archives") else "/archives"),
            payload, {"x-amz-sha256-tree-hash": tree_hash(payload),
                      "x-amz-content-sha256": tree_hash(payload)})
        assert status < 500, (path, status)

    outside_after = {p for p in _files_under(tmp_path) if data_dir not in p.parents
                     and p != data_dir}
    assert outside_after == outside_before
    # Everything the server wrote is in its own layout: no directory named after a vault.
    top = {p.name for p in data_dir.iterdir()}
    assert top <= {"credentials", "config", "blobs", "tmp", "glacierfs-server.sqlite3",
                   "glacierfs-server.sqlite3-wal", "glacierfs-server.sqlite3-shm",
                   "serve.lock"}, top
    for blob_dir in (data_dir / "blobs").iterdir():
        assert blob_dir.is_dir() and len(blob_dir.name) == 2
        for blob in blob_dir.iterdir():
            assert blob.name.startswith(blob_dir.name)
            # A multipart archive is a directory of its parts' files (blobs.py).
            assert blob.is_file() or all(piece.is_file() for piece in blob.iterdir())
    # The legal names '.' and '..' are ordinary vaults.
    names = [v["VaultName"] for v in glacier.list_vaults()["VaultList"]]
    assert {".", ".."} <= set(names)
    for name in names:
        assert "/" not in name


def test_start_clears_only_its_own_leftovers_in_tmp(serve_process, tmp_path):
    # A data dir given by mistake (an existing directory with a tmp/ of its own) keeps the
    # files there; a leftover of ours (a 32-hex name: a body never acknowledged) goes.
    data_dir = tmp_path / "data"
    (data_dir / "tmp").mkdir(parents=True)
    (data_dir / "tmp" / "important.txt").write_text("precious")
    (data_dir / "tmp" / "notes").mkdir()
    (data_dir / "tmp" / ("ab" * 16)).write_bytes(b"half a part")
    serve_process(*QUIET, data_dir=data_dir).client(config=RETRIES_OFF).list_vaults()
    assert sorted(p.name for p in (data_dir / "tmp").iterdir()) == ["important.txt", "notes"]
    assert (data_dir / "tmp" / "important.txt").read_text() == "precious"
