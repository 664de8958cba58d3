"""Fault injection, latency and request statistics of the local vault service (faults.py).

SPEC is OPERATION:KIND:WHEN; a faulted request must change nothing on the server, and botocore
must see each kind as the matching real failure: 500 -> ServiceUnavailableException, 503 -> a
5xx ClientError, 408 -> RequestTimeoutException, throttle -> ThrottlingException, drop -> the
connection closes before a complete response.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
from contextlib import ExitStack

import boto3
import botocore.exceptions
import pytest
import werkzeug.test
from botocore.config import Config
from botocore.exceptions import ClientError

from glacierfs.server import LocalVaultServer, ServerConfig, remote_set_faults, remote_stats
from glacierfs.treehash import tree_hash

MiB = 1 << 20
# botocore's `max_attempts` counts *retries*; total_max_attempts=1 means one attempt, no retry.
RETRIES_OFF = Config(retries={"total_max_attempts": 1, "mode": "standard"})
RETRIES_ON = Config(retries={"max_attempts": 5, "mode": "standard"})
KINDS = ["500", "503", "408", "throttle", "drop"]


@pytest.fixture
def make_server(tmp_path):
    """Factory for in-process servers with any ServerConfig options; all stopped at teardown."""
    with ExitStack() as stack:
        counter = iter(range(1000))

        def start(**options) -> LocalVaultServer:
            options.setdefault("data_dir", tmp_path / f"data-{next(counter)}")
            return stack.enter_context(LocalVaultServer(ServerConfig(**options)))

        yield start


def _client(server: LocalVaultServer, config: Config = RETRIES_OFF):
    return boto3.client("glacier", config=config, **server.client_kwargs())


def _new_upload(glacier, part_size: int = MiB) -> str:
    glacier.create_vault(vaultName="v")
    return glacier.initiate_multipart_upload(vaultName="v", partSize=str(part_size))["uploadId"]


def _upload_part(glacier, upload_id: str, body: bytes, first: int = 0):
    return glacier.upload_multipart_part(
        vaultName="v", uploadId=upload_id, range=f"bytes {first}-{first + len(body) - 1}/*",
        body=body,
    )


def _assert_fault(kind: str, error: Exception) -> None:
    if kind == "drop":
        assert isinstance(error, botocore.exceptions.ConnectionClosedError), repr(error)
        return
    assert isinstance(error, ClientError), repr(error)
    code = error.response["Error"]["Code"]
    status = error.response["ResponseMetadata"]["HTTPStatusCode"]
    if kind == "500":
        assert type(error).__name__ == "ServiceUnavailableException"
        assert (code, status) == ("ServiceUnavailableException", 500)
    elif kind == "503":
        assert status == 503
    elif kind == "408":
        assert type(error).__name__ == "RequestTimeoutException"
        assert (code, status) == ("RequestTimeoutException", 408)
    elif kind == "throttle":
        assert code == "ThrottlingException"
        assert status == 400


def _call_raising(call):
    """Run `call`; return the exception it raised (pytest.raises would hide a success)."""
    try:
        result = call()
    except (ClientError, botocore.exceptions.BotoCoreError) as error:
        return error
    pytest.fail(f"the faulted call succeeded: {result!r}")


# ---- one injected fault, retries off ---------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_first_part_upload_fails_then_succeeds(make_server, kind):
    server = make_server(faults=f"UploadMultipartPart:{kind}:#1")
    glacier = _client(server)
    upload_id = _new_upload(glacier)
    body = os.urandom(MiB)

    error = _call_raising(lambda: _upload_part(glacier, upload_id, body))
    _assert_fault(kind, error)
    # A faulted request leaves no trace.
    assert glacier.list_parts(vaultName="v", uploadId=upload_id)["Parts"] == []

    result = _upload_part(glacier, upload_id, body)
    assert result["checksum"] == tree_hash(body)
    parts = glacier.list_parts(vaultName="v", uploadId=upload_id)["Parts"]
    assert parts == [{"RangeInBytes": f"0-{MiB - 1}", "SHA256TreeHash": tree_hash(body)}]
    stats = server.stats()
    assert stats["requests"]["UploadMultipartPart"] == 2
    assert stats["faults"] == {f"UploadMultipartPart:{kind}": 1}


@pytest.mark.parametrize("kind", KINDS)
def test_faulted_create_vault_changes_nothing(make_server, kind):
    server = make_server(faults=f"CreateVault:{kind}:#1")
    glacier = _client(server)
    _assert_fault(kind, _call_raising(lambda: glacier.create_vault(vaultName="ghost")))
    assert glacier.list_vaults()["VaultList"] == []
    glacier.create_vault(vaultName="ghost")
    assert [v["VaultName"] for v in glacier.list_vaults()["VaultList"]] == ["ghost"]


# ---- the same faults with botocore's standard retries ---------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_standard_retries_hide_one_fault(make_server, kind):
    server = make_server(faults=f"UploadMultipartPart:{kind}:#1")
    glacier = _client(server, RETRIES_ON)
    upload_id = _new_upload(glacier)
    body = os.urandom(MiB)

    result = _upload_part(glacier, upload_id, body)
    assert result["checksum"] == tree_hash(body)
    assert result["ResponseMetadata"]["RetryAttempts"] == 1
    assert server.stats()["requests"]["UploadMultipartPart"] == 2
    parts = glacier.list_parts(vaultName="v", uploadId=upload_id)["Parts"]
    assert parts == [{"RangeInBytes": f"0-{MiB - 1}", "SHA256TreeHash": tree_hash(body)}]


def test_nth_plus_fails_every_request_from_n(make_server):
    server = make_server(faults="DescribeVault:500:#2+")
    glacier = _client(server)
    glacier.create_vault(vaultName="v")
    glacier.describe_vault(vaultName="v")
    for _ in range(3):
        with pytest.raises(glacier.exceptions.ServiceUnavailableException):
            glacier.describe_vault(vaultName="v")
    assert server.stats()["faults"] == {"DescribeVault:500": 3}


# ---- reproducible fractional faults ----------------------------------------------------------


def _pattern(make_server, seed: int) -> list[bool]:
    server = make_server(faults="DescribeVault:500:0.5", seed=seed)
    glacier = _client(server)
    glacier.create_vault(vaultName="v")
    outcome = []
    for _ in range(30):
        try:
            glacier.describe_vault(vaultName="v")
            outcome.append(True)
        except glacier.exceptions.ServiceUnavailableException:
            outcome.append(False)
    assert server.stats()["requests"]["DescribeVault"] == 30
    assert server.stats()["faults"].get("DescribeVault:500", 0) == outcome.count(False)
    return outcome


def test_seeded_fraction_is_reproducible(make_server):
    first = _pattern(make_server, seed=7)
    second = _pattern(make_server, seed=7)
    assert first == second
    # A rate of one half really mixes failures and successes.
    assert 5 <= first.count(False) <= 25


# ---- drop during a download ------------------------------------------------------------------


def test_drop_truncates_job_output(make_server):
    server = make_server(faults="GetJobOutput:drop:#1")
    glacier = _client(server)
    glacier.create_vault(vaultName="v")
    data = os.urandom(3 * MiB + 17)
    archive_id = glacier.upload_archive(vaultName="v", body=data)["archiveId"]
    job_id = glacier.initiate_job(vaultName="v", jobParameters={
        "Type": "archive-retrieval", "ArchiveId": archive_id})["jobId"]
    assert glacier.describe_job(vaultName="v", jobId=job_id)["StatusCode"] == "Succeeded"

    received = b""
    try:
        reply = glacier.get_job_output(vaultName="v", jobId=job_id)
    except (botocore.exceptions.ConnectionClosedError, botocore.exceptions.HTTPClientError):
        pass  # the connection went before the headers were read: also a failed download
    else:
        announced = int(reply["ResponseMetadata"]["HTTPHeaders"]["content-length"])
        assert announced == len(data)
        stream = reply["body"]
        try:
            while chunk := stream.read(64 * 1024):
                received += chunk
        except (botocore.exceptions.IncompleteReadError,
                botocore.exceptions.ResponseStreamingError):
            pass
        else:
            assert len(received) < announced
        assert data.startswith(received)
        assert len(received) < len(data)

    # The second download is whole.
    reply = glacier.get_job_output(vaultName="v", jobId=job_id)
    assert reply["body"].read() == data
    assert reply["checksum"] == tree_hash(data)


def _retrieval(glacier, data: bytes) -> str:
    glacier.create_vault(vaultName="v")
    archive_id = glacier.upload_archive(vaultName="v", body=data)["archiveId"]
    return glacier.initiate_job(vaultName="v", jobParameters={
        "Type": "archive-retrieval", "ArchiveId": archive_id})["jobId"]


def test_corrupt_flips_one_byte_and_keeps_the_tree_hash_header(make_server):
    server = make_server(faults="GetJobOutput:corrupt:#1")
    glacier = _client(server)
    data = os.urandom(2 * MiB + 5)
    job_id = _retrieval(glacier, data)
    reply = glacier.get_job_output(vaultName="v", jobId=job_id, range=f"bytes=0-{MiB - 1}")
    body = reply["body"].read()
    assert len(body) == MiB
    differs = [i for i in range(MiB) if body[i] != data[i]]
    assert differs == [MiB // 2] and body[MiB // 2] == data[MiB // 2] ^ 0xFF
    assert reply["checksum"] == tree_hash(data[:MiB])  # the header of the right bytes
    assert remote_stats(server.endpoint_url)["faults"] == {"GetJobOutput:corrupt": 1}
    reply = glacier.get_job_output(vaultName="v", jobId=job_id, range=f"bytes=0-{MiB - 1}")
    assert reply["body"].read() == data[:MiB]  # #1 only


def test_404_answers_as_a_forgotten_job(make_server):
    server = make_server(faults="DescribeJob:404:#1")
    glacier = _client(server)
    job_id = _retrieval(glacier, b"x" * 100)
    with pytest.raises(ClientError) as raised:
        glacier.describe_job(vaultName="v", jobId=job_id)
    assert type(raised.value).__name__ == "ResourceNotFoundException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert glacier.describe_job(vaultName="v", jobId=job_id)["StatusCode"] == "Succeeded"


def test_job_fails_makes_the_job_end_failed(make_server):
    server = make_server(faults="InitiateJob:job-fails:#1")
    glacier = _client(server)
    job_id = _retrieval(glacier, b"y" * 100)
    job = glacier.describe_job(vaultName="v", jobId=job_id)
    assert (job["StatusCode"], job["Completed"]) == ("Failed", True)
    assert "injected" in job["StatusMessage"]
    with pytest.raises(ClientError) as raised:
        glacier.get_job_output(vaultName="v", jobId=job_id)
    assert type(raised.value).__name__ == "InvalidParameterValueException"
    second = glacier.initiate_job(vaultName="v", jobParameters={
        "Type": "archive-retrieval", "ArchiveId": job["ArchiveId"]})["jobId"]
    assert glacier.describe_job(vaultName="v", jobId=second)["StatusCode"] == "Succeeded"


def test_job_fails_is_refused_for_other_operations(make_server):
    from glacierfs.errors import UserError

    with pytest.raises(UserError, match="InitiateJob only"):
        make_server(faults="DescribeJob:job-fails:#1")


# ---- latency ---------------------------------------------------------------------------------


def test_latency_is_added(make_server):
    server = make_server(latency_ms=300)
    glacier = _client(server)
    start = time.monotonic()
    glacier.list_vaults()
    assert time.monotonic() - start >= 0.3


# ---- stats -----------------------------------------------------------------------------------


def test_stats_count_each_operation_exactly(make_server):
    server = make_server()
    glacier = _client(server)
    glacier.create_vault(vaultName="a")
    glacier.create_vault(vaultName="b")
    glacier.describe_vault(vaultName="a")
    with pytest.raises(glacier.exceptions.ResourceNotFoundException):
        glacier.describe_vault(vaultName="missing")
    glacier.list_vaults()
    archive_id = glacier.upload_archive(vaultName="a", body=b"x" * 100)["archiveId"]
    upload_id = glacier.initiate_multipart_upload(vaultName="a", partSize=str(MiB))["uploadId"]
    _upload = glacier.upload_multipart_part(vaultName="a", uploadId=upload_id,
                                            range="bytes 0-9/*", body=b"0123456789")
    glacier.list_parts(vaultName="a", uploadId=upload_id)
    glacier.abort_multipart_upload(vaultName="a", uploadId=upload_id)
    glacier.delete_archive(vaultName="a", archiveId=archive_id)
    glacier.delete_vault(vaultName="b")

    stats = server.stats()
    assert stats["requests"] == {
        "CreateVault": 2,
        "DescribeVault": 2,
        "ListVaults": 1,
        "UploadArchive": 1,
        "InitiateMultipartUpload": 1,
        "UploadMultipartPart": 1,
        "ListParts": 1,
        "AbortMultipartUpload": 1,
        "DeleteArchive": 1,
        "DeleteVault": 1,
    }
    assert stats["faults"] == {}
    assert stats["spec"] == ""
    # The HTTP endpoint reports the same numbers.
    assert remote_stats(server.endpoint_url) == stats

    server.reset_stats()
    assert server.stats()["requests"] == {}


def test_remote_set_faults_changes_spec_at_run_time(make_server):
    server = make_server()
    glacier = _client(server)
    glacier.create_vault(vaultName="v")
    glacier.describe_vault(vaultName="v")

    remote_set_faults(server.endpoint_url, "DescribeVault:503:#1")
    # #1 counts from the spec change, not from server start.
    error = _call_raising(lambda: glacier.describe_vault(vaultName="v"))
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    glacier.describe_vault(vaultName="v")
    stats = remote_stats(server.endpoint_url)
    assert stats["spec"] == "DescribeVault:503:#1"
    assert stats["requests"]["DescribeVault"] == 3
    assert stats["faults"] == {"DescribeVault:503": 1}

    remote_set_faults(server.endpoint_url, "")
    assert remote_stats(server.endpoint_url)["spec"] == ""
    glacier.describe_vault(vaultName="v")


def test_remote_set_faults_rejects_bad_spec(make_server):
    server = make_server(faults="ListVaults:500:#5")
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        remote_set_faults(server.endpoint_url, "Nope:500:0.1")
    assert excinfo.value.code == 400
    # The old spec stays in force.
    assert remote_stats(server.endpoint_url)["spec"] == "ListVaults:500:#5"


def test_cli_faults_and_remote_stats(serve_process):
    proc = serve_process("--faults", "ListVaults:throttle:#1", "--seed", "3")
    glacier = proc.client(config=RETRIES_OFF)
    error = _call_raising(glacier.list_vaults)
    assert error.response["Error"]["Code"] == "ThrottlingException"
    assert glacier.list_vaults()["VaultList"] == []
    stats = remote_stats(proc.endpoint_url)
    assert stats["requests"] == {"ListVaults": 2}
    assert stats["faults"] == {"ListVaults:throttle": 1}
    assert stats["spec"] == "ListVaults:throttle:#1"


def test_a_refused_request_with_a_huge_body_is_answered_and_hung_up_on(make_server):
    # The body of a request refused before it is read (an unknown route) is not read to keep
    # the connection: the HTTP server did that in one read, so a large Content-Length took
    # that much memory, and a client that never sent it never got an answer.
    server = make_server()
    host, port = server.endpoint_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as client:
        client.sendall(b"PUT /mybucket/bigfile HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Length: 4000000000\r\n\r\n" + b"x" * 1024)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = client.recv(65536)
            assert chunk, "hung up without an answer"
            reply += chunk
    head = reply.split(b"\r\n\r\n")[0].decode().lower()
    assert head.startswith("http/1.1 4") and "connection: close" in head
    assert boto3.client("glacier", config=Config(retries={"total_max_attempts": 1}),
                        **server.client_kwargs()).list_vaults()["VaultList"] == []


def test_test_hooks_answer_on_loopback_only(make_server):
    # They are unsigned: from another address (a server on --host 0.0.0.0) they are refused.
    # The service itself, called as the HTTP server calls it, with another peer address.
    server = make_server()
    client = werkzeug.test.Client(server.app)
    far = client.put("/_glacierfs/faults", data="*:500:1",
                     environ_overrides={"REMOTE_ADDR": "192.0.2.7"})
    assert far.status_code == 403
    assert server.app.faults.snapshot()["faults"] == {}
    near = client.put("/_glacierfs/faults", data="ListVaults:500:1",
                      environ_overrides={"REMOTE_ADDR": "127.0.0.1"})
    assert near.status_code == 204
