"""--async-close on the core: close returns once the content is safe in the cache, a closer
thread uploads it, and a failed upload is finished later from the cache and the journal. Real
local vault over HTTP; faults injected in the server."""

from __future__ import annotations

import errno
import json
import os

import pytest

from glacierfs import fs as fs_module
from glacierfs.errors import FsError

from .conftest import OPENER, PART, payload, wait_for


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(fs_module, "RETRY_FIRST_DELAY", 0.05)


def stored(rig, path: bytes) -> bool:
    return rig.fs.catalog.resolve(path).state == "stored" and not rig.fs._background


def test_close_succeeds_while_the_vault_fails_and_a_later_try_uploads(make_fs):
    rig = make_fs(async_close=True,
                  faults="UploadArchive:500:1,CompleteMultipartUpload:500:1")
    small, big = payload(3000, 1), payload(2 * PART + 5, 2)
    rig.store(b"/small", small)  # without --async-close, this close fails (test_failures)
    rig.store(b"/big", big)
    # Meanwhile the files read and stat as written, from the cache.
    assert rig.read_all(b"/small") == small
    assert rig.read_all(b"/big") == big
    assert rig.fs.getattr(b"/big")["st_size"] == len(big)
    wait_for(lambda: all(w.state == "failed" for w in rig.fs._writers.values())
             and len(rig.fs._writers) == 2, what="both uploads to fail")
    assert rig.fs.catalog.resolve(b"/small").state == "writing"
    rig.server.set_faults("")
    wait_for(lambda: stored(rig, b"/small") and stored(rig, b"/big"), what="the retries")
    rig.assert_archive(b"/small", small)
    rig.assert_archive(b"/big", big)
    assert rig.fs.journal.entries() == []
    assert rig.uploads_in_progress() == []
    assert rig.cache.reserved == 0  # nothing left holding room in the cache


def test_rsync_steps_right_after_close_keep_their_time_and_name(make_fs):
    rig = make_fs(async_close=True, latency_ms=100)  # each upload outlasts the steps below
    data = payload(5000, 3)
    rig.store(b"/.photo.jpg.AbC123", data)
    rig.fs.utimens(b"/.photo.jpg.AbC123", 1_500_000_000_123_456_789)
    rig.fs.chmod(b"/.photo.jpg.AbC123", 0o100600)
    rig.fs.rename(b"/.photo.jpg.AbC123", b"/photo.jpg")
    wait_for(lambda: stored(rig, b"/photo.jpg"), what="the upload")
    attributes = rig.fs.getattr(b"/photo.jpg")
    assert attributes["st_mtime_ns"] == 1_500_000_000_123_456_789  # not the write time
    assert attributes["st_mode"] == 0o100600
    rig.assert_archive(b"/photo.jpg", data)
    [archive] = rig.inventory()
    assert json.loads(archive["ArchiveDescription"])["path"] == "photo.jpg"


def test_writing_again_waits_for_the_upload_after_close(make_fs):
    rig = make_fs(async_close=True, latency_ms=100)
    old, new = payload(4000, 4), payload(PART + 7, 5)
    rig.store(b"/f", old)
    fh = rig.fs.open(b"/f", os.O_WRONLY | os.O_TRUNC, pid=OPENER)  # waits for the upload
    rig.write_blocks(fh, new)
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)
    wait_for(lambda: stored(rig, b"/f"), what="the second upload")
    rig.assert_archive(b"/f", new)
    assert len(rig.inventory()) == 1  # the first archive was deleted once replaced


def test_a_file_whose_upload_is_being_retried_cannot_change(make_fs):
    rig = make_fs(async_close=True, faults="UploadArchive:500:1")
    rig.store(b"/f", b"content")
    wait_for(lambda: rig.writer(b"/f").state == "failed", what="the upload to fail")
    for change in (lambda: rig.fs.open(b"/f", os.O_WRONLY | os.O_TRUNC, pid=OPENER),
                   lambda: rig.fs.truncate(b"/f", 0)):
        with pytest.raises(FsError) as refused:
            change()
        assert refused.value.errno == errno.EBUSY
    rig.server.set_faults("")
    wait_for(lambda: stored(rig, b"/f"), what="the retry")
    rig.fs.truncate(b"/f", 0)
    assert rig.fs.getattr(b"/f")["st_size"] == 0


def test_removed_before_its_upload_finished_leaves_nothing(make_fs):
    rig = make_fs(async_close=True, latency_ms=100)
    rig.store(b"/gone", payload(3000, 6))
    rig.fs.unlink(b"/gone")
    wait_for(lambda: not rig.fs._background, what="the upload")
    assert rig.inventory() == []  # uploaded, then deleted: nothing names it
    assert rig.fs.journal.entries() == [] and rig.fs.journal.doomed() == []


def test_shutdown_waits_for_uploads_and_leaves_failing_ones_to_the_next_mount(make_fs):
    rig = make_fs(async_close=True, latency_ms=100, faults="CompleteMultipartUpload:500:1")
    failing = payload(2 * PART, 7)
    rig.store(b"/later", failing)
    wait_for(lambda: rig.writer(b"/later").state == "failed", what="the upload to fail")
    rig.store(b"/ok", b"uploaded before shutdown returns")  # its upload takes 100 ms or more
    rig.fs.shutdown()
    assert rig.fs.catalog.resolve(b"/ok").state == "stored"
    [entry] = rig.fs.journal.entries()  # kept: recovery at the next mount finishes it
    assert entry.state == "closing" and entry.size == len(failing)
    assert all(rig.cache.path(f"{entry.cache_key}.{i}") is not None for i in (0, 1))
