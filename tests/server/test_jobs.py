"""Retrieval jobs through boto3: InitiateJob, DescribeJob, ListJobs, GetJobOutput.

Reference: /work/shared/glacier-api.md §2.13-§2.16 (operations), §5.3 (ranges and checksums),
§6.1 (inventory formats) and §6.2 (GlacierJobDescription).
"""

from __future__ import annotations

import json
import random
import re
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from glacierfs.server import LocalVaultServer, ServerConfig
from glacierfs.treehash import tree_hash

MiB = 1024 * 1024
SIZE = int(6.5 * MiB)  # 7 chunks, the last one short (§5.3 example)
NO_RETRIES = Config(retries={"max_attempts": 1, "mode": "standard"})
DELAY = 2.0

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
ISO_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z")

JOB_FIELDS = {  # §6.2: the 21 GlacierJobDescription members
    "JobId", "JobDescription", "Action", "ArchiveId", "VaultARN", "CreationDate", "Completed",
    "StatusCode", "StatusMessage", "ArchiveSizeInBytes", "InventorySizeInBytes", "SNSTopic",
    "CompletionDate", "SHA256TreeHash", "ArchiveSHA256TreeHash", "RetrievalByteRange", "Tier",
    "InventoryRetrievalParameters", "JobOutputPath", "SelectParameters", "OutputLocation",
}
CSV_HEADER = "ArchiveId,ArchiveDescription,CreationDate,Size,SHA256TreeHash"


# ---- helpers ------------------------------------------------------------------------------------


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def upload(glacier, vault: str, data: bytes, description: str | None = None) -> str:
    kwargs = {"archiveDescription": description} if description is not None else {}
    resp = glacier.upload_archive(vaultName=vault, body=data, **kwargs)
    assert resp["checksum"] == tree_hash(data)
    return resp["archiveId"]


def initiate(glacier, vault: str, **params) -> str:
    resp = glacier.initiate_job(vaultName=vault, jobParameters=params)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 202
    job_id = resp["jobId"]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", job_id)
    # §1: Location carries the numeric account ID even though botocore sent "-".
    assert re.fullmatch(rf"/\d{{12}}/vaults/{re.escape(vault)}/jobs/{re.escape(job_id)}",
                        resp["location"]), resp["location"]
    assert "jobOutputPath" not in resp  # select jobs only
    return job_id


def archive_job(glacier, vault: str, archive_id: str, **params) -> str:
    return initiate(glacier, vault, Type="archive-retrieval", ArchiveId=archive_id, **params)


def inventory_job(glacier, vault: str, **params) -> str:
    return initiate(glacier, vault, Type="inventory-retrieval", **params)


def raw_json(glacier, operation: str, call) -> dict:
    """The undecoded JSON body of one call: botocore drops null members when it parses."""
    captured: list[bytes] = []

    def handler(response_dict, **_):
        captured.append(response_dict["body"])

    event = f"before-parse.glacier.{operation}"
    glacier.meta.events.register(event, handler)
    try:
        call()
    finally:
        glacier.meta.events.unregister(event, handler)
    assert captured, f"no {operation} response captured"
    return json.loads(captured[-1])


def describe_raw(glacier, vault: str, job_id: str) -> dict:
    return raw_json(glacier, "DescribeJob",
                    lambda: glacier.describe_job(vaultName=vault, jobId=job_id))


def output(glacier, vault: str, job_id: str, range_: str | None = None) -> tuple[dict, bytes]:
    kwargs = {"range": range_} if range_ is not None else {}
    resp = glacier.get_job_output(vaultName=vault, jobId=job_id, **kwargs)
    return resp, resp["body"].read()


def inventory(glacier, vault: str, **params) -> list[dict]:
    job_id = inventory_job(glacier, vault, **params)
    _, body = output(glacier, vault, job_id)
    return json.loads(body)["ArchiveList"]


def wait_for_job(glacier, vault: str, job_id: str, deadline_s: float = 30.0) -> dict:
    deadline = time.monotonic() + deadline_s
    while True:
        job = glacier.describe_job(vaultName=vault, jobId=job_id)
        if job["Completed"]:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['StatusCode']}"
        time.sleep(0.2)


def error_of(excinfo) -> tuple[str, str, int]:
    err = excinfo.value.response
    return err["Error"]["Code"], err["Error"].get("Message", ""), \
        err["ResponseMetadata"]["HTTPStatusCode"]


def parse_csv_line(line: str) -> list[str]:
    """§6.1 CSV: fields may be quoted; inside quotes `\\"` is a quote and a backslash is literal."""
    fields: list[str] = []
    i = 0
    while True:
        if line.startswith('"', i):
            i += 1
            buf = []
            while True:
                assert i < len(line), f"unterminated quoted field in {line!r}"
                if line.startswith('\\"', i):
                    buf.append('"')
                    i += 2
                elif line[i] == '"':
                    i += 1
                    break
                else:
                    buf.append(line[i])
                    i += 1
            fields.append("".join(buf))
        else:
            j = line.find(",", i)
            if j < 0:
                fields.append(line[i:])
                return fields
            fields.append(line[i:j])
            i = j
        if i >= len(line):
            return fields
        assert line[i] == ",", f"junk after a quoted field in {line!r}"
        i += 1


def floor_second(date: str) -> str:
    """A service date (ms precision) truncated to an ISO 8601 second-precision filter date."""
    return date[:19] + "Z"


# ---- fixtures -----------------------------------------------------------------------------------


def upload_in_parts(glacier, vault: str, data: bytes, part_size: int, description: str) -> str:
    """A multipart upload of `data`; the server keeps it as a composite of its part blobs."""
    upload_id = glacier.initiate_multipart_upload(
        vaultName=vault, partSize=str(part_size), archiveDescription=description)["uploadId"]
    for first in range(0, len(data), part_size):
        piece = data[first:first + part_size]
        glacier.upload_multipart_part(vaultName=vault, uploadId=upload_id, body=piece,
                                      range=f"bytes {first}-{first + len(piece) - 1}/*")
    resp = glacier.complete_multipart_upload(vaultName=vault, uploadId=upload_id,
                                             archiveSize=str(len(data)),
                                             checksum=tree_hash(data))
    return resp["archiveId"]


@pytest.fixture(params=["single", "multipart"])
def big(request, glacier, vault):
    """A 6.5 MiB archive with a description, sent in one request or in 2 MiB parts (4, the last
    short, so ranges cross the server's part files): (archive_id, data, tree_hash)."""
    data = payload(SIZE, seed=65)
    if request.param == "single":
        archive_id = upload(glacier, vault, data, "six and a half")
    else:
        archive_id = upload_in_parts(glacier, vault, data, 2 * MiB, "six and a half")
    return archive_id, data, tree_hash(data)


@pytest.fixture
def slow(tmp_path):
    """A second server whose jobs stay InProgress for DELAY seconds, with a vault: (client, vault)."""
    with LocalVaultServer(ServerConfig(data_dir=tmp_path / "d", job_delay=DELAY)) as srv:
        client = boto3.client("glacier", config=NO_RETRIES, **srv.client_kwargs())
        client.create_vault(vaultName="slow-vault")
        yield client, "slow-vault"


# ---- archive retrieval: whole archive ----------------------------------------------------------


def test_whole_archive_retrieval_output(glacier, vault, big):
    archive_id, data, whole = big
    job_id = archive_job(glacier, vault, archive_id, Description="get it all")
    resp, body = output(glacier, vault, job_id)
    assert body == data
    assert resp["status"] == 200
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["checksum"] == whole
    assert resp["contentType"] == "application/octet-stream"
    assert resp["archiveDescription"] == "six and a half"
    assert resp["acceptRanges"] == "bytes"
    assert "contentRange" not in resp


def test_whole_archive_job_description(glacier, vault, big):
    archive_id, data, whole = big
    arn = glacier.describe_vault(vaultName=vault)["VaultARN"]
    job_id = archive_job(glacier, vault, archive_id, Description="describe me")
    raw = describe_raw(glacier, vault, job_id)
    missing = JOB_FIELDS - set(raw)
    assert not missing, f"DescribeJob lacks {sorted(missing)}"
    assert raw["JobId"] == job_id
    assert raw["JobDescription"] == "describe me"
    assert raw["Action"] == "ArchiveRetrieval"
    assert raw["ArchiveId"] == archive_id
    assert raw["VaultARN"] == arn
    assert ISO_MS.fullmatch(raw["CreationDate"])
    assert raw["Completed"] is True
    assert raw["StatusCode"] == "Succeeded"
    assert raw["StatusMessage"] == "Succeeded"
    assert raw["ArchiveSizeInBytes"] == SIZE
    assert raw["InventorySizeInBytes"] is None
    assert raw["SNSTopic"] is None
    assert ISO_MS.fullmatch(raw["CompletionDate"])
    assert raw["CompletionDate"] >= raw["CreationDate"]
    assert raw["SHA256TreeHash"] == whole
    assert raw["ArchiveSHA256TreeHash"] == whole
    assert raw["RetrievalByteRange"] == f"0-{SIZE - 1}"
    assert raw["Tier"] == "Standard"
    assert raw["InventoryRetrievalParameters"] is None
    assert raw["JobOutputPath"] is None
    assert raw["SelectParameters"] is None
    assert raw["OutputLocation"] is None
    # boto3's parsed view agrees.
    parsed = glacier.describe_job(vaultName=vault, jobId=job_id)
    assert parsed["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert parsed["JobId"] == job_id
    assert parsed["SHA256TreeHash"] == whole


def test_tier_is_echoed(glacier, vault):
    archive_id = upload(glacier, vault, b"tiny archive", "t")
    for tier in ("Expedited", "Standard", "Bulk"):
        job_id = archive_job(glacier, vault, archive_id, Tier=tier)
        assert glacier.describe_job(vaultName=vault, jobId=job_id)["Tier"] == tier
        job_id = inventory_job(glacier, vault, Tier=tier)
        assert glacier.describe_job(vaultName=vault, jobId=job_id)["Tier"] == tier


def test_job_without_description_has_null_job_description(glacier, vault):
    archive_id = upload(glacier, vault, b"x" * 100, "d")
    job_id = archive_job(glacier, vault, archive_id)
    raw = describe_raw(glacier, vault, job_id)
    assert raw["JobDescription"] is None
    assert raw["RetrievalByteRange"] == "0-99"
    assert raw["SHA256TreeHash"] == tree_hash(b"x" * 100)


# ---- GetJobOutput Range on a whole-archive job (§2.16, §5.3) -----------------------------------


RANGED_OUTPUT_CASES = [
    (2 * MiB, 4 * MiB - 1, True),  # node (2,4): tree-hash aligned
    (0, MiB - 1, True),  # a leaf
    (4 * MiB, SIZE - 1, True),  # node (4,7), ends on the short last chunk
    (6 * MiB, SIZE - 1, True),  # the short last leaf
    (MiB, 3 * MiB - 1, False),  # MB-aligned, not a node (§5.3 example)
    (0, 3 * MiB - 1, False),  # MB-aligned, not a node
    (100, 5000, False),  # not MB-aligned
    (MiB, 2 * MiB + 10, False),  # starts aligned, ends mid-chunk
]


def test_ranged_output_of_whole_archive_job(glacier, vault, big):
    archive_id, data, _ = big
    job_id = archive_job(glacier, vault, archive_id)
    for first, last, has_checksum in RANGED_OUTPUT_CASES:
        case = f"bytes={first}-{last}"
        resp, body = output(glacier, vault, job_id, case)
        assert resp["status"] == 206, case
        assert resp["ResponseMetadata"]["HTTPStatusCode"] == 206, case
        assert resp["contentRange"] == f"bytes {first}-{last}/{SIZE}", case
        assert body == data[first:last + 1], case
        assert resp["contentType"] == "application/octet-stream", case
        assert resp["acceptRanges"] == "bytes", case
        if has_checksum:
            assert resp.get("checksum") == tree_hash(data[first:last + 1]), case
        else:
            assert "checksum" not in resp, (case, resp.get("checksum"))


# ---- RetrievalByteRange jobs (§2.13, §5.3) ------------------------------------------------------


def test_tree_hash_aligned_retrieval_byte_range(glacier, vault, big):
    archive_id, data, whole = big
    first, last = 2 * MiB, 4 * MiB - 1
    piece = data[first:last + 1]
    job_id = archive_job(glacier, vault, archive_id, RetrievalByteRange=f"{first}-{last}")
    raw = describe_raw(glacier, vault, job_id)
    assert raw["RetrievalByteRange"] == f"{first}-{last}"
    assert raw["SHA256TreeHash"] == tree_hash(piece)
    assert raw["ArchiveSHA256TreeHash"] == whole
    assert raw["ArchiveSizeInBytes"] == SIZE
    assert raw["StatusCode"] == "Succeeded"

    resp, body = output(glacier, vault, job_id)
    assert resp["status"] == 200
    assert body == piece
    assert resp["checksum"] == tree_hash(piece)

    # A Range on GetJobOutput is relative to the retrieved range.
    resp, body = output(glacier, vault, job_id, "bytes=0-1048575")
    assert resp["status"] == 206
    assert resp["contentRange"] == f"bytes 0-1048575/{len(piece)}"
    assert body == data[2 * MiB:3 * MiB]
    assert resp["checksum"] == tree_hash(data[2 * MiB:3 * MiB])

    resp, body = output(glacier, vault, job_id, "bytes=1048576-2097151")
    assert resp["contentRange"] == f"bytes 1048576-2097151/{len(piece)}"
    assert body == data[3 * MiB:4 * MiB]
    assert resp["checksum"] == tree_hash(data[3 * MiB:4 * MiB])

    resp, body = output(glacier, vault, job_id, "bytes=10-20")
    assert body == data[first + 10:first + 21]
    assert "checksum" not in resp


def test_megabyte_but_not_tree_hash_aligned_retrieval_byte_range(glacier, vault, big):
    archive_id, data, whole = big
    first, last = MiB, 3 * MiB - 1
    job_id = archive_job(glacier, vault, archive_id, RetrievalByteRange=f"{first}-{last}")
    raw = describe_raw(glacier, vault, job_id)
    assert raw["StatusCode"] == "Succeeded"
    assert raw["RetrievalByteRange"] == f"{first}-{last}"
    assert "SHA256TreeHash" in raw
    assert raw["SHA256TreeHash"] is None
    assert raw["ArchiveSHA256TreeHash"] == whole

    resp, body = output(glacier, vault, job_id)
    assert body == data[first:last + 1]
    assert "checksum" not in resp, resp.get("checksum")

    # Relative 1-2 MiB is archive bytes 2-3 MiB, a node; but the job's range is not, so still
    # no checksum (§5.3: "If the job's range is not aligned, no checksum is ever returned").
    resp, body = output(glacier, vault, job_id, "bytes=1048576-2097151")
    assert body == data[2 * MiB:3 * MiB]
    assert "checksum" not in resp, resp.get("checksum")


def test_non_megabyte_aligned_retrieval_byte_range_is_rejected(glacier, vault, big):
    archive_id, _, _ = big
    for range_ in ["0-1000", "1-1048576", "1048576-2097150", "0-1048576", f"0-{SIZE - 2}",
                   f"0-{SIZE}", f"{MiB}-{SIZE + MiB}"]:
        with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
            archive_job(glacier, vault, archive_id, RetrievalByteRange=range_)
        assert error_of(excinfo)[2] == 400, range_
    assert glacier.list_jobs(vaultName=vault)["JobList"] == []


def test_retrieval_byte_range_ending_at_last_byte(glacier, vault, big):
    archive_id, data, whole = big
    last = SIZE - 1
    # (first, tree-hash aligned?): nodes (6,7), (4,7), (0,7); 1 MiB-end is no node.
    for first, aligned in [(6 * MiB, True), (4 * MiB, True), (MiB, False), (0, True)]:
        piece = data[first:]
        job_id = archive_job(glacier, vault, archive_id, RetrievalByteRange=f"{first}-{last}")
        raw = describe_raw(glacier, vault, job_id)
        assert raw["RetrievalByteRange"] == f"{first}-{last}", first
        assert raw["ArchiveSHA256TreeHash"] == whole, first
        assert raw["SHA256TreeHash"] == (tree_hash(piece) if aligned else None), first
        resp, body = output(glacier, vault, job_id)
        assert body == piece, first
        assert resp.get("checksum") == (tree_hash(piece) if aligned else None), first


def test_retrieval_byte_range_of_small_archive(glacier, vault):
    data = payload(1000, seed=3)
    archive_id = upload(glacier, vault, data, "small")
    job_id = archive_job(glacier, vault, archive_id, RetrievalByteRange="0-999")
    raw = describe_raw(glacier, vault, job_id)
    assert raw["RetrievalByteRange"] == "0-999"
    assert raw["SHA256TreeHash"] == tree_hash(data)
    resp, body = output(glacier, vault, job_id)
    assert body == data
    assert resp["checksum"] == tree_hash(data)


# ---- job timing: InProgress, then Succeeded (§2.14, §2.16) -------------------------------------


def test_job_in_progress_then_succeeded(slow):
    client, vault = slow
    data = payload(2 * MiB + 1, seed=9)
    archive_id = upload(client, vault, data, "slow")
    job_id = archive_job(client, vault, archive_id, Description="wait for me")

    raw = describe_raw(client, vault, job_id)
    assert not JOB_FIELDS - set(raw)
    assert raw["StatusCode"] == "InProgress"
    assert raw["Completed"] is False
    assert raw["CompletionDate"] is None
    assert raw["StatusMessage"] == "Operation in progress."
    assert raw["SHA256TreeHash"] is None  # whole-archive job while InProgress (§5.3)
    assert raw["ArchiveSHA256TreeHash"] == tree_hash(data)
    assert raw["JobDescription"] == "wait for me"
    parsed = client.describe_job(vaultName=vault, jobId=job_id)
    assert parsed["Completed"] is False
    assert parsed.get("CompletionDate") is None

    with pytest.raises(client.exceptions.InvalidParameterValueException) as excinfo:
        client.get_job_output(vaultName=vault, jobId=job_id)
    code, message, status = error_of(excinfo)
    assert status == 400
    assert "not currently available" in message
    assert message == f"The job is not currently available for download: {job_id}"

    done = wait_for_job(client, vault, job_id)
    assert done["StatusCode"] == "Succeeded"
    assert done["StatusMessage"] == "Succeeded"
    assert done["Completed"] is True
    assert ISO_MS.fullmatch(done["CompletionDate"])
    assert done["CompletionDate"] >= done["CreationDate"]
    assert done["SHA256TreeHash"] == tree_hash(data)
    resp, body = output(client, vault, job_id)
    assert body == data
    assert resp["checksum"] == tree_hash(data)


def test_a_ranged_job_in_progress_already_has_its_range_s_tree_hash(slow):
    # §5.3: only a whole-archive job hides SHA256TreeHash while InProgress; a tree-hash
    # aligned range has its hash at once, a merely megabyte aligned one never.
    client, vault = slow
    data = payload(3 * MiB + 100, seed=10)
    archive_id = upload(client, vault, data, "ranged")
    for first, last, aligned in ((0, MiB - 1, True), (2 * MiB, len(data) - 1, True),
                                 (0, 2 * MiB - 1, True), (MiB, 3 * MiB - 1, False)):
        job_id = archive_job(client, vault, archive_id, RetrievalByteRange=f"{first}-{last}")
        raw = describe_raw(client, vault, job_id)
        assert raw["StatusCode"] == "InProgress"
        expected = tree_hash(data[first:last + 1]) if aligned else None
        assert raw["SHA256TreeHash"] == expected, (first, last)


# ---- inventory retrieval (§6.1) -----------------------------------------------------------------


def test_json_inventory(glacier, vault):
    arn = glacier.describe_vault(vaultName=vault)["VaultARN"]
    blobs = {"first archive": payload(10, 1), "second": payload(MiB + 5, 2),
             "third one": payload(3 * MiB, 3)}
    ids = {upload(glacier, vault, data, desc): (desc, data) for desc, data in blobs.items()}

    job_id = inventory_job(glacier, vault, Description="inventory please")
    resp, body = output(glacier, vault, job_id)
    assert resp["status"] == 200
    assert resp["contentType"] == "application/json"
    assert "checksum" not in resp
    doc = json.loads(body)
    assert doc["VaultARN"] == arn
    assert ISO_DATE.fullmatch(doc["InventoryDate"])
    listed = {a["ArchiveId"]: a for a in doc["ArchiveList"]}
    assert set(listed) == set(ids)
    assert len(doc["ArchiveList"]) == 3
    for archive_id, (desc, data) in ids.items():
        entry = listed[archive_id]
        assert set(entry) >= {"ArchiveId", "ArchiveDescription", "CreationDate", "Size",
                              "SHA256TreeHash"}
        assert entry["ArchiveDescription"] == desc
        assert ISO_MS.fullmatch(entry["CreationDate"])
        assert entry["Size"] == len(data)
        assert isinstance(entry["Size"], int)
        assert entry["SHA256TreeHash"] == tree_hash(data)

    raw = describe_raw(glacier, vault, job_id)
    assert not JOB_FIELDS - set(raw)
    assert raw["Action"] == "InventoryRetrieval"
    assert raw["JobDescription"] == "inventory please"
    assert raw["ArchiveId"] is None
    assert raw["ArchiveSizeInBytes"] is None
    assert raw["RetrievalByteRange"] is None
    assert raw["SHA256TreeHash"] is None
    assert raw["InventorySizeInBytes"] == len(body)
    assert raw["Completed"] is True
    assert raw["StatusCode"] == "Succeeded"
    assert raw["Tier"] == "Standard"
    assert raw["InventoryRetrievalParameters"]["Format"] == "JSON"
    assert raw["InventoryRetrievalParameters"].get("Marker") is None

    # A ranged download of inventory output: 206 with Content-Range, never a checksum.
    resp, part = output(glacier, vault, job_id, "bytes=0-9")
    assert resp["status"] == 206
    assert resp["contentRange"] == f"bytes 0-9/{len(body)}"
    assert part == body[:10]
    assert "checksum" not in resp


def test_inventory_reflects_archives_present_when_job_starts(slow):
    client, vault = slow
    keep = [upload(client, vault, payload(100, i), f"keep {i}") for i in range(3)]
    gone = upload(client, vault, b"to be deleted", "gone")
    client.delete_archive(vaultName=vault, archiveId=gone)
    job_id = inventory_job(client, vault)
    late = upload(client, vault, b"uploaded after the job started", "late")
    raw = describe_raw(client, vault, job_id)
    assert raw["StatusCode"] == "InProgress"
    assert raw["InventorySizeInBytes"] is None  # null until done (§6.2)
    assert raw["CompletionDate"] is None
    wait_for_job(client, vault, job_id)
    _, body = output(client, vault, job_id)
    listed = [a["ArchiveId"] for a in json.loads(body)["ArchiveList"]]
    assert sorted(listed) == sorted(keep)
    assert gone not in listed
    assert late not in listed


def test_deleted_archive_is_absent_from_inventory(glacier, vault):
    a = upload(glacier, vault, b"a", "a")
    b = upload(glacier, vault, b"b", "b")
    glacier.delete_archive(vaultName=vault, archiveId=a)
    assert [x["ArchiveId"] for x in inventory(glacier, vault)] == [b]


def test_csv_inventory(glacier, vault):
    descriptions = [
        "plain",
        'my archive description,1"2',
        "back\\slash",
        'back\\slash, and "quote"',
        '{"json": "like", "x": 1}',
    ]
    ids = [upload(glacier, vault, payload(50 + i, i), d) for i, d in enumerate(descriptions)]
    job_id = inventory_job(glacier, vault, Format="CSV")
    resp, body = output(glacier, vault, job_id)
    assert resp["status"] == 200
    assert resp["contentType"] == "text/csv"
    assert "checksum" not in resp
    text = body.decode("ascii")
    lines = [line for line in text.splitlines() if line]
    assert lines[0] == CSV_HEADER
    assert len(lines) == 1 + len(ids)

    rows = {}
    for line in lines[1:]:
        fields = parse_csv_line(line)
        assert len(fields) == 5, line
        rows[fields[0]] = (fields, line)
    assert set(rows) == set(ids)
    for i, (archive_id, desc) in enumerate(zip(ids, descriptions)):
        fields, line = rows[archive_id]
        assert fields[1] == desc, line
        assert ISO_MS.fullmatch(fields[2])
        assert fields[3] == str(50 + i)
        assert fields[4] == tree_hash(payload(50 + i, i))

    # The documented example verbatim, and a backslash that is not escaped.
    assert '"my archive description,1\\"2"' in rows[ids[1]][1]
    assert rows[ids[2]][1].split(",")[1] in ("back\\slash", '"back\\slash"')
    assert '"back\\slash, and \\"quote\\""' in rows[ids[3]][1]

    desc = glacier.describe_job(vaultName=vault, jobId=job_id)
    assert desc["InventoryRetrievalParameters"]["Format"] == "CSV"
    assert desc["InventorySizeInBytes"] == len(body)


def test_inventory_date_filters(glacier, vault):
    a = upload(glacier, vault, b"archive a", "a")
    time.sleep(1.1)
    b = upload(glacier, vault, b"archive b", "b")
    time.sleep(1.1)
    c = upload(glacier, vault, b"archive c", "c")
    dates = {x["ArchiveId"]: x["CreationDate"] for x in inventory(glacier, vault)}
    assert dates[a] < dates[b] < dates[c]
    # Second-precision bounds: floor(B) lies after A and floor(C) after B (uploads are > 1 s apart).
    start, end = floor_second(dates[b]), floor_second(dates[c])

    def ids(**filters):
        return {x["ArchiveId"] for x in
                inventory(glacier, vault, InventoryRetrievalParameters=filters)}

    assert ids(StartDate=start) == {b, c}
    assert ids(EndDate=end) == {a, b}
    assert ids(StartDate=start, EndDate=end) == {b}
    assert ids(StartDate=floor_second(dates[a])) == {a, b, c}

    job_id = inventory_job(glacier, vault,
                           InventoryRetrievalParameters={"StartDate": start, "EndDate": end})
    params = glacier.describe_job(vaultName=vault, jobId=job_id)["InventoryRetrievalParameters"]
    assert params["StartDate"] == start
    assert params["EndDate"] == end


def test_inventory_limit_and_marker_paging(glacier, vault):
    all_ids = [upload(glacier, vault, payload(20 + i, i), f"n{i}") for i in range(5)]
    seen: list[str] = []
    markers: list[str | None] = []
    marker = None
    for _ in range(10):
        params = {"Limit": "2"}
        if marker is not None:
            params["Marker"] = marker
        job_id = inventory_job(glacier, vault, InventoryRetrievalParameters=params)
        _, body = output(glacier, vault, job_id)
        page = [x["ArchiveId"] for x in json.loads(body)["ArchiveList"]]
        assert 1 <= len(page) <= 2
        seen.extend(page)
        raw = describe_raw(glacier, vault, job_id)
        echo = raw["InventoryRetrievalParameters"]
        assert "Marker" in echo
        assert echo["Limit"] == "2"
        marker = echo["Marker"]
        markers.append(marker)
        if marker is None:
            break
    assert len(markers) == 3
    assert all(isinstance(m, str) and m for m in markers[:-1])
    assert markers[-1] is None
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == set(all_ids)


def test_inventory_limit_exact_fit_has_null_marker(glacier, vault):
    ids = [upload(glacier, vault, payload(30 + i, i), f"e{i}") for i in range(3)]
    job_id = inventory_job(glacier, vault, InventoryRetrievalParameters={"Limit": "3"})
    _, body = output(glacier, vault, job_id)
    assert sorted(x["ArchiveId"] for x in json.loads(body)["ArchiveList"]) == sorted(ids)
    raw = describe_raw(glacier, vault, job_id)
    assert raw["InventoryRetrievalParameters"]["Marker"] is None


def test_describe_vault_counts_follow_inventory_jobs(glacier, vault):
    before = glacier.describe_vault(vaultName=vault)
    assert before.get("NumberOfArchives", 0) == 0
    assert before.get("SizeInBytes", 0) == 0
    assert before.get("LastInventoryDate") is None

    sizes = [1000, 2 * MiB + 5]
    ids = [upload(glacier, vault, payload(s, s), f"s{s}") for s in sizes]
    still = glacier.describe_vault(vaultName=vault)
    assert still.get("NumberOfArchives", 0) == 0  # counts are as of the last inventory (§2.2)
    assert still.get("LastInventoryDate") is None

    inventory(glacier, vault)
    after = glacier.describe_vault(vaultName=vault)
    assert after["NumberOfArchives"] == 2
    assert after["SizeInBytes"] >= sum(sizes)  # DG: includes per-archive overhead
    assert ISO_MS.fullmatch(after["LastInventoryDate"])

    glacier.delete_archive(vaultName=vault, archiveId=ids[1])
    assert glacier.describe_vault(vaultName=vault)["NumberOfArchives"] == 2  # not live
    inventory(glacier, vault)
    again = glacier.describe_vault(vaultName=vault)
    assert again["NumberOfArchives"] == 1
    assert again["SizeInBytes"] >= sizes[0]
    assert again["SizeInBytes"] < sum(sizes)
    assert again["LastInventoryDate"] >= after["LastInventoryDate"]


# ---- InitiateJob errors (§2.13, §3.2) ------------------------------------------------------------


def test_unknown_archive_is_resource_not_found(glacier, vault):
    missing = "A" * 138
    with pytest.raises(glacier.exceptions.ResourceNotFoundException) as excinfo:
        archive_job(glacier, vault, missing)
    code, message, status = error_of(excinfo)
    assert status == 404
    assert message == f"The archive ID was not found: {missing}"


def test_archive_id_on_inventory_job_is_invalid(glacier, vault):
    archive_id = upload(glacier, vault, b"data", "d")
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        inventory_job(glacier, vault, ArchiveId=archive_id)
    assert error_of(excinfo)[2] == 400


def test_retrieval_byte_range_on_inventory_job_is_invalid(glacier, vault):
    upload(glacier, vault, b"data", "d")
    with pytest.raises(glacier.exceptions.InvalidParameterValueException):
        inventory_job(glacier, vault, RetrievalByteRange="0-3")


def test_format_on_archive_job_is_an_error(glacier, vault):
    archive_id = upload(glacier, vault, b"data", "d")
    for fmt in ("CSV", "JSON"):
        with pytest.raises(ClientError) as excinfo:
            archive_job(glacier, vault, archive_id, Format=fmt)
        assert error_of(excinfo)[2] == 400, fmt
    assert glacier.list_jobs(vaultName=vault)["JobList"] == []


INVALID_JOB_PARAMETERS = [
    {"Type": "archive-retrieval", "Tier": "Fast"},
    {"Type": "archive-retrieval", "Tier": "standard"},
    {"Type": "archive-restore"},
    {"Type": "inventory-retrieval", "Description": "caf\u00e9"},
    {"Type": "archive-retrieval", "Description": "snow \u2603"},
    {"Type": "inventory-retrieval", "Description": "tab\there"},
    {"Type": "inventory-retrieval", "Description": "x" * 1025},
    {"Type": "inventory-retrieval", "Format": "XML"},
    # Limit: a whole number of at least 1, in plain ASCII digits ("\u0663" is an Arabic 3)
    {"Type": "inventory-retrieval", "InventoryRetrievalParameters": {"Limit": "0"}},
    {"Type": "inventory-retrieval", "InventoryRetrievalParameters": {"Limit": "-2"}},
    {"Type": "inventory-retrieval", "InventoryRetrievalParameters": {"Limit": "\u0663"}},
    {"Type": "inventory-retrieval", "InventoryRetrievalParameters": {"Limit": "1_000"}},
]


def test_invalid_job_parameters(glacier, vault):
    archive_id = upload(glacier, vault, b"data", "d")
    for params in INVALID_JOB_PARAMETERS:
        if params["Type"] != "inventory-retrieval":
            params = {**params, "ArchiveId": archive_id}
        with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
            initiate(glacier, vault, **params)
        assert error_of(excinfo)[2] == 400, params
    assert glacier.list_jobs(vaultName=vault)["JobList"] == []


def test_description_limits_accepted(glacier, vault):
    longest = "".join(chr(0x20 + i % 95) for i in range(1024))  # all of 0x20-0x7E
    job_id = inventory_job(glacier, vault, Description=longest)
    assert glacier.describe_job(vaultName=vault, jobId=job_id)["JobDescription"] == longest


# ---- ListJobs (§2.15) -------------------------------------------------------------------------


def test_list_jobs_lists_all_jobs_in_initiation_order(glacier, vault, big):
    archive_id, _, whole = big
    jobs = [
        archive_job(glacier, vault, archive_id),
        inventory_job(glacier, vault),
        archive_job(glacier, vault, archive_id, RetrievalByteRange=f"0-{MiB - 1}"),
    ]
    raw = raw_json(glacier, "ListJobs", lambda: glacier.list_jobs(vaultName=vault))
    assert [j["JobId"] for j in raw["JobList"]] == jobs
    assert raw.get("Marker") is None
    for entry in raw["JobList"]:
        assert not JOB_FIELDS - set(entry), sorted(JOB_FIELDS - set(entry))
    assert [j["Action"] for j in raw["JobList"]] == [
        "ArchiveRetrieval", "InventoryRetrieval", "ArchiveRetrieval"]
    assert raw["JobList"][0]["SHA256TreeHash"] == whole
    assert raw["JobList"][2]["RetrievalByteRange"] == f"0-{MiB - 1}"
    parsed = glacier.list_jobs(vaultName=vault)
    assert "Marker" not in parsed
    assert [j["JobId"] for j in parsed["JobList"]] == jobs


def test_list_jobs_pagination(glacier, vault):
    archive_id = upload(glacier, vault, b"paged", "p")
    jobs = [archive_job(glacier, vault, archive_id, Description=f"job {i}") for i in range(5)]
    pages = []
    marker = None
    for _ in range(10):
        kwargs = {"limit": "2"}
        if marker:
            kwargs["marker"] = marker
        resp = glacier.list_jobs(vaultName=vault, **kwargs)
        pages.append([j["JobId"] for j in resp["JobList"]])
        marker = resp.get("Marker")
        if not marker:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [j for p in pages for j in p] == jobs

    paginated = glacier.get_paginator("list_jobs").paginate(
        vaultName=vault, PaginationConfig={"PageSize": 3})
    got = [[j["JobId"] for j in page["JobList"]] for page in paginated]
    assert got == [jobs[:3], jobs[3:]]


def test_list_jobs_statuscode_and_completed_filters(slow):
    client, vault = slow
    archive_id = upload(client, vault, b"filter me", "f")
    done = archive_job(client, vault, archive_id, Description="done")
    wait_for_job(client, vault, done)
    running = archive_job(client, vault, archive_id, Description="running")

    def listed(**kwargs):
        return [j["JobId"] for j in client.list_jobs(vaultName=vault, **kwargs)["JobList"]]

    assert listed() == [done, running]
    assert listed(statuscode="InProgress") == [running]
    assert listed(statuscode="Succeeded") == [done]
    assert listed(statuscode="Failed") == []
    assert listed(completed="true") == [done]
    assert listed(completed="false") == [running]
    assert listed(completed="false", statuscode="Succeeded") == []
    entry = client.list_jobs(vaultName=vault, statuscode="InProgress")["JobList"][0]
    assert entry["Completed"] is False
    assert entry["StatusCode"] == "InProgress"
    assert "CompletionDate" not in entry


def test_list_jobs_bad_statuscode(glacier, vault):
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        glacier.list_jobs(vaultName=vault, statuscode="finished")
    code, message, status = error_of(excinfo)
    assert status == 400
    assert message == "The job status code is not valid: finished"


# ---- unknown jobs, deleted archives --------------------------------------------------------------


def test_unknown_job_id_is_resource_not_found(glacier, vault):
    job_id = "J" * 92
    with pytest.raises(glacier.exceptions.ResourceNotFoundException) as excinfo:
        glacier.describe_job(vaultName=vault, jobId=job_id)
    code, message, status = error_of(excinfo)
    assert status == 404
    assert message == f"The job ID was not found: {job_id}"
    with pytest.raises(glacier.exceptions.ResourceNotFoundException):
        glacier.get_job_output(vaultName=vault, jobId=job_id)


def test_job_of_another_vault_is_not_found(glacier, vault):
    glacier.create_vault(vaultName="other-vault")
    archive_id = upload(glacier, vault, b"mine", "m")
    job_id = archive_job(glacier, vault, archive_id)
    with pytest.raises(glacier.exceptions.ResourceNotFoundException):
        glacier.describe_job(vaultName="other-vault", jobId=job_id)


def test_output_survives_archive_deletion_after_completion(glacier, vault, big):
    archive_id, data, whole = big
    job_id = archive_job(glacier, vault, archive_id)
    assert glacier.describe_job(vaultName=vault, jobId=job_id)["Completed"] is True
    glacier.delete_archive(vaultName=vault, archiveId=archive_id)
    resp, body = output(glacier, vault, job_id)
    assert body == data
    assert resp["checksum"] == whole
    resp, body = output(glacier, vault, job_id, f"bytes={2 * MiB}-{4 * MiB - 1}")
    assert body == data[2 * MiB:4 * MiB]
    assert glacier.describe_job(vaultName=vault, jobId=job_id)["StatusCode"] == "Succeeded"


def test_complete_does_not_copy_the_parts(server, glacier, vault):
    """CompleteMultipartUpload links the parts' files into the archive: the data directory
    holds each byte once, and the archive reads back whole and across part boundaries."""
    data = payload(3 * MiB + 5, seed=3)
    archive_id = upload_in_parts(glacier, vault, data, MiB, "in four parts")
    inodes = {}
    for path in (server.config.data_dir / "blobs").rglob("*"):
        if path.is_file():
            info = path.stat()
            inodes[info.st_ino] = info.st_size
    assert sorted(inodes.values()) == [5, MiB, MiB, MiB]
    job_id = archive_job(glacier, vault, archive_id)
    assert output(glacier, vault, job_id)[1] == data
    resp, body = output(glacier, vault, job_id, f"bytes={MiB - 3}-{3 * MiB + 1}")
    assert body == data[MiB - 3:3 * MiB + 2]


@pytest.mark.parametrize("params", [
    {"Type": "inventory-retrieval", "Description": 5},
    {"Type": "archive-retrieval", "ArchiveId": ["a"]},
    {"Type": "inventory-retrieval", "InventoryRetrievalParameters": {"StartDate": 5}},
    {"Type": "inventory-retrieval", "InventoryRetrievalParameters": {"Marker": 5}},
])
def test_a_member_of_the_wrong_json_type_is_a_serialization_error(server, vault, params):
    # boto3 checks types itself; a client that does not must get a 400, not a retried 500.
    loose = boto3.client("glacier", config=Config(parameter_validation=False,
                                                  retries={"total_max_attempts": 1}),
                         **server.client_kwargs())
    with pytest.raises(ClientError) as excinfo:
        loose.initiate_job(vaultName=vault, jobParameters=params)
    error = excinfo.value.response
    assert error["Error"]["Code"] == "SerializationException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert loose.list_jobs(vaultName=vault)["JobList"] == []
