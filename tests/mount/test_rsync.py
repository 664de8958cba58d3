"""rsync -a into a real mount, the namespace operations it needs, and descriptions that name
the file. Every vault-side check goes through boto3."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import stat
import subprocess

import pytest

from glacierfs import snapshot
from glacierfs.treehash import tree_hash
from tests.vault_helpers import archives_by_path, inventory, retrieve

MiB = 1 << 20


def make_tree(root):
    """Nested dirs, a symlink, spaces, UTF-8, a 255-byte name, empty and binary files. Every
    directory has an mtime in the past, so one that a copy fails to restore shows."""
    (root / "docs" / "deep" / "er").mkdir(parents=True)
    (root / "photos 2024").mkdir()
    (root / "docs" / "readme.txt").write_text("hello\n")
    (root / "docs" / "deep" / "er" / "notes.md").write_text("# notes\n" * 50)
    (root / "photos 2024" / "été à la plage.jpg").write_bytes(os.urandom(3 * MiB + 17))
    (root / "empty").write_bytes(b"")
    (root / ("n" * 255)).write_bytes(b"long name")
    (root / "bin.dat").write_bytes(bytes(range(256)) * 33)
    os.symlink("docs/readme.txt", root / "link-to-readme")
    os.chmod(root / "docs" / "readme.txt", 0o600)
    os.chmod(root / "bin.dat", 0o751)
    os.utime(root / "bin.dat", ns=(1_500_000_000_123_456_789, 1_500_000_000_123_456_789))
    directories = [dirpath for dirpath, _, _ in os.walk(root, topdown=False)]  # root last
    for index, directory in enumerate(directories):
        mtime_ns = 1_600_000_000_000_000_000 + index * 86_400_000_000_007
        os.utime(directory, ns=(mtime_ns, mtime_ns))
    return root


def lstat_view(root):
    """What rsync -a preserves, per relative path ("." is the root itself): directory mtimes
    too (rsync, tar and cp -a set them last, rsync and tar with atime UTIME_OMIT)."""
    view = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ([os.curdir] if dirpath == str(root) else []) + dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            entry = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISLNK(st.st_mode):
                entry["target"] = os.readlink(path)
            else:
                entry["mtime_ns"] = st.st_mtime_ns
            if stat.S_ISREG(st.st_mode):
                entry["size"] = st.st_size
            view[os.path.normpath(os.path.relpath(path, root))] = entry
    return view


def rsync(source, target) -> list[str]:
    result = subprocess.run(["rsync", "-a", "--itemize-changes", f"{source}/", f"{target}/"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("close", ["wait", "async"])
def test_rsync_twice_then_remount_preserves_everything(mount, tmp_path, close):
    source = make_tree(tmp_path / "source")
    m = mount(*(["--async-close"] if close == "async" else []))
    first = rsync(source, m.path)
    assert any("été à la plage.jpg" in line for line in first)
    assert any(line.endswith(" docs/deep/er/") for line in first)
    # The nightly run finds nothing to do: no file sent, no directory's time set again.
    assert rsync(source, m.path) == []
    expected = lstat_view(source)
    assert lstat_view(m.path) == expected
    # Unmounting waits for every upload (with --async-close, some may still be running).
    assert m.umount().returncode == 0

    # Every non-empty file is one archive whose description decodes to its final path.
    files = sorted(rel for rel, e in expected.items() if e.get("size", 0) > 0)
    described = []
    for archive in inventory(m.glacier, m.vault):
        description = json.loads(archive["ArchiveDescription"])
        if snapshot.described(archive["ArchiveDescription"]):
            continue  # the catalog snapshot taken at unmount
        # rsync cuts a long NAME in its temporary .NAME.XXXXXX: then the description says so.
        [rel] = [f for f in files if f == description["path"]
                 or (description.get("truncated") and f.startswith(description["path"]))]
        described.append(rel)
        data = (source / rel).read_bytes()
        assert archive["SHA256TreeHash"] == tree_hash(data)
        assert not os.path.basename(rel).startswith(".")  # never rsync's .NAME.XXXXXX
        assert archive["ArchiveDescription"].isascii()
        assert len(archive["ArchiveDescription"]) <= 1024
    assert sorted(described) == files

    # Mount the same cache again: the catalog keeps the whole view.
    again = mount(vault=m.vault, cache_dir=m.cache_dir)
    assert lstat_view(again.path) == expected
    assert rsync(source, again.path) == []


def test_rsync_with_xattrs_settles_and_copies_no_glacier_attributes_out(mount, tmp_path):
    # The mount keeps no attributes of its own, and lists none of its answers (user.glacier.*):
    # the second `rsync -aX` in finds nothing to do, and a copy out carries none of them.
    source = make_tree(tmp_path / "source")
    m = mount()
    runs = []
    for _ in range(2):
        result = subprocess.run(["rsync", "-aX", "--itemize-changes", f"{source}/",
                                 f"{m.path}/"], capture_output=True, text=True, timeout=300,
                                check=False)
        assert result.returncode == 0, result.stderr
        runs.append([line for line in result.stdout.splitlines() if line.strip()])
    assert any(line.endswith(" bin.dat") for line in runs[0])
    assert runs[1] == []
    assert os.getxattr(m.path / "bin.dat", "user.glacier.state") == b"cached"
    out = tmp_path / "out"
    subprocess.run(["rsync", "-aX", f"{m.path}/", f"{out}/"], check=True, timeout=300)
    subprocess.run(["cp", "-a", m.path / "bin.dat", out / "copied.dat"], check=True)
    for path in (out / "bin.dat", out / "copied.dat"):
        assert os.listxattr(path) == []
    assert (out / "bin.dat").read_bytes() == (source / "bin.dat").read_bytes()


def test_mv_is_a_catalog_change_only(mount, tmp_path):
    m = mount()
    (m.path / "album").mkdir()
    data = os.urandom(2 * MiB + 5)
    (m.path / "album" / "a.raw").write_bytes(data)
    (m.path / "single.txt").write_bytes(b"one")
    before = m.stats()
    os.rename(m.path / "album", m.path / "album-2024")
    os.rename(m.path / "single.txt", m.path / "album-2024" / "moved.txt")
    after = m.stats()
    assert {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)} == {}
    assert sorted(os.listdir(m.path / "album-2024")) == ["a.raw", "moved.txt"]
    assert (m.path / "album-2024" / "a.raw").read_bytes() == data
    assert len(inventory(m.glacier, m.vault)) == 2


def test_rm_deletes_the_archive(mount):
    m = mount()
    (m.path / "gone.bin").write_bytes(os.urandom(MiB + 1))
    (m.path / "kept.bin").write_bytes(b"kept")
    assert len(inventory(m.glacier, m.vault)) == 2
    os.unlink(m.path / "gone.bin")
    assert "gone.bin" not in os.listdir(m.path)
    assert list(archives_by_path(m.glacier, m.vault)) == ["kept.bin"]


def test_rmdir(mount):
    m = mount()
    (m.path / "full").mkdir()
    (m.path / "full" / "f").write_bytes(b"x")
    (m.path / "empty").mkdir()
    with pytest.raises(OSError) as excinfo:
        os.rmdir(m.path / "full")
    assert excinfo.value.errno == errno.ENOTEMPTY
    os.rmdir(m.path / "empty")
    assert sorted(os.listdir(m.path)) == ["full"]


def test_overwrite_makes_a_new_archive_and_deletes_the_old(mount, tmp_path):
    m = mount()
    target = m.path / "doc.txt"
    target.write_bytes(b"version one")
    old_id = archives_by_path(m.glacier, m.vault)["doc.txt"]["ArchiveId"]
    new = os.urandom(MiB + 99)
    source = tmp_path / "v2"
    source.write_bytes(new)
    subprocess.run(["cp", str(source), str(target)], check=True)
    archives = inventory(m.glacier, m.vault)
    assert len(archives) == 1
    assert archives[0]["ArchiveId"] != old_id
    assert archives[0]["SHA256TreeHash"] == tree_hash(new)
    body, _ = retrieve(m.glacier, m.vault, archives[0]["ArchiveId"])
    assert body == new and target.read_bytes() == new


def test_rename_over_existing_file_deletes_the_replaced_archive(mount):
    m = mount()
    (m.path / "a").write_bytes(b"new content")
    (m.path / "b").write_bytes(b"old content")
    os.rename(m.path / "a", m.path / "b")
    archives = archives_by_path(m.glacier, m.vault)
    assert list(archives) == ["a"]  # the description names the path it was written as
    body, _ = retrieve(m.glacier, m.vault, archives["a"]["ArchiveId"])
    assert body == b"new content" and (m.path / "b").read_bytes() == b"new content"


def test_failed_overwrite_keeps_the_old_file(mount, tmp_path):
    m = mount()
    target = m.path / "precious.bin"
    old = os.urandom(MiB + 3)
    target.write_bytes(old)
    m.set_faults("UploadMultipartPart:500:#1+")
    source = tmp_path / "new"
    source.write_bytes(os.urandom(2 * MiB))
    result = subprocess.run(["cp", str(source), str(target)], capture_output=True, text=True)
    m.set_faults("")
    assert result.returncode != 0
    assert target.read_bytes() == old
    archives = inventory(m.glacier, m.vault)
    assert [a["SHA256TreeHash"] for a in archives] == [tree_hash(old)]
    assert m.glacier.list_multipart_uploads(vaultName=m.vault)["UploadsList"] == []


def test_descriptions_name_the_final_path_of_rsync_temporaries(mount, tmp_path):
    source = tmp_path / "src"
    (source / "a b").mkdir(parents=True)
    (source / "a b" / "Ünïcode.txt").write_bytes(os.urandom(MiB + 10))  # multipart
    (source / "small.txt").write_bytes(b"small")
    m = mount()
    rsync(source, m.path)
    paths = sorted(json.loads(a["ArchiveDescription"])["path"]
                   for a in inventory(m.glacier, m.vault))
    assert paths == ["a b/Ünïcode.txt", "small.txt"]


def test_long_path_description_is_marked_truncated(mount):
    m = mount()
    deep = m.path
    for _ in range(6):
        deep = deep / ("d" * 200)
        deep.mkdir()
    (deep / "f").write_bytes(b"deep")
    [archive] = inventory(m.glacier, m.vault)
    description = json.loads(archive["ArchiveDescription"])
    assert len(archive["ArchiveDescription"]) <= 1024
    assert description["truncated"] is True
    assert ("d" * 200 + "/").startswith(description["path"][:201])
    assert (deep / "f").read_bytes() == b"deep"  # the catalog stays the truth


def test_names_and_hard_links(mount):
    m = mount()
    with pytest.raises(OSError) as excinfo:
        (m.path / ("x" * 256)).write_bytes(b"too long")
    assert excinfo.value.errno == errno.ENAMETOOLONG
    (m.path / "target").write_bytes(b"t")
    with pytest.raises(OSError) as excinfo:
        os.link(m.path / "target", m.path / "hard")
    assert excinfo.value.errno == errno.EPERM
    # Special files are not kept either, with the same errno (ENOSYS would read as a bug).
    with pytest.raises(OSError) as excinfo:
        os.mkfifo(m.path / "fifo")
    assert excinfo.value.errno == errno.EPERM
    os.mknod(m.path / "plain", 0o640 | stat.S_IFREG)  # a regular file: an empty one
    assert (os.stat(m.path / "plain").st_size, sorted(os.listdir(m.path))) == (
        0, ["plain", "target"])


def test_tar_x_restores_file_and_directory_mtimes(mount, tmp_path):
    m = mount()
    source = make_tree(tmp_path / "tree")
    archive = tmp_path / "tree.tar"
    # The POSIX format keeps nanoseconds; GNU tar sets each time with atime UTIME_OMIT, and a
    # directory's only after everything inside it is extracted.
    subprocess.run(["tar", "--format=posix", "-cf", str(archive), "-C", str(tmp_path), "tree"],
                   check=True)
    subprocess.run(["tar", "-xf", str(archive), "-C", str(m.path)], check=True)
    expected = lstat_view(source)
    assert lstat_view(m.path / "tree") == expected
    for rel, entry in expected.items():
        if "size" in entry:
            assert (m.path / "tree" / rel).read_bytes() == (source / rel).read_bytes()


def test_cp_a_preserves_directory_mtimes(mount, tmp_path):
    m = mount()
    source = make_tree(tmp_path / "tree")
    subprocess.run(["cp", "-a", str(source), str(m.path / "copy")], check=True)
    expected = lstat_view(source)
    assert lstat_view(m.path / "copy") == expected
    assert m.umount().returncode == 0  # and the catalog kept them
    again = mount(vault=m.vault, cache_dir=m.cache_dir)
    assert lstat_view(again.path / "copy") == expected


def renameat2(old, new, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    if libc.renameat2(at_fdcwd, os.fsencode(old), at_fdcwd, os.fsencode(new), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def test_renameat2_noreplace_works_and_exchange_is_refused(mount):
    m = mount()
    (m.path / "a").write_bytes(b"content a")
    (m.path / "b").write_bytes(b"content b")
    with pytest.raises(OSError) as excinfo:
        renameat2(m.path / "a", m.path / "b", RENAME_NOREPLACE)
    assert excinfo.value.errno == errno.EEXIST
    # Swapping two names is not supported: it must fail, not replace (and delete) b.
    with pytest.raises(OSError) as excinfo:
        renameat2(m.path / "a", m.path / "b", RENAME_EXCHANGE)
    assert excinfo.value.errno == errno.EINVAL
    assert (m.path / "a").read_bytes() == b"content a"
    assert (m.path / "b").read_bytes() == b"content b"
    assert sorted(archives_by_path(m.glacier, m.vault)) == ["a", "b"]
    renameat2(m.path / "a", m.path / "c", RENAME_NOREPLACE)  # mv's first try
    assert sorted(os.listdir(m.path)) == ["b", "c"]
    assert (m.path / "c").read_bytes() == b"content a"
