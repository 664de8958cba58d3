"""cp into a real mount; every check goes back through boto3 to the vault."""

from __future__ import annotations

import os
import subprocess

import pytest

from glacierfs.treehash import tree_hash
from tests.vault_helpers import archives_by_path, retrieve

MiB = 1 << 20
PART = MiB


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 5 * PART + 12345])
def test_cp_file_becomes_one_archive(mount, tmp_path, size):
    m = mount()
    source = tmp_path / "source"
    data = os.urandom(size)
    source.write_bytes(data)
    before = m.stats()
    subprocess.run(["cp", str(source), str(m.path / "file.bin")], check=True)
    after = m.stats()

    assert (m.path / "file.bin").stat().st_size == size
    archives = archives_by_path(m.glacier, m.vault)
    if size == 0:
        assert archives == {}  # an empty file lives in the catalog only
        return
    archive = archives["file.bin"]
    assert archive["Size"] == size
    assert archive["SHA256TreeHash"] == tree_hash(data)
    body, checksum = retrieve(m.glacier, m.vault, archive["ArchiveId"])
    assert body == data and checksum == tree_hash(data)

    cost = {op: after.get(op, 0) - before.get(op, 0) for op in after}
    cost = {op: n for op, n in cost.items() if n}
    parts = -(-size // PART)
    if size < PART:
        assert cost == {"UploadArchive": 1}
    else:
        assert cost == {"InitiateMultipartUpload": 1, "UploadMultipartPart": parts,
                        "CompleteMultipartUpload": 1}
