"""Reading: from the cache, verified against the tree hashes; while writing; when evicted."""

from __future__ import annotations

import errno
import os

import pytest

from glacierfs.errors import FsError

from .conftest import BLOCK, KiB, OPENER, OTHER, PART, payload, wait_for


def test_reading_back_a_file_just_written(rig):
    data = payload(3 * PART + 1234, 101)
    rig.store(b"/f", data)
    fh = rig.fs.open(b"/f", os.O_RDONLY, pid=OTHER)
    assert rig.fs.read(fh, len(data) + 10, 0) == data
    # pieces across part and chunk boundaries, and past the end
    for offset, size in [(0, 1), (PART - 5, 10), (2 * PART - 1, PART + 2),
                         (len(data) - 3, 100), (len(data), 10), (len(data) + 5, 10)]:
        assert rig.fs.read(fh, size, offset) == data[offset:offset + size]
    for offset in range(0, len(data), BLOCK):
        assert rig.fs.read(fh, BLOCK, offset) == data[offset:offset + BLOCK]
    rig.fs.release(fh)


def test_a_corrupted_cached_part_is_not_read(rig):
    data = payload(3 * PART, 102)
    rig.store(b"/f", data)
    node = rig.fs.catalog.resolve(b"/f")
    path = rig.cache.path(f"{node.cache_key}.1")
    assert path is not None
    with open(path, "r+b") as part:
        part.seek(5000)
        byte = part.read(1)
        part.seek(5000)
        part.write(bytes([byte[0] ^ 0x01]))

    fh = rig.fs.open(b"/f", os.O_RDONLY, pid=OPENER)
    assert rig.fs.read(fh, 100, 0) == data[:100]  # part 0 is fine
    with pytest.raises(FsError) as corrupt:
        rig.fs.read(fh, 100, PART + 10)  # far from the flipped byte, same part
    assert corrupt.value.errno == errno.EIO
    # The corrupt copy is dropped: the file is now as if that part had been evicted, so
    # reads say ENODATA (restore it) and a restore can bring the part back.
    assert rig.cache.path(f"{node.cache_key}.1") is None
    assert rig.fs.getxattr(b"/f", "user.glacier.state").startswith(b"archived")
    for offset, size in [(PART + 10, 100), (PART - 100, 200)]:
        with pytest.raises(FsError) as dropped:
            rig.fs.read(fh, size, offset)
        assert dropped.value.errno == errno.ENODATA
    assert rig.fs.read(fh, 100, 2 * PART) == data[2 * PART:2 * PART + 100]  # part 2 fine
    rig.fs.release(fh)


def test_reading_a_stored_file_that_is_no_longer_cached_is_enodata(make_fs):
    # One upload thread: parts reach the vault (and the LRU) in order, so "most recent" below
    # is well defined; with two, the short last part can finish first and be evicted first.
    rig = make_fs(cache_parts=2, upload_threads=1)
    data = payload(6 * PART + 1000, 103)
    rig.store(b"/f", data)
    node = rig.fs.catalog.resolve(b"/f")
    assert rig.cache.path(f"{node.cache_key}.0") is None  # evicted
    fh = rig.fs.open(b"/f", os.O_RDONLY, pid=OPENER)
    with pytest.raises(FsError) as not_cached:
        rig.fs.read(fh, 100, 0)
    assert not_cached.value.errno == errno.ENODATA
    # the most recent part is still cached and reads fine
    assert rig.fs.read(fh, 1000, 6 * PART) == data[6 * PART:]
    rig.fs.release(fh)


def test_reading_a_file_while_it_is_being_written(rig):
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    reader = rig.fs.open(b"/f", os.O_RDONLY, pid=OTHER)
    assert rig.fs.read(reader, 100, 0) == b""
    data = payload(PART + 512 * KiB, 104)
    rig.write_blocks(fh, data)  # part 0 sealed (and on its way up), part 1 staged
    writer = rig.writer(b"/f")
    wait_for(lambda: writer.parts[0].state == "uploaded", what="part 0 uploaded")
    assert rig.fs.read(reader, len(data) + 100, 0) == data
    assert rig.fs.read(reader, 200, PART - 100) == data[PART - 100:PART + 100]

    tail = b"tail"
    rig.fs.write(fh, tail, 3 * PART)  # a hole in between reads as zeros
    expected = data + bytes(3 * PART - len(data)) + tail
    assert rig.fs.getattr(b"/f")["st_size"] == len(expected)
    assert rig.fs.read(reader, len(expected) + 100, 0) == expected
    assert rig.fs.read(reader, 10, 2 * PART + 5) == bytes(10)

    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)
    # the same read handle now reads the stored file
    assert rig.fs.read(reader, len(expected) + 100, 0) == expected
    rig.fs.release(reader)
    rig.assert_archive(b"/f", expected)


def test_reading_a_file_being_written_whose_early_parts_left_the_cache(make_fs):
    rig = make_fs(cache_parts=2)
    data = payload(6 * PART, 105)
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.write_blocks(fh, data)
    writer = rig.writer(b"/f")
    wait_for(lambda: writer.parts[0].state == "uploaded", what="part 0 uploaded")
    assert rig.cache.path(f"{writer.cache_key}.0") is None  # evicted
    reader = rig.fs.open(b"/f", os.O_RDONLY, pid=OTHER)
    # what was written, or ENODATA as for a stored file; never zeros in place of the data
    try:
        got = rig.fs.read(reader, 100, 0)
    except FsError as error:
        assert error.errno == errno.ENODATA
    else:
        assert got == data[:100]
    rig.fs.release(reader)
    rig.fs.release(fh)
    rig.assert_archive(b"/f", data)


def test_read_of_a_bad_handle_is_ebadf(rig):
    with pytest.raises(FsError) as bad:
        rig.fs.read(12345, 10, 0)
    assert bad.value.errno == errno.EBADF
    with pytest.raises(FsError) as bad_sync:
        rig.fs.fsync(12345)
    assert bad_sync.value.errno == errno.EBADF
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.fs.fsync(fh)  # fine on an open handle
    reader = rig.fs.open(b"/f", os.O_RDONLY, pid=OPENER)
    with pytest.raises(FsError) as read_only:
        rig.fs.write(reader, b"x", 0)
    assert read_only.value.errno == errno.EBADF
    rig.fs.release(reader)
    rig.fs.release(fh)
