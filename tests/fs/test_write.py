"""Writing files: what reaches the vault (content, tree hash, requests) for every write pattern."""

from __future__ import annotations

import errno
import logging
import random
import threading
import time

import pytest

from glacierfs.errors import FsError

from .conftest import BLOCK, OPENER, OTHER, PART, KiB, payload, wait_for

NO_UPLOADS = {"UploadArchive": 0, "InitiateMultipartUpload": 0, "UploadMultipartPart": 0,
              "CompleteMultipartUpload": 0, "AbortMultipartUpload": 0}


def single(n: int = 1) -> dict:
    return {**NO_UPLOADS, "UploadArchive": n}


def multipart(parts: int) -> dict:
    return {**NO_UPLOADS, "InitiateMultipartUpload": 1, "UploadMultipartPart": parts,
            "CompleteMultipartUpload": 1}


def apply(model: bytearray, data: bytes, offset: int) -> None:
    if len(model) < offset + len(data):
        model.extend(bytes(offset + len(data) - len(model)))
    model[offset:offset + len(data)] = data


# ---- sizes ----------------------------------------------------------------------------------

SIZES = {
    "empty": 0,
    "one-byte": 1,
    "part-minus-1": PART - 1,
    "one-part": PART,
    "part-plus-1": PART + 1,
    "many-parts": 5 * PART + 12345,
}


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_sizes_become_one_archive_each(rig, size):
    data = payload(size, seed=size)
    rig.store(b"/f", data)

    assert rig.fs.getattr(b"/f")["st_size"] == size
    ops = rig.upload_ops()
    if size == 0:
        assert ops == NO_UPLOADS
        assert rig.inventory() == []
        node = rig.fs.catalog.resolve(b"/f")
        assert (node.state, node.size, node.archive_id) == ("stored", 0, None)
    else:
        if size < PART:
            assert ops == single()  # one request for a small file
        else:
            # uploaded part by part as each fills: initiate + one per part + complete
            assert ops == multipart(-(-size // PART))
        rig.assert_archive(b"/f", data)
        assert len(rig.inventory()) == 1
    assert rig.uploads_in_progress() == []
    assert rig.cache.reserved == 0
    assert rig.read_all(b"/f") == data


def test_several_files_in_one_directory_tree(rig):
    rig.fs.mkdir(b"/d", 0o755, 0, 0)
    files = {b"/a": payload(3000, 1), b"/d/b": payload(2 * PART + 5, 2), b"/d/c": b"x"}
    for path, data in files.items():
        rig.store(path, data)
    assert set(rig.archives()) == {"a", "d/b", "d/c"}
    for path, data in files.items():
        rig.assert_archive(path, data)


# ---- write order ----------------------------------------------------------------------------

def test_shuffled_writes_across_and_inside_parts(rig):
    size = 4 * PART + 300 * KiB
    data = payload(size, 11)
    rng = random.Random(12)
    pieces, position = [], 0
    while position < size:  # odd sizes, so pieces start and end inside parts and chunks
        length = min(rng.randint(1, 300 * KiB), size - position)
        pieces.append((position, length))
        position += length
    rng.shuffle(pieces)

    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    for offset, length in pieces:
        assert rig.fs.write(fh, data[offset:offset + length], offset) == length
    assert rig.fs.getattr(b"/f")["st_size"] == size
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)

    rig.assert_archive(b"/f", data)
    assert rig.upload_ops() == multipart(5)  # no overlap: every part sent once
    assert rig.cache.reserved == 0


class _Stall:
    """A 'hasher' whose update() holds a HashFeeder lane until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def update(self, data) -> None:
        assert self.release.wait(30), "the test never released the lane"


def test_small_writes_queue_behind_large_ones_still_being_hashed(rig):
    """Large writes are hashed by the HashFeeder, small ones in the write handler; a small write
    that follows a large one still queued must wait its turn, or the part's hashes (and the
    archive the vault checks) would be of bytes in the wrong order."""
    stall = _Stall()
    rig.fs.pool.hashes.feed([(stall, memoryview(b"x"))], [(stall, memoryview(b"x"))])
    size = 2 * PART + 5 * KiB
    data = payload(size, 17)
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    offset, sizes = 0, [300 * KiB, 3 * KiB, 1]
    while offset < size:
        length = min(sizes[0], size - offset)
        sizes.append(sizes.pop(0))
        if offset + length > PART and offset < PART:
            stall.release.set()  # the first part seals (and waits for its hashing) on this write
        assert rig.fs.write(fh, data[offset:offset + length], offset) == length
        offset += length
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)
    rig.assert_archive(b"/f", data)
    assert rig.upload_ops() == multipart(3)


def test_blocks_written_backwards(rig):
    size = 3 * PART + 7
    data = payload(size, 13)
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    for offset in reversed(range(0, size, BLOCK)):
        rig.fs.write(fh, data[offset:offset + BLOCK], offset)
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)
    rig.assert_archive(b"/f", data)
    assert rig.upload_ops() == multipart(4)


def test_overlapping_rewrites_inside_parts_not_yet_sealed(rig):
    size = 2 * PART + 200 * KiB
    data = payload(size, 21)
    junk = payload(size, 22)
    model = bytearray()
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)

    def write(source: bytes, start: int, end: int) -> None:
        rig.fs.write(fh, source[start:end], start)
        apply(model, source[start:end], start)

    # part 0: good, then junk over part of it and past it, then good again over the junk
    write(data, 0, 200 * KiB)
    write(junk, 150 * KiB, 350 * KiB)
    write(junk, 300 * KiB, 500 * KiB)
    write(data, 100 * KiB, 120 * KiB)  # same bytes again
    write(data, 150 * KiB, PART)  # fills part 0: sealed now
    # part 1 and the start of part 2: junk across the boundary first, then good blocks
    write(junk, 2 * PART - 10 * KiB, 2 * PART + 10 * KiB)
    write(junk, PART + 500 * KiB, PART + 600 * KiB)
    for offset in range(PART, 2 * PART, BLOCK):
        write(data, offset, offset + BLOCK)  # the last block fills part 1
    # the last, short part (staged until close): good, junk inside, good over the junk
    write(data, 2 * PART, size)
    write(junk, 2 * PART + 50 * KiB, 2 * PART + 90 * KiB)
    write(data, 2 * PART + 40 * KiB, 2 * PART + 100 * KiB)
    assert bytes(model) == data
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)

    rig.assert_archive(b"/f", data)
    assert rig.upload_ops() == multipart(3)  # each part sealed once, after its last write


def test_overlapping_rewrites_in_a_small_file(rig):
    data = payload(300 * KiB, 23)
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.fs.write(fh, payload(300 * KiB, 24), 0)
    rig.fs.write(fh, data[:100 * KiB], 0)
    rig.fs.write(fh, data[50 * KiB:], 50 * KiB)
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)
    rig.assert_archive(b"/f", data)
    assert rig.upload_ops() == single()


# ---- rewriting parts that were already sent -------------------------------------------------

@pytest.mark.parametrize("synced", [False, True], ids=["plain", "after-fsync"])
def test_rewrite_inside_an_uploaded_part_while_cached_sends_it_again(rig, synced):
    size = 3 * PART + 100 * KiB
    old = payload(size, 31)
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.write_blocks(fh, old)
    writer = rig.writer(b"/f")
    if synced:  # fsync'd bytes move between the cache's places durably (seal, unseal)
        rig.fs.fsync(fh)
        assert writer.synced_size == size
    wait_for(lambda: writer.parts[0].state == "uploaded", what="part 0 uploaded")
    assert rig.cache.path(f"{writer.cache_key}.0") is not None  # still cached

    patch = payload(1000, 32)
    offset = 300 * KiB + 7
    assert rig.fs.write(fh, patch, offset) == len(patch)
    new = old[:offset] + patch + old[offset + len(patch):]
    assert rig.read_all(b"/f") == new
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)

    rig.assert_archive(b"/f", new)
    assert rig.upload_ops() == multipart(4 + 1)  # part 0 sent twice
    assert rig.uploads_in_progress() == []
    assert rig.cache.reserved == 0
    assert rig.read_all(b"/f") == new


def test_rewrite_of_an_evicted_part_is_refused(make_fs, caplog):
    rig = make_fs(cache_parts=2)  # only two parts fit: early parts leave the cache
    data = payload(6 * PART, 33)
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.write_blocks(fh, data)
    writer = rig.writer(b"/f")
    wait_for(lambda: writer.parts[0].state == "uploaded", what="part 0 uploaded")
    assert rig.cache.path(f"{writer.cache_key}.0") is None  # evicted

    with (caplog.at_level(logging.WARNING, logger="glacierfs.upload"),
          pytest.raises(FsError) as refused):
        rig.fs.write(fh, b"new bytes!", 5)
    assert refused.value.errno == errno.ENOTSUP
    [line] = [r.getMessage() for r in caplog.records if "ENOTSUP" in r.getMessage()]
    assert line.startswith("/f: a write into part 0 refused")  # the log line SEMANTICS names
    # the refused write changed nothing: the file is still completed with what was written
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)
    rig.assert_archive(b"/f", data)
    assert rig.upload_ops() == multipart(6)
    assert rig.cache.reserved == 0


# ---- holes and truncate ---------------------------------------------------------------------

@pytest.mark.parametrize("start", [500 * KiB, 3 * PART + 5000], ids=["small", "multipart"])
def test_hole_before_the_only_write_is_zeros(rig, start):
    tail = payload(1000, 41)
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.fs.write(fh, tail, start)
    assert rig.fs.getattr(b"/f")["st_size"] == start + len(tail)
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)

    data = bytes(start) + tail
    rig.assert_archive(b"/f", data)
    parts = -(-len(data) // PART)
    assert rig.upload_ops() == (single() if parts == 1 else multipart(parts))
    assert rig.cache.reserved == 0
    assert rig.read_all(b"/f") == data


def test_holes_between_scattered_writes_are_zeros(rig):
    model = bytearray()
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    for i, offset in enumerate([10, PART - 3, 2 * PART + 500 * KiB, 4 * PART + 1]):
        piece = payload(1000 + i, 42 + i)
        rig.fs.write(fh, piece, offset)
        apply(model, piece, offset)
    rig.fs.release(fh)  # never flushed: release completes it
    rig.assert_archive(b"/f", bytes(model))
    assert rig.cache.reserved == 0


@pytest.mark.parametrize("length", [1000, 2 * PART + 300 * KiB], ids=["small", "multipart"])
def test_truncate_extending_adds_zeros(rig, length):
    head = payload(100, 51)
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.fs.write(fh, head, 0)
    rig.fs.truncate(b"/f", length, fh)
    assert rig.fs.getattr(b"/f")["st_size"] == length
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)

    data = head + bytes(length - len(head))
    rig.assert_archive(b"/f", data)
    assert rig.cache.reserved == 0


def test_truncate_shrinking_a_staged_part(rig):
    first = payload(700 * KiB, 52)
    later = payload(100 * KiB, 53)
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.write_blocks(fh, first)
    rig.fs.truncate(b"/f", 300 * KiB, fh)
    assert rig.fs.getattr(b"/f")["st_size"] == 300 * KiB
    assert rig.read_all(b"/f", pid=OTHER) == first[:300 * KiB]
    rig.fs.write(fh, later, 600 * KiB)  # the cut bytes must not come back: zeros
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)

    data = first[:300 * KiB] + bytes(300 * KiB) + later
    rig.assert_archive(b"/f", data)
    assert rig.upload_ops() == single()


def test_truncate_shrinking_the_last_part_of_a_multipart_file(rig):
    data = payload(2 * PART + 700 * KiB, 54)
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.write_blocks(fh, data)
    rig.fs.truncate(b"/f", 2 * PART + 300 * KiB, fh)
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)
    rig.assert_archive(b"/f", data[:2 * PART + 300 * KiB])
    assert rig.upload_ops() == multipart(3)
    assert rig.cache.reserved == 0


def test_truncate_shrinking_drops_whole_later_parts_being_written(rig):
    data = payload(4 * PART, 55)
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.write_blocks(fh, data[:2 * PART])  # parts 0 and 1: full, sealed
    rig.fs.write(fh, data[2 * PART:2 * PART + 512 * KiB], 2 * PART)  # part 2: half
    rig.fs.write(fh, data[3 * PART:3 * PART + 100 * KiB], 3 * PART)  # part 3: started
    rig.fs.truncate(b"/f", 2 * PART + 200 * KiB, fh)  # cuts into part 2, drops part 3
    assert rig.fs.getattr(b"/f")["st_size"] == 2 * PART + 200 * KiB
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)

    rig.assert_archive(b"/f", data[:2 * PART + 200 * KiB])
    assert rig.upload_ops() == multipart(3)
    assert rig.uploads_in_progress() == []
    assert rig.cache.reserved == 0


def test_refused_shrink_into_a_sealed_part_changes_nothing(rig):
    data = payload(2 * PART + 100 * KiB, 56)
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.write_blocks(fh, data[PART:2 * PART], start=PART)  # part 1: full, on its way
    rig.write_blocks(fh, data[:512 * KiB])  # part 0: half written, staged
    with pytest.raises(FsError) as refused:
        rig.fs.truncate(b"/f", 100 * KiB, fh)
    assert refused.value.errno == errno.ENOTSUP
    assert rig.fs.getattr(b"/f")["st_size"] == 2 * PART
    rig.write_blocks(fh, data[512 * KiB:PART], start=512 * KiB)
    rig.write_blocks(fh, data[2 * PART:], start=2 * PART)
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)
    rig.assert_archive(b"/f", data)


def test_truncate_of_a_stored_file_same_size_or_zero_only(rig):
    rig.store(b"/f", b"abc")
    rig.fs.truncate(b"/f", 3)  # no change: fine
    for length in (2, 4):
        with pytest.raises(FsError) as refused:
            rig.fs.truncate(b"/f", length)
        assert refused.value.errno == errno.EPERM
    rig.assert_archive(b"/f", b"abc")
    rig.fs.truncate(b"/f", 0)  # `truncate -s 0`: empty, and the archive is deleted
    node = rig.fs.catalog.resolve(b"/f")
    assert (node.state, node.size, node.archive_id) == ("stored", 0, None)
    assert rig.fs.getattr(b"/f")["st_size"] == 0
    assert rig.inventory() == []
    assert rig.read_all(b"/f") == b""


# ---- limits ---------------------------------------------------------------------------------

def test_write_beyond_10000_parts_is_efbig_and_aborts_the_upload(rig):
    data = payload(2 * PART + 10, 61)
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    rig.write_blocks(fh, data)
    # the sealer initiates the multipart upload once the first part is full
    wait_for(lambda: len(rig.uploads_in_progress()) == 1, what="the multipart upload")

    with pytest.raises(FsError) as too_big:
        rig.fs.write(fh, b"x", 10_000 * PART)
    assert too_big.value.errno == errno.EFBIG
    assert rig.uploads_in_progress() == []
    assert rig.upload_ops()["AbortMultipartUpload"] == 1
    # sticky: the file is failed for good
    with pytest.raises(FsError) as again:
        rig.fs.write(fh, b"y", 0)
    assert again.value.errno == errno.EFBIG
    with pytest.raises(FsError) as on_close:
        rig.fs.flush(fh, pid=OPENER)
    assert on_close.value.errno == errno.EFBIG
    rig.fs.release(fh)
    assert b"f" not in rig.fs.readdir(b"/")
    assert rig.inventory() == []
    assert rig.cache.reserved == 0


def test_write_ending_exactly_at_10000_parts_is_not_efbig_but_truncate_past_it_is(rig):
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    with pytest.raises(FsError) as too_big:
        rig.fs.truncate(b"/f", 10_000 * PART + 1, fh)
    assert too_big.value.errno == errno.EFBIG
    # not sticky: the file goes on
    rig.fs.write(fh, b"hello", 0)
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)
    rig.assert_archive(b"/f", b"hello")


# ---- attributes while writing ---------------------------------------------------------------

def test_getattr_follows_the_size_while_writing(rig):
    fh = rig.fs.create(b"/f", 0o640, 0, 0, pid=OPENER)
    st = rig.fs.getattr(b"/f")
    assert st["st_size"] == 0 and st["st_mode"] == 0o100640 and st["st_nlink"] == 1
    data = payload(PART + 300 * KiB, 71)
    for offset in range(0, len(data), BLOCK):
        rig.fs.write(fh, data[offset:offset + BLOCK], offset)
        end = min(offset + BLOCK, len(data))
        st = rig.fs.getattr(b"/f")
        assert st["st_size"] == end
        assert st["st_blocks"] == -(-end // 512)
    rig.fs.write(fh, b"z", 5)  # inside: the size does not change
    assert rig.fs.getattr(b"/f")["st_size"] == len(data)
    rig.fs.write(fh, b"end", 3 * PART)
    assert rig.fs.getattr(b"/f")["st_size"] == 3 * PART + 3
    rig.fs.truncate(b"/f", 3 * PART + 1, fh)  # shrinks the last part only
    assert rig.fs.getattr(b"/f")["st_size"] == 3 * PART + 1
    rig.fs.truncate(b"/f", 3 * PART + 10, fh)
    assert rig.fs.getattr(b"/f")["st_size"] == 3 * PART + 10
    rig.fs.release(fh)
    st = rig.fs.getattr(b"/f")
    assert st["st_size"] == 3 * PART + 10
    assert rig.fs.catalog.resolve(b"/f").size == 3 * PART + 10
    expected = data[:5] + b"z" + data[6:] + bytes(3 * PART - len(data)) + b"e" + bytes(9)
    rig.assert_archive(b"/f", expected)




def test_mtime_after_close_is_the_time_of_the_last_write(rig):
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    created = rig.fs.getattr(b"/f")["st_mtime_ns"]
    rig.fs.write(fh, b"first", 0)
    wait_for(lambda: time.time_ns() > created + 1_000_000, what="a later clock")
    before_last_write = time.time_ns()
    rig.fs.write(fh, b"second", 5)
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)
    mtime = rig.fs.getattr(b"/f")["st_mtime_ns"]
    assert mtime >= before_last_write > created
    assert rig.fs.catalog.resolve(b"/f").mtime_ns == mtime  # kept: not the writer's memory
