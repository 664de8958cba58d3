"""Validation rules of `glacierfs serve` (glacier-api.md §3), driven through boto3 over HTTP.

Each rejected request must come back as the modeled error with x-amzn-RequestId, and must
leave nothing behind (no part stored, no archive, no vault, upload still open).
"""

from __future__ import annotations

import base64
import io
import json

import botocore.exceptions
import pytest
from botocore.utils import calculate_tree_hash

from glacierfs.treehash import tree_hash

from tests.glacier_asserts import rejected

MiB = 1 << 20
GiB = 1 << 30
ACCOUNT = "123456789012"


# ---- helpers ------------------------------------------------------------------------------


def th(data: bytes) -> str:
    ours = tree_hash(data)
    assert ours == calculate_tree_hash(io.BytesIO(data))
    return ours


def pattern(size: int, seed: int) -> bytes:
    block = bytes((i * 131 + seed * 17) & 0xFF for i in range(4096))
    return (block * (size // 4096 + 1))[:size]


def new_upload(glacier, vault: str, part_size: int = MiB) -> str:
    return glacier.initiate_multipart_upload(vaultName=vault, partSize=str(part_size))["uploadId"]


def put_part(glacier, vault, upload_id, first: int, body: bytes, **kwargs):
    return glacier.upload_multipart_part(
        vaultName=vault, uploadId=upload_id, body=body,
        range=kwargs.pop("range", f"bytes {first}-{first + len(body) - 1}/*"), **kwargs,
    )


def parts_of(glacier, vault, upload_id) -> list[dict]:
    return glacier.list_parts(vaultName=vault, uploadId=upload_id)["Parts"]


def archives(glacier, vault) -> list[dict]:
    job = glacier.initiate_job(vaultName=vault, jobParameters={"Type": "inventory-retrieval"})
    out = glacier.get_job_output(vaultName=vault, jobId=job["jobId"])
    return json.loads(out["body"].read())["ArchiveList"]


def retrieve(glacier, vault, archive_id) -> bytes:
    job = glacier.initiate_job(
        vaultName=vault, jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id}
    )
    return glacier.get_job_output(vaultName=vault, jobId=job["jobId"])["body"].read()


def complete(glacier, vault, upload_id, data: bytes):
    return glacier.complete_multipart_upload(
        vaultName=vault, uploadId=upload_id, archiveSize=str(len(data)), checksum=th(data)
    )


def open_upload_ids(glacier, vault) -> list[str]:
    return [u["MultipartUploadId"]
            for u in glacier.list_multipart_uploads(vaultName=vault)["UploadsList"]]


# ---- part size (§2.7, §3.3) ---------------------------------------------------------------


def test_valid_part_sizes_accepted(glacier, vault):
    sizes = [MiB << n for n in range(13)]  # 1 MiB ... 4 GiB
    assert sizes[-1] == 4 * GiB
    for size in sizes:
        upload_id = new_upload(glacier, vault, size)
        listing = glacier.list_parts(vaultName=vault, uploadId=upload_id)
        assert listing["PartSizeInBytes"] == size
    assert len(open_upload_ids(glacier, vault)) == len(sizes)


@pytest.mark.parametrize("value, shown", [
    ("0", "0"),
    (str(3 * MiB), str(3 * MiB)),
    (str(512 * 1024), str(512 * 1024)),
    (str(8 * GiB), str(8 * GiB)),
    (str(MiB + 1), str(MiB + 1)),
    (str(MiB // 2 * 3), str(MiB // 2 * 3)),
    ("-1048576", None),
    ("abc", None),
    ("1_048_576", None),  # int() takes these two; the service wants plain digits
    ("+1048576", None),
])
def test_invalid_part_size_rejected(glacier, vault, value, shown):
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        glacier.initiate_multipart_upload(vaultName=vault, partSize=value)
    message = rejected(excinfo)
    assert message.startswith("Invalid part size")
    if shown is not None:
        assert message.startswith(f"Invalid part size: {shown}.")
    assert "power of two" in message
    assert open_upload_ids(glacier, vault) == []


def test_missing_part_size_rejected_as_size_0(glacier, vault):
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        glacier.initiate_multipart_upload(vaultName=vault)
    message = rejected(excinfo)
    assert message == (
        "Invalid part size: 0. Part size must not be null, must be a power of two and be "
        "between 1048576 and 4294967296 bytes."
    )
    assert open_upload_ids(glacier, vault) == []


# ---- Content-Range (§3.3) -----------------------------------------------------------------


@pytest.mark.parametrize("header", [
    "0-3/*",
    "bytes 0-3",
    "bytes=0-3/*",
    "bytes 0-3/4",
    "bytes a-b/*",
    "bytes -3/*",
    "bytes 0-3/*x",
])
def test_content_range_bad_format(glacier, vault, header):
    upload_id = new_upload(glacier, vault)
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        put_part(glacier, vault, upload_id, 0, b"abcd", range=header)
    assert rejected(excinfo) == f"Invalid Content-Range: {header}"
    assert parts_of(glacier, vault, upload_id) == []


def test_content_range_first_after_last(glacier, vault):
    upload_id = new_upload(glacier, vault)
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        put_part(glacier, vault, upload_id, 0, b"a", range="bytes 5-4/*")
    assert rejected(excinfo) == "Invalid Content-Range: bytes 5-4/*"
    assert parts_of(glacier, vault, upload_id) == []


@pytest.mark.parametrize("header, body_len", [
    (f"bytes 0-{MiB - 1}/*", 1000),  # range longer than the body
    ("bytes 0-9/*", 20),  # body longer than the range
])
def test_content_range_length_mismatch(glacier, vault, header, body_len):
    upload_id = new_upload(glacier, vault)
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        put_part(glacier, vault, upload_id, 0, b"z" * body_len, range=header)
    assert rejected(excinfo) == (
        f"Content-Range: {header} is incompatible with Content-Length: {body_len}"
    )
    assert parts_of(glacier, vault, upload_id) == []


@pytest.mark.parametrize("part_size, first, length", [
    (2 * MiB, MiB, MiB),  # starts in the middle of a part
    (MiB, 1, 10),
    (MiB, MiB - 1, 1),
])
def test_content_range_misaligned_start(glacier, vault, part_size, first, length):
    upload_id = new_upload(glacier, vault, part_size)
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        put_part(glacier, vault, upload_id, first, b"m" * length)
    assert rejected(excinfo).startswith("Invalid Content-Range")
    assert parts_of(glacier, vault, upload_id) == []


def test_content_range_longer_than_part_size(glacier, vault):
    upload_id = new_upload(glacier, vault, MiB)
    body = pattern(MiB + 1, 1)
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        put_part(glacier, vault, upload_id, 0, body)
    assert rejected(excinfo).startswith(f"Invalid Content-Range: bytes 0-{MiB}/*")
    assert parts_of(glacier, vault, upload_id) == []


def test_part_10000_accepted_and_part_10001_rejected(glacier, vault):
    upload_id = new_upload(glacier, vault, MiB)
    last_ok = 9999 * MiB
    resp = put_part(glacier, vault, upload_id, last_ok, b"tail")
    assert resp["checksum"] == th(b"tail")

    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        put_part(glacier, vault, upload_id, 10000 * MiB, b"over")
    message = rejected(excinfo)
    assert message == (
        "This is part number 10001 for the current multipart upload. "
        "It exceeds the limit of 10000 parts."
    )
    assert parts_of(glacier, vault, upload_id) == [
        {"RangeInBytes": f"{last_ok}-{last_ok + 3}", "SHA256TreeHash": th(b"tail")}
    ]


def test_missing_content_range_rejected(glacier, vault):
    upload_id = new_upload(glacier, vault)
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        glacier.upload_multipart_part(vaultName=vault, uploadId=upload_id, body=b"abc")
    code = excinfo.value.response["Error"]["Code"]
    assert code in ("MissingParameterValueException", "InvalidParameterValueException")
    rejected(excinfo, code)
    assert parts_of(glacier, vault, upload_id) == []


# ---- part body checksums (§3.3) -----------------------------------------------------------


def test_part_wrong_tree_hash_rejected(glacier, vault):
    upload_id = new_upload(glacier, vault)
    body = pattern(MiB, 2)
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        put_part(glacier, vault, upload_id, 0, body, checksum="0" * 64)
    message = rejected(excinfo)
    assert "Checksum mismatch" in message
    assert parts_of(glacier, vault, upload_id) == []
    # The same part with its right hash goes in.
    assert put_part(glacier, vault, upload_id, 0, body)["checksum"] == th(body)


def test_part_sha256_instead_of_tree_hash_rejected(glacier, vault):
    """Above 1 MiB the plain SHA-256 is not the tree hash (§5.1)."""
    import hashlib

    upload_id = new_upload(glacier, vault, 2 * MiB)
    body = pattern(2 * MiB, 3)
    plain = hashlib.sha256(body).hexdigest()
    assert plain != th(body)
    with pytest.raises(glacier.exceptions.InvalidParameterValueException):
        put_part(glacier, vault, upload_id, 0, body, checksum=plain)
    assert parts_of(glacier, vault, upload_id) == []


def test_part_malformed_tree_hash_rejected(glacier, vault):
    upload_id = new_upload(glacier, vault)
    with pytest.raises(glacier.exceptions.InvalidParameterValueException):
        put_part(glacier, vault, upload_id, 0, b"abc", checksum="not-hex")
    assert parts_of(glacier, vault, upload_id) == []


def _wrong_content_sha256(request, **kwargs):
    del request.headers["x-amz-content-sha256"]
    request.headers["x-amz-content-sha256"] = "ab" * 32


def test_part_wrong_content_sha256_rejected(glacier, vault):
    upload_id = new_upload(glacier, vault)
    glacier.meta.events.register("before-sign.glacier.UploadMultipartPart",
                                 _wrong_content_sha256)
    try:
        with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
            put_part(glacier, vault, upload_id, 0, b"payload")
        sent = excinfo.value.response
    finally:
        glacier.meta.events.unregister("before-sign.glacier.UploadMultipartPart",
                                       _wrong_content_sha256)
    rejected(excinfo)
    assert "x-amz-content-sha256" in sent["Error"]["Message"]
    assert parts_of(glacier, vault, upload_id) == []
    assert put_part(glacier, vault, upload_id, 0, b"payload")["checksum"] == th(b"payload")


def test_archive_wrong_content_sha256_rejected(glacier, vault):
    glacier.meta.events.register("before-sign.glacier.UploadArchive", _wrong_content_sha256)
    try:
        with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
            glacier.upload_archive(vaultName=vault, body=b"payload")
    finally:
        glacier.meta.events.unregister("before-sign.glacier.UploadArchive",
                                       _wrong_content_sha256)
    rejected(excinfo)
    assert archives(glacier, vault) == []


def test_archive_wrong_tree_hash_rejected(glacier, vault):
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        glacier.upload_archive(vaultName=vault, body=b"payload", checksum="0" * 64)
    message = rejected(excinfo)
    assert message == f"Checksum mismatch: expected {'0' * 64}, computed {th(b'payload')}"
    assert archives(glacier, vault) == []


# ---- descriptions (§3.2) ------------------------------------------------------------------


def test_description_of_1024_printable_chars_accepted(glacier, vault):
    printable = "".join(chr(c) for c in range(0x21, 0x7F))  # no leading space issue
    desc = (printable * 11)[:1024]
    assert len(desc) == 1024
    archive_id = glacier.upload_archive(vaultName=vault, body=b"d", archiveDescription=desc)[
        "archiveId"]
    [entry] = archives(glacier, vault)
    assert entry["ArchiveId"] == archive_id
    assert entry["ArchiveDescription"] == desc

    upload_id = glacier.initiate_multipart_upload(vaultName=vault, partSize=str(MiB),
                                                  archiveDescription=desc)["uploadId"]
    [listed] = glacier.list_multipart_uploads(vaultName=vault)["UploadsList"]
    assert listed["MultipartUploadId"] == upload_id
    assert listed["ArchiveDescription"] == desc


def test_description_with_inner_spaces_and_tilde_kept(glacier, vault):
    desc = "a b  c ~ { } | \\ \" '"
    glacier.upload_archive(vaultName=vault, body=b"d", archiveDescription=desc)
    assert archives(glacier, vault)[0]["ArchiveDescription"] == desc


def test_multipart_description_leading_spaces_removed(glacier, vault):
    glacier.initiate_multipart_upload(vaultName=vault, partSize=str(MiB),
                                      archiveDescription="   lead")
    [listed] = glacier.list_multipart_uploads(vaultName=vault)["UploadsList"]
    assert listed["ArchiveDescription"] == "lead"


BAD_DESCRIPTIONS = [
    pytest.param("x" * 1025, id="1025-chars"),
    pytest.param("caf\u00e9", id="non-ascii"),
    pytest.param("tab\there", id="tab"),
    pytest.param("bell\x07", id="control-07"),
    pytest.param("del\x7f", id="del-7f"),
]


@pytest.mark.parametrize("desc", BAD_DESCRIPTIONS)
def test_bad_description_rejected_on_upload_archive(glacier, vault, desc):
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        glacier.upload_archive(vaultName=vault, body=b"data", archiveDescription=desc)
    rejected(excinfo)
    assert archives(glacier, vault) == []


@pytest.mark.parametrize("desc", BAD_DESCRIPTIONS)
def test_bad_description_rejected_on_initiate_multipart(glacier, vault, desc):
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        glacier.initiate_multipart_upload(vaultName=vault, partSize=str(MiB),
                                          archiveDescription=desc)
    rejected(excinfo)
    assert open_upload_ids(glacier, vault) == []


# ---- vault names (§3.1) -------------------------------------------------------------------


def test_vault_names_valid_characters_and_255(glacier):
    names = ["a", "Z", "0", "all-Valid_chars.09", "...x", "-lead", "_", "v" * 255]
    for name in names:
        resp = glacier.create_vault(vaultName=name)
        assert resp["location"] == f"/{ACCOUNT}/vaults/{name}"
        assert glacier.describe_vault(vaultName=name)["VaultName"] == name
    listed = [v["VaultName"] for p in glacier.get_paginator("list_vaults").paginate()
              for v in p["VaultList"]]
    assert listed == sorted(names)


@pytest.mark.parametrize("name", [
    pytest.param("v" * 256, id="256-chars"),
    pytest.param("has space", id="space"),
    pytest.param("colon:name", id="colon"),
    pytest.param("star*", id="star"),
    pytest.param("plus+sign", id="plus"),
    pytest.param("at@sign", id="at"),
    pytest.param("caf\u00e9", id="non-ascii"),
    pytest.param("tilde~", id="tilde"),
])
def test_bad_vault_name_rejected_on_create(glacier, name):
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        glacier.create_vault(vaultName=name)
    rejected(excinfo)
    assert glacier.list_vaults()["VaultList"] == []


# ---- UploadArchive size (§2.5, §3.7) ------------------------------------------------------


def test_upload_archive_of_zero_bytes_rejected(glacier, vault):
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        glacier.upload_archive(vaultName=vault, body=b"")
    rejected(excinfo)
    assert archives(glacier, vault) == []


def test_upload_archive_of_one_byte_accepted(glacier, vault):
    resp = glacier.upload_archive(vaultName=vault, body=b"\x00")
    assert resp["checksum"] == th(b"\x00")
    assert retrieve(glacier, vault, resp["archiveId"]) == b"\x00"


# ---- CompleteMultipartUpload checks (§3.4) ------------------------------------------------


def _assert_still_open(glacier, vault, upload_id, n_parts: int) -> None:
    assert len(parts_of(glacier, vault, upload_id)) == n_parts
    assert upload_id in open_upload_ids(glacier, vault)


def test_complete_with_missing_range_then_fixed(glacier, vault):
    data = pattern(3 * MiB, 4)
    upload_id = new_upload(glacier, vault)
    put_part(glacier, vault, upload_id, 0, data[:MiB])
    put_part(glacier, vault, upload_id, 2 * MiB, data[2 * MiB:])
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        complete(glacier, vault, upload_id, data)
    rejected(excinfo)
    _assert_still_open(glacier, vault, upload_id, 2)

    put_part(glacier, vault, upload_id, MiB, data[MiB:2 * MiB])
    done = complete(glacier, vault, upload_id, data)
    assert retrieve(glacier, vault, done["archiveId"]) == data


def test_complete_without_parts_is_rejected(glacier, vault):
    # An archive holds at least 1 byte (§3.7), by multipart as by UploadArchive.
    upload_id = new_upload(glacier, vault)
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        complete(glacier, vault, upload_id, b"")
    rejected(excinfo)
    _assert_still_open(glacier, vault, upload_id, 0)


def test_complete_with_missing_first_part_then_fixed(glacier, vault):
    data = pattern(2 * MiB, 5)
    upload_id = new_upload(glacier, vault)
    put_part(glacier, vault, upload_id, MiB, data[MiB:])
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        complete(glacier, vault, upload_id, data)
    rejected(excinfo)
    _assert_still_open(glacier, vault, upload_id, 1)
    put_part(glacier, vault, upload_id, 0, data[:MiB])
    done = complete(glacier, vault, upload_id, data)
    assert retrieve(glacier, vault, done["archiveId"]) == data


def test_complete_with_short_non_last_part_then_fixed(glacier, vault):
    data = pattern(2 * MiB + 100, 6)
    upload_id = new_upload(glacier, vault)
    # A short non-last part is accepted by UploadMultipartPart (§3.3) ...
    put_part(glacier, vault, upload_id, 0, data[:1000])
    put_part(glacier, vault, upload_id, MiB, data[MiB:2 * MiB])
    put_part(glacier, vault, upload_id, 2 * MiB, data[2 * MiB:])
    short = data[:1000] + data[MiB:]
    # ... but Complete then fails, whatever size and hash are claimed.
    for claimed in (short, data):
        with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
            complete(glacier, vault, upload_id, claimed)
        rejected(excinfo)
    _assert_still_open(glacier, vault, upload_id, 3)

    put_part(glacier, vault, upload_id, 0, data[:MiB])
    done = complete(glacier, vault, upload_id, data)
    assert retrieve(glacier, vault, done["archiveId"]) == data


@pytest.mark.parametrize("delta", [-1, +1, +MiB])
def test_complete_with_wrong_archive_size_then_fixed(glacier, vault, delta):
    data = pattern(2 * MiB + 50, 7)
    upload_id = new_upload(glacier, vault)
    for first in (0, MiB, 2 * MiB):
        put_part(glacier, vault, upload_id, first, data[first:first + MiB])
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        glacier.complete_multipart_upload(vaultName=vault, uploadId=upload_id,
                                          archiveSize=str(len(data) + delta),
                                          checksum=th(data))
    rejected(excinfo)
    _assert_still_open(glacier, vault, upload_id, 3)
    done = complete(glacier, vault, upload_id, data)
    assert retrieve(glacier, vault, done["archiveId"]) == data


def test_complete_with_wrong_tree_hash_then_fixed(glacier, vault):
    data = pattern(2 * MiB + 1, 8)
    upload_id = new_upload(glacier, vault)
    for first in (0, MiB, 2 * MiB):
        put_part(glacier, vault, upload_id, first, data[first:first + MiB])
    wrong = th(data[:-1] + b"\xff")
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        glacier.complete_multipart_upload(vaultName=vault, uploadId=upload_id,
                                          archiveSize=str(len(data)), checksum=wrong)
    assert rejected(excinfo) == f"Invalid x-amz-sha256-tree-hash: {wrong}"
    _assert_still_open(glacier, vault, upload_id, 3)
    assert archives(glacier, vault) == []
    done = complete(glacier, vault, upload_id, data)
    assert done["checksum"] == th(data)
    assert retrieve(glacier, vault, done["archiveId"]) == data


def test_complete_with_sha256_instead_of_tree_hash_rejected(glacier, vault):
    import hashlib

    data = pattern(3 * MiB, 9)
    upload_id = new_upload(glacier, vault)
    for first in (0, MiB, 2 * MiB):
        put_part(glacier, vault, upload_id, first, data[first:first + MiB])
    with pytest.raises(glacier.exceptions.InvalidParameterValueException):
        glacier.complete_multipart_upload(vaultName=vault, uploadId=upload_id,
                                          archiveSize=str(len(data)),
                                          checksum=hashlib.sha256(data).hexdigest())
    _assert_still_open(glacier, vault, upload_id, 3)


@pytest.mark.parametrize("omit", ["archiveSize", "checksum"])
def test_complete_without_required_header_rejected(glacier, vault, omit):
    data = b"small"
    upload_id = new_upload(glacier, vault)
    put_part(glacier, vault, upload_id, 0, data)
    kwargs = {"archiveSize": str(len(data)), "checksum": th(data)}
    del kwargs[omit]
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        glacier.complete_multipart_upload(vaultName=vault, uploadId=upload_id, **kwargs)
    code = excinfo.value.response["Error"]["Code"]
    assert code in ("MissingParameterValueException", "InvalidParameterValueException")
    rejected(excinfo, code)
    _assert_still_open(glacier, vault, upload_id, 1)


# ---- list limits and markers (§2.3, §2.11, §2.12, §3.6) -----------------------------------


def _list_call(glacier, vault, which: str, **kwargs):
    if which == "vaults":
        return glacier.list_vaults(**kwargs)
    if which == "uploads":
        return glacier.list_multipart_uploads(vaultName=vault, **kwargs)
    upload_id = new_upload(glacier, vault)
    return glacier.list_parts(vaultName=vault, uploadId=upload_id, **kwargs)


@pytest.mark.parametrize("which", ["vaults", "uploads", "parts"])
def test_bad_limit_rejected(glacier, vault, which):
    for limit in ("0", "abc", "-1", "1.5", "1_0", "+5"):
        with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
            _list_call(glacier, vault, which, limit=limit)
        assert limit in rejected(excinfo)


@pytest.mark.parametrize("which", ["vaults", "uploads", "parts"])
def test_made_up_marker_rejected(glacier, vault, which):
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        _list_call(glacier, vault, which, marker="not-a-real-marker")
    rejected(excinfo)


@pytest.mark.parametrize("kind", ["upload", "part", "job"])
@pytest.mark.parametrize("position", ["9" * 25, "²"])
def test_tampered_marker_rejected(glacier, vault, kind, position):
    # A marker of the right kind naming a position no row can have: past SQLite's integers,
    # or a digit int() refuses. Both were a 500, which botocore retried.
    marker = base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        if kind == "job":
            glacier.list_jobs(vaultName=vault, marker=marker)
        else:
            _list_call(glacier, vault, f"{kind}s", marker=marker)
    rejected(excinfo)


def test_empty_marker_lists_from_start(glacier, vault):
    listed = glacier.list_vaults(marker="")
    assert [v["VaultName"] for v in listed["VaultList"]] == [vault]
