"""Every UploadMultipartPart failing: cp fails cleanly and leaves nothing behind; a single
transient failure is retried without the writer noticing."""

from __future__ import annotations

import subprocess

from tests.mount.mount_helpers import (
    PART, assert_archive, assert_cp_fails_cleanly, assert_cp_works, cost, open_uploads, pattern)


def test_every_part_failing_fails_cp_and_leaves_nothing(mount, tmp_path):
    m = mount(threads=1)
    before = m.stats()
    error = assert_cp_fails_cleanly(m, tmp_path, "parts.bin", 3 * PART + 10,
                                    "UploadMultipartPart:500:#1+")
    after = m.stats()
    assert "parts.bin" in error and "UploadMultipartPart" in error
    spent = cost(before, after)
    assert spent.get("InitiateMultipartUpload") == 1
    assert spent.get("AbortMultipartUpload") == 1
    assert spent.get("UploadMultipartPart", 0) >= 2  # botocore retried before giving up
    assert "CompleteMultipartUpload" not in spent and "UploadArchive" not in spent

    # faults cleared: the same mount works again
    assert_cp_works(m, tmp_path, "after.bin", 2 * PART + 3)
    assert "Traceback" not in m.log()


def test_one_transient_part_failure_is_retried_invisibly(mount, tmp_path):
    m = mount()
    size = 3 * PART + 99
    data = pattern(size, 5)
    source = tmp_path / "source"
    source.write_bytes(data)
    m.set_faults("UploadMultipartPart:503:#1")
    before = m.stats()
    result = subprocess.run(["cp", str(source), str(m.path / "retried.bin")],
                            capture_output=True, text=True, timeout=120)
    after = m.stats()
    m.set_faults("")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert_archive(m.glacier, m.vault, "retried.bin", data)
    assert cost(before, after) == {"InitiateMultipartUpload": 1, "UploadMultipartPart": 4 + 1,
                                   "CompleteMultipartUpload": 1}
    assert open_uploads(m.glacier, m.vault) == []
    assert " ERROR " not in m.log()
