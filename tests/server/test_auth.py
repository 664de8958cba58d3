"""SigV4 authentication, the account segment and the version header (glacier-api.md §1, §4, §8).

All tests talk to a real in-process server over loopback; the DG test vectors call our own
verifier directly.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
from urllib.parse import urlsplit

import boto3
import botocore
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from glacierfs.server import auth as sigv4
from glacierfs.server import errors as server_errors

# botocore's `max_attempts` counts retries, not attempts; total_max_attempts=1 is really "off".
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})
ACCOUNT_ID = "123456789012"


def _client(server, **overrides):
    kwargs = server.client_kwargs()
    kwargs.update(overrides)
    config = kwargs.pop("config", NO_RETRIES)
    return boto3.client("glacier", config=config, **kwargs)


def _error(excinfo) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def _vault_names(glacier) -> list[str]:
    return [v["VaultName"] for v in glacier.list_vaults()["VaultList"]]


def _raw(server, method: str, path: str, headers: dict[str, str], body: bytes = b""):
    parts = urlsplit(server.endpoint_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        reply = conn.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        conn.close()


# ---- accepted requests ---------------------------------------------------------------------


def test_signed_call_with_dash_account(glacier):
    result = glacier.create_vault(accountId="-", vaultName="dash")
    # Location carries the numeric account id even when '-' was sent (§1).
    assert result["location"] == f"/{ACCOUNT_ID}/vaults/dash"
    described = glacier.describe_vault(accountId="-", vaultName="dash")
    assert described["VaultName"] == "dash"
    assert described["VaultARN"] == f"arn:aws:glacier:us-east-1:{ACCOUNT_ID}:vaults/dash"
    assert described["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_signed_call_with_configured_account_id(glacier):
    result = glacier.create_vault(accountId=ACCOUNT_ID, vaultName="numeric")
    assert result["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert result["location"] == f"/{ACCOUNT_ID}/vaults/numeric"
    listing = glacier.list_vaults(accountId=ACCOUNT_ID)
    assert [v["VaultName"] for v in listing["VaultList"]] == ["numeric"]


def test_default_account_id_is_dash(glacier):
    # boto3 fills in '-' when accountId is left out; that must work too.
    glacier.create_vault(vaultName="implicit")
    assert _vault_names(glacier) == ["implicit"]


# ---- refused requests ------------------------------------------------------------------------


def test_foreign_account_is_access_denied(glacier):
    with pytest.raises(ClientError) as excinfo:
        glacier.create_vault(accountId="999999999999", vaultName="foreign")
    assert _error(excinfo) == ("AccessDeniedException", 403)
    assert excinfo.value.response["ResponseMetadata"].get("RequestId")
    with pytest.raises(ClientError) as excinfo:
        glacier.list_vaults(accountId="999999999999")
    assert _error(excinfo) == ("AccessDeniedException", 403)
    # Nothing was created, under any account.
    assert _vault_names(glacier) == []


def test_wrong_secret_key_is_invalid_signature(server, glacier):
    bad = _client(server, aws_secret_access_key=server.credentials.secret_key + "x")
    with pytest.raises(ClientError) as excinfo:
        bad.create_vault(vaultName="never")
    assert _error(excinfo) == ("InvalidSignatureException", 403)
    assert _vault_names(glacier) == []


def test_unknown_access_key_is_unrecognized_client(server, glacier):
    bad = _client(server, aws_access_key_id="AKIDUNKNOWN000000000")
    with pytest.raises(ClientError) as excinfo:
        bad.create_vault(vaultName="never")
    assert _error(excinfo) == ("UnrecognizedClientException", 400)
    assert _vault_names(glacier) == []


def test_no_authorization_header_is_missing_token(server, glacier):
    status, headers, body = _raw(
        server, "PUT", "/-/vaults/unsigned", {"x-amz-glacier-version": "2012-06-01"}
    )
    assert status == 400
    payload = json.loads(body)
    assert payload["code"] == "MissingAuthenticationTokenException"
    assert payload["type"] == "Client"
    assert isinstance(payload["message"], str) and payload["message"]
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["content-type"].startswith("application/json")
    assert lower.get("x-amzn-requestid")
    assert _vault_names(glacier) == []


def test_unsigned_boto3_client_is_refused(server, glacier):
    unsigned = _client(server, config=Config(signature_version=botocore.UNSIGNED,
                                              retries={"total_max_attempts": 1,
                                                       "mode": "standard"}))
    with pytest.raises(ClientError) as excinfo:
        unsigned.create_vault(vaultName="unsigned")
    assert _error(excinfo) == ("MissingAuthenticationTokenException", 400)
    with pytest.raises(ClientError) as excinfo:
        unsigned.list_vaults()
    assert _error(excinfo) == ("MissingAuthenticationTokenException", 400)
    assert _vault_names(glacier) == []


def test_wrong_region_in_credential_scope_is_refused(server, glacier):
    other = _client(server, region_name="eu-west-1")
    with pytest.raises(ClientError) as excinfo:
        other.create_vault(vaultName="elsewhere")
    code, status = _error(excinfo)
    assert status == 403
    assert code == "InvalidSignatureException"
    assert _vault_names(glacier) == []


def test_header_tampered_after_signing_is_invalid_signature(glacier, vault):
    def tamper(request, **_):
        value = request.headers["x-amz-archive-description"]
        assert value in ("original", b"original")
        request.headers["x-amz-archive-description"] = "tampered"

    glacier.meta.events.register("before-send.glacier.InitiateMultipartUpload", tamper)
    try:
        with pytest.raises(ClientError) as excinfo:
            glacier.initiate_multipart_upload(
                vaultName=vault, archiveDescription="original", partSize=str(1 << 20)
            )
    finally:
        glacier.meta.events.unregister("before-send.glacier.InitiateMultipartUpload", tamper)
    assert _error(excinfo) == ("InvalidSignatureException", 403)
    assert glacier.list_multipart_uploads(vaultName=vault)["UploadsList"] == []
    # The same call untampered goes through.
    glacier.initiate_multipart_upload(
        vaultName=vault, archiveDescription="original", partSize=str(1 << 20)
    )
    uploads = glacier.list_multipart_uploads(vaultName=vault)["UploadsList"]
    assert [u["ArchiveDescription"] for u in uploads] == ["original"]


def test_body_tampered_after_signing_is_invalid_signature(glacier, vault):
    """InitiateJob's JSON body is covered by the payload hash (§8 rule 4)."""
    archive = glacier.upload_archive(vaultName=vault, body=b"payload")

    def tamper(request, **_):
        request.body = request.body.replace(b"archive-retrieval", b"inventory-retrieval")
        request.headers["Content-Length"] = str(len(request.body))

    glacier.meta.events.register("before-send.glacier.InitiateJob", tamper)
    try:
        with pytest.raises(ClientError) as excinfo:
            glacier.initiate_job(vaultName=vault, jobParameters={
                "Type": "archive-retrieval", "ArchiveId": archive["archiveId"]})
    finally:
        glacier.meta.events.unregister("before-send.glacier.InitiateJob", tamper)
    assert _error(excinfo) == ("InvalidSignatureException", 403)
    assert glacier.list_jobs(vaultName=vault)["JobList"] == []


def test_missing_version_header_is_refused(glacier):
    def drop_version(request, **_):
        del request.headers["x-amz-glacier-version"]

    glacier.meta.events.register("before-sign.glacier.CreateVault", drop_version)
    try:
        with pytest.raises(ClientError) as excinfo:
            glacier.create_vault(vaultName="noversion")
    finally:
        glacier.meta.events.unregister("before-sign.glacier.CreateVault", drop_version)
    code, status = _error(excinfo)
    assert status == 400
    assert code == "MissingParameterValueException"
    assert _vault_names(glacier) == []


def test_wrong_version_header_is_refused(glacier):
    def other_version(request, **_):
        request.headers.replace_header("x-amz-glacier-version", "2011-01-01")

    glacier.meta.events.register("before-sign.glacier.CreateVault", other_version)
    try:
        with pytest.raises(ClientError) as excinfo:
            glacier.create_vault(vaultName="oldversion")
    finally:
        glacier.meta.events.unregister("before-sign.glacier.CreateVault", other_version)
    assert _error(excinfo) == ("InvalidParameterValueException", 400)
    assert _vault_names(glacier) == []


# ---- query strings with special characters ---------------------------------------------------


def test_marker_with_special_characters_is_authenticated(glacier):
    for name in ("a", "b", "c"):
        glacier.create_vault(vaultName=name)
    # '~' is unreserved, ':' and '/' get percent-encoded: all must verify.
    marker = f"arn:aws:glacier:us-east-1:{ACCOUNT_ID}:vaults/a~b"
    try:
        result = glacier.list_vaults(marker=marker)
    except ClientError as error:
        # Authenticated, then judged on its merits: a forged marker may be refused as a value.
        assert error.response["Error"]["Code"] == "InvalidParameterValueException"
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    else:
        # Every listed vault sorts after the marker's position; none before it.
        names = [v["VaultName"] for v in result["VaultList"]]
        assert names == ["b", "c"]


def test_marker_with_space_is_authenticated(glacier):
    glacier.create_vault(vaultName="z")
    marker = f"arn:aws:glacier:us-east-1:{ACCOUNT_ID}:vaults/a b"
    try:
        result = glacier.list_vaults(marker=marker, limit="5")
    except ClientError as error:
        assert error.response["Error"]["Code"] == "InvalidParameterValueException"
    else:
        assert [v["VaultName"] for v in result["VaultList"]] == ["z"]


def test_returned_marker_round_trips(glacier):
    for name in ("v1", "v2", "v3"):
        glacier.create_vault(vaultName=name)
    first = glacier.list_vaults(limit="1")
    assert [v["VaultName"] for v in first["VaultList"]] == ["v1"]
    marker = first["Marker"]
    assert ":" in marker and "/" in marker  # exercises percent-encoding in the signature
    second = glacier.list_vaults(limit="2", marker=marker)
    assert [v["VaultName"] for v in second["VaultList"]] == ["v2", "v3"]
    assert "Marker" not in second


# ---- our verifier against the Developer Guide's vectors (§8.6) ------------------------------

DG_KEY = sigv4.Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
DG_CREATE_SIG = "3ce5b2f2fffac9262b4da9256f8d086b4aaf42eba5f111c21681a65a127b7c2a"
DG_STREAM_SIG = "b092397439375d59119072764a1e9a144677c43d9906fd98a5742c57a2855de6"
DG_STREAM_SHA = "726e392cb4d09924dbad1cc0ba3b00c3643d03d14cb4b823e2f041cff612a628"


def _dg_create_headers(signature: str) -> dict[str, str]:
    return {
        "host": "glacier.us-east-1.amazonaws.com",
        "x-amz-date": "20120525T002453Z",
        "x-amz-glacier-version": "2012-06-01",
        "authorization": (
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20120525/us-east-1/glacier/"
            "aws4_request, SignedHeaders=host;x-amz-date;x-amz-glacier-version, "
            f"Signature={signature}"
        ),
    }


def _verify_create(signature: str, **overrides):
    kwargs = dict(
        method="PUT",
        raw_path="/-/vaults/examplevault",
        raw_query="",
        headers=_dg_create_headers(signature),
        payload_hash=None,
        body=b"",
        credentials={DG_KEY.access_key: DG_KEY},
        region="us-east-1",
        now=dt.datetime(2012, 5, 25, 0, 24, 53, tzinfo=dt.timezone.utc),
    )
    kwargs.update(overrides)
    return sigv4.verify(**kwargs)


def test_dg_create_vault_vector_verifies():
    assert _verify_create(DG_CREATE_SIG) == DG_KEY


@pytest.mark.parametrize("override", [
    {"method": "POST"},
    {"raw_path": "/-/vaults/examplevault2"},
    {"raw_query": "limit=1"},
    {"body": b"x"},
    {"region": "us-west-2"},
])
def test_dg_create_vault_vector_rejects_changes(override):
    with pytest.raises(server_errors.InvalidSignature):
        _verify_create(DG_CREATE_SIG, **override)


def test_dg_create_vault_vector_rejects_flipped_signature():
    flipped = ("0" if DG_CREATE_SIG[0] != "0" else "1") + DG_CREATE_SIG[1:]
    with pytest.raises(server_errors.InvalidSignature):
        _verify_create(flipped)


def test_dg_create_vault_vector_clock_skew_is_refused():
    with pytest.raises(server_errors.InvalidSignature):
        _verify_create(DG_CREATE_SIG,
                       now=dt.datetime(2012, 5, 25, 1, 0, 0, tzinfo=dt.timezone.utc))


def test_dg_create_vault_vector_unknown_key():
    other = sigv4.Credentials("AKIDOTHER", "secret")
    with pytest.raises(server_errors.UnrecognizedClient):
        _verify_create(DG_CREATE_SIG, credentials={other.access_key: other})


def test_dg_create_vault_vector_missing_authorization():
    headers = _dg_create_headers(DG_CREATE_SIG)
    del headers["authorization"]
    with pytest.raises(server_errors.MissingAuthenticationToken):
        _verify_create(DG_CREATE_SIG, headers=headers)


def _verify_stream(path: str):
    return sigv4.verify(
        method="POST",
        raw_path=path,
        raw_query="",
        headers={
            "host": "glacier.us-east-1.amazonaws.com",
            "x-amz-date": "20120507T000000Z",
            "x-amz-glacier-version": "2012-06-01",
            "x-amz-content-sha256": DG_STREAM_SHA,
            "authorization": (
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20120507/us-east-1/glacier/"
                "aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date;"
                f"x-amz-glacier-version, Signature={DG_STREAM_SIG}"
            ),
        },
        payload_hash=DG_STREAM_SHA,
        body=b"",
        credentials={DG_KEY.access_key: DG_KEY},
        region="us-east-1",
        now=dt.datetime(2012, 5, 7, 0, 0, 0, tzinfo=dt.timezone.utc),
    )


def test_dg_streaming_vector_verifies():
    # The payload hash is the x-amz-content-sha256 value; the body is checked separately.
    assert _verify_stream("/-/vaults/examplevault/archives") == DG_KEY


def test_dg_streaming_vector_needs_archives_path():
    with pytest.raises(server_errors.InvalidSignature):
        _verify_stream("/-/vaults/examplevault")
