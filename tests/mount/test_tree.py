"""`cp -r` of a directory tree; the vault, `ls -lR`, os.walk, stat and df all see it."""

from __future__ import annotations

import json
import os
import subprocess
import time

from tests.mount.mount_helpers import PART, assert_archive, cost, open_uploads, pattern
from tests.vault_helpers import archives_by_path

# relative path -> size; None is a directory
TREE = {
    "top.txt": 1234,
    "empty": 0,
    "a": None,
    "a/one-part.bin": PART,
    "a/empty-dir": None,
    "a/b": None,
    "a/b/multi.bin": 2 * PART + PART // 2 + 7,
    "a/b/c": None,
    "a/b/c/tiny": 1,
    "a/b/c/nested-empty": 0,
    "a/b/c/small.bin": 70_001,
}


def make_tree(root):
    contents = {}
    root.mkdir()
    for index, (rel, size) in enumerate(TREE.items()):
        path = root / rel
        if size is None:
            path.mkdir()
        else:
            contents[rel] = pattern(size, index)
            path.write_bytes(contents[rel])
    return contents


def walk(root) -> dict:
    """relative path -> size (None for directories), as os.walk and stat see it."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames:
            seen[os.path.normpath(os.path.join(rel_dir, name))] = None
        for name in filenames:
            path = os.path.join(dirpath, name)
            seen[os.path.normpath(os.path.join(rel_dir, name))] = os.stat(path).st_size
    return seen


def parse_ls_lR(text: str) -> dict:
    """`ls -lRn --time-style=+%s` output -> relative path -> (type char, size)."""
    entries = {}
    directory = None
    for line in text.splitlines():
        if line.endswith(":") and not line.startswith(("-", "d", "l")):
            directory = line[:-1]
            continue
        fields = line.split(None, 6)
        if len(fields) == 7 and line[0] in "-d":
            mode, _links, _uid, _gid, size, _mtime, name = fields
            entries[os.path.normpath(os.path.join(directory, name))] = (mode[0], int(size))
    return entries


def test_cp_r_tree_becomes_archives_and_listing(mount, tmp_path):
    m = mount()
    source = tmp_path / "src"
    contents = make_tree(source)
    started = time.time()
    before = m.stats()
    result = subprocess.run(["cp", "-r", str(source), str(m.path / "tree")],
                            capture_output=True, text=True)
    after = m.stats()
    finished = time.time()
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""

    # One archive per non-empty file, described by its path under the mount.
    archives = archives_by_path(m.glacier, m.vault)
    non_empty = {rel: data for rel, data in contents.items() if data}
    assert sorted(archives) == sorted(f"tree/{rel}" for rel in non_empty)
    for rel, data in non_empty.items():
        archive = assert_archive(m.glacier, m.vault, f"tree/{rel}", data, archives)
        description = json.loads(archive["ArchiveDescription"])
        assert set(description) == {"path", "mtime"}
        assert description["mtime"].startswith(time.strftime("%Y-", time.gmtime(started)))
    assert open_uploads(m.glacier, m.vault) == []

    # Requests: an UploadArchive per file under a part, parts + 2 per larger file.
    multipart = [d for d in non_empty.values() if len(d) >= PART]
    assert cost(before, after) == {
        "UploadArchive": len(non_empty) - len(multipart),
        "InitiateMultipartUpload": len(multipart),
        "UploadMultipartPart": sum(-(-len(d) // PART) for d in multipart),
        "CompleteMultipartUpload": len(multipart),
    }

    # The mount shows the same tree with the same sizes.
    expected = {rel: (None if size is None else size) for rel, size in TREE.items()}
    assert walk(m.path / "tree") == expected
    assert walk(m.path / "tree") == walk(source)

    listing = subprocess.run(["ls", "-lRn", "--time-style=+%s", "."], cwd=m.path / "tree",
                             capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    ls_entries = parse_ls_lR(listing.stdout)
    assert {rel: (kind, size if kind == "-" else None)
            for rel, (kind, size) in ls_entries.items()} == {
        rel: ("d" if size is None else "-", size) for rel, size in TREE.items()}

    for rel, size in TREE.items():
        st = os.stat(m.path / "tree" / rel)
        if size is None:
            assert st.st_mode & 0o170000 == 0o040000
            continue
        assert st.st_mode & 0o170000 == 0o100000
        assert st.st_size == size
        assert st.st_blocks == -(-size // 512), rel
        assert st.st_blocks * 512 >= st.st_size
        # A plausible modification time: around when cp ran, certainly not 1970.
        assert started - 60 <= st.st_mtime <= finished + 60, (rel, st.st_mtime)
    top = os.stat(m.path / "tree")
    assert started - 60 <= top.st_mtime <= finished + 60


def test_statfs_and_df(mount, tmp_path):
    m = mount()
    (m.path / "d").mkdir()
    (m.path / "d" / "f").write_bytes(b"x" * 5000)
    df = subprocess.run(["df", str(m.path)], capture_output=True, text=True)
    assert df.returncode == 0, df.stderr
    assert str(m.path) in df.stdout
    vfs = os.statvfs(m.path)
    assert vfs.f_namemax == 255
    assert vfs.f_bsize > 0 and vfs.f_blocks > 0
    assert 0 < vfs.f_bavail <= vfs.f_blocks
    # what the catalog holds is subtracted from the (constant) size
    assert vfs.f_blocks - vfs.f_bfree >= -(-5000 // vfs.f_frsize)
    assert vfs.f_files > vfs.f_ffree
