"""`glacierfs serve` as a command, and the AWS CLI v1 (`aws glacier ...`) against it."""

from __future__ import annotations

import configparser
import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from glacierfs.treehash import tree_hash

MiB = 1 << 20
AWS = Path(sys.executable).parent / "aws"
ENDPOINT = re.compile(r"http://127\.0\.0\.1:(\d+)")


def _glacierfs(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLACIERFS_")}
    return subprocess.run([sys.executable, "-m", "glacierfs", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _read_ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    assert parser.read(path) == [str(path)]
    return parser


# ---- the command -----------------------------------------------------------------------------


def test_help_lists_serve():
    result = _glacierfs("--help")
    assert result.returncode == 0
    assert re.search(r"^\s+serve\s", result.stdout, re.MULTILINE)
    serve_help = _glacierfs("serve", "--help")
    assert serve_help.returncode == 0
    for option in ("--data-dir", "--port", "--faults", "--seed", "--upload-expiry",
                   "--latency", "--access-key", "--secret-key"):
        assert option in serve_help.stdout


def test_serve_prints_endpoint_and_writes_credentials(serve_process, tmp_path):
    data_dir = tmp_path / "data"
    proc = serve_process(data_dir=data_dir)
    match = ENDPOINT.fullmatch(proc.endpoint_url)
    assert match, proc.endpoint_url
    assert int(match.group(1)) > 0

    credentials = data_dir / "credentials"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    creds = _read_ini(credentials)
    assert creds.sections() == ["default"]
    key_id = creds["default"]["aws_access_key_id"]
    secret = creds["default"]["aws_secret_access_key"]
    assert re.fullmatch(r"[A-Z0-9]{16,}", key_id)
    assert len(secret) >= 30

    config = _read_ini(data_dir / "config")
    assert config["default"]["region"] == "us-east-1"
    assert config["default"]["endpoint_url"] == proc.endpoint_url

    # The printed endpoint answers, with the stored credentials.
    assert proc.client().list_vaults()["VaultList"] == []


def test_restart_reuses_credentials(serve_process, tmp_path):
    data_dir = tmp_path / "data"
    first = serve_process(data_dir=data_dir)
    before = (data_dir / "credentials").read_text()
    first.client().create_vault(vaultName="survivor")
    assert first.stop() == 0

    second = serve_process(data_dir=data_dir)
    assert (data_dir / "credentials").read_text() == before
    assert stat.S_IMODE((data_dir / "credentials").stat().st_mode) == 0o600
    assert _read_ini(data_dir / "config")["default"]["endpoint_url"] == second.endpoint_url
    names = [v["VaultName"] for v in second.client().list_vaults()["VaultList"]]
    assert names == ["survivor"]


def test_a_second_service_on_one_data_dir_is_refused(serve_process, tmp_path):
    # It would sweep the first one's blobs as they are written (and each other's leftovers).
    data_dir = tmp_path / "data"
    first = serve_process(data_dir=data_dir)
    result = _glacierfs("serve", "--data-dir", str(data_dir))
    assert result.returncode != 0 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"glacierfs: {data_dir} is served by another glacierfs process")
    first.client().create_vault(vaultName="still-served")
    assert first.stop() == 0
    second = serve_process(data_dir=data_dir)  # the lock went with the first process
    assert [v["VaultName"] for v in second.client().list_vaults()["VaultList"]] == [
        "still-served"]


def test_explicit_keys_are_used(serve_process, tmp_path):
    import boto3
    from botocore.config import Config

    proc = serve_process("--access-key", "AKIDEXPLICIT", "--secret-key", "s3cr3t",
                         data_dir=tmp_path / "data")
    glacier = boto3.client(
        "glacier", endpoint_url=proc.endpoint_url, region_name="us-east-1",
        aws_access_key_id="AKIDEXPLICIT", aws_secret_access_key="s3cr3t",
        config=Config(retries={"total_max_attempts": 1}))
    assert glacier.list_vaults()["VaultList"] == []


def test_sigterm_exits_cleanly(serve_process, tmp_path):
    proc = serve_process(data_dir=tmp_path / "data")
    proc.client().create_vault(vaultName="v")
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(timeout=30) == 0
    stderr = proc.proc.stderr.read()
    assert "Traceback" not in stderr
    assert "stopped" in stderr


@pytest.mark.parametrize("args", [
    ["--port", "abc"],
    ["--account-id", "12"],
    ["--faults", "Nope:500:0.1"],
    ["--faults", "DescribeVault:418:0.1"],
    ["--access-key", "AKIDONLY"],
    ["--region", "nowhere"],
])
def test_bad_input_is_one_line(args, tmp_path):
    result = _glacierfs("serve", "--data-dir", str(tmp_path / "data"), *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("glacierfs:")
    assert result.stdout == ""  # no endpoint: nothing is serving


def test_missing_data_dir_is_one_line():
    result = _glacierfs("serve")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("glacierfs:")


# ---- the AWS CLI -----------------------------------------------------------------------------


class AwsCli:
    def __init__(self, proc) -> None:
        self.endpoint = proc.endpoint_url
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.update(
            AWS_SHARED_CREDENTIALS_FILE=str(proc.data_dir / "credentials"),
            AWS_CONFIG_FILE=str(proc.data_dir / "config"),
            AWS_EC2_METADATA_DISABLED="true",
        )

    def run(self, *args: str, endpoint: bool = True) -> subprocess.CompletedProcess:
        command = [str(AWS), "glacier", *args, "--account-id", "-", "--output", "json"]
        if endpoint:
            command += ["--endpoint-url", self.endpoint]
        return subprocess.run(command, capture_output=True, text=True, timeout=60,
                              env=self.env)

    def __call__(self, *args: str) -> dict:
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout) if result.stdout.strip() else {}

    def fails(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode != 0, result.stdout
        return result.stderr


@pytest.fixture
def aws(serve_process, tmp_path):
    return AwsCli(serve_process("--log-level", "warning", data_dir=tmp_path / "data"))


def test_awscli_vaults_archives_and_jobs(aws, tmp_path):
    created = aws("create-vault", "--vault-name", "cli-vault")
    assert created["location"] == "/123456789012/vaults/cli-vault"

    described = aws("describe-vault", "--vault-name", "cli-vault")
    assert described["VaultName"] == "cli-vault"
    assert described["VaultARN"] == "arn:aws:glacier:us-east-1:123456789012:vaults/cli-vault"
    assert described["NumberOfArchives"] == 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", described["CreationDate"])

    listed = aws("list-vaults")
    assert [v["VaultName"] for v in listed["VaultList"]] == ["cli-vault"]

    data = os.urandom(2 * MiB + 5)
    source = tmp_path / "archive.bin"
    source.write_bytes(data)
    uploaded = aws("upload-archive", "--vault-name", "cli-vault", "--body", str(source),
                   "--archive-description", "from the cli")
    archive_id = uploaded["archiveId"]
    assert uploaded["checksum"] == tree_hash(data)
    assert uploaded["location"] == f"/123456789012/vaults/cli-vault/archives/{archive_id}"

    stderr = aws.fails("delete-vault", "--vault-name", "cli-vault")
    assert "InvalidParameterValueException" in stderr
    assert "DeleteVault" in stderr

    job = aws("initiate-job", "--vault-name", "cli-vault", "--job-parameters",
              json.dumps({"Type": "archive-retrieval", "ArchiveId": archive_id,
                          "Description": "cli job"}))
    job_id = job["jobId"]
    assert job["location"] == f"/123456789012/vaults/cli-vault/jobs/{job_id}"

    description = aws("describe-job", "--vault-name", "cli-vault", f"--job-id={job_id}")
    assert description["JobId"] == job_id
    assert description["Action"] == "ArchiveRetrieval"
    assert description["ArchiveId"] == archive_id
    assert description["StatusCode"] == "Succeeded"
    assert description["Completed"] is True
    assert description["ArchiveSizeInBytes"] == len(data)
    assert description["SHA256TreeHash"] == tree_hash(data)
    assert description["JobDescription"] == "cli job"

    jobs = aws("list-jobs", "--vault-name", "cli-vault")
    assert [j["JobId"] for j in jobs["JobList"]] == [job_id]

    target = tmp_path / "retrieved.bin"
    output = aws("get-job-output", "--vault-name", "cli-vault", f"--job-id={job_id}",
                 str(target))
    assert output["status"] == 200
    assert output["checksum"] == tree_hash(data)
    assert output["archiveDescription"] == "from the cli"
    assert target.read_bytes() == data

    assert aws("delete-archive", "--vault-name", "cli-vault", f"--archive-id={archive_id}") == {}
    stderr = aws.fails("describe-vault", "--vault-name", "no-such-vault")
    assert "ResourceNotFoundException" in stderr


def test_awscli_multipart_upload(aws, tmp_path):
    aws("create-vault", "--vault-name", "mpu")
    initiated = aws("initiate-multipart-upload", "--vault-name", "mpu", "--part-size",
                    str(MiB), "--archive-description", "multipart from cli")
    upload_id = initiated["uploadId"]
    assert initiated["location"] == f"/123456789012/vaults/mpu/multipart-uploads/{upload_id}"

    parts = [os.urandom(MiB), os.urandom(MiB // 2 + 3)]
    first = 0
    for index, part in enumerate(parts):
        path = tmp_path / f"part{index}"
        path.write_bytes(part)
        last = first + len(part) - 1
        reply = aws("upload-multipart-part", "--vault-name", "mpu", f"--upload-id={upload_id}",
                    "--range", f"bytes {first}-{last}/*", "--body", str(path))
        assert reply["checksum"] == tree_hash(part)
        first = last + 1

    expected_parts = [
        {"RangeInBytes": f"0-{MiB - 1}", "SHA256TreeHash": tree_hash(parts[0])},
        {"RangeInBytes": f"{MiB}-{first - 1}", "SHA256TreeHash": tree_hash(parts[1])},
    ]
    # The CLI paginates ListParts and then shows only the Parts (the paginator's result key).
    paginated = aws("list-parts", "--vault-name", "mpu", f"--upload-id={upload_id}")
    assert paginated["Parts"] == expected_parts
    listing = aws("list-parts", "--vault-name", "mpu", f"--upload-id={upload_id}",
                  "--no-paginate")
    assert listing["MultipartUploadId"] == upload_id
    assert listing["PartSizeInBytes"] == MiB
    assert listing["ArchiveDescription"] == "multipart from cli"
    assert listing["VaultARN"] == "arn:aws:glacier:us-east-1:123456789012:vaults/mpu"
    assert listing["Parts"] == expected_parts

    uploads = aws("list-multipart-uploads", "--vault-name", "mpu")
    assert [u["MultipartUploadId"] for u in uploads["UploadsList"]] == [upload_id]

    whole = b"".join(parts)
    completed = aws("complete-multipart-upload", "--vault-name", "mpu",
                    f"--upload-id={upload_id}", "--checksum", tree_hash(whole),
                    "--archive-size", str(len(whole)))
    archive_id = completed["archiveId"]
    assert completed["checksum"] == tree_hash(whole)
    assert completed["location"] == f"/123456789012/vaults/mpu/archives/{archive_id}"
    assert aws("list-multipart-uploads", "--vault-name", "mpu")["UploadsList"] == []

    # A second upload, aborted.
    doomed = aws("initiate-multipart-upload", "--vault-name", "mpu", "--part-size",
                 str(MiB))["uploadId"]
    listed = aws("list-multipart-uploads", "--vault-name", "mpu")["UploadsList"]
    assert [u["MultipartUploadId"] for u in listed] == [doomed]
    assert aws("abort-multipart-upload", "--vault-name", "mpu", f"--upload-id={doomed}") == {}
    assert aws("list-multipart-uploads", "--vault-name", "mpu")["UploadsList"] == []
    stderr = aws.fails("list-parts", "--vault-name", "mpu", f"--upload-id={doomed}")
    assert "ResourceNotFoundException" in stderr

    # The completed archive has the uploaded bytes.
    job_id = aws("initiate-job", "--vault-name", "mpu", "--job-parameters",
                 json.dumps({"Type": "archive-retrieval", "ArchiveId": archive_id}))["jobId"]
    target = tmp_path / "out.bin"
    aws("get-job-output", "--vault-name", "mpu", f"--job-id={job_id}", str(target))
    assert target.read_bytes() == whole


def test_awscli_uses_endpoint_from_data_dir_config(aws):
    """The usage hint says the two files are enough: DATA_DIR/config names the endpoint."""
    result = aws.run("list-vaults", endpoint=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["VaultList"] == []
