"""Catalog snapshots (snapshot.py) from the core, without a kernel, against a real local vault:
taken only after a change, an older one deleted once the one after it is two days old,
multipart above the part size, and a failed upload is a log line and a retry."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import sqlite3
from pathlib import Path

from glacierfs import snapshot
from glacierfs.snapshot import Snapshotter
from tests.fs.conftest import PART, VAULT, payload, ref_tree_hash
from tests.vault_helpers import inventory, retrieve


def catalog_path(rig) -> Path:
    return Path(rig.fs.catalog.db.query("PRAGMA database_list")[0]["file"])


def snapshotter(rig, tmp_path) -> Snapshotter:
    return Snapshotter(rig.fs, catalog_path(rig), tmp_path / "work", PART, interval=0)


def snapshot_archives(rig) -> list[dict]:
    return [a for a in inventory(rig.glacier, VAULT)
            if snapshot.described(a["ArchiveDescription"])]


def test_a_snapshot_only_after_a_change_and_the_older_one_stays_for_now(rig, tmp_path):
    rig.store(b"/a", payload(1000))
    taker = snapshotter(rig, tmp_path)
    first = taker.take_if_changed()
    assert first is not None
    assert taker.take_if_changed() is None  # nothing changed since
    rig.fs.mkdir(b"/d", 0o755, 0, 0)
    second = taker.take_if_changed()
    assert second is not None and second.archive_id != first.archive_id

    # The first stays: the second is not two days old (an inventory may list only the first).
    kept, archive = sorted(snapshot_archives(rig), key=lambda a: a["CreationDate"])
    assert (kept["ArchiveId"], archive["ArchiveId"]) == (first.archive_id, second.archive_id)
    assert rig.fs.journal.doomed() == []
    fields = json.loads(archive["ArchiveDescription"])
    assert fields["glacierfs"] == "catalog" and fields["created"] == second.created
    content, checksum = retrieve(rig.glacier, VAULT, second.archive_id)
    assert checksum == ref_tree_hash(content) == second.tree_hash
    copy = tmp_path / "copy.sqlite3"
    copy.write_bytes(gzip.decompress(content))
    with sqlite3.connect(copy) as conn:
        assert {r[0] for r in conn.execute("SELECT name FROM entries")} == {b"a", b"d"}
        # The copy records the previous snapshot: the newest is known only to the catalog.
        assert [r[0] for r in conn.execute("SELECT archive_id FROM catalog_snapshots")] == [
            first.archive_id]
    rows = rig.fs.catalog.db.query("SELECT archive_id FROM catalog_snapshots ORDER BY created")
    assert [r["archive_id"] for r in rows] == [first.archive_id, second.archive_id]


def test_a_snapshot_goes_once_the_one_after_it_is_two_days_old(rig, tmp_path):
    taker = snapshotter(rig, tmp_path)
    taken = []
    for name in (b"/a", b"/b", b"/c"):
        rig.fs.mkdir(name, 0o755, 0, 0)
        taken.append(taker.take_if_changed())
        if len(taken) == 2:  # make the first two look three and two and a half days old
            with rig.fs.catalog.db.transaction() as conn:
                for snap, hours in zip(taken, (72, 60)):
                    conn.execute("UPDATE catalog_snapshots SET created = ? WHERE archive_id = ?",
                                 (snapshot._stamp(dt.datetime.now(dt.timezone.utc)
                                                  - dt.timedelta(hours=hours)),
                                  snap.archive_id))
    # The first's successor is 60 h old: doomed and deleted. The second's successor is new.
    assert rig.fs.journal.doomed() == []
    assert {a["ArchiveId"] for a in snapshot_archives(rig)} == {
        taken[1].archive_id, taken[2].archive_id}
    rows = rig.fs.catalog.db.query("SELECT archive_id FROM catalog_snapshots ORDER BY created")
    assert [r["archive_id"] for r in rows] == [taken[1].archive_id, taken[2].archive_id]


def test_a_snapshot_over_the_part_size_goes_up_in_parts(rig, tmp_path):
    data = payload(2 * PART + PART // 2, 3)
    packed = tmp_path / "big.gz"
    packed.write_bytes(data)
    before = rig.upload_ops()
    archive_id, tree_hash, size = snapshot.upload(rig.fs.vault, packed, "big", PART)
    after = rig.upload_ops()
    assert (size, tree_hash) == (len(data), ref_tree_hash(data))
    assert after["UploadMultipartPart"] - before["UploadMultipartPart"] == 3
    assert after["CompleteMultipartUpload"] - before["CompleteMultipartUpload"] == 1
    content, _ = retrieve(rig.glacier, VAULT, archive_id)
    assert content == data


def test_a_failed_snapshot_is_logged_and_taken_again(make_fs, tmp_path, caplog):
    rig = make_fs(faults="UploadArchive:500:#2")  # #1 is the file, #2 the snapshot
    rig.store(b"/a", payload(10))
    taker = snapshotter(rig, tmp_path)
    with caplog.at_level(logging.WARNING, logger="glacierfs.snapshot"):
        assert taker.take_if_changed() is None
    [line] = [r.getMessage() for r in caplog.records if "catalog snapshot failed" in
              r.getMessage()]
    assert "ServiceUnavailable" in line or "500" in line
    assert snapshot_archives(rig) == []
    assert list((tmp_path / "work").iterdir()) == []  # no copy left behind
    again = taker.take_if_changed()
    assert again is not None
    assert [a["ArchiveId"] for a in snapshot_archives(rig)] == [again.archive_id]
