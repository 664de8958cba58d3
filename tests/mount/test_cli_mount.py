"""`glacierfs mount` / `umount` from the command line: every refusal is one line and a non-zero
exit with nothing mounted; --local mounts keep their catalog across mounts."""

from __future__ import annotations

import configparser
import ctypes.util
import os
import signal
import socket
import subprocess
import time

import pytest

from glacierfs.mount import is_mounted, pid_file
from tests.mount.conftest import GLACIERFS, aws_env, force_unmount, run_glacierfs
from tests.mount.mount_helpers import PART, fuse_mounts, mount_count, pattern


def mounts_under(directory) -> list[str]:
    top = os.path.realpath(directory) + "/"
    return [point for point in fuse_mounts() if point.startswith(top)]


def assert_refused(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("glacierfs:"), lines[0]
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    return lines[0]


@pytest.fixture
def attempt(tmp_path, serve):
    """attempt(*args, vault=..., mountpoint=..., env=...) runs `glacierfs mount` expecting a
    refusal; whatever it mounts by mistake is unmounted (and its daemon killed) afterwards."""
    tried = []

    def run(*extra: str, vault: str = "photos", mountpoint=None, env=None,
            endpoint: str | None = None):
        if mountpoint is None:
            mountpoint = tmp_path / "mnt"
            mountpoint.mkdir(exist_ok=True)
        tried.append(mountpoint)
        # --local brings its own service: no endpoint then
        where = [] if "--local" in extra else ["--endpoint-url", endpoint or serve.endpoint_url]
        result = run_glacierfs(
            "mount", vault, str(mountpoint), *where, "--cache-dir", str(tmp_path / "cache"),
            *extra, env=env or aws_env(serve.data_dir), timeout=120)
        assert mounts_under(tmp_path) == []  # nothing mounted (other tests may mount elsewhere)
        return result

    yield run
    for mountpoint in tried:
        if is_mounted(mountpoint):  # no stat(): a broken mount would hang it
            pid_path = pid_file(mountpoint)
            pid = int(pid_path.read_text()) if pid_path.exists() else None
            force_unmount(mountpoint, pid)


def test_missing_vault_without_create(attempt, tmp_path):
    assert_refused(attempt(vault="nosuch"), "nosuch", "--create-vault")
    assert not (tmp_path / "cache").exists()  # the failed start took back the dir it made


def test_a_refused_mount_keeps_a_cache_dir_that_has_a_catalog(attempt, mount, tmp_path):
    m = mount()
    (m.path / "kept.txt").write_bytes(b"kept")
    assert m.umount().returncode == 0
    # the same catalog, aimed at a vault that is not there
    assert_refused(attempt("--cache-dir", str(m.cache_dir), vault="nosuch"), "nosuch")
    assert (m.cache_dir / "catalog.sqlite3").exists()
    assert (m.cache_dir / "glacierfs.log").exists()


def test_unreachable_endpoint(attempt):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    line = assert_refused(attempt("--create-vault", endpoint=f"http://127.0.0.1:{port}"))
    assert f"127.0.0.1:{port}" in line


def test_refused_credentials(attempt, serve, tmp_path):
    creds = configparser.ConfigParser()
    creds.read(serve.data_dir / "credentials")
    creds["default"]["aws_secret_access_key"] = "wrong" + creds["default"][
        "aws_secret_access_key"][5:]
    path = tmp_path / "wrong-credentials"
    with open(path, "w") as out:
        creds.write(out)
    env = aws_env(serve.data_dir)
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(path)
    assert_refused(attempt("--create-vault", env=env), "photos")


def test_mountpoint_missing(attempt, tmp_path):
    missing = tmp_path / "does-not-exist"
    assert_refused(attempt("--create-vault", mountpoint=missing), "does not exist")
    assert not missing.exists()


def test_mountpoint_is_a_file(attempt, tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a directory")
    assert_refused(attempt("--create-vault", mountpoint=path), "not a directory")
    assert path.read_text() == "not a directory"


def test_libfuse_3_missing(attempt, serve, tmp_path):
    env = aws_env(serve.data_dir)
    env["FUSE_LIBRARY_PATH"] = str(tmp_path / "libfuse3.so.3")  # mfusepy loads this one
    assert_refused(attempt("--create-vault", env=env), "libfuse 3", "apt-get install fuse3")


@pytest.mark.skipif(ctypes.util.find_library("fuse") is None, reason="libfuse 2 not installed")
def test_libfuse_2_is_refused(attempt, serve):
    env = aws_env(serve.data_dir)
    env["FUSE_LIBRARY_PATH"] = ctypes.util.find_library("fuse")
    assert_refused(attempt("--create-vault", env=env), "libfuse 3 is needed", "found libfuse 2")


def test_failure_inside_init_unmounts_and_is_reported(attempt, tmp_path):
    # Only init(), after libfuse has mounted, opens the catalog: a broken one fails there.
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "catalog.sqlite3").write_bytes(b"not sqlite " * 500)
    assert_refused(attempt("--create-vault"), "not a database")


def test_a_non_empty_mount_point_needs_allow_non_empty(attempt, serve, tmp_path):
    # Its entries would be hidden while mounted, and look lost (rclone refuses too).
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    (mountpoint / "mine.txt").write_text("still here")
    assert_refused(attempt("--create-vault", mountpoint=mountpoint), "not empty",
                   "--allow-non-empty")
    result = run_glacierfs("mount", "photos", str(mountpoint), "--endpoint-url",
                           serve.endpoint_url, "--cache-dir", str(tmp_path / "cache"),
                           "--create-vault", "--allow-non-empty", env=aws_env(serve.data_dir))
    try:
        assert result.returncode == 0, result.stderr
        assert os.listdir(mountpoint) == []  # the vault's view, hiding mine.txt
        assert run_glacierfs("umount", str(mountpoint)).returncode == 0
    finally:
        if is_mounted(mountpoint):
            pid_path = pid_file(mountpoint)
            force_unmount(mountpoint, int(pid_path.read_text()) if pid_path.exists() else None)
    assert (mountpoint / "mine.txt").read_text() == "still here"


def test_a_cache_or_local_dir_inside_the_mount_point_is_refused(attempt, tmp_path):
    # The daemon would open its own files through its own mount and wait on itself forever.
    inside = tmp_path / "mnt" / "cache"
    assert_refused(attempt("--create-vault", "--cache-dir", str(inside)),
                   "cache dir", "inside the mount point")
    assert_refused(attempt("--local", str(tmp_path / "mnt")), "--local dir",
                   "inside the mount point")
    assert list((tmp_path / "mnt").iterdir()) == []  # no log file made in there first


@pytest.mark.parametrize("argv, words", [
    (["mount", "photos", ""], ["MOUNTPOINT", "an empty path"]),
    (["serve", "--data-dir", ""], ["--data-dir", "an empty path"]),
    (["stauts", "/mnt/x"], ["no such command 'stauts'", "did you mean 'status'"]),
    (["photos", "/mnt/x", "--local", "/tmp/x"], ["no such command 'photos'", "--local"]),
    (["inventory", "v", "--poll-interval", "nan"], ["--poll-interval", "not a number"]),
    (["recover", "v", "--poll-interval", "inf"], ["--poll-interval", "range"]),
    (["mount", "v", "/mnt/x", "--snapshot-interval", "1e300"], ["--snapshot-interval"]),
    (["mount", "v", "/mnt/x", "--restore-poll", "-1"], ["--restore-poll"]),
    (["mount", "v", ".", "--cache-size", "9" * 30 + "G"], ["--cache-size", "too large"]),
    (["mount", "v", ".", "--profile", "nosuch", "--cache-dir", "{tmp}/cache"],
     ["profile (nosuch) could not be found"]),
    (["mount", "v", ".", "--region", "../x", "--cache-dir", "{tmp}/cache"],
     ["region_name '../x'"]),
    (["mount", "v", "{tmp}", "--local", "{tmp}/l", "--endpoint-url", "http://127.0.0.1:1"],
     ["--local", "--endpoint-url"]),
    (["uploads", "v", "--local", "{tmp}/l", "--endpoint-url", "http://127.0.0.1:1"],
     ["--local", "--endpoint-url"]),
])
def test_mistakes_in_the_command_line_are_refused_before_anything_runs(argv, words, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = subprocess.run([*GLACIERFS, *(a.format(tmp=tmp_path) for a in argv)],
                            capture_output=True, text=True, timeout=60, cwd=cwd,
                            check=False)
    assert_refused(result, *words)
    assert list(cwd.iterdir()) == []  # an empty path is not the current directory


def test_a_path_that_cannot_be_written_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run_glacierfs("serve", "--data-dir", str(blocker / "data"))
    assert_refused(result, str(blocker))
    assert blocker.read_text() == "x"


def test_an_option_libfuse_refuses_is_named_as_such(attempt):
    assert_refused(attempt("--create-vault", "-o", "bogus"), "cannot mount", "check the -o list")


def test_mountpoint_already_mounted(mount, serve, tmp_path):
    m = mount()
    (m.path / "kept").write_bytes(b"still here")
    before = mounts_under(tmp_path)
    result = run_glacierfs("mount", "photos", str(m.path), "--endpoint-url",
                           serve.endpoint_url, "--cache-dir", str(tmp_path / "other-cache"),
                           "--create-vault", env=aws_env(serve.data_dir))
    assert_refused(result, "already")
    assert mounts_under(tmp_path) == before == [os.path.realpath(m.path)]
    assert mount_count(m.path) == 1
    assert (m.path / "kept").read_bytes() == b"still here"  # the first mount still serves


@pytest.mark.parametrize("args, words", [
    (("--part-size", "3M"), ["--part-size"]),
    (("--part-size", "1M", "--cache-size", "1M"), ["--cache-size", "two parts"]),
    (("--cache-size", "abc"), ["--cache-size", "abc"]),
    (("--cache-size", "3M", "--part-size", "2M"), ["--cache-size"]),
])
def test_bad_sizes(attempt, args, words):
    assert_refused(attempt("--create-vault", *args), *words)


def test_umount_of_a_path_not_mounted(tmp_path, serve):
    path = tmp_path / "plain-dir"
    path.mkdir()
    result = run_glacierfs("umount", str(path), env=aws_env(serve.data_dir))
    assert_refused(result, "not mounted")


def test_umount_leaves_other_file_systems_alone(tmp_path, serve):
    path = tmp_path / "other"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "none", str(path)], check=True)
    try:
        (path / "kept").write_text("mine")
        result = run_glacierfs("umount", str(path), env=aws_env(serve.data_dir))
        assert_refused(result, "is not a glacierfs mount (it is a tmpfs mount)")
        assert (path / "kept").read_text() == "mine"
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_local_mount_keeps_its_catalog(tmp_path):
    local = tmp_path / "local-data"
    cache = tmp_path / "local-cache"
    mountpoint = tmp_path / "local-mnt"
    mountpoint.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    data = pattern(PART + 4321, 77)
    small = b"small file\n"
    source = tmp_path / "source"
    source.write_bytes(data)
    args = ["mount", "localvault", str(mountpoint), "--local", str(local), "--cache-dir",
            str(cache), "--part-size", "1M", "--cache-size", "16M"]

    def mounted_session(body):
        pid = None
        try:
            run_glacierfs(*args, env=env, check=True)
            assert is_mounted(mountpoint)
            pid_path = pid_file(mountpoint)
            pid = int(pid_path.read_text()) if pid_path.exists() else None
            body()
            result = run_glacierfs("umount", str(mountpoint), env=env)
            assert result.returncode == 0, result.stderr
            assert not is_mounted(mountpoint)
        finally:
            force_unmount(mountpoint, pid)

    def first():
        subprocess.run(["cp", str(source), str(mountpoint / "big.bin")], check=True)
        (mountpoint / "dir").mkdir()
        (mountpoint / "dir" / "small.txt").write_bytes(small)
        assert (mountpoint / "big.bin").read_bytes() == data

    def second():
        assert sorted(os.listdir(mountpoint)) == ["big.bin", "dir"]
        assert (mountpoint / "big.bin").stat().st_size == len(data)
        assert (mountpoint / "dir" / "small.txt").stat().st_size == len(small)
        assert (mountpoint / "big.bin").read_bytes() == data  # still in the cache

    def another_local_mount_of_the_same_dir_is_refused():
        # two services on one data dir would sweep each other's blobs
        other = tmp_path / "mnt-2"
        other.mkdir()
        try:
            result = run_glacierfs("mount", "other", str(other), "--local", str(local),
                                   env=env)
            assert_refused(result, "served by another glacierfs process")
            assert mounts_under(tmp_path) == [str(mountpoint)]
        finally:
            if is_mounted(other):  # mounted by mistake: taken away all the same
                pid_path = pid_file(other)
                force_unmount(other, int(pid_path.read_text()) if pid_path.exists() else None)
        first()

    mounted_session(another_local_mount_of_the_same_dir_is_refused)
    assert local.is_dir() and any(local.iterdir())
    assert (cache / "catalog.sqlite3").exists()
    mounted_session(second)
    assert not is_mounted(mountpoint)


def test_ctrl_c_while_the_mount_starts_leaves_nothing_mounted(tmp_path, serve_process):
    # The daemon runs in its own session, so Ctrl-C reaches only the command waiting for it:
    # that one must stop it, or the mount would go live after "aborted".
    slow = serve_process("--latency", "1500")  # startup takes several requests: seconds
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    command = subprocess.Popen(
        [*GLACIERFS, "mount", "slow", str(mountpoint), "--endpoint-url", slow.endpoint_url,
         "--create-vault", "--cache-dir", str(tmp_path / "cache")],
        env=aws_env(slow.data_dir), stderr=subprocess.PIPE, text=True)
    children = f"/proc/{command.pid}/task/{command.pid}/children"
    daemon = None
    try:
        deadline = time.monotonic() + 60
        while not daemon and time.monotonic() < deadline:
            with open(children) as listed:
                forked = listed.read().split()
            daemon = int(forked[0]) if forked else None
            time.sleep(0.05)
        assert daemon, "the daemon was never forked"
        command.send_signal(signal.SIGINT)
        _, stderr = command.communicate(timeout=60)
        assert command.returncode == 130 and stderr.strip() == "glacierfs: aborted", stderr
        assert not os.path.exists(f"/proc/{daemon}")  # stopped (and reaped) before exiting
        assert not is_mounted(mountpoint)
    finally:
        command.kill()
        force_unmount(mountpoint, daemon)


def test_a_mount_point_named_in_utf8_with_a_space(mount):
    # libfuse gets the name's own bytes, and /proc/self/mounts is read back as bytes: status
    # and umount find the mount (é came back as "Ã©", and the mount was refused at first)
    m = mount(name="photos é 2026")
    (m.path / "a.txt").write_bytes(b"a")
    assert is_mounted(m.path)
    status = run_glacierfs("status", str(m.path), env=m.env)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"glacierfs on {m.path} (vault photos, pid ")
    result = m.umount()
    assert result.returncode == 0, result.stderr
    assert not is_mounted(m.path)
