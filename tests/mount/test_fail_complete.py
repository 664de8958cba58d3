"""CompleteMultipartUpload failing for good: cp fails cleanly and leaves nothing behind."""

from __future__ import annotations

from tests.mount.mount_helpers import PART, assert_cp_fails_cleanly, assert_cp_works, cost


def test_complete_failing_fails_cp_and_leaves_nothing(mount, tmp_path):
    m = mount()
    before = m.stats()
    error = assert_cp_fails_cleanly(m, tmp_path, "complete.bin", 2 * PART + 10,
                                    "CompleteMultipartUpload:500:#1+")
    after = m.stats()
    assert "complete.bin" in error and "CompleteMultipartUpload" in error
    spent = cost(before, after)
    assert spent.get("InitiateMultipartUpload") == 1
    assert spent.get("UploadMultipartPart") == 3
    assert spent.get("CompleteMultipartUpload", 0) >= 2  # retried before giving up
    assert spent.get("AbortMultipartUpload") == 1

    assert_cp_works(m, tmp_path, "after.bin", 2 * PART + 3)
    assert "Traceback" not in m.log()
