"""When a file becomes its archive: the close policy in fs.py's docstring."""

from __future__ import annotations

import errno
import os

import pytest

from glacierfs.errors import FsError

from .conftest import OPENER, OTHER, PART, payload


def test_flush_from_another_process_does_not_complete(rig):
    data = payload(2 * PART + 3, 91)
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.write_blocks(fh, data)
    rig.fs.flush(fh, pid=OTHER)  # a forked child closing its copy
    assert rig.inventory() == []
    assert rig.upload_ops()["CompleteMultipartUpload"] == 0
    assert rig.fs.catalog.resolve(b"/f").state == "writing"
    # the writer can still write
    rig.fs.write(fh, b"tail", len(data))
    data += b"tail"
    rig.fs.flush(fh, pid=OPENER)
    # complete as soon as the opener's flush returns, before release
    assert list(rig.archives()) == ["f"]
    rig.assert_archive(b"/f", data)
    rig.fs.release(fh)
    assert len(rig.inventory()) == 1
    assert rig.upload_ops()["CompleteMultipartUpload"] == 1


def test_flush_by_the_opener_after_a_write_completes_a_small_file(rig):
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.fs.write(fh, b"hello", 0)
    rig.fs.flush(fh, pid=OPENER)
    rig.assert_archive(b"/f", b"hello")
    rig.fs.flush(fh, pid=OPENER)  # a second flush (dup'd descriptor closed) does nothing
    rig.fs.release(fh)
    assert rig.upload_ops()["UploadArchive"] == 1
    assert len(rig.inventory()) == 1


def test_flush_before_any_write_does_nothing(rig):
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    before = rig.server.stats()["requests"]
    rig.fs.flush(fh, pid=OPENER)  # the shell's open / dup2 / close dance
    assert rig.server.stats()["requests"] == before
    assert rig.fs.catalog.resolve(b"/f").state == "writing"
    rig.fs.write(fh, b"after the dance", 0)  # still writable
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)
    rig.assert_archive(b"/f", b"after the dance")


def test_release_completes_a_never_flushed_writer(rig):
    data = payload(PART + 77, 92)
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.write_blocks(fh, data)
    rig.fs.flush(fh, pid=OTHER)
    assert rig.inventory() == []
    rig.fs.release(fh)
    rig.assert_archive(b"/f", data)


def test_release_of_an_empty_file_stores_it_without_an_archive(rig):
    fh = rig.fs.create(b"/empty", 0o600, 0, 0, pid=OPENER)
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)
    node = rig.fs.catalog.resolve(b"/empty")
    assert (node.state, node.size, node.archive_id) == ("stored", 0, None)
    assert rig.fs.getattr(b"/empty")["st_size"] == 0
    assert rig.inventory() == []
    assert rig.read_all(b"/empty") == b""


def test_a_write_after_completion_starts_a_new_content(rig):
    # Through a dup'd descriptor, or a mapping written back after close(fd): the archive is
    # complete, so the write starts a new content from it, completed at the next flush of
    # the opener (or at release), and the first archive is doomed.
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.fs.write(fh, b"done", 0)
    rig.fs.flush(fh, pid=OPENER)
    first = rig.fs.catalog.resolve(b"/f").archive_id
    rig.fs.write(fh, b"late", 4)
    assert rig.read_all(b"/f") == b"donelate"  # from the new writer meanwhile
    rig.fs.flush(fh, pid=OPENER)
    rig.assert_archive(b"/f", b"donelate")
    assert [a["ArchiveId"] for a in rig.inventory()] == [rig.fs.catalog.resolve(b"/f").archive_id]
    assert first not in [a["ArchiveId"] for a in rig.inventory()]
    rig.fs.release(fh)
    with pytest.raises(FsError) as closed:
        rig.fs.write(fh, b"later", 4)
    assert closed.value.errno == errno.EBADF


def test_second_writer_is_busy_and_stored_files_need_o_trunc(rig):
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    with pytest.raises(FsError) as busy:
        rig.fs.open(b"/f", os.O_WRONLY, pid=OTHER)
    assert busy.value.errno == errno.EBUSY
    rig.fs.write(fh, b"first", 0)
    rig.fs.release(fh)
    with pytest.raises(FsError) as immutable:
        rig.fs.open(b"/f", os.O_WRONLY, pid=OPENER)
    assert immutable.value.errno == errno.EPERM
    with pytest.raises(FsError) as immutable_rw:
        rig.fs.open(b"/f", os.O_RDWR | os.O_APPEND, pid=OPENER)
    assert immutable_rw.value.errno == errno.EPERM


def test_o_trunc_replaces_the_archive(rig):
    rig.store(b"/f", b"first version")
    first_id = rig.fs.catalog.resolve(b"/f").archive_id
    second = payload(PART + 10, 93)
    fh = rig.fs.open(b"/f", os.O_WRONLY | os.O_TRUNC, pid=OPENER)
    assert rig.fs.getattr(b"/f")["st_size"] == 0
    rig.write_blocks(fh, second)
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)
    rig.assert_archive(b"/f", second)
    ids = [a["ArchiveId"] for a in rig.inventory()]
    assert first_id not in ids and len(ids) == 1  # the replaced archive is deleted
    assert rig.read_all(b"/f") == second
