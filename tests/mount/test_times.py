"""touch on a real mount: mtime-only (-m), atime-only (-a) and both (-d), on a stored file and
on a directory. The kernel sends -m as a setattr with atime UTIME_OMIT, and -a with mtime
UTIME_OMIT; only mtime is kept (atime reads as mtime). Times are metadata: no upload."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.mount.mount_helpers import cost

UPLOADS = {"UploadArchive", "InitiateMultipartUpload", "UploadMultipartPart",
           "CompleteMultipartUpload"}


def touch(path, *args: str) -> None:
    result = subprocess.run(["touch", *args, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def times(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_atime_ns


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_touch_m_a_d(mount, kind):
    m = mount()
    path = m.path / kind
    if kind == "dir":
        path.mkdir()
        (path / "inside").write_bytes(b"inside")
    else:
        path.write_bytes(b"an archive already")
    before = m.stats()

    touch(path, "-m", "-d", "@1000000000.123456789")
    assert times(path) == (1_000_000_000_123_456_789,) * 2
    touch(path, "-a", "-d", "@1200000000")  # atime only: nothing that we keep changes
    assert times(path) == (1_000_000_000_123_456_789,) * 2
    touch(path, "-a")
    assert times(path) == (1_000_000_000_123_456_789,) * 2
    touch(path, "-d", "2001-09-09 01:46:40.5 UTC")  # both times
    assert times(path) == (1_000_000_000_500_000_000,) * 2

    start = time.time_ns()
    touch(path, "-m")  # mtime now
    mtime, _ = times(path)
    assert start <= mtime <= time.time_ns()

    touch(path, "-m", "-d", "@1100000000.000000007")
    assert not UPLOADS & set(cost(before, m.stats()))
    # The catalog has it, not only the kernel's attribute cache.
    assert m.umount().returncode == 0
    again = mount(vault=m.vault, cache_dir=m.cache_dir)
    assert times(again.path / kind) == (1_100_000_000_000_000_007,) * 2


def test_a_write_moves_ctime_with_mtime(mount):
    # ctime is the last change of anything, so it is never before mtime: while the file is
    # written, and once its archive is recorded.
    m = mount()
    path = m.path / "slow"
    with open(path, "wb") as f:
        f.write(b"a")
        f.flush()
        time.sleep(0.05)
        f.write(b"b")
        f.flush()
        during = os.stat(path)
        assert during.st_ctime_ns >= during.st_mtime_ns
    after = os.stat(path)
    assert after.st_ctime_ns >= after.st_mtime_ns
    assert m.umount().returncode == 0
    again = os.stat(mount(vault=m.vault, cache_dir=m.cache_dir).path / "slow")
    assert again.st_ctime_ns >= again.st_mtime_ns == after.st_mtime_ns


def test_a_time_beyond_2262_is_clamped_not_refused(mount, tmp_path):
    # The catalog keeps times as signed 64-bit nanoseconds (1677 to 2262). A later time is
    # clamped, as Linux filesystems clamp what they cannot store; it used to fail cp -a's
    # futimens and its close with EIO, leave the file "uploading", and let the next mount
    # replay that content over a later, successful write.
    source = tmp_path / "from-the-future"
    source.write_bytes(b"old")
    os.utime(source, ns=(0, 10_413_792_000 * 10**9))  # 2300-01-01
    m = mount()
    subprocess.run(["cp", "-a", str(source), str(m.path / "f")], check=True)
    latest = 2**63 - 1  # 2262-04-11T23:47:16.854775807Z
    assert times(m.path / "f") == (latest, latest)
    assert os.getxattr(m.path / "f", "user.glacier.state") == b"cached"
    touch(m.path, "-d", "2300-01-01")  # a directory, the same way
    assert times(m.path)[0] == latest
    (m.path / "f").write_bytes(b"newer")
    assert m.umount().returncode == 0
    again = mount(vault=m.vault, cache_dir=m.cache_dir)
    assert (again.path / "f").read_bytes() == b"newer"
    assert times(again.path)[0] == latest
