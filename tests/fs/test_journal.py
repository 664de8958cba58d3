"""The upload journal as the core writes it (no kernel): each record is there before the
step that depends on it, and gone once the archive is recorded. Crash recovery from it is
tested through real mounts in tests/mount/test_crash.py."""

from __future__ import annotations

import os

import pytest

from glacierfs.errors import FsError

from tests.fs.conftest import OPENER, PART, payload, ref_tree_hash, wait_for


def uploads(rig) -> list[dict]:
    return [dict(r) for r in rig.fs.catalog.db.query("SELECT * FROM uploads")]


def parts(rig) -> dict[int, dict]:
    return {r["idx"]: dict(r) for r in rig.fs.catalog.db.query("SELECT * FROM upload_parts")}


def doomed(rig) -> list[str]:
    return [archive_id for archive_id, _ in rig.fs.journal.doomed()]


def test_a_file_is_journaled_from_create_to_its_archive(rig):
    data = payload(2 * PART + 100, 1)
    fh = rig.fs.create(b"/f", 0o644, 0, 0, pid=OPENER)
    [row] = uploads(rig)
    assert row["state"] == "writing" and row["upload_id"] is None
    assert row["ino"] == rig.fs.catalog.resolve(b"/f").ino

    rig.write_blocks(fh, data)
    wait_for(lambda: sum(p["uploaded"] for p in parts(rig).values()) == 2, what="two parts")
    journaled = parts(rig)
    assert sorted(journaled) == [0, 1]
    for index in (0, 1):
        assert journaled[index]["tree_hash"] == ref_tree_hash(
            data[index * PART:(index + 1) * PART])
        assert journaled[index]["size"] == PART
    assert uploads(rig)[0]["upload_id"] == rig.uploads_in_progress()[0]["MultipartUploadId"]

    rig.fs.fsync(fh)
    assert uploads(rig)[0]["size"] == len(data)

    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)
    assert uploads(rig) == [] and parts(rig) == {}
    rig.assert_archive(b"/f", data)


def test_a_failed_file_leaves_no_journal_entry(make_fs):
    rig = make_fs(faults="UploadMultipartPart:500:#1+")
    fh = rig.fs.create(b"/bad", 0o644, 0, 0, pid=OPENER)
    ino = rig.fs.catalog.resolve(b"/bad").ino
    try:  # a later write may see the failure, if the upload failed by then
        rig.write_blocks(fh, payload(2 * PART, 2))
    except FsError:
        pass
    with pytest.raises(FsError):  # close(2) flushes either way, and the failure is sticky
        rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)
    assert uploads(rig) == []
    assert not rig.fs.catalog.exists(ino)
    assert rig.uploads_in_progress() == []


def test_unlink_dooms_the_archive_until_the_vault_deleted_it(make_fs):
    rig = make_fs(faults="DeleteArchive:503:#1")  # the first delete fails (no retries here)
    rig.store(b"/a", payload(PART // 2, 3))
    archive_id = rig.fs.catalog.resolve(b"/a").archive_id
    rig.fs.unlink(b"/a")
    assert doomed(rig) == [archive_id]  # kept for the next try
    assert [a["ArchiveId"] for a in rig.inventory()] == [archive_id]

    rig.fs.delete_archives()  # what the next mount does
    assert doomed(rig) == []
    assert rig.inventory() == []


def test_overwrite_dooms_the_old_archive_in_the_same_transaction(rig):
    rig.store(b"/a", payload(PART + 1, 4))
    old = rig.fs.catalog.resolve(b"/a").archive_id
    fh = rig.fs.open(b"/a", os.O_WRONLY | os.O_TRUNC, pid=OPENER)
    assert uploads(rig)[0]["ino"] == rig.fs.catalog.resolve(b"/a").ino
    new_data = payload(PART + 2, 5)
    rig.write_blocks(fh, new_data)
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)
    assert doomed(rig) == []
    assert old not in [a["ArchiveId"] for a in rig.inventory()]
    rig.assert_archive(b"/a", new_data)
