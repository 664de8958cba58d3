"""Uploads failing for good (every UploadMultipartPart, CompleteMultipartUpload or
UploadArchive request refused, so botocore's retries run out): cp fails with the errno text,
the file is gone, no upload is left open, the log has one error line, and the mount works again
once the faults are cleared. A single transient part failure is retried invisibly.

The fusepy/botocore debug output is part of the mount log (the factory mounts with
--log-level debug); an expected failure must still not leave a traceback in it.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.mount.mount_helpers import (
    PART, assert_archive, assert_cp_fails_cleanly, assert_cp_works, cost, open_uploads, pattern,
    tracebacks)


@pytest.mark.parametrize("threads", [1, 4])
def test_every_part_failing_fails_cp_and_leaves_nothing(mount, tmp_path, threads):
    m = mount(threads=threads)
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
    assert tracebacks(m.log()) == []


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
    assert tracebacks(m.log()) == []


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
    assert tracebacks(m.log()) == []


def test_a_file_name_with_a_newline_keeps_its_log_record_on_one_line(mount, tmp_path):
    # The name would otherwise split the error record, its second half posing as a line
    # of its own.
    m = mount()
    source = tmp_path / "source"
    source.write_bytes(b"ten bytes!")
    m.set_faults("UploadArchive:500:#1+")
    try:
        result = subprocess.run(["cp", str(source), str(m.path / "two\nlines.bin")],
                                capture_output=True, text=True, timeout=120, check=False)
    finally:
        m.set_faults("")
    assert result.returncode != 0
    lines = m.log().splitlines()
    named = [line for line in lines if "lines.bin" in line]
    assert named and all(r"/two\nlines.bin" in line for line in named), named
    assert [line for line in named if " ERROR " in line]
    assert not [line for line in lines if line.startswith("lines.bin")]
