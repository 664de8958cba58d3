"""Vault, archive and multipart operations of `glacierfs serve`, driven through boto3 over HTTP.

Every expectation comes from /work/shared/glacier-api.md (§1 protocol basics, §2 operations,
§3 rules, §4 errors). Jobs complete at once on the default server, so archive content and
descriptions are read back with archive-retrieval and inventory-retrieval jobs.
"""

from __future__ import annotations

import io
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

import botocore.exceptions
import pytest
from botocore.utils import calculate_tree_hash

from glacierfs.treehash import tree_hash

from tests.glacier_asserts import service_error as assert_error

MiB = 1 << 20
ACCOUNT = "123456789012"
REGION = "us-east-1"
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ARCHIVE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{138}$")
UPLOAD_ID_RE = re.compile(r"^[A-Za-z0-9_-]{92}$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")


# ---- helpers ------------------------------------------------------------------------------


def arn(vault: str) -> str:
    return f"arn:aws:glacier:{REGION}:{ACCOUNT}:vaults/{vault}"


def both_hashes(data: bytes) -> str:
    """Tree hash of `data`, checked against botocore's own implementation."""
    ours = tree_hash(data)
    assert ours == calculate_tree_hash(io.BytesIO(data))
    return ours


def retrieve(glacier, vault: str, archive_id: str):
    """Archive bytes and the GetJobOutput response, via an archive-retrieval job."""
    job = glacier.initiate_job(
        vaultName=vault, jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id}
    )
    out = glacier.get_job_output(vaultName=vault, jobId=job["jobId"])
    return out["body"].read(), out


def inventory(glacier, vault: str) -> dict:
    job = glacier.initiate_job(vaultName=vault, jobParameters={"Type": "inventory-retrieval"})
    out = glacier.get_job_output(vaultName=vault, jobId=job["jobId"])
    return json.loads(out["body"].read())


def upload_parts(glacier, vault: str, upload_id: str, data: bytes, part_size: int) -> list[str]:
    hashes = []
    for first in range(0, len(data), part_size):
        chunk = data[first:first + part_size]
        resp = glacier.upload_multipart_part(
            vaultName=vault, uploadId=upload_id, body=chunk,
            range=f"bytes {first}-{first + len(chunk) - 1}/*",
        )
        hashes.append(resp["checksum"])
    return hashes


def multipart_archive(glacier, vault: str, data: bytes, part_size: int = MiB,
                      description: str | None = None) -> tuple[str, dict]:
    kwargs = {"archiveDescription": description} if description is not None else {}
    upload_id = glacier.initiate_multipart_upload(
        vaultName=vault, partSize=str(part_size), **kwargs
    )["uploadId"]
    upload_parts(glacier, vault, upload_id, data, part_size)
    done = glacier.complete_multipart_upload(
        vaultName=vault, uploadId=upload_id, archiveSize=str(len(data)),
        checksum=both_hashes(data),
    )
    return upload_id, done


def random_data(size: int) -> bytes:
    return os.urandom(size)


# ---- CreateVault --------------------------------------------------------------------------


def test_create_vault_201_with_numeric_account_in_location(glacier):
    resp = glacier.create_vault(vaultName="alpha")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert resp["location"] == f"/{ACCOUNT}/vaults/alpha"

    explicit = glacier.create_vault(accountId="-", vaultName="beta")
    assert explicit["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert explicit["location"] == f"/{ACCOUNT}/vaults/beta"

    numeric = glacier.create_vault(accountId=ACCOUNT, vaultName="gamma")
    assert numeric["location"] == f"/{ACCOUNT}/vaults/gamma"
    assert numeric["ResponseMetadata"]["RequestId"]


def test_create_vault_is_idempotent(glacier):
    glacier.create_vault(vaultName="again")
    first = glacier.describe_vault(vaultName="again")
    repeat = glacier.create_vault(vaultName="again")
    assert repeat["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert repeat["location"] == f"/{ACCOUNT}/vaults/again"
    second = glacier.describe_vault(vaultName="again")
    assert second["CreationDate"] == first["CreationDate"]
    names = [v["VaultName"] for v in glacier.list_vaults()["VaultList"]]
    assert names == ["again"]


def test_create_vault_beyond_the_account_s_limit_is_limit_exceeded(glacier):
    # §2.1: 1,000 vaults per account. An existing one can still be "created" (idempotent).
    for n in range(1000):
        glacier.create_vault(vaultName=f"v{n:04d}")
    with pytest.raises(glacier.exceptions.LimitExceededException) as excinfo:
        glacier.create_vault(vaultName="one-too-many")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "1000" in excinfo.value.response["Error"]["Message"]
    assert glacier.create_vault(vaultName="v0999")["location"].endswith("/vaults/v0999")
    glacier.delete_vault(vaultName="v0000")
    glacier.create_vault(vaultName="one-more")  # room again
    names = [v["VaultName"] for page in glacier.get_paginator("list_vaults").paginate()
             for v in page["VaultList"]]
    assert len(names) == 1000 and "one-more" in names and "one-too-many" not in names


def test_create_vault_wrong_account_is_access_denied(glacier):
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        glacier.create_vault(accountId="111122223333", vaultName="v")
    assert excinfo.value.response["Error"]["Code"] == "AccessDeniedException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert excinfo.value.response["ResponseMetadata"]["RequestId"]
    assert glacier.list_vaults()["VaultList"] == []


# ---- DescribeVault ------------------------------------------------------------------------


def test_describe_vault_fields(glacier, vault):
    desc = glacier.describe_vault(vaultName=vault)
    assert desc["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert desc["ResponseMetadata"]["HTTPHeaders"]["content-type"].startswith("application/json")
    assert desc["VaultName"] == vault
    assert desc["VaultARN"] == f"arn:aws:glacier:us-east-1:123456789012:vaults/{vault}"
    assert DATE_RE.match(desc["CreationDate"]), desc["CreationDate"]
    # No inventory yet: no LastInventoryDate; counts are null (DG) or 0 (botocore example).
    assert "LastInventoryDate" not in desc
    assert desc.get("NumberOfArchives", 0) == 0
    assert desc.get("SizeInBytes", 0) == 0


def test_describe_vault_counts_come_from_the_last_inventory(glacier, vault):
    data = random_data(3000)
    glacier.upload_archive(vaultName=vault, body=data)
    before = glacier.describe_vault(vaultName=vault)
    assert before.get("NumberOfArchives", 0) == 0  # not live (§2.2)
    inventory(glacier, vault)
    after = glacier.describe_vault(vaultName=vault)
    assert after["NumberOfArchives"] == 1
    assert after["SizeInBytes"] >= len(data)
    assert DATE_RE.match(after["LastInventoryDate"]), after["LastInventoryDate"]


def test_describe_missing_vault_is_resource_not_found(glacier):
    with pytest.raises(glacier.exceptions.ResourceNotFoundException) as excinfo:
        glacier.describe_vault(vaultName="nope")
    response = assert_error(excinfo, "ResourceNotFoundException", 404)
    assert arn("nope") in response["Error"]["Message"]
    assert response["ResponseMetadata"]["HTTPHeaders"]["content-type"].startswith(
        "application/json")


# ---- ListVaults ---------------------------------------------------------------------------


def test_list_vaults_sorted_ascii(glacier):
    names = ["zeta", "Alpha", "beta", "0-first", "_under", "Beta.2", "a-b"]
    for name in names:
        glacier.create_vault(vaultName=name)
    listed = glacier.list_vaults()
    assert [v["VaultName"] for v in listed["VaultList"]] == sorted(names)
    assert "Marker" not in listed
    for entry in listed["VaultList"]:
        assert entry["VaultARN"] == arn(entry["VaultName"])
        assert DATE_RE.match(entry["CreationDate"])


def test_list_vaults_empty(glacier):
    listed = glacier.list_vaults()
    assert listed["VaultList"] == []
    assert "Marker" not in listed


def test_list_vaults_default_page_size_is_10(glacier):
    names = sorted(f"vault-{i:02d}" for i in range(13))
    for name in names:
        glacier.create_vault(vaultName=name)
    first = glacier.list_vaults()
    assert [v["VaultName"] for v in first["VaultList"]] == names[:10]
    assert first["Marker"]
    second = glacier.list_vaults(marker=first["Marker"])
    assert [v["VaultName"] for v in second["VaultList"]] == names[10:]
    assert "Marker" not in second


def test_list_vaults_limit(glacier):
    for name in ("a", "b", "c"):
        glacier.create_vault(vaultName=name)
    one = glacier.list_vaults(limit="1")
    assert [v["VaultName"] for v in one["VaultList"]] == ["a"]
    assert one["Marker"]
    exact = glacier.list_vaults(limit="3")
    assert [v["VaultName"] for v in exact["VaultList"]] == ["a", "b", "c"]
    assert "Marker" not in exact


def test_list_vaults_pagination_by_hand(glacier):
    names = sorted(f"v{i:02d}" for i in range(8))
    for name in reversed(names):
        glacier.create_vault(vaultName=name)
    pages = []
    marker = None
    while True:
        kwargs = {"marker": marker} if marker else {}
        page = glacier.list_vaults(limit="3", **kwargs)
        pages.append([v["VaultName"] for v in page["VaultList"]])
        marker = page.get("Marker")
        if not marker:
            break
        assert len(pages) < 10
    assert pages == [names[0:3], names[3:6], names[6:8]]


def test_list_vaults_boto3_paginator(glacier):
    names = sorted(f"pv-{i:02d}" for i in range(23))
    for name in names:
        glacier.create_vault(vaultName=name)
    paginator = glacier.get_paginator("list_vaults")

    default_pages = [[v["VaultName"] for v in p["VaultList"]] for p in paginator.paginate()]
    assert [len(p) for p in default_pages] == [10, 10, 3]
    assert sum(default_pages, []) == names

    small = list(paginator.paginate(PaginationConfig={"PageSize": 4}))
    assert [len(p["VaultList"]) for p in small] == [4, 4, 4, 4, 4, 3]
    assert [v["VaultName"] for p in small for v in p["VaultList"]] == names
    assert all("Marker" in p for p in small[:-1])
    assert "Marker" not in small[-1]


# ---- DeleteVault --------------------------------------------------------------------------


def test_delete_vault_204_and_idempotent(glacier, vault):
    resp = glacier.delete_vault(vaultName=vault)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(glacier.exceptions.ResourceNotFoundException):
        glacier.describe_vault(vaultName=vault)
    again = glacier.delete_vault(vaultName=vault)
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert glacier.list_vaults()["VaultList"] == []


def test_delete_non_empty_vault_is_invalid_parameter(glacier, vault):
    glacier.upload_archive(vaultName=vault, body=b"keep me")
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        glacier.delete_vault(vaultName=vault)
    response = assert_error(excinfo, "InvalidParameterValueException", 400)
    assert response["Error"]["Message"] == f"Vault not empty or recently written to: {arn(vault)}"
    assert glacier.describe_vault(vaultName=vault)["VaultName"] == vault


def test_delete_vault_after_archive_deleted_needs_new_inventory(glacier, vault):
    archive_id = glacier.upload_archive(vaultName=vault, body=b"short-lived")["archiveId"]
    glacier.delete_archive(vaultName=vault, archiveId=archive_id)
    # Written since the last inventory: still refused (§2.4).
    with pytest.raises(glacier.exceptions.InvalidParameterValueException):
        glacier.delete_vault(vaultName=vault)
    assert inventory(glacier, vault)["ArchiveList"] == []
    assert glacier.delete_vault(vaultName=vault)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(glacier.exceptions.ResourceNotFoundException):
        glacier.describe_vault(vaultName=vault)


# ---- UploadArchive ------------------------------------------------------------------------


def test_upload_archive_201_id_location_and_tree_hash(glacier, vault):
    data = random_data(2 * MiB + 12345)  # above 1 MiB: tree hash differs from SHA-256
    expected = both_hashes(data)
    resp = glacier.upload_archive(vaultName=vault, body=data)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    archive_id = resp["archiveId"]
    assert ARCHIVE_ID_RE.match(archive_id), archive_id
    assert resp["checksum"] == expected
    assert resp["location"] == f"/{ACCOUNT}/vaults/{vault}/archives/{archive_id}"

    content, out = retrieve(glacier, vault, archive_id)
    assert content == data
    assert out["checksum"] == expected


def test_upload_archive_ids_are_unique_for_same_content(glacier, vault):
    ids = {glacier.upload_archive(vaultName=vault, body=b"same bytes")["archiveId"]
           for _ in range(3)}
    assert len(ids) == 3
    assert all(ARCHIVE_ID_RE.match(i) for i in ids)


def test_upload_archive_description_is_stored(glacier, vault):
    data = b"described archive"
    resp = glacier.upload_archive(vaultName=vault, body=data, archiveDescription="my backup 1")
    listing = inventory(glacier, vault)
    assert listing["VaultARN"] == arn(vault)
    [entry] = listing["ArchiveList"]
    assert entry["ArchiveId"] == resp["archiveId"]
    assert entry["ArchiveDescription"] == "my backup 1"
    assert entry["Size"] == len(data)
    assert entry["SHA256TreeHash"] == both_hashes(data)
    assert DATE_RE.match(entry["CreationDate"])

    _, out = retrieve(glacier, vault, resp["archiveId"])
    assert out["archiveDescription"] == "my backup 1"


def test_upload_archive_to_missing_vault(glacier):
    with pytest.raises(glacier.exceptions.ResourceNotFoundException) as excinfo:
        glacier.upload_archive(vaultName="missing", body=b"data")
    assert_error(excinfo, "ResourceNotFoundException", 404)


def test_upload_archive_wrong_checksum_rejected(glacier, vault):
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        glacier.upload_archive(vaultName=vault, body=b"data", checksum="0" * 64)
    response = assert_error(excinfo, "InvalidParameterValueException", 400)
    assert "Checksum mismatch" in response["Error"]["Message"]
    assert inventory(glacier, vault)["ArchiveList"] == []


# ---- DeleteArchive ------------------------------------------------------------------------


def test_delete_archive_204_and_idempotent(glacier, vault):
    archive_id = glacier.upload_archive(vaultName=vault, body=b"to delete")["archiveId"]
    resp = glacier.delete_archive(vaultName=vault, archiveId=archive_id)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    again = glacier.delete_archive(vaultName=vault, archiveId=archive_id)
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert inventory(glacier, vault)["ArchiveList"] == []
    with pytest.raises(glacier.exceptions.ResourceNotFoundException):
        glacier.initiate_job(vaultName=vault,
                             jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id})


def test_delete_archive_from_another_vault_is_invalid(glacier, vault):
    glacier.create_vault(vaultName="other")
    archive_id = glacier.upload_archive(vaultName=vault, body=b"mine")["archiveId"]
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        glacier.delete_archive(vaultName="other", archiveId=archive_id)
    response = assert_error(excinfo, "InvalidParameterValueException", 400)
    assert response["Error"]["Message"].startswith(
        "Invalid vault name: arn:aws:glacier:us-east-1:123456789012:vaults/")
    content, _ = retrieve(glacier, vault, archive_id)
    assert content == b"mine"


def test_delete_unknown_archive_is_resource_not_found(glacier, vault):
    with pytest.raises(glacier.exceptions.ResourceNotFoundException) as excinfo:
        glacier.delete_archive(vaultName=vault, archiveId="A" * 138)
    assert_error(excinfo, "ResourceNotFoundException", 404)


def test_delete_archive_in_missing_vault(glacier):
    with pytest.raises(glacier.exceptions.ResourceNotFoundException):
        glacier.delete_archive(vaultName="ghost", archiveId="A" * 138)


# ---- InitiateMultipartUpload --------------------------------------------------------------


def test_initiate_multipart_upload(glacier, vault):
    resp = glacier.initiate_multipart_upload(
        vaultName=vault, partSize=str(2 * MiB), archiveDescription="mpu desc"
    )
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    upload_id = resp["uploadId"]
    assert UPLOAD_ID_RE.match(upload_id), upload_id
    assert resp["location"] == f"/{ACCOUNT}/vaults/{vault}/multipart-uploads/{upload_id}"

    [entry] = glacier.list_multipart_uploads(vaultName=vault)["UploadsList"]
    assert entry["MultipartUploadId"] == upload_id
    assert entry["VaultARN"] == arn(vault)
    assert entry["ArchiveDescription"] == "mpu desc"
    assert entry["PartSizeInBytes"] == 2 * MiB
    assert DATE_RE.match(entry["CreationDate"])

    parts = glacier.list_parts(vaultName=vault, uploadId=upload_id)
    assert parts["MultipartUploadId"] == upload_id
    assert parts["VaultARN"] == arn(vault)
    assert parts["PartSizeInBytes"] == 2 * MiB
    assert parts["ArchiveDescription"] == "mpu desc"
    assert DATE_RE.match(parts["CreationDate"])
    assert parts["Parts"] == []
    assert "Marker" not in parts


def test_initiate_multipart_upload_missing_vault(glacier):
    with pytest.raises(glacier.exceptions.ResourceNotFoundException) as excinfo:
        glacier.initiate_multipart_upload(vaultName="ghost", partSize=str(MiB))
    assert_error(excinfo, "ResourceNotFoundException", 404)


def test_initiate_without_description_lists_none(glacier, vault):
    upload_id = glacier.initiate_multipart_upload(vaultName=vault, partSize=str(MiB))["uploadId"]
    [entry] = glacier.list_multipart_uploads(vaultName=vault)["UploadsList"]
    assert entry["MultipartUploadId"] == upload_id
    assert "ArchiveDescription" not in entry  # JSON null, dropped by botocore (§1, §2.11)
    assert entry["PartSizeInBytes"] == MiB


def test_upload_ids_are_unique(glacier, vault):
    ids = {glacier.initiate_multipart_upload(vaultName=vault, partSize=str(MiB))["uploadId"]
           for _ in range(3)}
    assert len(ids) == 3


# ---- UploadMultipartPart ------------------------------------------------------------------


def test_upload_part_returns_part_tree_hash(glacier, vault):
    upload_id = glacier.initiate_multipart_upload(vaultName=vault, partSize=str(2 * MiB))[
        "uploadId"]
    part = random_data(2 * MiB)
    resp = glacier.upload_multipart_part(
        vaultName=vault, uploadId=upload_id, body=part, range=f"bytes 0-{2 * MiB - 1}/*"
    )
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert resp["checksum"] == both_hashes(part)
    assert HEX64_RE.match(resp["checksum"])
    parts = glacier.list_parts(vaultName=vault, uploadId=upload_id)["Parts"]
    assert parts == [{"RangeInBytes": f"0-{2 * MiB - 1}", "SHA256TreeHash": both_hashes(part)}]


def test_upload_part_to_unknown_upload(glacier, vault):
    with pytest.raises(glacier.exceptions.ResourceNotFoundException) as excinfo:
        glacier.upload_multipart_part(vaultName=vault, uploadId="B" * 92, body=b"x",
                                      range="bytes 0-0/*")
    assert_error(excinfo, "ResourceNotFoundException", 404)


def test_parts_in_any_order_and_in_parallel(glacier, vault):
    data = random_data(6 * MiB + 777)
    upload_id = glacier.initiate_multipart_upload(vaultName=vault, partSize=str(MiB))["uploadId"]
    starts = list(range(0, len(data), MiB))
    order = starts[::-1]
    order = order[1::2] + order[0::2]  # scrambled

    def put(first: int) -> tuple[int, str]:
        chunk = data[first:first + MiB]
        resp = glacier.upload_multipart_part(
            vaultName=vault, uploadId=upload_id, body=chunk,
            range=f"bytes {first}-{first + len(chunk) - 1}/*",
        )
        return first, resp["checksum"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(pool.map(put, order))
    for first, checksum in results.items():
        assert checksum == tree_hash(data[first:first + MiB])

    listed = glacier.list_parts(vaultName=vault, uploadId=upload_id)["Parts"]
    assert [p["RangeInBytes"] for p in listed] == [
        f"{s}-{min(s + MiB, len(data)) - 1}" for s in starts
    ]
    done = glacier.complete_multipart_upload(
        vaultName=vault, uploadId=upload_id, archiveSize=str(len(data)),
        checksum=both_hashes(data),
    )
    content, _ = retrieve(glacier, vault, done["archiveId"])
    assert content == data


def test_reuploading_a_range_replaces_it(glacier, vault):
    first_try = random_data(MiB)
    final = random_data(MiB)
    tail = random_data(1000)
    upload_id = glacier.initiate_multipart_upload(vaultName=vault, partSize=str(MiB))["uploadId"]
    glacier.upload_multipart_part(vaultName=vault, uploadId=upload_id, body=first_try,
                                  range=f"bytes 0-{MiB - 1}/*")
    glacier.upload_multipart_part(vaultName=vault, uploadId=upload_id, body=tail,
                                  range=f"bytes {MiB}-{MiB + 999}/*")
    again = glacier.upload_multipart_part(vaultName=vault, uploadId=upload_id, body=final,
                                          range=f"bytes 0-{MiB - 1}/*")
    assert again["checksum"] == tree_hash(final)

    parts = glacier.list_parts(vaultName=vault, uploadId=upload_id)["Parts"]
    assert parts == [
        {"RangeInBytes": f"0-{MiB - 1}", "SHA256TreeHash": tree_hash(final)},
        {"RangeInBytes": f"{MiB}-{MiB + 999}", "SHA256TreeHash": tree_hash(tail)},
    ]
    data = final + tail
    done = glacier.complete_multipart_upload(
        vaultName=vault, uploadId=upload_id, archiveSize=str(len(data)),
        checksum=both_hashes(data),
    )
    content, _ = retrieve(glacier, vault, done["archiveId"])
    assert content == data


# ---- CompleteMultipartUpload --------------------------------------------------------------


@pytest.mark.parametrize("part_size, size", [
    (MiB, 1),
    (MiB, MiB),
    (MiB, 3 * MiB + 5),
    (2 * MiB, 5 * MiB + 123),
    (4 * MiB, 4 * MiB),
])
def test_complete_multipart_upload_content_and_hash(glacier, vault, part_size, size):
    data = random_data(size)
    upload_id, done = multipart_archive(glacier, vault, data, part_size, description="mp")
    assert done["ResponseMetadata"]["HTTPStatusCode"] == 201
    archive_id = done["archiveId"]
    assert ARCHIVE_ID_RE.match(archive_id)
    assert done["checksum"] == both_hashes(data)
    assert done["location"] == f"/{ACCOUNT}/vaults/{vault}/archives/{archive_id}"

    content, out = retrieve(glacier, vault, archive_id)
    assert content == data
    assert out["checksum"] == both_hashes(data)
    assert out["archiveDescription"] == "mp"

    [entry] = inventory(glacier, vault)["ArchiveList"]
    assert entry["ArchiveId"] == archive_id
    assert entry["Size"] == size
    assert entry["SHA256TreeHash"] == both_hashes(data)
    assert entry["ArchiveDescription"] == "mp"


def test_complete_is_idempotent(glacier, vault):
    data = random_data(MiB + 10)
    upload_id, done = multipart_archive(glacier, vault, data)
    repeat = glacier.complete_multipart_upload(
        vaultName=vault, uploadId=upload_id, archiveSize=str(len(data)),
        checksum=both_hashes(data),
    )
    assert repeat["archiveId"] == done["archiveId"]
    assert repeat["checksum"] == done["checksum"]
    assert [a["ArchiveId"] for a in inventory(glacier, vault)["ArchiveList"]] == [
        done["archiveId"]]


def test_failed_complete_leaves_upload_open_and_retry_succeeds(glacier, vault):
    data = random_data(2 * MiB + 3)
    upload_id = glacier.initiate_multipart_upload(vaultName=vault, partSize=str(MiB))["uploadId"]
    upload_parts(glacier, vault, upload_id, data, MiB)
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        glacier.complete_multipart_upload(vaultName=vault, uploadId=upload_id,
                                          archiveSize=str(len(data)), checksum="1" * 64)
    assert_error(excinfo, "InvalidParameterValueException", 400)
    assert len(glacier.list_parts(vaultName=vault, uploadId=upload_id)["Parts"]) == 3
    assert [u["MultipartUploadId"] for u in
            glacier.list_multipart_uploads(vaultName=vault)["UploadsList"]] == [upload_id]
    done = glacier.complete_multipart_upload(vaultName=vault, uploadId=upload_id,
                                             archiveSize=str(len(data)),
                                             checksum=both_hashes(data))
    content, _ = retrieve(glacier, vault, done["archiveId"])
    assert content == data


def test_completed_upload_is_gone_from_lists(glacier, vault):
    other = glacier.initiate_multipart_upload(vaultName=vault, partSize=str(MiB))["uploadId"]
    upload_id, _ = multipart_archive(glacier, vault, random_data(100))
    listed = [u["MultipartUploadId"] for u in
              glacier.list_multipart_uploads(vaultName=vault)["UploadsList"]]
    assert listed == [other]
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        glacier.list_parts(vaultName=vault, uploadId=upload_id)
    assert excinfo.value.response["Error"]["Code"] in (
        "ResourceNotFoundException", "InvalidParameterValueException")
    assert excinfo.value.response["ResponseMetadata"]["RequestId"]
    with pytest.raises(botocore.exceptions.ClientError):
        glacier.upload_multipart_part(vaultName=vault, uploadId=upload_id, body=b"late",
                                      range="bytes 0-3/*")


def test_complete_unknown_upload(glacier, vault):
    with pytest.raises(glacier.exceptions.ResourceNotFoundException) as excinfo:
        glacier.complete_multipart_upload(vaultName=vault, uploadId="C" * 92,
                                          archiveSize="1", checksum="0" * 64)
    assert_error(excinfo, "ResourceNotFoundException", 404)


# ---- AbortMultipartUpload -----------------------------------------------------------------


def test_abort_multipart_upload(glacier, vault):
    upload_id = glacier.initiate_multipart_upload(vaultName=vault, partSize=str(MiB))["uploadId"]
    glacier.upload_multipart_part(vaultName=vault, uploadId=upload_id, body=b"abc",
                                  range="bytes 0-2/*")
    resp = glacier.abort_multipart_upload(vaultName=vault, uploadId=upload_id)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert glacier.list_multipart_uploads(vaultName=vault)["UploadsList"] == []

    with pytest.raises(glacier.exceptions.ResourceNotFoundException):
        glacier.upload_multipart_part(vaultName=vault, uploadId=upload_id, body=b"abc",
                                      range="bytes 0-2/*")
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        glacier.complete_multipart_upload(vaultName=vault, uploadId=upload_id, archiveSize="3",
                                          checksum=tree_hash(b"abc"))
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 404)
    assert inventory(glacier, vault)["ArchiveList"] == []

    twice = glacier.abort_multipart_upload(vaultName=vault, uploadId=upload_id)
    assert twice["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_abort_after_complete_fails(glacier, vault):
    data = random_data(500)
    upload_id, done = multipart_archive(glacier, vault, data)
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        glacier.abort_multipart_upload(vaultName=vault, uploadId=upload_id)
    assert excinfo.value.response["Error"]["Code"] in (
        "InvalidParameterValueException", "ResourceNotFoundException")
    assert excinfo.value.response["ResponseMetadata"]["RequestId"]
    content, _ = retrieve(glacier, vault, done["archiveId"])
    assert content == data


def test_abort_unknown_upload(glacier, vault):
    with pytest.raises(glacier.exceptions.ResourceNotFoundException) as excinfo:
        glacier.abort_multipart_upload(vaultName=vault, uploadId="D" * 92)
    assert_error(excinfo, "ResourceNotFoundException", 404)


# ---- ListMultipartUploads -----------------------------------------------------------------


def test_list_multipart_uploads_pagination(glacier, vault):
    created = {glacier.initiate_multipart_upload(vaultName=vault, partSize=str(MiB),
                                                 archiveDescription=f"u{i}")["uploadId"]
               for i in range(7)}
    pages = []
    marker = None
    while True:
        kwargs = {"marker": marker} if marker else {}
        page = glacier.list_multipart_uploads(vaultName=vault, limit="3", **kwargs)
        pages.append([u["MultipartUploadId"] for u in page["UploadsList"]])
        marker = page.get("Marker")
        if not marker:
            break
        assert len(pages) < 10
    assert [len(p) for p in pages] == [3, 3, 1]
    flat = sum(pages, [])
    assert len(flat) == len(set(flat)) == 7
    assert set(flat) == created

    paginator = glacier.get_paginator("list_multipart_uploads")
    via = list(paginator.paginate(vaultName=vault, PaginationConfig={"PageSize": 3}))
    assert [len(p["UploadsList"]) for p in via] == [3, 3, 1]
    assert "Marker" not in via[-1]
    assert {u["MultipartUploadId"] for p in via for u in p["UploadsList"]} == created


def test_list_multipart_uploads_default_limit_is_50(glacier, vault):
    created = {glacier.initiate_multipart_upload(vaultName=vault, partSize=str(MiB))["uploadId"]
               for _ in range(52)}
    first = glacier.list_multipart_uploads(vaultName=vault)
    assert len(first["UploadsList"]) == 50
    assert first["Marker"]
    second = glacier.list_multipart_uploads(vaultName=vault, marker=first["Marker"])
    assert len(second["UploadsList"]) == 2
    assert "Marker" not in second
    seen = {u["MultipartUploadId"] for u in first["UploadsList"] + second["UploadsList"]}
    assert seen == created


def test_list_multipart_uploads_missing_vault(glacier):
    with pytest.raises(glacier.exceptions.ResourceNotFoundException) as excinfo:
        glacier.list_multipart_uploads(vaultName="ghost")
    assert_error(excinfo, "ResourceNotFoundException", 404)


# ---- ListParts ----------------------------------------------------------------------------


def test_list_parts_pagination(glacier, vault):
    data = random_data(7 * MiB)
    upload_id = glacier.initiate_multipart_upload(vaultName=vault, partSize=str(MiB))["uploadId"]
    upload_parts(glacier, vault, upload_id, data, MiB)
    expected = [
        {"RangeInBytes": f"{i * MiB}-{(i + 1) * MiB - 1}",
         "SHA256TreeHash": tree_hash(data[i * MiB:(i + 1) * MiB])}
        for i in range(7)
    ]
    pages = []
    marker = None
    while True:
        kwargs = {"marker": marker} if marker else {}
        page = glacier.list_parts(vaultName=vault, uploadId=upload_id, limit="2", **kwargs)
        assert page["MultipartUploadId"] == upload_id
        assert page["PartSizeInBytes"] == MiB
        pages.append(page["Parts"])
        marker = page.get("Marker")
        if not marker:
            break
        assert len(pages) < 10
    assert [len(p) for p in pages] == [2, 2, 2, 1]
    assert sum(pages, []) == expected

    paginator = glacier.get_paginator("list_parts")
    via = list(paginator.paginate(vaultName=vault, uploadId=upload_id,
                                  PaginationConfig={"PageSize": 2}))
    assert [len(p["Parts"]) for p in via] == [2, 2, 2, 1]
    assert [part for p in via for part in p["Parts"]] == expected
    assert "Marker" not in via[-1]


def test_list_parts_default_limit_is_50(glacier, vault):
    upload_id = glacier.initiate_multipart_upload(vaultName=vault, partSize=str(MiB))["uploadId"]
    # Short non-last parts are accepted by UploadMultipartPart (§3.3): cheap parts for listing.
    for i in range(52):
        glacier.upload_multipart_part(vaultName=vault, uploadId=upload_id, body=bytes([i]) * 4,
                                      range=f"bytes {i * MiB}-{i * MiB + 3}/*")
    first = glacier.list_parts(vaultName=vault, uploadId=upload_id)
    assert len(first["Parts"]) == 50
    assert first["Marker"]
    second = glacier.list_parts(vaultName=vault, uploadId=upload_id, marker=first["Marker"])
    assert "Marker" not in second
    ranges = [p["RangeInBytes"] for p in first["Parts"] + second["Parts"]]
    assert ranges == [f"{i * MiB}-{i * MiB + 3}" for i in range(52)]


def test_list_parts_unknown_upload(glacier, vault):
    with pytest.raises(glacier.exceptions.ResourceNotFoundException) as excinfo:
        glacier.list_parts(vaultName=vault, uploadId="E" * 92)
    assert_error(excinfo, "ResourceNotFoundException", 404)


def test_upload_from_another_vault_is_not_found(glacier, vault):
    glacier.create_vault(vaultName="second")
    upload_id = glacier.initiate_multipart_upload(vaultName=vault, partSize=str(MiB))["uploadId"]
    with pytest.raises(glacier.exceptions.ResourceNotFoundException):
        glacier.list_parts(vaultName="second", uploadId=upload_id)
    assert glacier.list_multipart_uploads(vaultName="second")["UploadsList"] == []


# ---- error format -------------------------------------------------------------------------


def test_error_responses_carry_request_id_and_json_body(glacier, vault):
    request_ids = set()
    for call in (
        lambda: glacier.describe_vault(vaultName="missing-1"),
        lambda: glacier.list_parts(vaultName=vault, uploadId="F" * 92),
    ):
        with pytest.raises(glacier.exceptions.ResourceNotFoundException) as excinfo:
            call()
        response = assert_error(excinfo, "ResourceNotFoundException", 404)
        request_ids.add(response["ResponseMetadata"]["RequestId"])
        assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"] == \
            response["ResponseMetadata"]["RequestId"]
    with pytest.raises(glacier.exceptions.InvalidParameterValueException) as excinfo:
        glacier.initiate_multipart_upload(vaultName=vault, partSize="3")
    response = assert_error(excinfo, "InvalidParameterValueException", 400)
    request_ids.add(response["ResponseMetadata"]["RequestId"])
    assert len(request_ids) == 3  # one per request


def test_success_responses_carry_request_id(glacier, vault):
    ids = {glacier.describe_vault(vaultName=vault)["ResponseMetadata"]["RequestId"]
           for _ in range(2)}
    assert len(ids) == 2
    assert all(ids)
