"""The part cache's on-disk layout: where moved part files land, and the crash sweep over it."""

from __future__ import annotations

import os
from pathlib import Path

from glacierfs.cache import PartCache

MiB = 1 << 20


def staged(cache: PartCache, key: str, data: bytes, reserve: int = MiB) -> None:
    cache.reserve(reserve)
    cache.staging_path(key).write_bytes(data)


def test_moved_parts_share_one_level_of_directories(tmp_path):
    # diskcache's own layout gives nearly every small file a new directory (xx/yy/); ours puts
    # every part file one level down, in at most 256 directories.
    cache = PartCache(tmp_path, 64 * MiB)
    for number in range(600):
        key = f"file{number}.0"
        staged(cache, key, b"%d" % number)
        cache.mark_uploaded(key, MiB)
    root = Path(cache.uploaded.directory)
    files = list(root.rglob("*.val"))
    assert len(files) == 600
    assert {path.parent.parent for path in files} == {root}
    assert len({path.parent for path in files}) <= 256
    assert Path(cache.path("file599.0")).read_bytes() == b"599"
    cache.close()


def test_sweep_removes_unindexed_files_in_either_layout(tmp_path):
    cache = PartCache(tmp_path, 64 * MiB)
    staged(cache, "kept.0", b"kept")
    cache.seal("kept.0")
    staged(cache, "read.0", b"read")
    cache.mark_uploaded("read.0", MiB)
    strays = []
    for store in (cache.pending, cache.uploaded):
        for relative in ("ab/stray.val", "cd/ef/older-layout.val"):  # a crash between link+row
            path = Path(store.directory) / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"orphan")
            strays.append(path)
    assert cache.sweep_unindexed() == 4
    assert not any(path.exists() for path in strays)
    assert Path(cache.path("kept.0")).read_bytes() == b"kept"
    assert Path(cache.path("read.0")).read_bytes() == b"read"
    cache.close()


def test_directories_to_sync_include_every_level(tmp_path):
    cache = PartCache(tmp_path, 64 * MiB)
    staged(cache, "p.0", b"x")
    sealed = Path(cache.seal("p.0"))
    older = Path(cache.pending.directory) / "12" / "34"
    older.mkdir(parents=True)
    synced = set(cache._part_directories())
    assert {sealed.parent, older, older.parent, Path(cache.pending.directory)} <= synced
    assert all(os.path.isdir(path) for path in synced)
    cache.close()


def test_uploaded_parts_are_trimmed_to_what_unsent_parts_leave(tmp_path):
    # Parts kept for reading get the cache size minus the unsent parts. Room is made before a
    # part joins (diskcache culls the least recently used ten at a time), so the part just
    # uploaded is always kept, even when only a few parts fit.
    slack = 16 << 10  # the index may grow by a page or two as the part's row goes in
    for part in (MiB, 64 << 10):  # a handful of parts fit, or many
        cache = PartCache(tmp_path / str(part), 4 * MiB)
        for number in range(100):
            staged(cache, f"p{number}.0", bytes(part), part)
            cache.mark_uploaded(f"p{number}.0", part)
            assert cache.uploaded.volume() <= 4 * MiB + slack
            assert cache.has(f"p{number}.0")
        assert not cache.has("p0.0")
        cache.reserve(2 * MiB)  # a writer's unsent parts now hold 2 MiB of the 4
        staged(cache, "p100.0", bytes(part), part)
        cache.mark_uploaded("p100.0", part)
        assert cache.uploaded.volume() <= 2 * MiB + slack
        assert cache.has("p100.0")
        cache.release(2 * MiB)
        cache.close()
