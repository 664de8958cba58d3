"""Directories, names and errors of the namespace; statfs."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from glacierfs.catalog import MAX_JOINED_NAMES
from glacierfs.errors import FsError

from .conftest import OPENER


def errno_of(call, *args, **kwargs) -> int:
    with pytest.raises(FsError) as refused:
        call(*args, **kwargs)
    return refused.value.errno


def test_mkdir_and_readdir(rig):
    fs = rig.fs
    assert fs.readdir(b"/") == [b".", b".."]
    assert fs.getattr(b"/")["st_nlink"] == 2
    fs.mkdir(b"/d", 0o750, 12, 34)
    fs.mkdir(b"/d/e", 0o755, 0, 0)
    fs.release(fs.create(b"/d/f", 0o644, 0, 0, pid=OPENER))
    assert fs.readdir(b"/") == [b".", b"..", b"d"]
    assert fs.readdir(b"/d") == [b".", b"..", b"e", b"f"]
    assert fs.readdir(b"/d/e") == [b".", b"..",]
    st = fs.getattr(b"/d")
    assert stat.S_ISDIR(st["st_mode"]) and stat.S_IMODE(st["st_mode"]) == 0o750
    assert (st["st_uid"], st["st_gid"]) == (12, 34)
    assert st["st_nlink"] == 3  # ., .. of e
    assert fs.getattr(b"/")["st_nlink"] == 3
    assert stat.S_ISREG(fs.getattr(b"/d/f")["st_mode"])
    assert fs.getattr(b"/d/f")["st_nlink"] == 1
    assert fs.getattr(b"/d/")["st_ino"] == fs.getattr(b"/d")["st_ino"]


def test_paths_resolve_at_any_depth_and_after_renames(rig):
    # Paths up to MAX_JOINED_NAMES deep are looked up in one query, deeper ones a name at a
    # time: both must agree, for hits and for each kind of miss.
    fs = rig.fs
    path = b""
    for depth in range(1, MAX_JOINED_NAMES + 12):
        path += b"/d%d" % depth
        fs.mkdir(path, 0o755, 0, 0)
    fs.release(fs.create(path + b"/f", 0o644, 0, 0, pid=OPENER))
    shallow = b"".join(b"/d%d" % depth for depth in range(1, MAX_JOINED_NAMES))
    deep = path + b"/f"
    for base in (shallow, path):
        assert stat.S_ISDIR(fs.getattr(base)["st_mode"])
        assert errno_of(fs.getattr, base + b"/missing") == errno.ENOENT
        assert errno_of(fs.getattr, base + b"/missing/x") == errno.ENOENT
        assert errno_of(fs.getattr, base + b"/" + b"n" * 256) == errno.ENAMETOOLONG
    assert stat.S_ISREG(fs.getattr(deep)["st_mode"])
    assert errno_of(fs.getattr, deep + b"/x") == errno.ENOTDIR
    before = fs.getattr(deep)["st_ino"]
    fs.rename(b"/d1", b"/top")
    moved = b"/top" + deep[len(b"/d1"):]
    assert fs.getattr(moved)["st_ino"] == before
    assert stat.S_ISREG(fs.getattr(moved)["st_mode"])
    assert errno_of(fs.getattr, deep) == errno.ENOENT
    assert errno_of(fs.getattr, shallow) == errno.ENOENT


def test_names_are_bytes(rig):
    name = "é 🧊 \n".encode() + b"\xff"
    rig.store(b"/" + name, b"x")
    assert rig.fs.readdir(b"/") == [b".", b"..", name]
    assert rig.fs.getattr(b"/" + name)["st_size"] == 1


def test_namespace_errors(rig):
    fs = rig.fs
    fs.mkdir(b"/d", 0o755, 0, 0)
    fs.release(fs.create(b"/d/f", 0o644, 0, 0, pid=OPENER))

    assert errno_of(fs.mkdir, b"/d", 0o755, 0, 0) == errno.EEXIST
    assert errno_of(fs.mkdir, b"/d/f", 0o755, 0, 0) == errno.EEXIST
    assert errno_of(fs.create, b"/d/f", 0o644, 0, 0, pid=OPENER) == errno.EEXIST
    assert errno_of(fs.create, b"/d", 0o644, 0, 0, pid=OPENER) == errno.EEXIST

    assert errno_of(fs.getattr, b"/nope") == errno.ENOENT
    assert errno_of(fs.readdir, b"/nope") == errno.ENOENT
    assert errno_of(fs.mkdir, b"/nope/x", 0o755, 0, 0) == errno.ENOENT
    assert errno_of(fs.create, b"/nope/x", 0o644, 0, 0, pid=OPENER) == errno.ENOENT
    assert errno_of(fs.open, b"/nope", os.O_RDONLY, pid=OPENER) == errno.ENOENT
    assert errno_of(fs.truncate, b"/nope", 0) == errno.ENOENT

    assert errno_of(fs.getattr, b"/d/f/x") == errno.ENOTDIR
    assert errno_of(fs.readdir, b"/d/f") == errno.ENOTDIR
    assert errno_of(fs.mkdir, b"/d/f/x", 0o755, 0, 0) == errno.ENOTDIR
    assert errno_of(fs.create, b"/d/f/x", 0o644, 0, 0, pid=OPENER) == errno.ENOTDIR

    assert errno_of(fs.open, b"/d", os.O_RDONLY, pid=OPENER) == errno.EISDIR
    assert errno_of(fs.truncate, b"/d", 0) == errno.EISDIR

    long = b"n" * 256
    assert errno_of(fs.mkdir, b"/" + long, 0o755, 0, 0) == errno.ENAMETOOLONG
    assert errno_of(fs.create, b"/d/" + long, 0o644, 0, 0, pid=OPENER) == errno.ENAMETOOLONG
    assert errno_of(fs.getattr, b"/" + long) == errno.ENAMETOOLONG
    fs.mkdir(b"/" + b"n" * 255, 0o755, 0, 0)  # 255 is fine
    assert b"n" * 255 in fs.readdir(b"/")
    assert fs.readdir(b"/d") == [b".", b"..", b"f"]  # nothing half-made by the refusals


def test_statfs(rig):
    st = rig.fs.statfs()
    assert set(st) == {"f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                       "f_ffree", "f_favail", "f_namemax"}
    assert st["f_namemax"] == 255
    assert st["f_bsize"] > 0 and st["f_frsize"] > 0
    assert st["f_bfree"] == st["f_bavail"] == st["f_blocks"]
    assert st["f_files"] - st["f_ffree"] == 1  # the root
    rig.fs.mkdir(b"/d", 0o755, 0, 0)
    rig.store(b"/d/f", b"x" * 10_000)
    after = rig.fs.statfs()
    assert after["f_files"] - after["f_ffree"] == 3
    assert after["f_blocks"] - after["f_bfree"] == -(-10_000 // after["f_frsize"])
    assert after["f_bavail"] == after["f_bfree"]


def test_a_new_file_never_takes_the_number_of_one_still_uploading(rig):
    # /a is the newest inode and is removed while still being written: SQLite would give its
    # number to the next file, and /a's upload, recorded later, would land on that file.
    fh = rig.fs.create(b"/a", 0o644, 0, 0, pid=OPENER)
    rig.fs.write(fh, b"old content", 0)
    rig.fs.unlink(b"/a")
    rig.store(b"/b", b"new content")
    rig.fs.flush(fh, pid=OPENER)
    rig.fs.release(fh)
    assert rig.read_all(b"/b") == b"new content"
    assert rig.fs.getattr(b"/b")["st_size"] == len(b"new content")
    assert sorted(rig.archives()) == ["b"]


def test_directory_link_counts_follow_every_change(rig):
    # A directory's st_nlink is 2 + its subdirectories. The count is kept between lookups,
    # so read it after each kind of change to directories.
    fs = rig.fs

    def links(path: bytes) -> int:
        return fs.getattr(path)["st_nlink"]

    fs.mkdir(b"/a", 0o755, 0, 0)
    fs.mkdir(b"/b", 0o755, 0, 0)
    assert (links(b"/"), links(b"/a"), links(b"/b")) == (4, 2, 2)
    fs.mkdir(b"/a/x", 0o755, 0, 0)
    fs.mkdir(b"/a/y", 0o755, 0, 0)
    fs.release(fs.create(b"/a/f", 0o644, 0, 0, pid=OPENER))
    assert links(b"/a") == 4  # a file is not a subdirectory
    fs.rename(b"/a/x", b"/b/x")  # a directory moves to another parent
    assert (links(b"/a"), links(b"/b")) == (3, 3)
    fs.mkdir(b"/b/z", 0o755, 0, 0)
    fs.rename(b"/b/x", b"/b/z")  # over an empty directory: one fewer
    assert links(b"/b") == 3
    fs.rename(b"/a/f", b"/b/f")  # a file moving changes nothing
    assert (links(b"/a"), links(b"/b")) == (3, 3)
    fs.rmdir(b"/a/y")
    assert links(b"/a") == 2
    fs.rename(b"/a", b"/b/z/a")
    assert (links(b"/"), links(b"/b/z")) == (3, 3)


def test_only_an_empty_directory_can_be_removed_or_replaced(rig):
    fs = rig.fs
    fs.mkdir(b"/full", 0o755, 0, 0)
    fs.release(fs.create(b"/full/f", 0o644, 0, 0, pid=OPENER))
    fs.mkdir(b"/other", 0o755, 0, 0)
    assert errno_of(fs.rmdir, b"/full") == errno.ENOTEMPTY
    assert errno_of(fs.rename, b"/other", b"/full") == errno.ENOTEMPTY
    fs.unlink(b"/full/f")
    fs.rename(b"/other", b"/full")  # empty now: replaced
    assert fs.readdir(b"/") == [b".", b"..", b"full"]
    fs.rmdir(b"/full")
    assert fs.readdir(b"/") == [b".", b".."]
