"""UploadArchive failing for good on a small file: cp fails cleanly and leaves nothing."""

from __future__ import annotations

from tests.mount.mount_helpers import PART, assert_cp_fails_cleanly, assert_cp_works, cost


def test_upload_archive_failing_fails_cp_and_leaves_nothing(mount, tmp_path):
    m = mount()
    before = m.stats()
    error = assert_cp_fails_cleanly(m, tmp_path, "small.txt", 12_345,
                                    "UploadArchive:500:#1+")
    after = m.stats()
    assert "small.txt" in error and "UploadArchive" in error
    spent = cost(before, after)
    assert spent.get("UploadArchive", 0) >= 2  # retried before giving up
    assert "InitiateMultipartUpload" not in spent

    assert_cp_works(m, tmp_path, "after.txt", PART - 1)
    assert "Traceback" not in m.log()
