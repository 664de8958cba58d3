"""Catalog snapshots in the vault, `glacierfs recover` on a machine without the cache dir, and
`glacierfs inventory`: real mounts against a `glacierfs serve` process whose jobs take a second
(--job-delay), checked through boto3."""

from __future__ import annotations

import base64
import errno
import gzip
import json
import os
import shutil
import sqlite3
import time

import pytest

from glacierfs.treehash import tree_hash
from tests.mount.conftest import run_glacierfs
from tests.mount.crash_helpers import kill9, wait_for
from tests.mount.mount_helpers import PART, cost, pattern
from tests.mount.recover_helpers import (
    by_description_path,
    glacierfs_cmd,
    inventory,
    retrieve,
    snapshots,
    tree,
)
from tests.mount.test_cli_mount import assert_refused

T0 = 1_600_000_000_123_456_789  # an mtime with nanoseconds


@pytest.fixture
def serve(serve_process):
    """The service of these tests: retrieval jobs stay InProgress for a second, as on Glacier
    (for hours), so recover has to wait for them."""
    return serve_process("--job-delay", "1")


def write_tree(root) -> None:
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "top.txt").write_bytes(pattern(1234, 1))
    (root / "a" / "multi.bin").write_bytes(pattern(2 * PART + 5, 2))
    (root / "a" / "b" / "empty").write_bytes(b"")
    (root / "a" / "b" / "c" / "tiny").write_bytes(b"x")
    os.symlink("b/c/tiny", root / "a" / "link")
    os.chmod(root / "top.txt", 0o600)
    os.chmod(root / "a" / "b" / "c" / "tiny", 0o751)
    os.chmod(root / "a" / "b", 0o750)
    for index, rel in enumerate(["top.txt", "a/multi.bin", "a/b/empty", "a/b/c/tiny",
                                 "a/b/c", "a/b", "a", "."]):  # directories after contents
        os.utime(root / rel, ns=(T0 + index, T0 + index * 1_000_000_007))


def test_a_tree_survives_losing_the_cache_dir(mount):
    m = mount()
    write_tree(m.path)
    before = tree(m.path)
    files_counted = os.statvfs(m.path)
    assert m.umount().returncode == 0

    # Unmounting uploaded one snapshot: recognisable, decodable by AWS's migration ("path").
    [first] = snapshots(m.glacier, m.vault)
    fields = first["fields"]
    assert fields["path"].startswith(".glacierfs/catalog-")
    assert fields["path"].endswith(".sqlite.gz")
    assert fields["created"].endswith("Z") and fields["created"][:4].isdigit()
    # It is a gzipped SQLite copy of the catalog.
    copy = m.cache_dir.parent / "copy.sqlite3"
    copy.write_bytes(gzip.decompress(retrieve(m.glacier, m.vault, first["ArchiveId"])))
    with sqlite3.connect(copy) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM entries")}
    assert {b"top.txt", b"multi.bin", b"link", b"tiny"} <= names

    # A second mount with a change: a new snapshot. The first stays in the vault until the
    # second is two days old (an inventory, a day old, may list only the first).
    m2 = mount(cache_dir=m.cache_dir)
    assert tree(m2.path) == before
    assert sorted(os.listdir(m2.path)) == ["a", "top.txt"]  # the snapshot is not a file
    statfs = os.statvfs(m2.path)
    assert statfs.f_files - statfs.f_ffree == files_counted.f_files - files_counted.f_ffree
    (m2.path / "later.txt").write_bytes(b"later")
    os.utime(m2.path / "later.txt", ns=(T0, T0 + 99))
    expected = tree(m2.path)
    assert m2.umount().returncode == 0
    kept, second = sorted(snapshots(m.glacier, m.vault), key=lambda a: a["fields"]["created"])
    assert kept["ArchiveId"] == first["ArchiveId"] != second["ArchiveId"]

    # The machine is lost: recover from the vault alone, then mount.
    shutil.rmtree(m.cache_dir)
    result = glacierfs_cmd(m.serve, "recover", m.vault, m.cache_dir)
    assert result.returncode == 0, result.stderr
    # the inventory job the test's own listing ran is used: it is recent
    assert "the inventory of vault photos: using job " in result.stderr
    assert "catalog snapshot of " + second["fields"]["created"] in result.stdout
    assert "once a day" in result.stdout
    m3 = mount(cache_dir=m.cache_dir)
    assert tree(m3.path) == expected
    # The content is in the vault only: reads say so until it is restored.
    with pytest.raises(OSError) as excinfo:
        (m3.path / "top.txt").read_bytes()
    assert excinfo.value.errno == errno.ENODATA


def upload(glacier, vault: str, description: str, data: bytes) -> str:
    return glacier.upload_archive(vaultName=vault, archiveDescription=description,
                                  body=data)["archiveId"]


def test_archives_written_after_the_snapshot_are_added(mount):
    m = mount()
    (m.path / "a").mkdir()
    (m.path / "a" / "x.txt").write_bytes(b"old x")
    (m.path / "gone.txt").write_bytes(b"deleted later")
    assert m.umount().returncode == 0
    [snapshot] = snapshots(m.glacier, m.vault)

    # Another machine (or a crashed mount) wrote more with glacierfs's descriptions.
    new = pattern(3000, 5)
    upload(m.glacier, m.vault,
           json.dumps({"path": "a/new.txt", "mtime": "2025-03-04T05:06:07Z"}), new)
    upload(m.glacier, m.vault, json.dumps({"path": "fresh/dir/deep.bin",
                                           "mtime": "2024-01-01T00:00:00Z"}), b"deep")
    upload(m.glacier, m.vault, json.dumps({"path": "a/x.txt", "mtime": "2025-01-01T00:00:00Z"}),
           b"newer x")
    archives = by_description_path(m.glacier, m.vault)
    m.glacier.delete_archive(vaultName=m.vault, archiveId=archives["gone.txt"]["ArchiveId"])
    old_x = [a for a in inventory(m.glacier, m.vault)
             if a["ArchiveDescription"].startswith('{"path": "a/x.txt"') and a["Size"] == 5]

    shutil.rmtree(m.cache_dir)
    result = glacierfs_cmd(m.serve, "recover", m.vault, m.cache_dir)
    assert result.returncode == 0, result.stderr
    assert "plus 3 archive(s) written after it" in result.stdout
    assert "dropped 1 file(s) whose archive is no longer in the vault" in result.stdout
    m2 = mount(cache_dir=m.cache_dir)
    found = tree(m2.path)
    assert "gone.txt" not in found
    assert found["a/new.txt"][1:3] == (3000, 1741064767 * 10**9)
    assert found["fresh/dir/deep.bin"][1] == 4
    assert found["a/x.txt"][1:3] == (7, 1735689600 * 10**9)  # the newest keeps the name
    [aside] = [name for name in os.listdir(m2.path / "a") if name.startswith("x.txt~")]
    assert found[f"a/{aside}"][1] == len(b"old x")
    assert aside[len("x.txt~"):len("x.txt~") + 8] == old_x[0]["CreationDate"][:10].replace(
        "-", "")
    assert snapshot["ArchiveId"] not in str(found)


def mt2(path: str, mtime: str) -> str:
    data = json.dumps({"filename": path, "mtime": mtime}).encode()
    return "mt2 " + base64.urlsafe_b64encode(data).decode().rstrip("=")


def fastglacier(path: str, modified: str) -> str:
    encoded = base64.b64encode(path.encode()).decode()
    return f"<m><v>4</v><p>{encoded}</p><lm>{modified}</lm></m>"


def test_a_vault_written_by_other_tools_gets_named(mount, serve, tmp_path):
    glacier = serve.client()
    vault = "foreign"
    glacier.create_vault(vaultName=vault)
    named = {  # description -> (the path it should get, data)
        mt2("mt/photo 1.jpg", "20200102T030405Z"): ("mt/photo 1.jpg", b"mt2 data"),
        fastglacier("fg/Документ.txt", "20190203T040506Z"): ("fg/Документ.txt", b"fg4"),
        "<m><v>2</v><p>fg/old &amp; plain.txt</p><lm>20180101T000000Z</lm></m>":
            ("fg/old & plain.txt", b"fg2 plain"),
        json.dumps({"path": "json/lower.txt", "mtime": "2021-01-01T00:00:00Z"}):
            ("json/lower.txt", b"json path"),
        json.dumps({"Path": "json/Upper.txt"}): ("json/Upper.txt", b"json Path"),
        "bare-name.txt": ("bare-name.txt", b"bare"),
    }
    for description, (_, data) in named.items():
        upload(glacier, vault, description, data)
    marker = upload(glacier, vault, fastglacier("fg/empty folder/", "20170101T000000Z"), b"d")
    unnamed = [upload(glacier, vault, "", b"no description"),
               upload(glacier, vault, "../escape", b"unsafe"),
               upload(glacier, vault, json.dumps({"path": "/etc/passwd"}), b"absolute"),
               # glacierfs cut a long path to fit: only its beginning, so not its name
               upload(glacier, vault, json.dumps({"path": "deep/" + "d" * 200 + "/d",
                                                  "truncated": True}), b"cut")]
    older = upload(glacier, vault, "dup.txt", b"older")
    time.sleep(0.05)
    upload(glacier, vault, "dup.txt", b"newer!")

    cache_dir = tmp_path / "foreign-cache"
    result = glacierfs_cmd(serve, "recover", vault, cache_dir)
    assert result.returncode == 0, result.stderr
    assert "no catalog snapshot in the vault" in result.stdout
    assert f"{len(unnamed)} archive(s) without a usable name" in result.stdout
    m = mount(vault=vault, cache_dir=cache_dir)
    found = tree(m.path)
    for description, (path, data) in named.items():
        assert found[path][1] == len(data), path
    assert found["mt/photo 1.jpg"][2] == 1577934245 * 10**9
    assert found["fg/Документ.txt"][2] == 1549166706 * 10**9
    assert found["json/lower.txt"][2] == 1609459200 * 10**9
    assert found["fg/empty folder"][0].startswith("d")
    assert os.listdir(m.path / "fg" / "empty folder") == []
    assert found["dup.txt"][1] == len(b"newer!")
    [aside] = [name for name in os.listdir(m.path) if name.startswith("dup.txt~")]
    assert found[aside][1] == len(b"older")
    assert sorted(os.listdir(m.path / ".glacierfs-unnamed")) == sorted(unnamed)
    listed = set(found)
    expected = {path for path, _ in named.values()} | {"dup.txt", aside, "fg/empty folder"} | {
        f".glacierfs-unnamed/{a}" for a in unnamed}
    assert expected <= listed
    directories = {"mt", "fg", "json", ".glacierfs-unnamed", "."}
    assert listed - expected == directories, listed - expected
    assert not any(marker in path or older in path for path in listed)

    # Its first unmount uploads the catalog's first snapshot.
    assert m.umount().returncode == 0
    assert len(snapshots(glacier, vault)) == 1


def test_inventory_reports_unknown_and_missing_archives(mount):
    m = mount()
    (m.path / "keep.txt").write_bytes(b"keep")
    (m.path / "gone.txt").write_bytes(b"gone")
    assert m.umount().returncode == 0
    archives = by_description_path(m.glacier, m.vault)
    gone = archives["gone.txt"]["ArchiveId"]
    m.glacier.delete_archive(vaultName=m.vault, archiveId=gone)
    stranger = upload(m.glacier, m.vault, "stranger.bin", b"not ours")
    [snapshot] = snapshots(m.glacier, m.vault)

    result = glacierfs_cmd(m.serve, "inventory", m.vault, m.cache_dir)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "once a day" in out
    sections = out.split("\n\n")
    unknown = next(s for s in sections if s.startswith("archives the catalog does not know"))
    assert unknown.splitlines()[0].endswith(": 1")
    assert stranger in unknown and "stranger.bin (bare)" in unknown
    snaps = next(s for s in sections if s.startswith("catalog snapshots"))
    assert snapshot["ArchiveId"] in snaps and "current" in snaps
    missing = next(s for s in sections if s.startswith("catalog entries the vault does not"))
    assert missing.splitlines()[0].endswith(": 1")
    assert "/gone.txt" in missing and gone in missing
    assert "keep.txt" not in out


def test_recover_falls_back_when_the_newest_listed_snapshot_is_gone(mount, serve):
    # Glacier's inventory is about a day old: a mount on another machine may have replaced
    # and deleted the newest snapshot it lists since. recover takes the one before it, and
    # the files written after that come from their descriptions.
    m = mount()
    (m.path / "a.txt").write_bytes(b"a")
    assert m.umount().returncode == 0
    again = mount(cache_dir=m.cache_dir)
    (again.path / "b.txt").write_bytes(b"b")
    assert again.umount().returncode == 0
    # The listing below ran an inventory job, which recover uses (it is recent): it lists the
    # newest snapshot, which is then deleted, as a mount elsewhere may have done.
    older, newest = sorted(snapshots(m.glacier, m.vault), key=lambda a: a["fields"]["created"])
    m.glacier.delete_archive(vaultName=m.vault, archiveId=newest["ArchiveId"])
    shutil.rmtree(m.cache_dir)
    result = glacierfs_cmd(serve, "recover", m.vault, m.cache_dir, "--tier", "expedited")
    out, err = result.stdout, result.stderr  # --tier in any case, as restore takes it
    assert result.returncode == 0, err
    assert (f"the catalog snapshot of {newest['fields']['created']} is no longer in the vault; "
            "trying the one before it") in err
    assert f"from the catalog snapshot of {older['fields']['created']}" in out
    m3 = mount(cache_dir=m.cache_dir)
    assert sorted(os.listdir(m3.path)) == ["a.txt", "b.txt"]


def test_files_overwritten_or_replaced_after_the_snapshot_keep_their_place(mount):
    m = mount("--snapshot-interval", "0")
    (m.path / "notes.txt").write_bytes(b"")
    os.chmod(m.path / "notes.txt", 0o600)
    (m.path / "run.sh").write_bytes(b"echo old")
    os.chmod(m.path / "run.sh", 0o755)
    (m.path / "backup").mkdir()
    (m.path / "backup" / "a").write_bytes(b"a")
    assert m.umount().returncode == 0  # the snapshot

    # After it, and lost with the machine (no snapshot): overwrites and a directory that
    # became a file.
    again = mount("--snapshot-interval", "0", cache_dir=m.cache_dir)
    before = again.stats()
    (again.path / "notes.txt").write_bytes(b"private")
    (again.path / "run.sh").write_bytes(b"echo new")
    shutil.rmtree(again.path / "backup")
    (again.path / "backup").write_bytes(b"tarball")
    wait_for(lambda: cost(before, again.stats()).get("DeleteArchive", 0) >= 2,
             "the old run.sh and backup/a to be deleted")
    kill9(again)
    shutil.rmtree(m.cache_dir)
    result = glacierfs_cmd(m.serve, "recover", m.vault, m.cache_dir)
    assert result.returncode == 0, result.stderr

    found = tree(mount(cache_dir=m.cache_dir).path)
    assert sorted(found) == [".", "backup", "notes.txt", "run.sh"]  # no NAME~DATE copies
    assert found["notes.txt"][:2] == ("-rw-------", len(b"private"))  # still private
    assert found["run.sh"][:2] == ("-rwxr-xr-x", len(b"echo new"))
    assert found["backup"][:2] == ("-rw-r--r--", len(b"tarball"))


def test_a_new_catalog_on_a_vault_with_archives_is_pointed_out(mount, serve):
    # Mounting a used vault with an empty cache dir (a new machine, before recover) shows an
    # empty tree: the mount says why, and what rebuilds the catalog.
    m = mount()
    (m.path / "a.txt").write_bytes(b"a")
    assert m.umount().returncode == 0
    inventory(m.glacier, m.vault)  # DescribeVault counts what the last inventory saw
    fresh = m.cache_dir.parent / "fresh-cache"
    result = run_glacierfs("mount", m.vault, str(m.path), "--endpoint-url", serve.endpoint_url,
                           "--cache-dir", str(fresh), env=m.env)
    try:
        assert result.returncode == 0, result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith(f"glacierfs: vault {m.vault} holds 2 archive(s) (as of its "
                               f"last inventory), but {fresh} had no catalog")
        assert f"glacierfs recover {m.vault}" in line
        assert os.listdir(m.path) == []
    finally:
        assert m.umount().returncode == 0
    again = run_glacierfs("mount", m.vault, str(m.path), "--endpoint-url", serve.endpoint_url,
                          "--cache-dir", str(fresh), env=m.env)  # its catalog exists now
    try:
        assert again.returncode == 0 and again.stderr == "", again.stderr
    finally:
        assert m.umount().returncode == 0


def test_a_second_catalog_s_snapshots_are_told_apart(mount, serve):
    # A second machine mounted the vault with a new cache dir and wrote one file: its
    # near-empty catalog's snapshot is now the newest. recover restores it, lists the first
    # catalog's snapshot as another catalog's (never doomed: the recovered catalog does not
    # record it), and --snapshot recovers from that one instead, adding what the second
    # machine wrote after it.
    m = mount()
    write_tree(m.path)
    expected = tree(m.path)
    assert m.umount().returncode == 0
    [first] = snapshots(m.glacier, m.vault)
    laptop = m.cache_dir.parent / "laptop-cache"
    second = mount(vault=m.vault, cache_dir=laptop)
    (second.path / "laptop.txt").write_bytes(b"laptop")
    assert second.umount().returncode == 0
    # (the inventory job this takes is the one recover uses: a recent one is reused)
    [newest] = [a for a in snapshots(m.glacier, m.vault) if a["ArchiveId"] != first["ArchiveId"]]
    assert newest["fields"]["catalog"] != first["fields"]["catalog"]

    recovered = m.cache_dir.parent / "recovered-cache"
    result = glacierfs_cmd(serve, "recover", m.vault, recovered)
    assert result.returncode == 0, result.stderr
    assert f"catalog snapshot of {newest['fields']['created']}" in result.stdout
    assert "also holds 1 snapshot(s) of another catalog" in result.stdout, result.stdout
    assert f"--snapshot {first['ArchiveId'][:16]}" in result.stdout
    with sqlite3.connect(recovered / "catalog.sqlite3") as db:
        recorded = {row[0] for row in db.execute("SELECT archive_id FROM catalog_snapshots")}
    assert recorded == {newest["ArchiveId"]}

    result = glacierfs_cmd(serve, "recover", m.vault, recovered, "--force",
                           "--snapshot", first["ArchiveId"][:16])
    assert result.returncode == 0, result.stderr
    assert f"catalog snapshot of {first['fields']['created']}" in result.stdout
    assert "plus 1 archive(s) written after it" in result.stdout
    assert f"--snapshot {newest['ArchiveId'][:16]}" in result.stdout
    found = tree(mount(vault=m.vault, cache_dir=recovered).path)
    assert found.pop("laptop.txt")[1] == len(b"laptop")
    expected.pop(".")  # the root's mtime moved with laptop.txt's arrival
    found.pop(".")
    assert found == expected

    bad = glacierfs_cmd(serve, "recover", m.vault, m.cache_dir.parent / "other",
                        "--snapshot", "nonesuch")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    line = bad.stderr.splitlines()[-1]  # after the line on the inventory job it used
    assert line.startswith("glacierfs: no catalog snapshot(s) in the inventory have an "
                           "archive id starting with 'nonesuch'; "), line
    assert f"--snapshot {first['ArchiveId'][:16]}" in line
    assert not (m.cache_dir.parent / "other").exists()


def test_recover_downloads_again_and_reuses_a_recent_inventory(mount, serve):
    m = mount()
    (m.path / "a.txt").write_bytes(b"a")
    assert m.umount().returncode == 0
    shutil.rmtree(m.cache_dir)
    m.set_faults("GetJobOutput:drop:#1")  # the inventory's download breaks half way
    try:
        result = glacierfs_cmd(serve, "recover", m.vault, m.cache_dir)
    finally:
        m.set_faults("")
    assert result.returncode == 0, result.stderr
    assert f"the download of the inventory of vault {m.vault} broke" in result.stderr

    # Interrupted or run again soon after: the inventory job that just finished is used (on
    # Glacier a new one would take four hours), and so is the snapshot's retrieval.
    shutil.rmtree(m.cache_dir)
    before = m.stats()
    result = glacierfs_cmd(serve, "recover", m.vault, m.cache_dir)
    assert result.returncode == 0, result.stderr
    assert "InitiateJob" not in cost(before, m.stats())
    assert os.listdir(mount(cache_dir=m.cache_dir).path) == ["a.txt"]


def test_recover_refuses_an_unknown_vault_and_an_existing_catalog(mount, serve, tmp_path):
    result = glacierfs_cmd(serve, "recover", "no-such-vault", tmp_path / "c0")
    assert "no-such-vault" in assert_refused(result, "does not exist")
    assert not (tmp_path / "c0").exists()  # the cache dir it made is taken back

    m = mount()
    (m.path / "f.txt").write_bytes(b"f")
    assert m.umount().returncode == 0
    result = glacierfs_cmd(serve, "recover", m.vault, m.cache_dir)
    assert_refused(result, "already has a catalog", "--force")

    result = glacierfs_cmd(serve, "recover", m.vault, m.cache_dir, "--force")
    assert result.returncode == 0, result.stderr
    backups = sorted(p for p in os.listdir(m.cache_dir) if ".before-recover-" in p)
    assert backups[0].startswith("catalog.sqlite3.before-recover-")  # with its -wal, -shm
    assert {p.removeprefix(backups[0]) for p in backups} <= {"", "-wal", "-shm"}
    assert "kept as" in result.stdout
    m2 = mount(cache_dir=m.cache_dir)
    assert os.listdir(m2.path) == ["f.txt"]


def test_recover_force_refuses_a_cache_with_unfinished_uploads(mount, serve):
    # The file's only copy is in the cache, named by the old catalog's journal: a new catalog
    # would have the next mount remove it as a leftover.
    m = mount("--async-close")
    m.set_faults("UploadArchive:500:#1+")
    try:
        (m.path / "precious.txt").write_bytes(b"only in the cache")
        assert m.umount().returncode == 1  # the upload waits in the cache
        result = glacierfs_cmd(serve, "recover", m.vault, m.cache_dir, "--force")
        assert_refused(result, "1 upload(s)", "mount it once")
        assert not [p for p in os.listdir(m.cache_dir) if ".before-recover-" in p]
    finally:
        m.set_faults("")
    again = mount(cache_dir=m.cache_dir)
    assert (again.path / "precious.txt").read_bytes() == b"only in the cache"
    assert again.umount().returncode == 0
    assert retrieve(m.glacier, m.vault, by_description_path(m.glacier, m.vault)[
        "precious.txt"]["ArchiveId"]) == b"only in the cache"


def test_a_log_left_without_its_catalog_is_not_played_into_the_recovered_one(mount, serve):
    m = mount()
    (m.path / "kept.txt").write_bytes(b"kept")
    assert m.umount().returncode == 0  # the snapshot has kept.txt
    again = mount(cache_dir=m.cache_dir)
    (again.path / "local-only").mkdir()  # in the catalog's WAL only: the daemon is killed
    kill9(again)
    os.unlink(m.cache_dir / "catalog.sqlite3")  # a user cleaning up, leaving -wal and -shm
    assert (m.cache_dir / "catalog.sqlite3-wal").exists()
    result = glacierfs_cmd(serve, "recover", m.vault, m.cache_dir)
    assert result.returncode == 0, result.stderr
    assert "kept as" in result.stdout  # the stray log is kept aside, not played
    third = mount(cache_dir=m.cache_dir)
    assert sorted(os.listdir(third.path)) == ["kept.txt"]


def test_a_corrupt_snapshot_is_refused(mount, serve):
    m = mount()
    (m.path / "f.txt").write_bytes(b"f")
    assert m.umount().returncode == 0
    [snapshot] = snapshots(m.glacier, m.vault)
    # Flip a byte of the stored archive in the service's data dir.
    database = (serve.data_dir / "glacierfs-server.sqlite3").absolute().as_uri()
    conn = sqlite3.connect(f"{database}?mode=ro", uri=True)
    try:
        [(blob,)] = conn.execute("SELECT blob FROM archives WHERE archive_id = ?",
                                 (snapshot["ArchiveId"],)).fetchall()
    finally:
        conn.close()
    path = serve.data_dir / "blobs" / blob[:2] / blob
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    assert tree_hash(bytes(data)) != snapshot["SHA256TreeHash"]

    shutil.rmtree(m.cache_dir)
    result = glacierfs_cmd(serve, "recover", m.vault, m.cache_dir)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    *progress, error = result.stderr.strip().splitlines()
    assert all("waiting for" in line or "ready after" in line or "using job" in line
               for line in progress), progress
    assert error.startswith("glacierfs: archive " + snapshot["ArchiveId"])
    assert "tree hash" in error and snapshot["SHA256TreeHash"] in error
    assert not (m.cache_dir / "catalog.sqlite3").exists()


def snapshot_lines(m) -> list[str]:
    return [line for line in m.log().splitlines() if "catalog snapshot" in line
            and "uploaded" in line]


def test_snapshots_while_mounted_only_after_changes(mount):
    m = mount("--snapshot-interval", "0.01")  # 0.6 s
    (m.path / "one.txt").write_bytes(b"1")
    deadline = time.monotonic() + 30
    while not snapshot_lines(m) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(snapshot_lines(m)) == 1
    time.sleep(2)  # several intervals without a change: no new snapshot
    assert len(snapshot_lines(m)) == 1
    (m.path / "two.txt").write_bytes(b"2")
    deadline = time.monotonic() + 30
    while len(snapshot_lines(m)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(snapshot_lines(m)) == 2
    # the first stays until the second is two days old (snapshot.KEEP_REPLACED)
    first, current = sorted(snapshots(m.glacier, m.vault), key=lambda a: a["fields"]["created"])
    assert first["ArchiveId"] in snapshot_lines(m)[0]
    assert current["ArchiveId"] in snapshot_lines(m)[-1]
    assert m.umount().returncode == 0
    assert len(snapshot_lines(m)) == 2  # unchanged since: none at unmount


def test_a_failed_snapshot_upload_does_not_fail_the_unmount(mount):
    m = mount("--snapshot-interval", "0")
    (m.path / "f.txt").write_bytes(b"f")
    m.set_faults("UploadArchive:500:#1+")
    try:
        result = m.umount()
    finally:
        m.set_faults("")
    assert result.returncode == 0, result.stderr
    failed = [line for line in m.log().splitlines() if "catalog snapshot failed" in line]
    assert len(failed) == 1 and "next mount" in failed[0]
    assert snapshots(m.glacier, m.vault) == []
    # The next mount's unmount uploads it, with no change made meanwhile.
    m2 = mount("--snapshot-interval", "0", cache_dir=m.cache_dir)
    assert m2.umount().returncode == 0
    assert len(snapshots(m.glacier, m.vault)) == 1


def test_an_unreachable_vault_at_unmount_is_not_waited_for_by_the_snapshot(mount, serve):
    # Every file is in the vault; only the last snapshot is left, and the vault went away.
    # The mount waits up to 5 minutes for an unreachable endpoint where a file's upload is at
    # stake; a snapshot the next mount can take is not worth a silent wait in umount.
    m = mount("--snapshot-interval", "0")
    (m.path / "f.txt").write_bytes(b"f")
    serve.stop()
    result = m.umount()
    assert result.returncode == 0, result.stderr
    log = m.log()
    failed = [line for line in log.splitlines() if "catalog snapshot failed" in line]
    assert len(failed) == 1 and "next mount" in failed[0], log[-3000:]
    assert "uploads wait for it" not in log


def test_kill9_during_a_snapshot_upload(mount):
    """The crash table's row: the snapshot archive got into the vault, the catalog never
    recorded it. Nothing is lost; the next unmount snapshots again; `glacierfs inventory`
    shows the stray one, and recover dooms it (the next mount deletes it)."""
    m = mount("--snapshot-interval", "0.01")
    (m.path / "f.txt").write_bytes(b"f")
    m.set_faults("UploadArchive:hang-after:#1")  # the next UploadArchive: the snapshot's
    try:
        deadline = time.monotonic() + 30
        while not snapshots(m.glacier, m.vault) and time.monotonic() < deadline:
            time.sleep(0.2)
        [stray] = snapshots(m.glacier, m.vault)
        kill9(m)
    finally:
        m.set_faults("")
    m2 = mount("--snapshot-interval", "0", cache_dir=m.cache_dir)
    assert os.listdir(m2.path) == ["f.txt"]
    assert m2.umount().returncode == 0
    current = [s for s in snapshots(m.glacier, m.vault)
               if s["ArchiveId"] != stray["ArchiveId"]]
    assert len(current) == 1
    result = glacierfs_cmd(m.serve, "inventory", m.vault, m.cache_dir)
    assert result.returncode == 0, result.stderr
    rows = {archive["ArchiveId"]: [line for line in result.stdout.splitlines()
                                   if archive["ArchiveId"] in line]
            for archive in (stray, current[0])}
    assert rows == {stray["ArchiveId"]: [rows[stray["ArchiveId"]][0]],
                    current[0]["ArchiveId"]: [rows[current[0]["ArchiveId"]][0]]}
    assert rows[current[0]["ArchiveId"]][0].endswith("current")
    assert rows[stray["ArchiveId"]][0].endswith("old")

    # recover finds the stray in the inventory: an older snapshot like any other, recorded
    # and kept until the current one is two days old
    shutil.rmtree(m.cache_dir)
    assert glacierfs_cmd(m.serve, "recover", m.vault, m.cache_dir).returncode == 0
    with sqlite3.connect(m.cache_dir / "catalog.sqlite3") as conn:
        recorded = {row[0] for row in conn.execute("SELECT archive_id FROM catalog_snapshots")}
    assert recorded == {stray["ArchiveId"], current[0]["ArchiveId"]}
    m3 = mount("--snapshot-interval", "0", cache_dir=m.cache_dir)
    assert os.listdir(m3.path) == ["f.txt"]
