"""`glacierfs uploads` (list and abort multipart uploads, telling a mount's from orphans) and
`glacierfs status` / `glacierfs umount` progress, against real mounts and a real `glacierfs
serve` process.

A mount's upload is held in progress with the `hang` fault on UploadMultipartPart: the part
requests are held by the server until the fault spec changes, so a `cp` started in the
background stays inside close(2) with its multipart upload open and journaled. Every test
clears the fault in a `finally`, and the copy then finishes (botocore retries the 503 the held
requests get).
"""

from __future__ import annotations

import configparser
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest

from glacierfs.mount import is_mounted, pid_file
from glacierfs.server import remote_stats
from glacierfs.statusfile import status_file
from tests.mount.conftest import GLACIERFS, aws_env, force_unmount, run_glacierfs
from tests.mount.mount_helpers import PART, assert_archive, open_uploads, pattern
from tests.mount.test_cli_mount import assert_refused

SIZE = 3 * PART + PART // 2  # 4 parts: 3 full, a half one sealed at close


def uploads_cmd(m, *args: str) -> subprocess.CompletedProcess:
    return run_glacierfs("uploads", m.vault, "--endpoint-url", m.serve.endpoint_url,
                         "--cache-dir", str(m.cache_dir), *args, env=m.env)


def listed(result: subprocess.CompletedProcess) -> dict[str, list[str]]:
    """`glacierfs uploads` rows by upload id: [journal, created, part size, parts, uploaded,
    upload id, path] (sizes are two words each)."""
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines()[1:]:
        words = line.split()
        if len(words) >= 9:
            row = [words[0], words[1], " ".join(words[2:4]), words[4], " ".join(words[5:7]),
                   words[7], " ".join(words[8:])]
            rows[row[5]] = row
    return rows


def make_orphan(glacier, vault: str, path: str) -> str:
    """A multipart upload made with boto3 (no mount knows it), holding one 1 MiB part."""
    upload_id = glacier.initiate_multipart_upload(
        vaultName=vault, partSize=str(PART),
        archiveDescription=json.dumps({"path": path, "mtime": "2026-01-02T03:04:05Z"}),
    )["uploadId"]
    glacier.upload_multipart_part(vaultName=vault, uploadId=upload_id,
                                  range=f"bytes 0-{PART - 1}/*", body=pattern(PART, 1))
    return upload_id


def wait_for(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def held_copy(m, tmp_path, name: str, fault: str):
    """A `cp` of SIZE bytes into the mount running in the background while `fault` holds part
    uploads; on leaving, the fault is cleared and the copy must have succeeded."""
    data = pattern(SIZE, 7)
    source = tmp_path / f"{name}.src"
    source.write_bytes(data)
    m.set_faults(fault)
    copy = subprocess.Popen(["cp", str(source), str(m.path / name)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield copy
    finally:
        m.set_faults("")
        try:
            _, stderr = copy.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            copy.kill()
            copy.communicate()
            raise
    assert copy.returncode == 0, stderr
    assert_archive(m.glacier, m.vault, name, data)


def mount_upload_id(m, name: str) -> str:
    """The id of the multipart upload the mount opened for `name`, once the vault has it."""
    def find():
        for upload in open_uploads(m.glacier, m.vault):
            if json.loads(upload["ArchiveDescription"]).get("path") == name:
                return upload["MultipartUploadId"]
        return None
    return wait_for(find, f"the mount's upload of {name}")


# ---- glacierfs uploads ----------------------------------------------------------------------

def test_uploads_lists_an_orphan_and_aborts_it(mount):
    m = mount()
    upload_id = make_orphan(m.glacier, m.vault, "2019/holiday photo.jpg")

    result = uploads_cmd(m)
    # the hint points at this very command (its vault and cache options), not a bare one
    assert result.stdout.splitlines()[-1] == (
        "1 upload(s): 0 ours, 1 orphan(s); the same command with --abort-orphans aborts the "
        "orphans")
    row = listed(result)[upload_id]
    assert row[0] == "orphan"
    assert row[2] == "1.0 MiB"  # part size
    assert row[3] == "1"  # parts uploaded (ListParts)
    assert row[4] == "1.0 MiB"
    assert row[6] == "2019/holiday photo.jpg"  # decoded from the JSON description

    result = uploads_cmd(m, "--abort", upload_id)
    assert result.returncode == 0, result.stderr
    assert f"aborted upload {upload_id}" in result.stdout
    assert open_uploads(m.glacier, m.vault) == []
    assert uploads_cmd(m).stdout.strip() == "no multipart uploads in progress in vault photos"


def test_uploads_shows_a_raw_description(mount):
    m = mount()
    upload_id = m.glacier.initiate_multipart_upload(
        vaultName=m.vault, partSize=str(PART), archiveDescription="backup of /etc, by hand",
    )["uploadId"]
    row = listed(uploads_cmd(m))[upload_id]
    assert row[0] == "orphan" and row[3] == "0"
    assert row[6] == "backup of /etc, by hand"


def test_abort_orphans_spares_the_uploads_of_a_mount(mount, tmp_path):
    m = mount()
    orphan = make_orphan(m.glacier, m.vault, "lost/old.iso")
    with held_copy(m, tmp_path, "big.bin", "UploadMultipartPart:hang:#1+"):
        ours = mount_upload_id(m, "big.bin")
        # journaled right after InitiateMultipartUpload: listed as ours from then on
        rows = wait_for(lambda: (r := listed(uploads_cmd(m))).get(ours, [""])[0] == "ours"
                        and r, "the journal to know the mount's upload")
        assert rows[orphan][0] == "orphan"
        assert rows[ours][6] == "big.bin"

        refused = uploads_cmd(m, "--abort", ours)
        assert_refused(refused, ours, "--force")

        result = uploads_cmd(m, "--abort-orphans")
        assert result.returncode == 0, result.stderr
        assert f"aborted upload {orphan} (lost/old.iso" in result.stdout
        assert ours not in result.stdout
        assert [u["MultipartUploadId"] for u in open_uploads(m.glacier, m.vault)] == [ours]
    assert open_uploads(m.glacier, m.vault) == []  # the copy completed its upload


def test_abort_orphans_without_a_catalog_needs_force(serve, tmp_path):
    glacier = serve.client()
    glacier.create_vault(vaultName="photos")
    orphan = make_orphan(glacier, "photos", "a.bin")
    args = ["uploads", "photos", "--endpoint-url", serve.endpoint_url,
            "--cache-dir", str(tmp_path / "no-cache")]
    env = aws_env(serve.data_dir)

    assert_refused(run_glacierfs(*args, "--abort-orphans", env=env), "--force")
    assert len(open_uploads(glacier, "photos")) == 1

    result = run_glacierfs(*args, "--abort-orphans", "--force", env=env)
    assert result.returncode == 0, result.stderr
    assert f"aborted upload {orphan}" in result.stdout
    assert open_uploads(glacier, "photos") == []


@pytest.mark.parametrize("case, words", [
    ("unknown upload", ["no multipart upload", "nosuchupload"]),
    ("unknown vault", ["'nosuch'", "does not exist"]),
    ("unreachable endpoint", ["cannot reach"]),
    ("no credentials", ["credentials"]),
])
def test_uploads_refusals(serve, tmp_path, case, words):
    glacier = serve.client()
    glacier.create_vault(vaultName="photos")
    orphan = make_orphan(glacier, "photos", "kept.bin")
    vault, endpoint, env = "photos", serve.endpoint_url, aws_env(serve.data_dir)
    extra = ["--abort", "nosuchupload", "--abort", orphan]  # refused before aborting any
    if case == "unknown vault":
        vault = "nosuch"
    elif case == "unreachable endpoint":
        endpoint = "http://127.0.0.1:9"  # the discard port: nobody listens
    elif case == "no credentials":
        env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
                   AWS_CONFIG_FILE=str(tmp_path / "none"))
    result = run_glacierfs("uploads", vault, "--endpoint-url", endpoint, "--region",
                           "us-east-1", "--cache-dir", str(tmp_path / "cache"), *extra, env=env)
    assert_refused(result, *words)
    assert [u["MultipartUploadId"] for u in open_uploads(glacier, "photos")] == [orphan]


# ---- glacierfs status -----------------------------------------------------------------------

def test_status_shows_a_held_copy_and_the_cache(mount, tmp_path):
    m = mount()  # 1 MiB parts, 16 MiB cache
    with held_copy(m, tmp_path, "big.bin", "UploadMultipartPart:hang:#2+"):
        # the first part request goes through; the other three are held, cp waits in close
        def settled():
            result = run_glacierfs("status", str(m.path), env=m.env)
            assert result.returncode == 0, result.stderr
            return result if "1/4 parts (3 sending)" in result.stdout else None
        result = wait_for(settled, "status to show 1 of 4 parts uploaded, 3 sending")
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"glacierfs on {m.path} (vault photos, pid "
                                   f"{m.daemon_pid()}): 1 upload(s) pending, ")
        bar = next(line for line in lines if line.startswith("big.bin"))
        assert " 29%|" in bar  # 1 of 3.5 MiB
        assert "1.0 MiB of 3.5 MiB, 1/4 parts (3 sending)" in bar
        assert bar.endswith(", closing")
        cache = lines[-1]
        assert cache.startswith("(cache)")
        assert "3.0 MiB of 16.0 MiB held by unsent parts" in cache  # 3 unsent parts reserved

        # the daemon's status file, as docs/design.md describes it
        status = json.loads(status_file(m.path).read_text())
        assert status["pid"] == m.daemon_pid() and status["vault"] == "photos"
        assert time.time() - status["time"] < 10
        [writer] = status["writers"]
        assert writer["path"] == "/big.bin" and writer["state"] == "closing"
        assert (writer["size"], writer["bytes_uploaded"]) == (SIZE, PART)
        assert (writer["parts"], writer["parts_uploaded"], writer["parts_in_flight"]) == (4, 1, 3)
        assert writer["upload_id"] == mount_upload_id(m, "big.bin")
        assert status["cache"]["reserved"] == 3 * PART
        assert status["cache"]["limit"] == 16 * PART
        assert status["cache"]["uploaded"] >= PART  # the uploaded part, kept for reading

        watch = subprocess.Popen([*GLACIERFS, "status", str(m.path), "--watch"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=m.env)
    # the fault is cleared, the copy finished: --watch ends once nothing is pending
    stdout, stderr = watch.communicate(timeout=60)
    assert watch.returncode == 0, stderr
    assert "big.bin" in stdout
    assert stdout.splitlines()[-2].endswith("no uploads pending")  # the last heading
    assert run_glacierfs("status", str(m.path), env=m.env).stdout.splitlines()[0].endswith(
        "no uploads pending")


def test_status_shows_a_name_with_a_newline_on_one_line(mount, tmp_path):
    m = mount()
    name = "two\nlines.bin"
    with held_copy(m, tmp_path, name, "UploadMultipartPart:hang:#2+"):
        def shown():
            result = run_glacierfs("status", str(m.path), env=m.env)
            assert result.returncode == 0, result.stderr
            return result if "/4 parts" in result.stdout else None
        lines = wait_for(shown, "status to show the copy").stdout.splitlines()
        assert [line for line in lines if line.startswith("two\\nlines.bin")], lines
        assert not [line for line in lines if line.startswith("lines.bin")], lines


def test_status_refusals(mount, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert_refused(run_glacierfs("status", str(plain)), "not a glacierfs mount",
                            "nothing is mounted")
    assert_refused(run_glacierfs("status", "/proc"), "not a glacierfs mount", "proc")


def test_status_of_a_killed_daemon_says_it_is_not_running(mount):
    # The killed daemon may linger as a zombie (reparented, not reaped yet): still dead.
    m = mount()
    (m.path / "f").write_bytes(b"f")
    pid = m.daemon_pid()
    os.kill(pid, signal.SIGKILL)
    try:
        for _ in range(100):
            stat = Path(f"/proc/{pid}/stat")
            if not stat.exists() or stat.read_text().split(") ", 1)[1][0] == "Z":
                break
            time.sleep(0.05)
        assert_refused(run_glacierfs("status", str(m.path)), f"(pid {pid}) is not running")
    finally:
        force_unmount(m.path, None)


# ---- glacierfs umount -----------------------------------------------------------------------

# A writer whose opener closes it before writing and whose only writes come from a forked
# child: it is completed in release(), after every close(2) returned (SEMANTICS.md), so its
# upload is still pending when the mount is unmounted.
CHILD_WRITES = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
go_r, go_w = os.pipe()
if os.fork() == 0:
    os.close(go_w)
    os.read(go_r, 1)
    data = open(sys.argv[2], "rb").read()
    os.write(fd, data)
    os._exit(0)
os.close(fd)
os.write(go_w, b"x")
os.wait()
"""


def hold_in_release(m, tmp_path, seed: int) -> bytes:
    """late.bin, written by a forked child, so release() completes it; its upload held by the
    hang fault, which the caller clears: all 4 parts sealed, 3 held. Its content."""
    data = pattern(SIZE, seed)
    source = tmp_path / "late.src"
    source.write_bytes(data)
    m.set_faults("UploadMultipartPart:hang:#2+")
    subprocess.run([sys.executable, "-c", CHILD_WRITES, str(m.path / "late.bin"), str(source)],
                   check=True, timeout=60)
    wait_for(lambda: "1/4 parts (3 sending)" in run_glacierfs("status", str(m.path)).stdout,
             "the upload of late.bin to be held in release()")
    return data


def test_umount_shows_pending_uploads_while_it_waits(mount, tmp_path):
    m = mount()
    umount = None
    try:
        data = hold_in_release(m, tmp_path, 9)
        umount = subprocess.Popen([*GLACIERFS, "umount", str(m.path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=m.env)
        time.sleep(3)  # unmounted; the daemon is held in release() by the fault
        assert umount.poll() is None
    finally:
        m.set_faults("")
    _, stderr = umount.communicate(timeout=120)
    assert umount.returncode == 0, stderr
    lines = stderr.splitlines()
    assert lines[0] == f"glacierfs: unmounted {m.path}; waiting for 1 upload(s) to finish"
    bar = next(line for line in lines if line.startswith("late.bin"))
    assert "1/4 parts (3 sending)" in bar and "|" in bar
    assert lines[-1] == "glacierfs: every pending upload finished"
    assert len(lines) < 12  # not a line per tenth of a second
    assert not status_file(m.path).exists()
    assert_archive(m.glacier, m.vault, "late.bin", data)


def test_ctrl_c_while_umount_waits_says_the_uploads_go_on(mount, tmp_path):
    m = mount()
    try:
        data = hold_in_release(m, tmp_path, 13)
        pid = m.daemon_pid()
        umount = subprocess.Popen([*GLACIERFS, "umount", str(m.path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=m.env)
        wait_for(lambda: not is_mounted(m.path), "the unmount")
        umount.send_signal(signal.SIGINT)
        _, stderr = umount.communicate(timeout=60)
    finally:
        m.set_faults("")
    assert umount.returncode == 130
    assert stderr.splitlines()[-1].startswith("glacierfs: stopped waiting; if the unmount had "
                                              "happened, the daemon goes on with the uploads")
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), "the daemon to finish and exit")
    assert_archive(m.glacier, m.vault, "late.bin", data)


def test_umount_fails_while_an_upload_is_left_for_the_next_mount(mount, tmp_path):
    # --async-close: cp succeeds with the content in the cache; every upload then fails, at
    # unmount too. The unmount happens, but `glacierfs umount` must not say all is done: the
    # upload waits in the cache for the next mount, which finishes it.
    m = mount("--async-close")
    data = pattern(PART // 3, 12)
    (tmp_path / "kept").write_bytes(data)
    m.set_faults("UploadArchive:404:#1+")
    try:
        subprocess.run(["cp", tmp_path / "kept", m.path / "kept.bin"], check=True, timeout=60)

        def failure_shown():  # status says so (it showed "writing")
            shown = run_glacierfs("status", str(m.path), env=m.env).stdout.splitlines()
            return any(line.startswith("kept.bin") and line.endswith(
                ", failed, tried again soon") for line in shown)
        wait_for(failure_shown, "status to show the failed upload")
        done = run_glacierfs("umount", str(m.path), env=m.env)
    finally:
        m.set_faults("")
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"glacierfs: unmounted {m.path}, but 1 upload(s) could not finish (the mount's log says "
        f"why); they are safe in the cache {m.cache_dir}, and the next mount of it finishes them")
    assert "every pending upload finished" not in done.stderr
    assert not status_file(m.path).exists()
    again = mount(cache_dir=m.cache_dir)
    done = again.umount()
    assert done.returncode == 0, done.stderr
    assert_archive(m.glacier, m.vault, "kept.bin", data)


def test_uploads_local_uses_the_service_of_a_running_local_mount(tmp_path):
    local, mountpoint = tmp_path / "local-data", tmp_path / "local-mnt"
    mountpoint.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    args = ["uploads", "photos", "--local", str(local)]  # default cache dir, as the mount's
    pid = None
    try:
        run_glacierfs("mount", "photos", str(mountpoint), "--local", str(local),
                      "--part-size", "1M", "--cache-size", "16M", env=env, check=True)
        pid = int(pid_file(mountpoint).read_text())
        service = configparser.ConfigParser()
        service.read([local / "config", local / "credentials"])
        url = service["default"]["endpoint_url"]
        glacier = boto3.client("glacier", endpoint_url=url, region_name="us-east-1",
                               aws_access_key_id=service["default"]["aws_access_key_id"],
                               aws_secret_access_key=service["default"]["aws_secret_access_key"])
        orphan = make_orphan(glacier, "photos", "from/elsewhere.bin")
        before = remote_stats(url)["requests"].get("ListMultipartUploads", 0)
        assert listed(run_glacierfs(*args, env=env))[orphan][0] == "orphan"
        # asked the mount's own service, not a second one on the same directory
        assert remote_stats(url)["requests"]["ListMultipartUploads"] == before + 1
        assert run_glacierfs("umount", str(mountpoint), env=env).returncode == 0
    finally:
        force_unmount(mountpoint, pid)
    # no service running: one is started for the command
    result = run_glacierfs(*args, "--abort-orphans", env=env)
    assert result.returncode == 0, result.stderr
    assert f"aborted upload {orphan} (from/elsewhere.bin" in result.stdout
    assert run_glacierfs(*args, env=env).stdout.strip() == (
        "no multipart uploads in progress in vault photos")
