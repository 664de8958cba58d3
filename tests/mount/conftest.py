"""Real FUSE mounts of `glacierfs mount` against a real `glacierfs serve` process.

The `mount` factory always unmounts and kills what it started, even when a test fails:
first `glacierfs umount`, then a lazy unmount and SIGKILL of the daemon if that did not work.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glacierfs.mount import force_unmount, is_mounted, pid_file
from glacierfs.server import remote_set_faults, remote_stats

GLACIERFS = [sys.executable, "-m", "glacierfs"]


class Mount:
    def __init__(self, vault: str, mountpoint: Path, cache_dir: Path, serve, env: dict) -> None:
        self.vault = vault
        self.path = mountpoint
        self.cache_dir = cache_dir
        self.serve = serve
        self.env = env
        self.glacier = serve.client()

    def stats(self) -> dict:
        return remote_stats(self.serve.endpoint_url)["requests"]

    def set_faults(self, spec: str) -> None:
        remote_set_faults(self.serve.endpoint_url, spec)

    def log(self) -> str:
        log = self.cache_dir / "glacierfs.log"
        return log.read_text() if log.exists() else ""

    def daemon_pid(self) -> int | None:
        path = pid_file(self.path)
        return int(path.read_text()) if path.exists() else None

    def umount(self) -> subprocess.CompletedProcess:
        return run_glacierfs("umount", str(self.path), env=self.env, timeout=120)


def run_glacierfs(*args: str, env: dict | None = None, timeout: float = 120,
                  check: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run([*GLACIERFS, *args], capture_output=True, text=True, env=env,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"glacierfs {' '.join(args)} failed: {result.stderr}")
    return result


def aws_env(data_dir: Path) -> dict:
    """Environment that points the AWS credential chain at a `glacierfs serve` data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(data_dir / "credentials"),
               AWS_CONFIG_FILE=str(data_dir / "config"), AWS_EC2_METADATA_DISABLED="true")
    return env


@pytest.fixture
def serve(serve_process):
    """A `glacierfs serve` process for the mounts of one test."""
    return serve_process()


@pytest.fixture
def mount(tmp_path: Path, serve):
    """Factory: mount(*extra, vault='photos', part_size='1M', cache_size='16M',
    cache_dir=None, name=None) -> Mount. Pass an earlier mount's cache_dir to mount its
    catalog again; `name` names the mount point (default mntN)."""
    mounts: list[Mount] = []

    def start(*extra: str, vault: str = "photos", part_size: str = "1M",
              cache_size: str = "16M", create: bool = True, threads: int = 4,
              cache_dir: Path | None = None, name: str | None = None) -> Mount:
        index = len(mounts)
        mountpoint = tmp_path / (name or f"mnt{index}")
        mountpoint.mkdir()
        cache_dir = cache_dir or tmp_path / f"cache{index}"
        env = aws_env(serve.data_dir)
        args = ["mount", vault, str(mountpoint), "--endpoint-url", serve.endpoint_url,
                "--cache-dir", str(cache_dir), "--part-size", part_size,
                "--cache-size", cache_size, "--upload-threads", str(threads),
                "--log-level", "debug", *extra]
        if create:
            args.append("--create-vault")
        handle = Mount(vault, mountpoint, cache_dir, serve, env)
        mounts.append(handle)
        run_glacierfs(*args, env=env, check=True)
        assert is_mounted(mountpoint)
        return handle

    yield start
    for handle in mounts:
        pid = handle.daemon_pid()
        try:
            if is_mounted(handle.path):
                handle.umount()
        finally:
            force_unmount(handle.path, pid)
            deadline = time.monotonic() + 10
            while pid is not None and time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
