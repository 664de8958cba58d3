"""Restores through a real mount: files whose data is only in the vault come back through
retrieval jobs (`glacierfs restore`, `setfattr -n user.glacier.restore`, --restore-on-read),
verified range by range, resumed after kill -9, and read back byte for byte.

The server runs jobs with --job-delay 1, and the mounts poll every 0.2 s. A file's data leaves
the cache by clearing the `uploaded` diskcache while the mount is down (the catalog stays).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from glacierfs.statusfile import status_file
from tests.mount.conftest import run_glacierfs
from tests.mount.crash_helpers import kill9, wait_for
from tests.mount.mount_helpers import PART, assert_archive, cost, pattern
from tests.mount.test_cli_mount import assert_refused
from tests.vault_helpers import archives_by_path

STATE = "user.glacier.state"
RESTORE = "user.glacier.restore"
POLL = ("--restore-poll", "0.2")


@pytest.fixture
def serve(serve_process):
    """Retrieval jobs stay InProgress for a second, as a (very fast) vault's would."""
    return serve_process("--job-delay", "1")


def state(path) -> str:
    return os.getxattr(path, STATE).decode()


def wait_state(path, prefix: str, timeout: float = 60.0) -> str:
    wait_for(lambda: state(path).startswith(prefix), f"{path} to be {prefix}", timeout)
    return state(path)


def fields(value: str) -> dict:
    head, _, rest = value.partition(" ")
    return {"state": head, **dict(item.split("=", 1) for item in rest.split())}


def write_files(m, tmp_path, files: dict[str, bytes]) -> None:
    source = tmp_path / "source"
    for name, data in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    subprocess.run(["cp", "-r", f"{source}/.", str(m.path)], check=True)


def evicted(mount, m, *extra: str, **options):
    """Unmount, drop every part kept for reading (the catalog stays), mount again."""
    result = m.umount()
    assert result.returncode == 0, result.stderr
    shutil.rmtree(m.cache_dir / "uploaded")
    return mount(*POLL, *extra, cache_dir=m.cache_dir, **options)


def log_lines(m, *needles: str) -> list[str]:
    return [line for line in m.log().splitlines() if all(n in line for n in needles)]


def read_errno(path) -> int | None:
    try:
        path.read_bytes()
    except OSError as error:
        return error.errno
    return None


def ranges(size: int) -> int:
    return -(-size // PART)  # one GetJobOutput range per 1 MiB part


def restore_rows(m) -> tuple[list[dict], list[dict]]:
    db = sqlite3.connect(f"file:{m.cache_dir / 'catalog.sqlite3'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return ([dict(r) for r in db.execute("SELECT * FROM restores")],
                [dict(r) for r in db.execute("SELECT * FROM restore_ranges")])
    finally:
        db.close()


# ---- restoring files, and reading them --------------------------------------------------------


def test_restore_brings_a_tree_back_through_the_cli_and_setfattr(mount, tmp_path):
    files = {"a/one.bin": pattern(3 * PART + 12_345, 1), "a/b/two.bin": pattern(700_000, 2),
             "a/b/tiny.txt": b"x", "c.bin": pattern(2 * PART, 3), "empty": b""}
    m = mount()
    write_files(m, tmp_path, files)
    m = evicted(mount, m)

    for name, data in files.items():
        if data:
            assert state(m.path / name) == "archived", name
            assert read_errno(m.path / name) == errno.ENODATA, name
        else:
            assert state(m.path / name) == "cached"
            assert (m.path / name).read_bytes() == b""
    for _ in range(3):  # a program retrying its read
        assert read_errno(m.path / "c.bin") == errno.ENODATA
    hints = [line for line in m.log().splitlines() if "/c.bin" in line and "only in the vault"
             in line]
    assert len(hints) >= 4  # the later ones at DEBUG: one WARNING a minute per file
    assert [" WARNING " in line for line in hints] == [True] + [False] * (len(hints) - 1)
    hint = hints[0]
    assert f"glacierfs restore {m.path}/c.bin" in hint
    assert f"setfattr -n {RESTORE} -v Standard {m.path}/c.bin" in hint

    before = m.stats()
    result = run_glacierfs("restore", "--tier", "expedited", "--wait", str(m.path / "a"),
                           env=m.env)
    assert result.returncode == 0, result.stderr
    assert "3 restore(s) started (tier Expedited)" in result.stdout
    assert "3 file(s) restored and readable" in result.stdout
    assert "a/b/two.bin" in result.stderr and "100%" in result.stderr  # the bars
    restored = [name for name in files if name.startswith("a/")]
    for name in restored:
        assert state(m.path / name) == "cached"
        assert (m.path / name).read_bytes() == files[name]
    assert state(m.path / "c.bin") == "archived"  # not below a/
    spent = cost(before, m.stats())
    assert spent["InitiateJob"] == 3
    assert spent["GetJobOutput"] == sum(ranges(len(files[n])) for n in restored)

    subprocess.run(["setfattr", "-n", RESTORE, "-v", "Bulk", str(m.path / "c.bin")], check=True)
    assert state(m.path / "c.bin").startswith("restoring ")
    wait_state(m.path / "c.bin", "cached")
    cmp = subprocess.run(["cmp", "-", str(m.path / "c.bin")], input=files["c.bin"],
                         capture_output=True, check=False)
    assert cmp.returncode == 0, cmp.stdout

    # the vault saw one job per file, with the tier asked for
    archives = archives_by_path(m.glacier, m.vault)
    jobs = m.glacier.list_jobs(vaultName=m.vault)["JobList"]
    tiers = {job["ArchiveId"]: job["Tier"] for job in jobs if job["Action"] == "ArchiveRetrieval"}
    assert tiers == {archives["a/one.bin"]["ArchiveId"]: "Expedited",
                     archives["a/b/two.bin"]["ArchiveId"]: "Expedited",
                     archives["a/b/tiny.txt"]["ArchiveId"]: "Expedited",
                     archives["c.bin"]["ArchiveId"]: "Bulk"}
    assert_archive(m.glacier, m.vault, "c.bin", files["c.bin"], archives)

    # restored parts are cache parts like any other: still there after a remount
    assert m.umount().returncode == 0
    m = mount(*POLL, cache_dir=m.cache_dir)
    before = m.stats()
    for name, data in files.items():
        assert (m.path / name).read_bytes() == data
    assert cost(before, m.stats()) == {}


def test_the_state_attribute_through_a_file_s_life(mount, tmp_path):
    m = mount(*POLL)
    path = m.path / "f.bin"
    data = pattern(2 * PART + 7, 10)
    with open(path, "wb") as f:
        f.write(data[:PART])
        assert state(path) == "uploading"
        f.write(data[PART:])
    assert state(path) == "cached"
    assert os.listxattr(path) == []  # answered by name only (SEMANTICS.md)
    dump = subprocess.run(["getfattr", "-n", STATE, str(path)], capture_output=True,
                          text=True, check=True)
    assert f'{STATE}="cached"' in dump.stdout

    m = evicted(mount, m)
    path = m.path / "f.bin"
    assert state(path) == "archived"
    m.set_faults("GetJobOutput:hang:#1")  # the restore stays unfinished until released
    before = m.stats()
    subprocess.run(["setfattr", "-n", RESTORE, "-v", "Standard", str(path)], check=True)
    value = fields(state(path))
    [job] = [j for j in m.glacier.list_jobs(vaultName=m.vault)["JobList"]
             if j["Action"] == "ArchiveRetrieval"]
    assert value["state"] == "restoring" and value["tier"] == "Standard"
    assert value["job"] == job["JobId"]
    assert value["size"] == str(len(data)) and value["phase"] in ("waiting", "downloading")
    started = time.mktime(time.strptime(value["started"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(started - time.time()) < 60
    assert os.listxattr(path) == []
    assert os.getxattr(path, RESTORE) == b"Standard"
    os.setxattr(path, RESTORE, b"bulk")  # already being restored: nothing more happens
    assert read_errno(path) == errno.ENODATA
    assert log_lines(m, "/f.bin: not readable yet: being restored (tier Standard, job")

    m.set_faults("")
    wait_state(path, "cached")
    assert cost(before, m.stats())["InitiateJob"] == 1
    assert path.read_bytes() == data
    assert restore_rows(m) == ([], [])
    assert list((m.cache_dir / "restore").iterdir()) == []  # staged parts moved, not copied


def test_attribute_refusals(mount, tmp_path):
    m = mount(*POLL)
    (m.path / "d").mkdir()
    path = m.path / "d" / "f"
    path.write_bytes(b"data")

    def fails(*command: str) -> str:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        assert result.returncode != 0, result
        return result.stderr

    assert "No such attribute" in fails("getfattr", "-n", "user.other", str(path))
    assert "No such attribute" in fails("getfattr", "-n", RESTORE, str(path))  # none running
    assert "Operation not supported" in fails("setfattr", "-n", "user.other", "-v", "x",
                                              str(path))
    assert "Operation not supported" in fails("setfattr", "-n", STATE, "-v", "cached",
                                              str(path))
    assert "Invalid argument" in fails("setfattr", "-n", RESTORE, "-v", "Fast", str(path))
    assert "Operation not supported" in fails("setfattr", "-x", RESTORE, str(path))
    with pytest.raises(OSError) as raised:
        os.setxattr(m.path / "d", RESTORE, b"Standard")
    assert raised.value.errno == errno.EISDIR
    with pytest.raises(OSError) as raised:
        os.getxattr(m.path / "d", STATE)
    assert raised.value.errno == errno.ENODATA
    assert os.listxattr(m.path / "d") == []
    os.symlink("f", m.path / "d" / "link")
    assert os.listxattr(m.path / "d" / "link", follow_symlinks=False) == []
    assert state(path) == "cached"
    assert path.read_bytes() == b"data"


def test_a_file_larger_than_the_cache_is_refused_with_efbig(mount, tmp_path):
    m = mount(cache_size="4M")
    write_files(m, tmp_path, {"big.bin": pattern(5 * PART, 4)})
    m = evicted(mount, m, cache_size="4M")
    with pytest.raises(OSError) as raised:
        os.setxattr(m.path / "big.bin", RESTORE, b"Standard")
    assert raised.value.errno == errno.EFBIG
    assert "--cache-size" in m.log()
    assert state(m.path / "big.bin") == "archived"


# ---- interruptions -----------------------------------------------------------------------------


def test_a_restore_killed_mid_download_resumes_at_the_next_mount(mount, tmp_path):
    data = pattern(5 * PART + 99, 5)
    m = mount()
    write_files(m, tmp_path, {"big.bin": data})
    m = evicted(mount, m)
    m.set_faults("GetJobOutput:hang:#3")  # ranges 0 and 1 arrive; range 2 is held
    before = m.stats()
    os.setxattr(m.path / "big.bin", RESTORE, b"Standard")
    job = fields(state(m.path / "big.bin"))["job"]
    wait_for(lambda: cost(before, m.stats()).get("GetJobOutput", 0) >= 3, "range 2 to be asked")
    rows, verified = restore_rows(m)
    assert [(r["job_id"], r["state"]) for r in rows] == [(job, "downloading")]
    assert sorted((r["first"], r["size"]) for r in verified) == [(0, PART), (PART, PART)]

    kill9(m)
    m.set_faults("")
    before = m.stats()
    m = mount(*POLL, cache_dir=m.cache_dir)
    assert wait_state(m.path / "big.bin", "cached")
    spent = cost(before, m.stats())
    assert spent.get("InitiateJob", 0) == 0  # the same job, still downloadable
    assert spent["GetJobOutput"] == ranges(len(data)) - 2  # only what was not verified
    assert (m.path / "big.bin").read_bytes() == data


def test_a_restore_unmounted_mid_download_resumes_at_the_next_mount(mount, tmp_path):
    data = pattern(4 * PART + 1, 14)
    m = mount()
    write_files(m, tmp_path, {"f.bin": data})
    m = evicted(mount, m)
    m.set_faults("GetJobOutput:hang:#3")
    before = m.stats()
    os.setxattr(m.path / "f.bin", RESTORE, b"Standard")
    wait_for(lambda: cost(before, m.stats()).get("GetJobOutput", 0) >= 3, "range 2 to be asked")
    umount = subprocess.Popen([sys.executable, "-m", "glacierfs", "umount", str(m.path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=m.env)
    wait_for(lambda: log_lines(m, "stopping: 1 restore(s) go on at the next mount"), "stop")
    m.set_faults("")  # the held range is answered (503, then retried) after the stop began
    _, err = umount.communicate(timeout=60)
    assert umount.returncode == 0, err
    assert not log_lines(m, " refused: ")  # stopping is not a broken range
    rows, verified = restore_rows(m)
    assert [r["state"] for r in rows] == ["downloading"]
    assert sorted(r["first"] for r in verified) == [0, PART]

    before = m.stats()
    m = mount(*POLL, cache_dir=m.cache_dir)
    wait_state(m.path / "f.bin", "cached")
    assert cost(before, m.stats())["GetJobOutput"] == ranges(len(data)) - 2
    assert (m.path / "f.bin").read_bytes() == data


@pytest.mark.parametrize("kind", ["drop", "corrupt"])
def test_a_broken_range_is_refused_and_fetched_again(mount, tmp_path, kind):
    data = pattern(4 * PART + 1, 6)
    m = mount()
    write_files(m, tmp_path, {"f.bin": data})
    m = evicted(mount, m)
    m.set_faults(f"GetJobOutput:{kind}:#2")
    before = m.stats()
    os.setxattr(m.path / "f.bin", RESTORE, b"Expedited")
    wait_state(m.path / "f.bin", "cached")
    spent = cost(before, m.stats())
    assert spent["GetJobOutput"] == ranges(len(data)) + 1
    assert spent["InitiateJob"] == 1
    refused = log_lines(m, "/f.bin: range ", " refused: ")
    assert len(refused) == 1 and " WARNING " in refused[0], refused
    assert f"range {PART}-{2 * PART - 1} " in refused[0] and "attempt 1 of 5" in refused[0]
    if kind == "corrupt":
        assert "the vault sent tree hash" in refused[0]
    assert (m.path / "f.bin").read_bytes() == data


@pytest.mark.parametrize("fault", ["InitiateJob:job-fails:#1", "DescribeJob:404:#1",
                                   "GetJobOutput:404:#1"])
def test_a_failed_or_expired_job_is_replaced(mount, tmp_path, fault):
    data = pattern(2 * PART + 3, 7)
    m = mount()
    write_files(m, tmp_path, {"f.bin": data})
    m = evicted(mount, m)
    m.set_faults(fault)
    before = m.stats()
    os.setxattr(m.path / "f.bin", RESTORE, b"Standard")
    first_job = fields(state(m.path / "f.bin"))["job"]
    wait_state(m.path / "f.bin", "cached")
    assert cost(before, m.stats())["InitiateJob"] == 2
    replaced = [line for line in m.log().splitlines() if "started job" in line]
    assert len(replaced) == 1 and " WARNING " in replaced[0] and first_job in replaced[0]
    assert (m.path / "f.bin").read_bytes() == data


def test_jobs_that_keep_failing_are_reported_not_lost(mount, tmp_path):
    data = pattern(PART + 5, 8)
    m = mount()
    write_files(m, tmp_path, {"f.bin": data})
    m = evicted(mount, m)
    m.set_faults("InitiateJob:job-fails:#1+")
    before = m.stats()
    result = run_glacierfs("restore", "--wait", str(m.path / "f.bin"), env=m.env)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if not line.startswith(" ")
              and "%" not in line and "restoring" not in line]
    assert errors == [f"glacierfs: {m.path}/f.bin: not restored: job " + errors[0].split(
        ": job ", 1)[1], "glacierfs: 1 of 1 file(s) not restored"], result.stderr
    assert "3 jobs in a row delivered nothing" in errors[0]
    assert cost(before, m.stats())["InitiateJob"] == 3
    value = state(m.path / "f.bin")
    assert value.startswith("archived error=") and "delivered nothing" in value
    assert [line for line in m.log().splitlines() if " ERROR " in line and "/f.bin" in line
            and "restore failed" in line]
    [failed] = json.loads(status_file(m.path).read_text())["restores"]
    assert failed["state"] == "failed" and "delivered nothing" in failed["error"]
    assert read_errno(m.path / "f.bin") == errno.ENODATA
    assert "the last restore failed" in log_lines(m, "/f.bin", "only in the vault")[-1]

    m.set_faults("")  # asking again tries again, with the verified ranges kept
    os.setxattr(m.path / "f.bin", RESTORE, b"Standard")
    wait_state(m.path / "f.bin", "cached")
    assert (m.path / "f.bin").read_bytes() == data


def test_a_restore_of_an_archive_the_vault_no_longer_has_fails(mount, tmp_path):
    # Deleted behind the mount's back (another tool, a lifecycle script): no job can bring it
    # back, so the restore fails instead of waiting forever.
    m = mount()
    write_files(m, tmp_path, {"f.bin": b"f" * 100, "g.bin": b"g" * 100})
    m = evicted(mount, m)
    archives = archives_by_path(m.glacier, m.vault)
    os.setxattr(m.path / "g.bin", RESTORE, b"Standard")  # a job, then the archive goes
    for name in ("f.bin", "g.bin"):
        m.glacier.delete_archive(vaultName=m.vault, archiveId=archives[name]["ArchiveId"])
    m.set_faults("DescribeJob:404:#1+")  # g's job expired: a new one is needed
    try:
        value = wait_state(m.path / "g.bin", "archived error=")
    finally:
        m.set_faults("")
    assert "no longer has archive" in value

    # Asking for f: the file is there, its archive is not. One refusal, counted once.
    result = run_glacierfs("restore", "--wait", str(m.path / "f.bin"), env=m.env)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"glacierfs: {m.path}/f.bin: cannot restore: Input/output error"
    assert lines[-1] == "glacierfs: 1 of 1 file(s) not restored", result.stderr
    # ... and the file says so from then on, as does a refused read, which no longer
    # suggests a restore that cannot work.
    gone = f"the vault no longer has archive {archives['f.bin']['ArchiveId']}"
    assert state(m.path / "f.bin") == f"archived error={gone}"
    assert read_errno(m.path / "f.bin") == errno.ENODATA
    hint = log_lines(m, "/f.bin: not readable: ")
    assert hint and "no restore can bring it back" in hint[-1], m.log()[-2000:]
    assert not log_lines(m, "/f.bin: its data is only in the vault")
    wait_for(lambda: f"failed: {gone}" in run_glacierfs("status", str(m.path), env=m.env).stdout,
             "glacierfs status to show the failed restore")  # the status file: once a second


def test_restore_through_a_dead_mount_says_so(mount):
    m = mount()
    (m.path / "f.bin").write_bytes(b"f")
    os.kill(m.daemon_pid(), signal.SIGKILL)
    wait_for(lambda: read_errno(m.path / "f.bin") == errno.ENOTCONN, "the mount to die")
    line = assert_refused(run_glacierfs("restore", str(m.path / "f.bin")), "not connected")
    assert "f.bin" in line


def test_a_range_that_never_verifies_ends_the_job_and_then_the_restore(mount, tmp_path):
    data = pattern(3 * PART, 15)
    m = mount()
    write_files(m, tmp_path, {"f.bin": data})
    m = evicted(mount, m)
    m.set_faults("GetJobOutput:corrupt:#2+")  # range 0 verifies, range 1 never does
    before = m.stats()
    os.setxattr(m.path / "f.bin", RESTORE, b"Standard")
    wait_state(m.path / "f.bin", "archived error=", timeout=120)
    spent = cost(before, m.stats())
    # job 1 delivers range 0, then range 1 fails five times; so it does in jobs 2, 3 and 4
    # (range 0 kept), which deliver nothing: three in a row, and the restore fails
    assert (spent["InitiateJob"], spent["GetJobOutput"]) == (4, 1 + 4 * 5)
    value = state(m.path / "f.bin")
    assert "range 1048576-2097151 failed 5 times" in value
    assert "3 jobs in a row delivered nothing" in value
    assert len(log_lines(m, "/f.bin: range 1048576-2097151 ", "(attempt 5 of 5)",
                         " ERROR ")) == 4
    assert [r["first"] for r in restore_rows(m)[1]] == [0]  # kept for the next try

    m.set_faults("")
    before = m.stats()
    os.setxattr(m.path / "f.bin", RESTORE, b"Standard")
    wait_state(m.path / "f.bin", "cached")
    assert cost(before, m.stats())["GetJobOutput"] == ranges(len(data)) - 1
    assert (m.path / "f.bin").read_bytes() == data


def test_restore_on_read_starts_the_job_and_the_read_still_fails(mount, tmp_path):
    data = pattern(3 * PART, 9)
    m = mount()
    write_files(m, tmp_path, {"f.bin": data})
    m = evicted(mount, m, "--restore-on-read", "bulk")
    m.set_faults("GetJobOutput:hang:#1")  # the restore stays unfinished until released
    before = m.stats()
    assert read_errno(m.path / "f.bin") == errno.ENODATA
    line = [line for line in m.log().splitlines() if "--restore-on-read started" in line]
    assert line and "Bulk" in line[0] and "ENODATA" in line[0]
    assert fields(state(m.path / "f.bin"))["tier"] == "Bulk"
    assert read_errno(m.path / "f.bin") == errno.ENODATA  # while it runs: no second job
    assert log_lines(m, "/f.bin: not readable yet: being restored (tier Bulk")
    m.set_faults("")
    wait_state(m.path / "f.bin", "cached")
    assert (m.path / "f.bin").read_bytes() == data
    assert cost(before, m.stats())["InitiateJob"] == 1


@pytest.mark.parametrize("how", ["rm", "overwrite"])
def test_a_file_removed_or_overwritten_while_it_is_restored_drops_the_restore(mount, tmp_path,
                                                                              how):
    m = mount()
    write_files(m, tmp_path, {"f.bin": pattern(3 * PART, 11), "g.bin": pattern(PART, 12)})
    m = evicted(mount, m)
    m.set_faults("GetJobOutput:hang:#2")
    before = m.stats()
    os.setxattr(m.path / "f.bin", RESTORE, b"Standard")
    wait_for(lambda: cost(before, m.stats()).get("GetJobOutput", 0) >= 2, "range 1")
    new = pattern(PART + 1, 13)
    if how == "rm":
        os.unlink(m.path / "f.bin")
        assert restore_rows(m) == ([], [])  # went with the file
    else:
        (m.path / "f.bin").write_bytes(new)
    m.set_faults("")
    wait_for(lambda: restore_rows(m) == ([], []), "the restore to be dropped")
    wait_for(lambda: not list((m.cache_dir / "restore").iterdir()), "staged parts to go")
    assert log_lines(m, "/f.bin: its content changed while it was restored")
    if how == "overwrite":
        assert state(m.path / "f.bin") == "cached"
        assert (m.path / "f.bin").read_bytes() == new
    os.setxattr(m.path / "g.bin", RESTORE, b"Standard")  # the poller goes on
    wait_state(m.path / "g.bin", "cached")
    assert "Traceback" not in m.log()


# ---- progress ----------------------------------------------------------------------------------


def test_status_shows_restores(mount, tmp_path):
    data = pattern(3 * PART, 13)
    m = mount()
    write_files(m, tmp_path, {"dir/f.bin": data})
    m = evicted(mount, m)
    m.set_faults("GetJobOutput:hang:#2")
    before = m.stats()
    os.setxattr(m.path / "dir" / "f.bin", RESTORE, b"Expedited")
    job = fields(state(m.path / "dir" / "f.bin"))["job"]
    wait_for(lambda: cost(before, m.stats()).get("GetJobOutput", 0) >= 2, "range 1")

    def restores():
        return json.loads(status_file(m.path).read_text())["restores"]

    wait_for(lambda: restores() and restores()[0]["bytes_downloaded"] == PART, "status")
    [entry] = restores()
    assert entry["path"] == "/dir/f.bin" and entry["state"] == "downloading"
    assert (entry["tier"], entry["job_id"], entry["size"]) == ("Expedited", job, len(data))
    assert abs(entry["started"] - time.time()) < 60 and entry["error"] is None
    shown = run_glacierfs("status", str(m.path), env=m.env)
    assert shown.returncode == 0, shown.stderr
    heading, *lines = shown.stdout.splitlines()
    assert heading.endswith("no uploads pending; 1 restore(s) running")
    [line] = [line for line in lines if line.startswith("dir/f.bin")]
    assert "33%" in line and "1.0 MiB of 3.0 MiB, downloading (Expedited" in line

    watch = subprocess.Popen([sys.executable, "-m", "glacierfs", "status", str(m.path),
                              "--watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=m.env)
    m.set_faults("")
    _, err = watch.communicate(timeout=60)  # --watch ends once the restore is done
    assert watch.returncode == 0, err
    assert restores() == []
    assert (m.path / "dir" / "f.bin").read_bytes() == data


# ---- bad input ---------------------------------------------------------------------------------


def test_restore_refusals(mount, tmp_path):
    m = mount()
    assert_refused(run_glacierfs("restore", str(tmp_path)), "not inside a glacierfs mount")
    assert_refused(run_glacierfs("restore", "--tier", "fast", str(m.path)), "--tier", "fast")
    assert_refused(run_glacierfs("restore", str(m.path / "missing")), "missing",
                   "no such file")
    assert_refused(run_glacierfs("restore"), "PATH")
    # a file being written is nothing to restore
    with open(m.path / "open.bin", "wb") as f:
        f.write(b"abc")
        result = run_glacierfs("restore", str(m.path / "open.bin"), env=m.env)
        assert result.returncode == 0, result.stderr
        assert "0 restore(s) started" in result.stdout and "1 being written" in result.stdout


def test_a_restored_file_does_not_evict_its_own_parts(mount, tmp_path):
    # A 4 MiB cache of 1 MiB parts holds y; x (the same size) is restored. Room must be made
    # for all of x at once (evicting y): made part by part, the second part's trim culled
    # ten rows at a time, x's first part among them, and the log said "restored" while x
    # stayed unreadable.
    size = 3_000_000  # 2.86 MiB: x's first part still fits beside y, its second does not
    x, y = pattern(size, 31), pattern(size, 32)
    m = mount(cache_size="4M")
    write_files(m, tmp_path, {"x.bin": x})
    m = evicted(mount, m, cache_size="4M")
    (m.path / "y.bin").write_bytes(y)
    assert (state(m.path / "x.bin"), state(m.path / "y.bin")) == ("archived", "cached")
    result = run_glacierfs("restore", "--wait", str(m.path / "x.bin"), env=m.env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert state(m.path / "x.bin") == "cached"
    assert (m.path / "x.bin").read_bytes() == x
    assert state(m.path / "y.bin") == "archived"  # y made the room
