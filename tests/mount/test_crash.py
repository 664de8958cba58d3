"""kill -9 of the mount daemon at each point of the crash table (docs/design.md), then a
remount: closed files intact, interrupted files finished from the cache, no orphan upload, no
duplicate archive, and an empty journal afterwards.

The server's `hang` fault holds one request unhandled (and `hang-after` holds its reply after
doing it), so the daemon is killed at an exact point; the journal, read straight from the
catalog database, says the daemon got there.
"""

from __future__ import annotations

import os
import subprocess
import sys

import diskcache
import pytest

from glacierfs.mount import is_mounted, pid_file
from tests.mount.conftest import GLACIERFS, force_unmount, run_glacierfs
from tests.mount.crash_helpers import (
    archive_counts,
    background,
    cached_part_files,
    journal,
    kill9,
    wait_for,
)
from tests.mount.mount_helpers import PART, assert_archive, open_uploads, pattern


def delta(m, before: dict, op: str) -> int:
    return m.stats().get(op, 0) - before.get(op, 0)


# point -> (fault spec, what must be true when the daemon dies)
KILL_POINTS = {
    "after-initiate": (
        "UploadMultipartPart:hang:#1+",
        lambda m, before, j: delta(m, before, "UploadMultipartPart") >= 1
        and j.states() == ["closing"] and j.uploaded_parts() == 0),
    "between-parts": (
        "UploadMultipartPart:hang:#3+",
        lambda m, before, j: delta(m, before, "UploadMultipartPart") >= 3
        and j.states() == ["closing"] and j.uploaded_parts() == 2),
    "after-the-last-part": (
        "CompleteMultipartUpload:hang:#1",
        lambda m, before, j: delta(m, before, "CompleteMultipartUpload") == 1
        and j.states() == ["closing"] and j.uploaded_parts() == 6),
    "during-complete": (  # the vault completed the archive; the daemon never heard
        "CompleteMultipartUpload:hang-after:#1",
        lambda m, before, j: delta(m, before, "CompleteMultipartUpload") == 1
        and j.states() == ["closing"]),
}


def crash_while(m, spec: str, ready, *command) -> subprocess.Popen:
    """Run `command` with the fault `spec` set, kill -9 the daemon once `ready`, clear it."""
    before = m.stats()
    m.set_faults(spec)
    try:
        proc = background(*command)
        wait_for(lambda: ready(m, before, journal(m.cache_dir)), f"the kill point ({spec})")
        kill9(m)
        proc.communicate(timeout=60)
    finally:
        m.set_faults("")  # held requests go (to a dead client)
    return proc


@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill9_during_a_multi_file_copy(mount, tmp_path, point):
    spec, ready = KILL_POINTS[point]
    m = mount()
    source = tmp_path / "src"
    source.mkdir()
    files = {"first.bin": pattern(3 * PART + 5, 1), "second.bin": pattern(5 * PART + 77, 2),
             "third.bin": pattern(2 * PART, 3)}
    for name, data in files.items():
        (source / name).write_bytes(data)
    subprocess.run(["cp", source / "first.bin", m.path], check=True, timeout=60)

    cp = crash_while(m, spec, ready, "cp", source / "second.bin", source / "third.bin", m.path)
    assert cp.returncode != 0  # second.bin's close never returned: nothing was promised
    crashed = journal(m.cache_dir)
    assert [u["size"] for u in crashed.uploads] == [len(files["second.bin"])]

    again = mount(cache_dir=m.cache_dir)
    assert sorted(p.name for p in again.path.iterdir()) == ["first.bin", "second.bin"]
    assert (again.path / "second.bin").stat().st_size == len(files["second.bin"])
    assert (again.path / "second.bin").read_bytes() == files["second.bin"]  # from the cache
    assert f"recovered /second.bin: {len(files['second.bin'])} bytes" in again.log()
    assert again.umount().returncode == 0

    assert archive_counts(m.glacier, m.vault) == {"first.bin": 1, "second.bin": 1}
    for name in ("first.bin", "second.bin"):
        assert_archive(m.glacier, m.vault, name, files[name])
    assert open_uploads(m.glacier, m.vault) == []
    settled = journal(m.cache_dir)
    assert settled.uploads == [] and settled.parts == [] and settled.doomed == []


WRITER = """
import os, sys
data = open(sys.argv[2], "rb").read()
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, data)
os.ftruncate(fd, int(sys.argv[3]))  # grow: the end is a hole of zeros
os.fsync(fd)
print("synced", flush=True)
sys.stdin.read()  # keep the file open until killed
"""


def test_kill9_while_a_file_is_open_recovers_what_was_written(mount, tmp_path):
    m = mount()
    data = pattern(2 * PART + PART // 2, 4)
    source = tmp_path / "data"
    source.write_bytes(data)
    size = 4 * PART + 10
    writer = subprocess.Popen([sys.executable, "-c", WRITER, m.path / "open.bin", source,
                               str(size)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout.readline().strip() == "synced"
        assert journal(m.cache_dir).uploads[0]["size"] == size  # fsync recorded the size
        kill9(m)
    finally:
        writer.kill()
        writer.wait(timeout=30)

    again = mount(cache_dir=m.cache_dir)
    expected = data + bytes(size - len(data))
    assert (again.path / "open.bin").read_bytes() == expected
    assert f"recovered /open.bin: {size} bytes" in again.log()
    assert again.umount().returncode == 0
    assert_archive(m.glacier, m.vault, "open.bin", expected)
    assert open_uploads(m.glacier, m.vault) == []
    assert journal(m.cache_dir).uploads == []


CUTTER = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, open(sys.argv[2], "rb").read())
os.fsync(fd)
os.ftruncate(fd, int(sys.argv[3]))  # shorter than what fsync recorded
print("cut", flush=True)
sys.stdin.read()  # keep the file open until killed
"""


def test_kill9_after_a_file_was_cut_below_its_fsynced_size(mount, tmp_path):
    # Recovery takes the size fsync journaled unless the file is longer: a truncate after the
    # fsync must lower it, or the file comes back at the old size, its end turned to zeros.
    m = mount()
    data = pattern(PART + PART // 2, 13)
    (tmp_path / "data").write_bytes(data)
    cut = PART + PART // 4  # inside the last part, still being written
    writer = subprocess.Popen([sys.executable, "-c", CUTTER, m.path / "cut.bin",
                               tmp_path / "data", str(cut)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "cut"
        kill9(m)
    finally:
        writer.kill()
        writer.wait(timeout=30)

    again = mount(cache_dir=m.cache_dir)
    assert (again.path / "cut.bin").read_bytes() == data[:cut]
    assert again.umount().returncode == 0
    assert_archive(m.glacier, m.vault, "cut.bin", data[:cut])


@pytest.mark.parametrize("kind", ["hang", "hang-after"])
def test_kill9_while_deleting_the_replaced_archive(mount, tmp_path, kind):
    m = mount()
    old, new = pattern(2 * PART + 1, 5), pattern(3 * PART + 2, 6)
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(new)
    subprocess.run(["cp", tmp_path / "old", m.path / "a.bin"], check=True, timeout=60)

    crash_while(m, f"DeleteArchive:{kind}:#1",
                lambda m, before, j: delta(m, before, "DeleteArchive") == 1
                and j.uploads == [] and len(j.doomed) == 1,
                "cp", tmp_path / "new", m.path / "a.bin")

    again = mount(cache_dir=m.cache_dir)
    assert (again.path / "a.bin").read_bytes() == new
    assert again.umount().returncode == 0
    assert archive_counts(m.glacier, m.vault) == {"a.bin": 1}
    assert_archive(m.glacier, m.vault, "a.bin", new)
    assert journal(m.cache_dir).doomed == []


def test_kill9_during_a_small_file_upload(mount, tmp_path):
    m = mount()
    data = pattern(PART // 3, 7)
    (tmp_path / "small").write_bytes(data)
    crash_while(m, "UploadArchive:hang:#1",
                lambda m, before, j: delta(m, before, "UploadArchive") == 1
                and j.states() == ["closing"],
                "cp", tmp_path / "small", m.path / "small.bin")
    again = mount(cache_dir=m.cache_dir)
    # The held request never reached the vault, so no second archive; in general one can
    # have, and the next mount cannot tell: it warns.
    assert "/small.bin: it may have been sent as one archive by an earlier try" in again.log()
    assert again.umount().returncode == 0
    assert archive_counts(m.glacier, m.vault) == {"small.bin": 1}
    assert_archive(m.glacier, m.vault, "small.bin", data)


def test_a_file_removed_while_it_was_written_is_dropped(mount, tmp_path):
    m = mount()
    data = pattern(3 * PART, 8)
    (tmp_path / "data").write_bytes(data)
    script = ("import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644); "
              "os.write(fd, open(sys.argv[2], 'rb').read()); os.unlink(sys.argv[1]); "
              "print('unlinked', flush=True); sys.stdin.read()")
    writer = subprocess.Popen([sys.executable, "-c", script, m.path / "gone.bin",
                               tmp_path / "data"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "unlinked"
        wait_for(lambda: journal(m.cache_dir).uploads[0]["upload_id"], "the upload to start")
        kill9(m)
    finally:
        writer.kill()
        writer.wait(timeout=30)
    again = mount(cache_dir=m.cache_dir)
    assert list(again.path.iterdir()) == []
    assert again.umount().returncode == 0
    assert open_uploads(m.glacier, m.vault) == []
    assert archive_counts(m.glacier, m.vault) == {}
    assert cached_part_files(m.cache_dir, "staging") == []
    assert cached_part_files(m.cache_dir, "pending") == []


def test_files_named_like_libfuse_s_hidden_ones_are_kept(mount, tmp_path):
    # sshfs, ntfs-3g and others leave .fuse_hidden + 16 hex digits names behind, so they turn
    # up in backed-up trees. Only a file libfuse hid while it was open (above) is a leftover:
    # these stayed removed (a directory so named even stopped every later mount).
    m = mount()
    name = ".fuse_hidden0000002a00000001"
    (tmp_path / name).write_bytes(b"precious")
    subprocess.run(["cp", tmp_path / name, m.path / name], check=True)
    (m.path / "sub" / ".fuse_hidden00000001000000aa").mkdir(parents=True)
    with open(m.path / "held.bin", "wb") as held:  # open while renamed to a hidden-like name
        held.write(b"held")
        os.rename(m.path / "held.bin", m.path / "sub" / ".fuse_hidden00000003000000bb")
    assert m.umount().returncode == 0
    again = mount(cache_dir=m.cache_dir)
    assert (again.path / name).read_bytes() == b"precious"
    assert (again.path / "sub" / ".fuse_hidden00000001000000aa").is_dir()
    assert (again.path / "sub" / ".fuse_hidden00000003000000bb").read_bytes() == b"held"
    assert archive_counts(m.glacier, m.vault)[name] == 1


def _crash_between_parts(m, tmp_path, name: str, data: bytes) -> None:
    (tmp_path / name).write_bytes(data)
    spec, ready = KILL_POINTS["between-parts"]
    crash_while(m, spec, ready, "cp", tmp_path / name, m.path / name)


def test_an_upload_the_vault_forgot_is_started_again_from_the_cache(mount, tmp_path):
    m = mount()
    data = pattern(5 * PART + 3, 9)
    _crash_between_parts(m, tmp_path, "big.bin", data)
    [upload] = open_uploads(m.glacier, m.vault)
    m.glacier.abort_multipart_upload(vaultName=m.vault, uploadId=upload["MultipartUploadId"])

    again = mount(cache_dir=m.cache_dir)
    assert "no longer has upload" in again.log()
    assert again.umount().returncode == 0
    assert archive_counts(m.glacier, m.vault) == {"big.bin": 1}
    assert_archive(m.glacier, m.vault, "big.bin", data)
    assert open_uploads(m.glacier, m.vault) == []


def test_parts_gone_from_cache_and_vault_fail_the_file_loudly(mount, tmp_path):
    m = mount()
    _crash_between_parts(m, tmp_path, "big.bin", pattern(5 * PART + 3, 10))
    [upload] = open_uploads(m.glacier, m.vault)
    m.glacier.abort_multipart_upload(vaultName=m.vault, uploadId=upload["MultipartUploadId"])
    with diskcache.Cache(str(m.cache_dir / "uploaded")) as uploaded:
        assert len(uploaded) == 2  # the two parts the vault had confirmed
        uploaded.clear()

    again = mount(cache_dir=m.cache_dir)
    errors = [line for line in again.log().splitlines() if " ERROR " in line]
    assert any("/big.bin: cannot be recovered" in line and "does not have it" in line
               for line in errors), errors
    assert list(again.path.iterdir()) == []
    assert again.umount().returncode == 0
    assert archive_counts(m.glacier, m.vault) == {}
    assert open_uploads(m.glacier, m.vault) == []
    assert journal(m.cache_dir).uploads == []


def test_a_corrupted_cached_part_is_never_completed(mount, tmp_path):
    m = mount()
    _crash_between_parts(m, tmp_path, "big.bin", pattern(5 * PART + 3, 11))
    pending = cached_part_files(m.cache_dir, "pending")
    assert len(pending) == 4  # sealed, not confirmed by the vault
    full_part = next(p for p in pending if p.stat().st_size == PART)  # not the 3-byte tail
    with open(full_part, "r+b") as part:
        part.seek(12345)
        byte = part.read(1)
        part.seek(12345)
        part.write(bytes([byte[0] ^ 0x01]))

    again = mount(cache_dir=m.cache_dir)
    errors = [line for line in again.log().splitlines() if " ERROR " in line]
    assert any("/big.bin: cannot be recovered" in line and "corrupt" in line
               for line in errors), errors
    assert again.umount().returncode == 0
    assert archive_counts(m.glacier, m.vault) == {}
    assert open_uploads(m.glacier, m.vault) == []


def test_a_bit_flip_before_upload_fails_the_file(mount, tmp_path):
    """Live, no crash: a part corrupted on the cache disk while it waits to be sent."""
    m = mount()
    data = pattern(3 * PART + 1, 12)
    (tmp_path / "data").write_bytes(data)
    m.set_faults("UploadMultipartPart:hang:#1+")
    try:
        cp = background("cp", tmp_path / "data", m.path / "flip.bin")
        wait_for(lambda: journal(m.cache_dir).states() == ["closing"], "close to begin")
        pending = cached_part_files(m.cache_dir, "pending")
        with open(pending[0], "r+b") as part:
            byte = part.read(1)
            part.seek(0)
            part.write(bytes([byte[0] ^ 0x80]))
    finally:
        m.set_faults("")  # the held requests answer 503; botocore resends the corrupt part
    _, err = cp.communicate(timeout=120)
    assert cp.returncode != 0
    assert "flip.bin" in err
    assert not (m.path / "flip.bin").exists()
    assert open_uploads(m.glacier, m.vault) == []
    assert archive_counts(m.glacier, m.vault) == {}


def test_orphan_uploads_are_reported_and_aborted_on_request(mount, tmp_path):
    m = mount()
    glacier = m.glacier
    reply = glacier.initiate_multipart_upload(
        vaultName=m.vault, partSize=str(PART), archiveDescription='{"path": "elsewhere.bin"}')
    orphan = reply["uploadId"]
    assert m.umount().returncode == 0

    again = mount(cache_dir=m.cache_dir)
    warnings = [line for line in again.log().splitlines() if "orphan upload" in line]
    assert any("elsewhere.bin" in line for line in warnings), warnings
    assert [u["MultipartUploadId"] for u in open_uploads(glacier, m.vault)] == [orphan]
    assert again.umount().returncode == 0

    third = mount("--abort-orphans", cache_dir=m.cache_dir)
    assert open_uploads(glacier, m.vault) == []
    assert "aborted orphan upload" in third.log()


def test_kill9_after_an_async_close_returned_keeps_the_files(mount, tmp_path):
    # --async-close: cp succeeds once the content is safe in the cache. The vault holds
    # every upload back, the daemon dies, and the next mount uploads both files.
    m = mount("--async-close")
    small, big = pattern(PART // 3, 9), pattern(3 * PART + 11, 10)
    (tmp_path / "small").write_bytes(small)
    (tmp_path / "big").write_bytes(big)
    before = m.stats()
    m.set_faults("UploadArchive:hang:#1+,CompleteMultipartUpload:hang:#1+")
    try:
        for name in ("small", "big"):
            done = subprocess.run(["cp", tmp_path / name, m.path / f"{name}.bin"],
                                  capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr
        assert (m.path / "small.bin").read_bytes() == small  # from the cache meanwhile
        wait_for(lambda: delta(m, before, "UploadArchive") == 1
                 and delta(m, before, "CompleteMultipartUpload") == 1, "both uploads held")
        assert journal(m.cache_dir).states() == ["closing", "closing"]
        kill9(m)
    finally:
        m.set_faults("")
    again = mount(cache_dir=m.cache_dir)
    assert again.umount().returncode == 0
    assert journal(m.cache_dir).states() == []
    assert archive_counts(m.glacier, m.vault) == {"small.bin": 1, "big.bin": 1}
    assert_archive(m.glacier, m.vault, "small.bin", small)
    assert_archive(m.glacier, m.vault, "big.bin", big)
    assert open_uploads(m.glacier, m.vault) == []


def test_a_file_removed_once_its_upload_completed_does_not_stop_the_next_mount(mount, tmp_path):
    # --async-close lets rm run while the upload is pending. The vault completes the archive
    # and the daemon dies before it hears. Glacier refuses to abort a completed upload, so the
    # next mount repeats Complete to learn the archive, then deletes it: nothing names it.
    m = mount("--async-close")
    data = pattern(PART + PART // 2, 11)
    (tmp_path / "gone").write_bytes(data)
    before = m.stats()
    m.set_faults("CompleteMultipartUpload:hang-after:#1")
    try:
        done = subprocess.run(["cp", tmp_path / "gone", m.path / "gone.bin"],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: delta(m, before, "CompleteMultipartUpload") == 1, "the Complete held")
        (m.path / "gone.bin").unlink()
        assert journal(m.cache_dir).states() == ["closing"]
        kill9(m)
    finally:
        m.set_faults("")
    again = mount(cache_dir=m.cache_dir)
    assert "removed after its upload completed; deleting the archive" in again.log()
    assert again.umount().returncode == 0
    left = journal(m.cache_dir)
    assert left.states() == [] and left.doomed == []
    assert archive_counts(m.glacier, m.vault) == {}
    assert open_uploads(m.glacier, m.vault) == []
    for where in ("staging", "pending", "uploaded"):
        assert cached_part_files(m.cache_dir, where) == [], where


@pytest.mark.parametrize("trouble", ["503", "a second crash"])
def test_an_async_closed_file_completed_before_the_crash_survives_a_troubled_recovery(
        mount, tmp_path, trouble):
    # --async-close and a small cache: the file's first parts leave the cache once sent. The
    # vault carries out Complete, and the daemon dies before the reply. Then recovery is
    # troubled: the repeated Complete answers 503 (beyond botocore's retries), or a second
    # kill -9 hits recovery itself. Either way only a repeated Complete can learn the archive
    # (the vault no longer lists the upload's parts, and the cache lost some): the file must
    # not be given up. It used to be removed, its complete archive left nameless.
    data = pattern(5 * PART + PART // 2, 21)
    (tmp_path / "x").write_bytes(data)
    options = ("--async-close",)
    m = mount(*options, cache_size="3M")
    before = m.stats()
    held = "hang-after" if trouble == "503" else "hang"
    m.set_faults(f"CompleteMultipartUpload:{held}:#1")
    try:
        done = subprocess.run(["cp", tmp_path / "x", m.path / "x"], capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: delta(m, before, "CompleteMultipartUpload") == 1, "Complete held")
        kill9(m)
    finally:
        m.set_faults("")
    (tmp_path / "refused").mkdir()
    (tmp_path / "cut").mkdir()
    if trouble == "503":
        m.set_faults("CompleteMultipartUpload:503:#1+")
        try:
            refused = run_glacierfs("mount", m.vault, str(tmp_path / "refused"),
                                    "--endpoint-url", m.serve.endpoint_url, "--cache-dir",
                                    str(m.cache_dir), "--part-size", "1M", "--cache-size",
                                    "3M", *options, env=m.env, timeout=300)
        finally:
            m.set_faults("")
            if is_mounted(tmp_path / "refused"):  # (what the old code did: take it away)
                force_unmount(tmp_path / "refused",
                              int(pid_file(tmp_path / "refused").read_text()))
        assert refused.returncode != 0 and "nothing was lost" in refused.stderr, refused
    else:  # the recovery's own Complete is carried out, and the daemon dies again
        m.set_faults("CompleteMultipartUpload:hang-after:#1")
        try:
            cut = subprocess.Popen([*GLACIERFS, "mount", m.vault, str(tmp_path / "cut"),
                                    "--endpoint-url", m.serve.endpoint_url, "--cache-dir",
                                    str(m.cache_dir), "--part-size", "1M", "--cache-size",
                                    "3M", "--foreground", *options], env=m.env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for(lambda: delta(m, before, "CompleteMultipartUpload") == 2,
                         "recovery's Complete held")
            finally:
                cut.kill()
                cut.wait(timeout=30)
        finally:
            m.set_faults("")
    again = mount(*options, cache_size="3M", cache_dir=m.cache_dir)
    assert (again.path / "x").stat().st_size == len(data)
    assert again.umount().returncode == 0
    assert archive_counts(m.glacier, m.vault) == {"x": 1}
    assert_archive(m.glacier, m.vault, "x", data)
    assert open_uploads(m.glacier, m.vault) == []
