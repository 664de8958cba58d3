"""Transient trouble that must be invisible to cp: the server killed and restarted mid-part,
10% of requests failing in each way, an upload expiring while the mount is down. And a full
cache disk: ENOSPC for the file being written, files already closed untouched.
"""

from __future__ import annotations

import socket
import subprocess
import time
from urllib.parse import urlparse

import pytest

from glacierfs.server import remote_stats

from tests.mount.crash_helpers import (
    archive_counts, background, journal, kill9, wait_for)
from tests.mount.mount_helpers import PART, assert_archive, open_uploads, pattern

UPLOAD_OPS = ("InitiateMultipartUpload", "UploadMultipartPart", "CompleteMultipartUpload",
              "UploadArchive")


def restart_on_same_port(serve_process, serve) -> None:
    """Start the server again on its port and data. The killed server's sockets can hold the
    port for a moment (FIN-WAIT while the client has not yet noticed): retry until it is free."""
    port = str(urlparse(serve.endpoint_url).port)
    deadline = time.monotonic() + 60
    while True:
        try:
            serve_process("--port", port, data_dir=serve.data_dir)
            return
        except RuntimeError as error:
            if "Address already in use" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class TestServerKilledAndRestarted:
    @pytest.fixture
    def serve(self, serve_process):
        with socket.socket() as probe:  # a fixed port, so the restart can take it again
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        return serve_process("--port", str(port))

    def test_during_a_part_upload(self, mount, serve, serve_process, tmp_path):
        server_killed_during_a_part_upload(mount, serve, serve_process, tmp_path)

    def test_down_for_longer_than_botocore_retries(self, mount, serve, serve_process,
                                                   tmp_path):
        # Nothing listens on the port until after botocore gave up (the daemon says it is
        # waiting): the uploads wait for the endpoint, and cp succeeds once it is back.
        m = mount()
        data = pattern(2 * PART + 5, 21)
        (tmp_path / "data").write_bytes(data)
        serve.kill9()
        cp = background("cp", tmp_path / "data", m.path / "late.bin")
        wait_for(lambda: "cannot connect to the vault's endpoint" in m.log(),
                 "the daemon to wait for the endpoint", timeout=120)
        assert cp.poll() is None
        restart_on_same_port(serve_process, serve)
        _, err = cp.communicate(timeout=300)
        assert cp.returncode == 0, err
        assert "the vault's endpoint answers again; uploads go on" in m.log()
        assert_archive(m.glacier, m.vault, "late.bin", data)
        assert open_uploads(m.glacier, m.vault) == []


def server_killed_during_a_part_upload(mount, serve, serve_process, tmp_path):
    m = mount()
    data = pattern(6 * PART + 11, 20)
    (tmp_path / "data").write_bytes(data)
    m.set_faults("UploadMultipartPart:hang:#2")
    before = m.stats().get("UploadMultipartPart", 0)
    cp = background("cp", tmp_path / "data", m.path / "big.bin")
    wait_for(lambda: m.stats().get("UploadMultipartPart", 0) - before >= 2, "part 2 to arrive")
    serve.kill9()  # mid-part: the held request dies with the server
    restart_on_same_port(serve_process, serve)
    _, err = cp.communicate(timeout=300)
    assert cp.returncode == 0, err  # botocore retried across the restart
    assert_archive(m.glacier, m.vault, "big.bin", data)
    assert open_uploads(m.glacier, m.vault) == []


@pytest.mark.parametrize("kind", ["500", "503", "408", "throttle", "drop"])
def test_ten_percent_of_requests_failing_is_invisible(mount, tmp_path, kind):
    m = mount()
    source = tmp_path / "tree"
    source.mkdir()
    files = {f"f{i}.bin": pattern(size, 30 + i) for i, size in
             enumerate([4 * PART + 7, 3 * PART, 5 * PART + 1, PART // 2, 2 * PART + 99])}
    for name, data in files.items():
        (source / name).write_bytes(data)
    # 10% of every upload request, and surely one part (the random ones may all miss).
    m.set_faults(",".join([f"UploadMultipartPart:{kind}:#2",
                           *(f"{op}:{kind}:0.1" for op in UPLOAD_OPS)]))
    try:
        result = subprocess.run(["cp", "-r", source, m.path / "tree"], capture_output=True,
                                text=True, timeout=600)
        injected = sum(remote_stats(m.serve.endpoint_url)["faults"].values())
    finally:
        m.set_faults("")
    assert result.returncode == 0, result.stderr
    assert injected > 0  # the faults really fired
    counts = archive_counts(m.glacier, m.vault)
    assert counts == {f"tree/{name}": 1 for name in files}
    for name, data in files.items():
        assert_archive(m.glacier, m.vault, f"tree/{name}", data)
    assert open_uploads(m.glacier, m.vault) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs for the cache: it fills long before the cache size says so."""
    path = tmp_path / "small-disk"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", path], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)


def test_full_cache_disk_gives_enospc_and_keeps_closed_files(small_disk, mount, tmp_path):
    # small_disk first: it must outlive the mount
    log = tmp_path / "mount.log"  # not on the disk that fills up
    m = mount("--log-file", str(log), cache_dir=small_disk / "cache", cache_size="64M")
    kept = pattern(PART + 5, 40)
    (tmp_path / "kept").write_bytes(kept)
    subprocess.run(["cp", tmp_path / "kept", m.path / "kept.bin"], check=True, timeout=60)
    big = pattern(24 * PART, 41)
    (tmp_path / "big").write_bytes(big)
    m.set_faults("UploadMultipartPart:hang:#1+")  # nothing leaves the cache: it fills up
    try:
        cp = background("cp", tmp_path / "big", m.path / "big.bin")
        wait_for(lambda: "No space left on device" in log.read_text(), "the cache disk to fill")
    finally:
        m.set_faults("")
    _, err = cp.communicate(timeout=300)
    assert cp.returncode != 0
    assert "No space left on device" in err
    assert not (m.path / "big.bin").exists()
    assert (m.path / "kept.bin").stat().st_size == len(kept)  # closed before: untouched
    # the failed file's parts were given back: the mount works again
    small = pattern(PART * 2 + 1, 42)
    (tmp_path / "small").write_bytes(small)
    subprocess.run(["cp", tmp_path / "small", m.path / "small.bin"], check=True, timeout=60)
    assert m.umount().returncode == 0
    assert archive_counts(m.glacier, m.vault) == {"kept.bin": 1, "small.bin": 1}
    assert_archive(m.glacier, m.vault, "kept.bin", kept)
    assert_archive(m.glacier, m.vault, "small.bin", small)
    assert open_uploads(m.glacier, m.vault) == []


class TestUploadExpiredWhileTheMountWasDown:
    @pytest.fixture
    def serve(self, serve_process):
        return serve_process("--upload-expiry", "2")

    def test_it_is_uploaded_again_from_the_cache(self, mount, tmp_path):
        m = mount()
        data = pattern(5 * PART + 3, 50)
        (tmp_path / "data").write_bytes(data)
        before = m.stats().get("UploadMultipartPart", 0)
        m.set_faults("UploadMultipartPart:hang:#3+")
        try:
            cp = background("cp", tmp_path / "data", m.path / "big.bin")
            wait_for(lambda: m.stats().get("UploadMultipartPart", 0) - before >= 3
                     and journal(m.cache_dir).uploaded_parts() == 2
                     and journal(m.cache_dir).states() == ["closing"], "two parts uploaded")
            kill9(m)
            cp.communicate(timeout=60)
        finally:
            m.set_faults("")
        wait_for(lambda: open_uploads(m.glacier, m.vault) == [], "the upload to expire",
                 timeout=30)
        again = mount(cache_dir=m.cache_dir)
        assert "no longer has upload" in again.log()
        assert again.umount().returncode == 0
        assert archive_counts(m.glacier, m.vault) == {"big.bin": 1}
        assert_archive(m.glacier, m.vault, "big.bin", data)
