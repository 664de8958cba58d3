"""The rows of docs/SEMANTICS.md, on a real mount: close policy (dup, fork, shell redirection),
empty files, immutability, names, EFBIG."""

from __future__ import annotations

import errno
import json
import mmap
import os
import subprocess
import time

import pytest

from glacierfs.treehash import tree_hash
from tests.mount.mount_helpers import PART, assert_archive, cost, open_uploads, pattern
from tests.vault_helpers import archives_by_path, inventory, retrieve

WRITE_NEW = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def test_shell_redirection(mount):
    m = mount()
    result = subprocess.run(["bash", "-c", 'echo hi > "$1"', "bash", str(m.path / "f")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (m.path / "f").stat().st_size == 3
    assert_archive(m.glacier, m.vault, "f", b"hi\n")
    # appending to a stored file is a write without O_TRUNC: refused (archives are immutable)
    result = subprocess.run(["bash", "-c", 'echo more >> "$1"', "bash", str(m.path / "f")],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "Operation not permitted" in result.stderr


def test_close_completes_the_archive_and_a_dup_may_write_on(mount):
    m = mount()
    data = pattern(5000, 9)
    fd = os.open(m.path / "dup.bin", WRITE_NEW, 0o644)
    fd2 = os.dup(fd)
    try:
        assert os.write(fd, data) == len(data)
        os.close(fd)
        # close(2) returned after the upload: the archive is there already
        archives = archives_by_path(m.glacier, m.vault)
        assert sorted(archives) == ["dup.bin"]
        assert archives["dup.bin"]["SHA256TreeHash"] == tree_hash(data)
        first = archives["dup.bin"]["ArchiveId"]
        assert os.write(fd2, b"x") == 1  # a new content, from the archived one
    finally:
        os.close(fd2)  # completes it, and the first archive goes
    assert (m.path / "dup.bin").read_bytes() == data + b"x"
    assert_archive(m.glacier, m.vault, "dup.bin", data + b"x")
    assert first not in [a["ArchiveId"] for a in inventory(m.glacier, m.vault)]


def test_stores_into_a_mapping_after_close_are_kept(mount):
    # mmap, close(fd), store into the mapping: the pages are written back through the same
    # open file after its archive was completed. They make a new content, completed when
    # the mapping goes (release), instead of failing (msync: EBADF; munmap: silently lost).
    m = mount()
    path = m.path / "mapped.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, bytes(4096))
    mapping = mmap.mmap(fd, 4096)
    os.close(fd)
    first = archives_by_path(m.glacier, m.vault)["mapped.bin"]["ArchiveId"]
    mapping[0:5] = b"AFTER"
    mapping.flush()  # msync: written back now
    mapping.close()  # munmap: the last reference, so the kernel releases the file
    expected = b"AFTER" + bytes(4091)
    deadline = time.monotonic() + 60
    while archives_by_path(m.glacier, m.vault)["mapped.bin"]["ArchiveId"] == first:
        assert time.monotonic() < deadline, "the new content was never archived"
        time.sleep(0.1)
    assert path.read_bytes() == expected
    assert_archive(m.glacier, m.vault, "mapped.bin", expected)
    assert first not in [a["ArchiveId"] for a in inventory(m.glacier, m.vault)]


def test_forked_child_closing_does_not_cut_the_parent_short(mount):
    m = mount()
    first = pattern(PART + 500, 1)
    second = pattern(300_000, 2)
    fd = os.open(m.path / "forked.bin", WRITE_NEW, 0o644)
    try:
        assert os.write(fd, first) == len(first)
        pid = os.fork()
        if pid == 0:  # the child: close its copy and leave
            code = 0
            try:
                os.close(fd)
            except BaseException:
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert archives_by_path(m.glacier, m.vault) == {}  # the child's close did nothing
        assert os.write(fd, second) == len(second)
    finally:
        os.close(fd)
    assert (m.path / "forked.bin").stat().st_size == len(first) + len(second)
    assert_archive(m.glacier, m.vault, "forked.bin", first + second)


def test_touch_and_empty_files_live_in_the_catalog_only(mount):
    m = mount()
    before = m.stats()
    result = subprocess.run(["touch", str(m.path / "touched")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    os.close(os.open(m.path / "opened", WRITE_NEW, 0o644))
    with open(m.path / "written-nothing", "wb") as f:
        f.write(b"")
    after = m.stats()
    for name in ("touched", "opened", "written-nothing"):
        st = os.stat(m.path / name)
        assert st.st_size == 0 and st.st_blocks == 0
        assert (m.path / name).read_bytes() == b""
    assert sorted(os.listdir(m.path)) == ["opened", "touched", "written-nothing"]
    spent = cost(before, after)
    assert not {"UploadArchive", "InitiateMultipartUpload"} & set(spent), spent
    assert inventory(m.glacier, m.vault) == []


def test_a_file_created_empty_can_be_written_at_once(mount):
    # touch, mktemp or `: >` and then a write: the kernel releases the first open only after
    # close(2) has returned, so the second open may come while the first writer is still
    # there. It waits for that release instead of failing with EBUSY.
    m = mount()
    script = 'for i in $(seq 10); do echo a > "$1$i"; : > "$1$i"; echo b > "$1$i"; done'
    result = subprocess.run(["bash", "-c", script, "bash", str(m.path / "f")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    for i in range(1, 11):
        assert (m.path / f"f{i}").read_bytes() == b"b\n"
    made = subprocess.run(["bash", "-c", 't=$(mktemp -p "$1") && echo data > "$t" && cat "$t"',
                           "bash", str(m.path)], capture_output=True, text=True, check=False)
    assert (made.returncode, made.stdout) == (0, "data\n"), made.stderr
    assert sorted(archives_by_path(m.glacier, m.vault)) == sorted(
        [f"f{i}" for i in range(1, 11)] + [p.name for p in m.path.glob("tmp.*")])


def test_stored_file_is_immutable_unless_truncated(mount, tmp_path):
    m = mount()
    old = pattern(40_000, 1)
    new = pattern(PART + 20_000, 2)
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(new)
    subprocess.run(["cp", str(tmp_path / "old"), str(m.path / "f.bin")], check=True)
    assert_archive(m.glacier, m.vault, "f.bin", old)

    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND):
        with pytest.raises(OSError) as excinfo:
            os.open(m.path / "f.bin", flags)
        assert excinfo.value.errno == errno.EPERM, flags
    fd = os.open(m.path / "f.bin", os.O_RDONLY)  # reading is fine
    os.close(fd)

    result = subprocess.run(["cp", str(tmp_path / "new"), str(m.path / "f.bin")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (m.path / "f.bin").stat().st_size == len(new)
    assert (m.path / "f.bin").read_bytes() == new
    present = [a for a in inventory(m.glacier, m.vault)
               if json.loads(a["ArchiveDescription"])["path"] == "f.bin"]
    newest = [a for a in present if a["SHA256TreeHash"] == tree_hash(new)]
    assert len(newest) == 1, present
    body, _ = retrieve(m.glacier, m.vault, newest[0]["ArchiveId"])
    assert body == new
    assert open_uploads(m.glacier, m.vault) == []


def test_mkdir_existing_and_long_names(mount):
    m = mount()
    (m.path / "d").mkdir()
    with pytest.raises(OSError) as excinfo:
        os.mkdir(m.path / "d")
    assert excinfo.value.errno == errno.EEXIST
    (m.path / "f").write_bytes(b"x")
    with pytest.raises(OSError) as excinfo:
        os.mkdir(m.path / "f")
    assert excinfo.value.errno == errno.EEXIST

    long_name = "n" * 256
    with pytest.raises(OSError) as excinfo:
        os.open(m.path / long_name, WRITE_NEW, 0o644)
    assert excinfo.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as excinfo:
        os.mkdir(m.path / "d" / long_name)
    assert excinfo.value.errno == errno.ENAMETOOLONG

    longest = "m" * 255
    (m.path / "d" / longest).write_bytes(b"ok")
    assert os.listdir(m.path / "d") == [longest]
    assert_archive(m.glacier, m.vault, f"d/{longest}", b"ok")
    assert sorted(os.listdir(m.path)) == ["d", "f"]


def test_write_past_10000_parts_is_efbig(mount):
    m = mount()
    before = m.stats()
    result = subprocess.run(["dd", "if=/dev/zero", f"of={m.path / 'big'}", "bs=1M",
                             "seek=10000", "count=1", "status=none"],
                            capture_output=True, text=True, timeout=120)
    after = m.stats()
    assert result.returncode != 0
    assert "File too large" in result.stderr
    spent = cost(before, after)
    assert not {"UploadArchive", "InitiateMultipartUpload", "UploadMultipartPart",
                "CompleteMultipartUpload"} & set(spent), spent
    assert open_uploads(m.glacier, m.vault) == []
    assert inventory(m.glacier, m.vault) == []
    assert "big" not in os.listdir(m.path)
    lines = [line for line in m.log().splitlines() if "/big" in line and "--part-size" in line]
    assert lines, m.log()[-3000:]
    assert " ERROR " in lines[0]


def test_a_setgid_directory_hands_down_its_group(mount):
    m = mount()
    shared = m.path / "shared"
    shared.mkdir()
    os.chown(shared, -1, 100)
    os.chmod(shared, 0o2775)
    (shared / "file").write_bytes(b"x")  # we are root: group 0 elsewhere
    (shared / "sub").mkdir()
    os.symlink("file", shared / "link")
    for name in ("file", "sub", "link"):
        assert os.lstat(shared / name).st_gid == 100, name
    assert os.stat(shared / "sub").st_mode & 0o2000  # and a directory keeps the bit going
    assert not os.stat(shared / "file").st_mode & 0o2000
    (m.path / "plain").write_bytes(b"y")
    assert os.stat(m.path / "plain").st_gid == os.getgid()
