"""Upload failures: sticky errors, what is left in the vault and the namespace, retries."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import sqlite3
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import botocore.exceptions
import pytest

from glacierfs import recovery
from glacierfs.config import VaultConfig
from glacierfs.errors import FsError
from glacierfs.vault import Vault

from .conftest import BLOCK, VAULT, KiB, OPENER, PART, payload, wait_for


def test_failed_part_upload_is_sticky_and_leaves_nothing_behind(make_fs):
    rig = make_fs(faults="UploadMultipartPart:500:#2+")  # retries off: the 2nd part fails
    data = payload(6 * PART, 81)
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.write_blocks(fh, data[:2 * PART + BLOCK])  # parts 0 and 1 sealed and sent
    writer = rig.writer(b"/f")
    wait_for(lambda: writer.error is not None, what="the part upload to fail")
    assert rig.server.stats()["faults"] == {"UploadMultipartPart:500": 1}

    # a later write reports the failure, and so does every call after it
    with pytest.raises(FsError) as first:
        rig.fs.write(fh, data[2 * PART + BLOCK:2 * PART + 2 * BLOCK], 2 * PART + BLOCK)
    assert first.value.errno == errno.EIO
    with pytest.raises(FsError) as second:
        rig.fs.write(fh, b"more", 3 * PART)
    assert second.value.errno == errno.EIO
    for _ in range(2):
        with pytest.raises(FsError) as on_close:
            rig.fs.flush(fh, pid=OPENER)
        assert on_close.value.errno == errno.EIO
    rig.fs.release(fh)  # finishes: the handle is gone
    with pytest.raises(FsError) as gone:
        rig.fs.write(fh, b"x", 0)
    assert gone.value.errno == errno.EBADF

    # a new file that failed is not in the namespace, and nothing is left in the vault
    assert rig.fs.readdir(b"/") == [b".", b".."]
    with pytest.raises(FsError) as missing:
        rig.fs.getattr(b"/f")
    assert missing.value.errno == errno.ENOENT
    assert rig.uploads_in_progress() == []
    assert rig.inventory() == []
    assert rig.cache.reserved == 0


def test_failed_part_upload_found_at_close(make_fs):
    rig = make_fs(faults="UploadMultipartPart:500:#2+")
    data = payload(2 * PART + 10, 82)
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    # The worker may fail before the last write arrives (then that write reports it) or
    # after (then the close does): either way the writer hears EIO.
    with pytest.raises(FsError) as on_close:
        rig.write_blocks(fh, data)
        rig.fs.flush(fh, pid=OPENER)
    assert on_close.value.errno == errno.EIO
    with pytest.raises(FsError) as again:
        rig.fs.flush(fh, pid=OPENER)
    assert again.value.errno == errno.EIO
    rig.fs.release(fh)
    assert b"f" not in rig.fs.readdir(b"/")
    assert rig.uploads_in_progress() == []
    assert rig.inventory() == []
    assert rig.cache.reserved == 0


def test_failed_small_file_upload(make_fs):
    rig = make_fs(faults="UploadArchive:500:#1+")
    fh = rig.fs.create(b"/small", 0o644, 0, 0, pid=OPENER)
    rig.fs.write(fh, payload(1000, 83), 0)
    with pytest.raises(FsError) as on_close:
        rig.fs.flush(fh, pid=OPENER)
    assert on_close.value.errno == errno.EIO
    with pytest.raises(FsError) as again:
        rig.fs.flush(fh, pid=OPENER)
    assert again.value.errno == errno.EIO
    with pytest.raises(FsError) as write_after:
        rig.fs.write(fh, b"x", 0)
    assert write_after.value.errno == errno.EIO
    rig.fs.release(fh)
    assert rig.server.stats()["requests"]["UploadArchive"] == 1
    assert b"small" not in rig.fs.readdir(b"/")
    assert rig.inventory() == []
    assert rig.uploads_in_progress() == []
    assert rig.cache.reserved == 0

    # the mount goes on: once the vault works again, a new file with the same name is stored
    rig.server.set_faults("")
    rig.store(b"/small", b"second try")
    rig.assert_archive(b"/small", b"second try")


def test_failed_release_of_a_never_flushed_file(make_fs):
    rig = make_fs(faults="UploadArchive:503:#1+")
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.fs.write(fh, b"data", 0)
    with pytest.raises(FsError) as on_release:
        rig.fs.release(fh)
    assert on_release.value.errno == errno.EIO
    assert b"f" not in rig.fs.readdir(b"/")
    assert rig.inventory() == []
    assert rig.cache.reserved == 0


def test_failed_replacement_keeps_the_old_content(make_fs):
    import os

    rig = make_fs()
    rig.store(b"/f", b"old content")
    old = rig.fs.catalog.resolve(b"/f")
    rig.server.set_faults("UploadArchive:500:#1+")
    fh = rig.fs.open(b"/f", os.O_WRONLY | os.O_TRUNC, pid=OPENER)
    rig.fs.write(fh, b"new content", 0)
    with pytest.raises(FsError) as on_close:
        rig.fs.flush(fh, pid=OPENER)
    assert on_close.value.errno == errno.EIO
    rig.fs.release(fh)
    assert rig.fs.readdir(b"/") == [b".", b"..", b"f"]
    node = rig.fs.catalog.resolve(b"/f")
    assert (node.archive_id, node.size, node.tree_hash) == (old.archive_id, 11, old.tree_hash)
    rig.server.set_faults("")
    rig.assert_archive(b"/f", b"old content")
    assert rig.read_all(b"/f") == b"old content"


def test_transient_faults_are_retried(make_fs):
    rig = make_fs(retries=True, faults=(
        "UploadArchive:503:#1,InitiateMultipartUpload:throttle:#1,UploadMultipartPart:500:#2,"
        "UploadMultipartPart:drop:#4,CompleteMultipartUpload:503:#1"))
    small = payload(300 * KiB, 84)
    large = payload(3 * PART + 5, 85)
    rig.store(b"/small", small)
    rig.store(b"/large", large)
    rig.assert_archive(b"/small", small)
    rig.assert_archive(b"/large", large)
    assert rig.server.stats()["faults"] == {
        "UploadArchive:503": 1, "InitiateMultipartUpload:throttle": 1,
        "UploadMultipartPart:500": 1, "UploadMultipartPart:drop": 1,
        "CompleteMultipartUpload:503": 1}
    assert rig.uploads_in_progress() == []


def test_an_unreachable_endpoint_is_waited_for_then_fails_the_file(make_fs, caplog):
    # Nothing listens on the port: no request ever left, so the upload may be sent again and
    # waits (`patience` seconds; the mount waits minutes). Then the file fails as usual.
    rig = make_fs(patience=2.0)
    rig.server.stop()
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.fs.write(fh, b"data", 0)
    with (caplog.at_level(logging.WARNING, logger="glacierfs.vault"),
          pytest.raises(FsError) as on_close):
        rig.fs.flush(fh, pid=OPENER)
    assert on_close.value.errno == errno.EIO
    rig.fs.release(fh)
    [wait] = [r.getMessage() for r in caplog.records if "vault's endpoint" in r.getMessage()]
    assert wait.startswith("cannot connect to the vault's endpoint") and "up to 2 s" in wait
    assert b"f" not in rig.fs.readdir(b"/")


def test_requests_failing_for_good_leave_later_requests_their_retries(make_fs, monkeypatch,
                                                                     tmp_path):
    # The mount's own client settings (not the rig's). botocore's standard retry mode keeps a
    # client-wide quota: some requests failing for good used it up, and then one 500 failed
    # the next file outright. Ours must still retry it.
    rig = make_fs()
    reach = rig.server.client_kwargs()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", reach["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", reach["aws_secret_access_key"])
    vault = Vault(VaultConfig(VAULT, endpoint_url=reach["endpoint_url"],
                              region=reach["region_name"]), pool_size=16)
    body = tmp_path / "body"
    body.write_bytes(b"x")
    sha256 = hashlib.sha256(b"x").hexdigest()  # one byte: its tree hash too

    def upload() -> str:
        return vault.upload_archive_file(body, sha256, sha256, '{"path": "x"}')

    rig.server.set_faults("UploadArchive:500:#1+")
    with ThreadPoolExecutor(16) as pool:  # 16 × 4 retries: over the quota of that mode
        failures = [pool.submit(upload) for _ in range(16)]
    for failure in failures:
        with pytest.raises(botocore.exceptions.ClientError):
            failure.result()
    sent = rig.server.stats()["requests"]["UploadArchive"]
    assert sent > 16  # each was retried
    rig.server.set_faults("UploadArchive:500:#1")  # the next request fails, once
    archive_id = upload()
    assert rig.server.stats()["requests"]["UploadArchive"] == sent + 2
    assert [a["ArchiveId"] for a in rig.inventory()] == [archive_id]


def catalog_takes_writes(rig, allowed: bool) -> None:
    """Let the catalog's database take writes, or refuse them (SQLite's query_only) as a full
    or read-only disk would."""
    rig.fs.catalog.db.query(f"PRAGMA query_only = {'OFF' if allowed else 'ON'}")


def test_a_content_whose_recording_failed_never_comes_back_over_a_later_one(make_fs):
    # The archive of "first" is made, but the catalog cannot record it (here the catalog's
    # database refuses writes at that moment, as a full disk would): close fails, and the
    # journal still holds the upload. The file is then written again, successfully. The next
    # mount's recovery finishes every upload the journal holds: it must not put "first"
    # back over "second".
    rig = make_fs(retries=True)
    rig.server.set_faults("UploadArchive:hang:#1")
    failures: list[BaseException] = []

    def first() -> None:
        try:
            rig.store(b"/f", b"first")
        except BaseException as error:  # noqa: BLE001 - examined below
            failures.append(error)

    writer = threading.Thread(target=first)
    writer.start()
    wait_for(lambda: rig.server.stats()["requests"].get("UploadArchive", 0) == 1,
             what="the upload to be held")
    catalog_takes_writes(rig, False)
    rig.server.set_faults("")  # the held request is answered 503, and botocore sends it again
    writer.join(timeout=60)
    catalog_takes_writes(rig, True)
    assert len(failures) == 1 and "readonly" in str(failures[0]), failures
    assert len(rig.fs.journal.entries()) == 1  # the recording failed: the journal has it

    fh = rig.fs.open(b"/f", os.O_WRONLY | os.O_TRUNC, pid=OPENER)
    rig.write_blocks(fh, b"second")
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)
    assert rig.fs.journal.entries() == []  # the earlier upload went with the later recording

    recovery.recover(rig.fs)  # what the next mount does first
    assert rig.read_all(b"/f") == b"second"
    rig.assert_archive(b"/f", b"second")
    # The first content's archive stays in the vault, unnamed: a single UploadArchive's id
    # is known only to the close that failed (a multipart one is deleted: its Complete can be
    # repeated to learn it).
    assert sorted(a["Size"] for a in rig.inventory()) == [5, 6]


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs (we run as root, as the mount tests do), unmounted at teardown."""
    path = tmp_path / "small-disk"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(path)], check=True)
    yield path
    subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_create_the_full_catalog_disk_refused_does_not_block_later_ones(make_fs, small_disk):
    # The catalog's commit fails (its disk is full) after the new file's writer was
    # registered: SQLite gives the inode number to the next file, whose create then found a
    # writer and got EBUSY, and so did every create until a remount.
    rig = make_fs(catalog_dir=small_disk)
    rig.store(b"/a", b"a")
    with open(small_disk / "filler", "wb", buffering=0) as filler:
        with pytest.raises(OSError) as full:
            while True:
                filler.write(b"x" * 4096)
        assert full.value.errno == errno.ENOSPC
        for name in (b"/n1", b"/n2"):
            with pytest.raises(sqlite3.OperationalError, match="full"):
                rig.fs.create(name, 0o644, 0, 0, pid=OPENER)
        filler.truncate(0)
    rig.store(b"/after", b"after")
    rig.assert_archive(b"/after", b"after")
    assert b"n1" not in rig.fs.readdir(b"/")


def fill(disk):
    """Fill a disk; returns the open filler (truncate it to make room again)."""
    filler = open(disk / "filler", "wb", buffering=0)  # noqa: SIM115 - the caller closes it
    with pytest.raises(OSError) as full:
        while True:
            filler.write(b"x" * 4096)
    assert full.value.errno == errno.ENOSPC
    return filler


def test_parts_that_cannot_move_into_the_read_cache_keep_the_reservation_count_true(
        make_fs, small_disk):
    # The parts are sent, but the cache disk is full by then, so they cannot move into the
    # uploaded index: the file fails with ENOSPC. Each part's reservation was released for
    # the move and again by the failure: the count went below zero (-3 MiB here), and with
    # it the backpressure that keeps unsent parts within --cache-size.
    rig = make_fs(cache_parts=4, cache_dir=small_disk / "cache", retries=True)
    rig.server.set_faults("UploadMultipartPart:hang:#1+")
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.write_blocks(fh, payload(3 * PART, 90))
    wait_for(lambda: rig.server.stats()["requests"].get("UploadMultipartPart", 0) == 2,
             what="two parts held")
    with fill(small_disk) as filler:
        rig.server.set_faults("")
        with pytest.raises(FsError) as on_close:
            rig.fs.flush(fh, pid=OPENER)
        assert on_close.value.errno == errno.ENOSPC
        rig.fs.release(fh)
        assert rig.cache.reserved == 0
        filler.truncate(0)
    rig.store(b"/g", payload(2 * PART + 1, 91))  # the mount goes on
    assert rig.cache.reserved == 0
