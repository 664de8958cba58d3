"""How does copying into a glacierfs mount compare with what the same bytes cost without it?

    .venv/bin/python scripts/bench.py [--only cp|rsync] [--size-gib 2] [--rss-sizes 1,4]
                                      [--files 5000] [--seed 1] [--latency MS] [--rounds 2]
                                      [--quick] [--no-prewarm] [--profile DIR]

The machine is small (2 cores) and shared, so absolute figures drift between runs: every goal
is a ratio of two measurements taken in this one run. MB/s = 10^6 bytes per second.

1. Throughput. A source file of --size-gib random bytes (os.urandom, written before any timing)
   is copied three ways, each into a fresh target, --rounds times (the order reversed every
   other round, so no way always goes first); the table shows each way's best round:
   - `cp` into a fresh glacierfs mount (64 MiB parts, 2 GiB cache, 4 upload threads) on a
     fresh `glacierfs serve` process. Timed from cp's start until it exits: close(2) returns
     once the archive is complete, so the time covers the whole upload.
   - boto3 alone, as a normal client would do it, to a fresh `glacierfs serve`: initiate, 64 MiB
     parts read from the file on 4 threads, botocore computing both hashes itself, complete
     with the tree hash combined from the part checksums. Timed from initiate to complete.
     Goal: glacierfs cp MB/s >= 0.9 x this.
   - `cp` into a minimal mfusepy passthrough filesystem (below) that only writes to local disk,
     with the FUSE settings glacierfs uses (libfuse 3, multi-threaded, its default 1 MiB
     max_write): what a Python FUSE filesystem can take in here. Goal: glacierfs >= 0.8 x this.
   "finish": the seconds after the data was all handed over: for cp, from the moment the file
   in the mount has its full size (polled every 50 ms) until cp exits, i.e. close(2); for
   boto3, the CompleteMultipartUpload call. CPU columns: cores busy while timed (CPU seconds /
   wall seconds) of the client (cp, or this process for boto3), the FUSE daemon and the server
   (two cores = 2.0 in all). Before each timing, warm() puts the machine in the same state.
   "CPU ms per MB": the CPU the boto3 way and the passthrough each spent (all three columns,
   per MB copied). A mount does at least both on the same cores, so the machine's cores
   divided by their sum is the most any mount could reach here (cpu_ceiling); a goal above it
   cannot be met on this machine, whatever the mount does.
2. Memory. For each --rss-sizes file (its own source file, a fresh server and a FRESH MOUNT per
   size, so VmHWM is that copy's peak), VmRSS of the mount daemon is sampled every 50 ms during
   the cp, and VmHWM is read after it. Goal: <= 200 MiB and flat (the largest size's peak about
   the smallest's: their ratio <= 1.25 is reported as flat; a peak can be a transient of a few
   threads' buffers, so "RSS end", when cp exits, is shown too).
3. Disk writes. /proc/PID/io write_bytes of the mount daemon before and after each copy of
   part 1, per byte copied (the worst round). The daemon writes the part files (and SQLite);
   the server is another process (we mount with --endpoint-url), so its writes do not count.
   Linux counts write_bytes when a page is dirtied, so a part written once counts once even if
   it is deleted before writeback (cancelled_write_bytes). Goal: <= 1.1.
4. Many small files (--only rsync runs just this; --only cp just 1-3). A tree of --files files
   (default 5,000) of 1-64 KiB, random sizes and bytes from --seed, in 10 directories with 5
   subdirectories each, is sent four ways, to one fresh `glacierfs serve` per round (a vault
   each), --rounds times, the order reversed every other round:
   - `rsync -a SRC/ MNT/dest/` into a fresh mount (the same mount options as in 1). Timed from
     rsync's start until it exits: every file's close(2) returns once its archive is in the
     vault. Afterwards the vault's inventory (boto3) must hold exactly one archive per file,
     with the files' sizes, and the mount must list every file with its size.
   - boto3 alone, as a normal client would do it: one client, a sequential loop over the
     tree (os.walk, read the file, upload_archive with its path as the description; botocore
     computes both hashes). Timed from the walk's start to the last reply; checked the same way.
   - `rsync -a` into the minimal mfusepy passthrough filesystem of part 1 (with the few more
     operations rsync needs): rsync through a Python FUSE filesystem with no vault behind it.
   - `rsync -a` into a fresh mount with --async-close (close(2) returns once the file is safe
     in the cache; THREADS closer threads upload). Timed from rsync's start until the server
     has received one UploadArchive per file (it counts requests as they arrive; the last
     reply follows within milliseconds), so it too covers the uploads; rsync's own exit is
     printed too. Checked like the first way.
   Goal: glacierfs files/s >= 0.8 x boto3's. Also printed: the bound a synchronous close puts
   on the mount, 1 / (1/passthrough + 1/loop) files/s (each file costs at least rsync through
   FUSE plus one upload, and rsync writes one file at a time), and how close glacierfs is to
   it, and the same CPU ceiling as in part 1, per file (the loop's CPU plus the passthrough's).
   "requests/file": HTTP requests the server counted (GET /_glacierfs/stats) during the
   timing, per file; the mount's are broken down by operation.
   --latency MS: the server sleeps MS before every request (`glacierfs serve --latency`), as a
   remote endpoint would answer; the goal is for the default, 0.
   --profile DIR: py-spy records the mount daemon during each rsync and this process during
   each boto3 loop (raw collapsed stacks, idle threads included, one file per round and way).
   Sampling slows both ways: do not compare a profiled run's figures with others.

Everything runs on 127.0.0.1 inside one temporary directory on local disk. Source files and
server data are deleted after each measurement (the small-file tree after part 4). Mounts,
servers, the passthrough process and py-spy are always unmounted/stopped in finally blocks, also
on Ctrl-C.
"""

from __future__ import annotations

import argparse
import configparser
import json
import mmap
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from glacierfs import snapshot  # noqa: E402
from glacierfs.mount import force_unmount, is_mounted, pid_file  # noqa: E402
from glacierfs.server import remote_stats  # noqa: E402
from glacierfs.treehash import combine_hex  # noqa: E402

MiB, GiB = 1 << 20, 1 << 30
PART, THREADS, CACHE = 64 * MiB, 4, 2 * GiB
VAULT = "bench"
GLACIERFS = [sys.executable, "-m", "glacierfs"]
PREWARM = True  # --no-prewarm turns it off
KiB = 1 << 10
SMALL_MIN, SMALL_MAX = 1 * KiB, 64 * KiB  # part 4: file sizes
PY_SPY = Path(sys.executable).with_name("py-spy")  # for --profile

# argv: BACKING_DIR MOUNTPOINT. Every operation cp and rsync -a need, straight to the backing
# directory (no getxattr: the kernel then stops asking for security.capability on each write).
PASSTHROUGH_FS = r"""
import os, sys
os.environ["FUSE_LIBRARY_NAME"] = "fuse3"  # as glacierfs/fuse_ops.py
from mfusepy import FUSE, Operations
class Passthrough(Operations):
    use_ns = True
    def __init__(self, root): self.root = root
    def getattr(self, path, fh=None):
        st = os.lstat(self.root + path)  # mfusepy turns OSError into -errno
        return {k.removesuffix("_ns"): getattr(st, k) for k in (
            "st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime_ns", "st_mtime_ns",
            "st_ctime_ns")}
    def readdir(self, path, fh): return [".", ".."] + os.listdir(self.root + path)
    def mkdir(self, path, mode): os.mkdir(self.root + path, mode)
    def create(self, path, mode, fi=None):
        return os.open(self.root + path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    def open(self, path, flags): return os.open(self.root + path, flags)
    def write(self, path, data, offset, fh): return os.pwrite(fh, data, offset)
    def truncate(self, path, length, fh=None): os.truncate(self.root + path, length)
    def flush(self, path, fh): return 0
    def release(self, path, fh): os.close(fh); return 0
    def rename(self, old, new): os.rename(self.root + old, self.root + new)
    def chmod(self, path, mode): os.chmod(self.root + path, mode)
    def chown(self, path, uid, gid): os.chown(self.root + path, uid, gid)
    def utimens(self, path, times=None): os.utime(self.root + path, ns=times)
FUSE(Passthrough(sys.argv[1]), sys.argv[2], foreground=True, nothreads=False)
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_field(path: str, name: str) -> int:
    """A field of a /proc file like /proc/PID/status or /proc/PID/io (kB values in bytes)."""
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            number, *unit = value.split()
            return int(number) * (1024 if unit == ["kB"] else 1)
    raise KeyError(name)


def make_source(path: Path, size: int) -> Path:
    with open(path, "wb") as out:
        for start in range(0, size, PART):
            out.write(os.urandom(min(PART, size - start)))
    return path


def warm(sources: list[Path]) -> None:
    """The same starting point for every timing: the sources in the page cache (read once
    more: this VM pages out memory idle for a minute), memory warm, and no dirty pages (so no
    writeback of earlier files lands inside the timing).

    Warm memory: this VM hands free memory back to its host (virtio-balloon free page
    reporting), and the first touch of such a page costs a host fault: new page cache then
    fills at ~0.4 GB/s instead of several GB/s, so whichever way needs the most fresh pages,
    or runs first, pays for it. Touching and freeing 3x the sources' size of anonymous memory
    just before the timing leaves warm free pages behind, as on an ordinary machine."""
    for source in sources:
        with open(source, "rb") as src:
            while src.read(PART):
                pass
    if PREWARM:
        room = proc_field("/proc/meminfo", "MemAvailable") - 2 * GiB
        total = sum(source.stat().st_size for source in sources)
        chunks = max(1, min(3 * total + GiB, room) // PART)
        with mmap.mmap(-1, chunks * PART) as memory:
            zeros = bytes(PART)
            for _ in range(chunks):
                memory.write(zeros)
    os.sync()


@contextmanager
def serve(data_dir: Path, latency_ms: float = 0):
    """A fresh `glacierfs serve` process (adding latency_ms to every request) -> (url, pid,
    keys); stopped and its data deleted."""
    log = data_dir.with_suffix(".log")
    with open(log, "wb") as err:  # own session: Ctrl-C must not stop it before the unmount
        proc = subprocess.Popen([*GLACIERFS, "serve", "--data-dir", str(data_dir), "--port", "0",
                                 "--log-level", "warning", "--latency", str(latency_ms)],
                                stdout=subprocess.PIPE, stderr=err, start_new_session=True)
    try:
        url = proc.stdout.readline().decode().strip()  # the endpoint URL, or EOF if it died
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"glacierfs serve did not start: {log.read_text()[-2000:]}")
        keys = configparser.ConfigParser()
        keys.read(data_dir / "credentials")
        yield url, proc.pid, dict(keys["default"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def unmount(mountpoint: Path, pid: int | None, graceful: list[str]) -> None:
    """`graceful` (e.g. glacierfs umount), then a lazy unmount and SIGKILL if still needed."""
    try:
        if is_mounted(mountpoint):
            subprocess.run(graceful, capture_output=True, timeout=90)
    except subprocess.TimeoutExpired:
        print(f"warning: {' '.join(graceful)} timed out; forcing", file=sys.stderr)
    finally:
        force_unmount(mountpoint, pid)


class Cores:
    """CPU seconds per wall second from construction to busy(): the client (this process's
    waited-for children, e.g. cp or rsync, or this process itself), the daemon, the server."""

    def __init__(self, daemon: int | None, server: int | None, children: bool = True) -> None:
        self.pids, self.children = (daemon, server), children
        self.before = self._now()

    def _now(self) -> list[float]:
        if self.children:
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            client = usage.ru_utime + usage.ru_stime
        else:
            client = sum(os.times()[:2])
        return [client, *(cpu_seconds(pid) if pid else 0.0 for pid in self.pids)]

    def busy(self, seconds: float) -> dict:
        client, daemon, server = ((a - b) / seconds for a, b in zip(self._now(), self.before))
        return dict(client=client, daemon=daemon if self.pids[0] else None,
                    server=server if self.pids[1] else None)


class Sampler(threading.Thread):
    """Every 50 ms until stop(): VmRSS of `pid` (peak kept), and the first time `watch` (a file
    in a mount being written) reaches `size` bytes, i.e. when cp's writes were all done."""

    def __init__(self, pid: int, watch: Path, size: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.watch, self.size = pid, watch, size
        self.peak, self.written_at, self.done = 0, None, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            try:
                self.peak = max(self.peak, proc_field(f"/proc/{self.pid}/status", "VmRSS"))
                if self.written_at is None and os.stat(self.watch).st_size >= self.size:
                    self.written_at = time.perf_counter()
            except FileNotFoundError:
                pass  # cp has not created the file yet

    def stop(self) -> None:
        self.done.set()
        self.join()


def timed_cp(source: Path, target: Path, size: int, daemon: int, server: int | None) -> dict:
    """cp source target -> seconds, MB/s, cores busy (cp, FUSE daemon, server), the seconds
    after the last write (close: the archive completing) and the daemon's peak VmRSS."""
    warm([source])
    cores = Cores(daemon, server)
    sampler = Sampler(daemon, target, size)
    sampler.start()
    start = time.perf_counter()
    try:
        subprocess.run(["cp", str(source), str(target)], check=True,
                       timeout=60 + size / (5 * MiB))
    finally:
        end = time.perf_counter()
        sampler.stop()
    seconds = end - start
    return dict(seconds=seconds, mbps=size / seconds / 1e6,
                finish=end - (sampler.written_at or end), rss_peak=sampler.peak,
                rss_end=proc_field(f"/proc/{daemon}/status", "VmRSS"), **cores.busy(seconds))


def run_or_fail(argv: list[str], **kwargs) -> None:
    """Run a command; RuntimeError with its stderr if it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        name = " ".join(argv[2:4] if argv[0] == sys.executable else argv[:1])
        raise RuntimeError(f"{name} failed ({done.returncode}): {done.stderr[-2000:]}")


@contextmanager
def glacierfs_mount(tmp: Path, name: str, url: str, data: Path, vault: str = VAULT,
                    extra: tuple[str, ...] = ()):
    """A fresh mount (64 MiB parts, 2 GiB cache, THREADS upload threads, a new vault, `extra`
    options) on the server serving `data` -> (mountpoint, daemon pid); unmounted and its cache
    deleted."""
    mnt, cache = tmp / f"{name}-mnt", tmp / f"{name}-cache"
    mnt.mkdir()
    pid = None
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(data / "credentials"),
               AWS_CONFIG_FILE=str(data / "config"), AWS_EC2_METADATA_DISABLED="true")
    try:
        run_or_fail([*GLACIERFS, "mount", vault, str(mnt), "--endpoint-url", url,
                     "--create-vault", "--cache-dir", str(cache), "--part-size", "64M",
                     "--cache-size", "2G", "--upload-threads", str(THREADS), *extra],
                    env=env, timeout=60)
        pid = int(pid_file(mnt).read_text())
        yield mnt, pid
    finally:
        unmount(mnt, pid, [*GLACIERFS, "umount", str(mnt)])
        shutil.rmtree(cache, ignore_errors=True)


def glacierfs_cp(tmp: Path, name: str, source: Path, size: int) -> dict:
    """cp into a fresh mount on a fresh server: timings, daemon RSS and write_bytes."""
    data = tmp / f"{name}-server"
    with serve(data) as (url, server_pid, _), glacierfs_mount(tmp, name, url, data) as (mnt, pid):
        io = f"/proc/{pid}/io"
        io_before = [proc_field(io, "write_bytes"), proc_field(io, "cancelled_write_bytes")]
        result = dict(rss_before=proc_field(f"/proc/{pid}/status", "VmRSS"))
        result.update(timed_cp(source, mnt / "file.bin", size, pid, server_pid))
        result.update(hwm=proc_field(f"/proc/{pid}/status", "VmHWM"),
                      written=proc_field(io, "write_bytes") - io_before[0],
                      cancelled=proc_field(io, "cancelled_write_bytes") - io_before[1])
        if os.stat(mnt / "file.bin").st_size != size:
            raise RuntimeError("the copy in the mount has the wrong size")
        return result


def boto3_client(url: str, keys: dict):
    """A plain boto3 Glacier client (no retries) for up to THREADS threads."""
    return boto3.client(
        "glacier", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id=keys["aws_access_key_id"],
        aws_secret_access_key=keys["aws_secret_access_key"],
        config=Config(retries={"total_max_attempts": 1}, read_timeout=120,
                      max_pool_connections=THREADS))


def boto3_upload(tmp: Path, name: str, source: Path, size: int) -> dict:
    """A plain boto3 multipart upload of the file to a fresh server, THREADS parts at a time."""
    with serve(tmp / f"{name}-server") as (url, server_pid, keys):
        client = boto3_client(url, keys)
        client.create_vault(vaultName=VAULT)

        def send(index: int) -> str:
            with open(source, "rb") as src:
                body = os.pread(src.fileno(), PART, index * PART)
            first = index * PART
            return client.upload_multipart_part(
                vaultName=VAULT, uploadId=upload_id, body=body,
                range=f"bytes {first}-{first + len(body) - 1}/*")["checksum"]

        warm([source])
        cores = Cores(None, server_pid, children=False)
        start = time.perf_counter()
        upload_id = client.initiate_multipart_upload(
            vaultName=VAULT, partSize=str(PART))["uploadId"]
        with ThreadPoolExecutor(THREADS) as pool:
            checksums = list(pool.map(send, range(-(-size // PART))))
        parts_done = time.perf_counter()
        client.complete_multipart_upload(vaultName=VAULT, uploadId=upload_id,
                                         archiveSize=str(size), checksum=combine_hex(checksums))
        end = time.perf_counter()
        client.close()
        return dict(seconds=end - start, mbps=size / (end - start) / 1e6, finish=end - parts_done,
                    **cores.busy(end - start))


@contextmanager
def passthrough_mount(tmp: Path, name: str):
    """The minimal mfusepy filesystem above, mounted -> (mountpoint, its pid); unmounted."""
    backing, mnt, log = tmp / f"{name}-backing", tmp / f"{name}-mnt", tmp / f"{name}.log"
    backing.mkdir()
    mnt.mkdir()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", PASSTHROUGH_FS, str(backing), str(mnt)],
                                stdout=out, stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not is_mounted(mnt) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not is_mounted(mnt):
            raise RuntimeError(f"the passthrough FS did not mount: {log.read_text()[-2000:]}")
        yield mnt, proc.pid
    finally:
        unmount(mnt, None, ["fusermount3", "-u", str(mnt)])
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(backing, ignore_errors=True)


def passthrough_cp(tmp: Path, name: str, source: Path, size: int) -> dict:
    with passthrough_mount(tmp, name) as (mnt, pid):
        return timed_cp(source, mnt / "file.bin", size, pid, None)


WAYS = {"glacierfs cp": glacierfs_cp, "boto3 multipart upload": boto3_upload,
        "passthrough FUSE cp": passthrough_cp}


# ---- 4. many small files ----------------------------------------------------------------------


def make_tree(root: Path, files: int, seed: int) -> list[Path]:
    """`files` files of SMALL_MIN..SMALL_MAX random bytes (sizes and bytes drawn from `seed`),
    spread over 10 directories with 5 subdirectories each; returns their paths."""
    rng = random.Random(seed)
    tops = [root / f"d{a}" for a in range(10)]
    folders = tops + [top / f"s{b}" for top in tops for b in range(5)]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(files):
        path = rng.choice(folders) / f"f{index:05d}.bin"
        path.write_bytes(rng.randbytes(rng.randint(SMALL_MIN, SMALL_MAX)))
        paths.append(path)
    return paths


@dataclass
class SmallRun:
    """One round of part 4: the tree, and the server both ways send it to."""

    tmp: Path
    root: Path
    files: list[Path]
    sizes: Counter  # size -> how many files have it
    url: str
    data: Path
    server_pid: int
    client: object  # boto3 Glacier client, for the loop and the checks
    profile_dir: Path | None

    def requests(self) -> Counter:
        return Counter(remote_stats(self.url)["requests"])

    def check_vault(self, vault: str, way: str) -> None:
        """The vault's inventory holds exactly one archive per file, with the files' sizes."""
        job = self.client.initiate_job(vaultName=vault,
                                       jobParameters={"Type": "inventory-retrieval"})
        output = self.client.get_job_output(vaultName=vault, jobId=job["jobId"])
        archives = [a for a in json.loads(output["body"].read())["ArchiveList"]
                    if snapshot.described(a["ArchiveDescription"]) is None]  # the catalog's
        if Counter(archive["Size"] for archive in archives) != self.sizes:
            raise RuntimeError(f"{way}: the vault holds {len(archives)} archives, not one per "
                               f"file ({len(self.files)}) with the files' sizes")

    @contextmanager
    def profiled(self, pid: int, name: str):
        """py-spy record of `pid` while the block runs, if --profile was given."""
        if self.profile_dir is None:
            yield
            return
        out = self.profile_dir / f"{name}.txt"
        spy = subprocess.Popen(
            [str(PY_SPY), "record", "--pid", str(pid),
             "--format", "raw", "--idle", "--nonblocking", "--rate", "100", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            time.sleep(1)  # attached before the timing starts
            yield
        finally:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()


def timed_small(run: SmallRun, name: str, daemon: int | None, send) -> dict:
    """Time send() (which sends the whole tree) -> seconds, files/s, MB/s, cores busy, and the
    server's request counts per operation during it."""
    warm(run.files)
    before = run.requests()
    with run.profiled(daemon or os.getpid(), name):
        cores = Cores(daemon, run.server_pid, children=daemon is not None)
        start = time.perf_counter()
        send()
        seconds = time.perf_counter() - start
        result = dict(seconds=seconds, files_per_s=len(run.files) / seconds,
                      mbps=sum(size * n for size, n in run.sizes.items()) / seconds / 1e6,
                      **cores.busy(seconds))
    result["requests"] = run.requests() - before
    result["requests_per_file"] = sum(result["requests"].values()) / len(run.files)
    return result


def rsync_tree(run: SmallRun, dest: Path) -> None:
    """`rsync -a` of the tree into dest (a directory in a FUSE mount)."""
    run_or_fail(["rsync", "-a", f"{run.root}/", f"{dest}/"], timeout=120 + len(run.files))


def timed_rsync(run: SmallRun, name: str, daemon: int, dest: Path) -> dict:
    """timed_small of rsync_tree."""
    return timed_small(run, name, daemon, lambda: rsync_tree(run, dest))


def glacierfs_rsync(run: SmallRun, name: str, async_close: bool = False) -> dict:
    """rsync -a of the tree into a fresh mount (its own vault on the round's server). With
    async_close the timing runs on until the server has every file's UploadArchive, and
    "rsync_seconds" says when rsync itself exited."""
    extra = ("--async-close",) if async_close else ()
    with glacierfs_mount(run.tmp, name, run.url, run.data, name, extra) as (mnt, pid):
        dest = mnt / "dest"
        if async_close:
            box: dict = {}
            result = timed_small(run, name, pid, lambda: async_rsync(run, dest, box))
            result["rsync_seconds"] = box["rsync_seconds"]
        else:
            result = timed_rsync(run, name, pid, dest)
        listed = Counter(os.stat(os.path.join(folder, file)).st_size
                         for folder, _, names in os.walk(dest) for file in names)
        if listed != run.sizes:
            raise RuntimeError(f"rsync: the mount lists {sum(listed.values())} files, not the "
                               f"{len(run.files)} of the tree with their sizes")
    run.check_vault(name, "rsync")
    return result


def async_rsync(run: SmallRun, dest: Path, box: dict) -> None:
    """rsync -a into a --async-close mount, then wait until the server has received one
    UploadArchive per file (every file is under one part)."""
    start = time.perf_counter()
    before = run.requests()["UploadArchive"]
    rsync_tree(run, dest)
    box["rsync_seconds"] = time.perf_counter() - start
    deadline = time.monotonic() + 120 + len(run.files)
    while run.requests()["UploadArchive"] - before < len(run.files):
        if time.monotonic() > deadline:
            raise RuntimeError("async close: the uploads did not all arrive")
        time.sleep(0.02)


def glacierfs_async_rsync(run: SmallRun, name: str) -> dict:
    return glacierfs_rsync(run, name, async_close=True)


def boto3_loop(run: SmallRun, name: str) -> dict:
    """One boto3 client, one file after the other: walk the tree, read, upload_archive."""
    run.client.create_vault(vaultName=name)

    def send() -> None:
        for folder, subfolders, names in os.walk(run.root):
            subfolders.sort()
            for file in sorted(names):
                path = os.path.join(folder, file)
                with open(path, "rb") as src:
                    body = src.read()
                run.client.upload_archive(vaultName=name, body=body,
                                          archiveDescription=os.path.relpath(path, run.root))

    result = timed_small(run, name, None, send)
    run.check_vault(name, "boto3 loop")
    return result


def passthrough_rsync(run: SmallRun, name: str) -> dict:
    """rsync -a of the tree into the minimal mfusepy filesystem: what rsync through a Python
    FUSE filesystem costs here with no vault behind it."""
    with passthrough_mount(run.tmp, name) as (mnt, pid):
        return timed_rsync(run, name, pid, mnt / "dest")


SMALL_WAYS = {"glacierfs rsync -a": glacierfs_rsync, "boto3 upload_archive loop": boto3_loop,
              "passthrough FUSE rsync -a": passthrough_rsync,
              "glacierfs --async-close": glacierfs_async_rsync}


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def print_table(rounds: dict[str, list[dict]], key: str, label: str, width: int,
                columns: list[tuple[str, str, int, int]]) -> dict[str, dict]:
    """One line per way: its best round (highest `key`) in `columns` (header, row key, width,
    decimals; the row key "busy" stands for the cores-busy columns client, FUSE and server),
    then `key` of every round. Returns the best rounds."""
    busy = [("client", "client", 7, 2), ("FUSE", "daemon", 6, 2), ("server", "server", 6, 2)]

    def cells(row: dict | None) -> str:
        """The header's cells (row None) or a row's."""
        out = []
        for column in columns:
            for header, name, size, decimals in busy if column[1] == "busy" else [column]:
                value = header if row is None else "-" if row[name] is None else (
                    f"{row[name]:.{decimals}f}")
                out.append(f"{value:>{size}}")
        return " ".join(out)

    best = {way: max(results, key=lambda r: r[key]) for way, results in rounds.items()}
    print(f"{'':<{width}} {cells(None)}  {label} of each round")
    for way, row in best.items():
        print(f"{way:<{width}} {cells(row)}  " + " ".join(f"{r[key]:.0f}" for r in rounds[way]))
    return best


def cpu_per_unit(row: dict, units: float) -> float:
    """CPU seconds of a timed round (client + FUSE daemon + server) per unit of work."""
    busy = sum(row[name] or 0.0 for name in ("client", "daemon", "server"))
    return busy * row["seconds"] / units


def cpu_ceiling(best: dict[str, dict], units: float, ours: list[str], upload: str,
                passthrough: str, unit: str) -> None:
    """Print what this machine's cores allow a mount at most.

    A mount does at least what the passthrough does (rsync or cp through FUSE into files on
    disk) and what the boto3 way does (read, hash, send; the server's share), on the same
    cores: the sum of their CPU per unit is a floor under the mount's. Kernel work outside the
    three processes (page writeback) is not counted, so the true ceiling is lower still."""
    cores = os.cpu_count() or 1
    key, rate = {"MB": ("mbps", "MB/s"), "file": ("files_per_s", "files/s")}[unit]
    floor = {way: cpu_per_unit(best[way], units) for way in (upload, passthrough)}
    most = cores / sum(floor.values())
    spent = ", ".join(f"{way} {cpu_per_unit(best[way], units) * 1e3:.2f}" for way in ours)
    print(f"CPU ms per {unit}: {upload} {floor[upload] * 1e3:.2f} + {passthrough} "
          f"{floor[passthrough] * 1e3:.2f} = {sum(floor.values()) * 1e3:.2f}, so {cores} cores "
          f"allow a mount at most {most:.0f} {rate} = {most / best[upload][key]:.2f} x "
          f"{upload}, {most / best[passthrough][key]:.2f} x {passthrough}; spent: {spent}")


def in_order(ways: dict, round_index: int) -> list[str]:
    """Every way once a round, the order reversed every other round (no way always first)."""
    return list(ways)[::-1 if round_index % 2 else 1]


def report_cp(size: int, rounds: dict[str, list[dict]], rss: dict[int, dict]) -> None:
    print(f"\n1. Throughput, one {size / MiB:.0f} MiB file: best of {len(rounds['glacierfs cp'])}"
          " rounds (cores busy: CPU s / wall s)")
    best = print_table(rounds, "mbps", "MB/s", 24, [
        ("seconds", "seconds", 8, 2), ("finish", "finish", 7, 2), ("MB/s", "mbps", 7, 1),
        ("", "busy", 0, 0)])
    ours = best["glacierfs cp"]["mbps"]
    for way, goal in (("boto3 multipart upload", 0.9), ("passthrough FUSE cp", 0.8)):
        ratio = ours / best[way]["mbps"]
        print(f"glacierfs cp / {way:<23} {ratio:5.2f}  goal >= {goal:.2f}: "
              f"{verdict(ratio >= goal)}")
    cpu_ceiling(best, size / 1e6, ["glacierfs cp"], "boto3 multipart upload",
                "passthrough FUSE cp", "MB")

    print("\n2. Mount daemon memory, a fresh mount (and server) per size")
    print(f"{'file MiB':>8} {'MB/s':>7} {'RSS idle':>9} {'RSS end':>9} {'RSS peak':>9} "
          f"{'VmHWM':>9}  (MiB; idle: before cp, end: when cp exits)")
    for n, row in rss.items():
        print(f"{n // MiB:>8} {row['mbps']:>7.1f} {row['rss_before'] / MiB:>9.1f} "
              f"{row['rss_end'] / MiB:>9.1f} {row['rss_peak'] / MiB:>9.1f} "
              f"{row['hwm'] / MiB:>9.1f}")
    peaks = [max(row["rss_peak"], row["hwm"]) for row in rss.values()]
    growth = peaks[-1] / peaks[0]
    first, last = list(rss)[0] // MiB, list(rss)[-1] // MiB
    print(f"largest peak {max(peaks) / MiB:.1f} MiB: goal <= 200 MiB: "
          f"{verdict(max(peaks) <= 200 * MiB)}; {last} MiB peak / {first} MiB peak = "
          f"{growth:.2f}: {'flat' if growth <= 1.25 else 'GROWS'}")

    worst = max(rounds["glacierfs cp"], key=lambda r: r["written"])
    ratio = worst["written"] / size
    print(f"\n3. Cache disk writes of the mount daemon per byte copied ({size / MiB:.0f} MiB copy,"
          " worst round)")
    print(f"write_bytes {worst['written'] / MiB:.1f} MiB (cancelled_write_bytes "
          f"{worst['cancelled'] / MiB:.1f} MiB): {ratio:.3f}  goal <= 1.10: "
          f"{verdict(ratio <= 1.1)}")


def report_small(files: int, total: int, rounds: dict[str, list[dict]],
                 latency_ms: float) -> None:
    count = len(next(iter(rounds.values())))
    latency = f" adding {latency_ms:g} ms to every request" if latency_ms else ""
    print(f"\n4. Many small files: {files} files of 1-64 KiB, {total / MiB:.0f} MiB in all: best "
          f"of {count} rounds, one server per round{latency} (cores busy: CPU s / wall s)")
    best = print_table(rounds, "files_per_s", "files/s", 26, [
        ("seconds", "seconds", 8, 2), ("files/s", "files_per_s", 8, 1), ("MB/s", "mbps", 6, 2),
        ("", "busy", 0, 0), ("req/file", "requests_per_file", 8, 2)])
    ours, theirs, _, early = (rounds[way] for way in SMALL_WAYS)
    fastest = {way: max(r["files_per_s"] for r in rounds[way]) for way in SMALL_WAYS}
    mount, loop, passthrough, background = fastest.values()
    ratio = mount / loop
    each = " ".join(f"{a['files_per_s'] / b['files_per_s']:.2f}" for a, b in zip(ours, theirs))
    print(f"glacierfs rsync / boto3 loop {ratio:5.2f} (each round: {each})  goal >= 0.80: "
          f"{verdict(ratio >= 0.8)}")
    # close(2) returns once the archive is in the vault, and rsync writes one file at a time:
    # each file costs at least what rsync through FUSE costs plus one upload (the loop's cost
    # per file). That bound, from this run's own figures:
    bound = 1 / (1 / passthrough + 1 / loop)
    print(f"glacierfs rsync / passthrough rsync {mount / passthrough:5.2f}; bound for a "
          f"synchronous close: 1 / (1/{passthrough:.0f} + 1/{loop:.0f}) = {bound:.0f} files/s, "
          f"{bound / loop:.2f} x the loop; glacierfs reaches {mount / bound:.2f} of that bound")
    each = " ".join(f"{a['files_per_s'] / b['files_per_s']:.2f}" for a, b in zip(early, theirs))
    rsync_exit = min(r["rsync_seconds"] for r in early)
    print(f"glacierfs --async-close / boto3 loop {background / loop:5.2f} (each round: {each}), "
          f"timed until every archive is in the vault; rsync itself exited after "
          f"{rsync_exit:.2f} s ({files / rsync_exit:.0f} files/s) at best. Goal >= 0.80: "
          f"{verdict(background / loop >= 0.8)}")
    cpu_ceiling(best, files, ["glacierfs rsync -a", "glacierfs --async-close"],
                "boto3 upload_archive loop", "passthrough FUSE rsync -a", "file")
    requests = best["glacierfs rsync -a"]["requests"]
    print("requests per file from the mount: " + (", ".join(
        f"{op} {n / files:.2f}" for op, n in sorted(requests.items())) or "none"))


def cp_parts(tmp: Path, size: int, rss_sizes: list[int], rounds_wanted: int) -> tuple:
    """Parts 1-3 -> (rounds, rss) for report_cp."""
    rounds: dict[str, list[dict]] = {way: [] for way in WAYS}
    source = make_source(tmp / "source.bin", size)
    try:
        for r in range(rounds_wanted):
            for way in in_order(WAYS, r):
                tag = way.split()[0]
                rounds[way].append(WAYS[way](tmp, f"{tag}-{r}", source, size))
                print(f"round {r + 1}: {way}: {rounds[way][-1]['mbps']:.0f} MB/s", flush=True)
    finally:
        source.unlink()
    rss = {}
    for n in rss_sizes:
        source = make_source(tmp / f"source-{n // MiB}M.bin", n)
        try:
            rss[n] = glacierfs_cp(tmp, f"rss-{n // MiB}M", source, n)
        finally:
            source.unlink()
    return rounds, rss


def small_part(tmp: Path, files: int, seed: int, rounds_wanted: int, latency_ms: float,
               profile_dir: Path | None) -> tuple:
    """Part 4 -> (total bytes, rounds) for report_small."""
    root = tmp / "tree"
    paths = make_tree(root, files, seed)
    sizes = Counter(path.stat().st_size for path in paths)
    rounds: dict[str, list[dict]] = {way: [] for way in SMALL_WAYS}
    try:
        for r in range(rounds_wanted):
            data = tmp / f"small-{r}-server"
            with serve(data, latency_ms) as (url, server_pid, keys):
                client = boto3_client(url, keys)
                run = SmallRun(tmp, root, paths, sizes, url, data, server_pid, client,
                               profile_dir)
                for way in in_order(SMALL_WAYS, r):
                    # distinct from part 1's mounts and from each other; also the vault name
                    tag = "small-" + re.sub(r"[^a-z0-9]+", "-", way.lower()).strip("-")
                    rounds[way].append(SMALL_WAYS[way](run, f"{tag}-{r}"))
                    print(f"round {r + 1}: {way}: {rounds[way][-1]['files_per_s']:.1f} files/s",
                          flush=True)
                client.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return sum(size * n for size, n in sizes.items()), rounds


def main() -> None:
    global PREWARM
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("cp", "rsync"),
                        help="cp: parts 1-3 only; rsync: part 4 only (default: everything)")
    parser.add_argument("--size-gib", type=float, default=2, help="file size for parts 1 and 3")
    parser.add_argument("--rss-sizes", default="1,4", help="GiB, comma-separated, for part 2")
    parser.add_argument("--files", type=int, default=5000, help="part 4: files in the tree")
    parser.add_argument("--seed", type=int, default=1, help="part 4: sizes and bytes of the tree")
    parser.add_argument("--latency", type=float, default=0, metavar="MS",
                        help="part 4: the server adds MS to every request (default 0)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of parts 1 and 4; the best is shown")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 0.25 GiB; 0.25,0.5; 500 files")
    parser.add_argument("--no-prewarm", action="store_true",
                        help="do not warm memory before each timing (see warm())")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="part 4: py-spy raw stacks of the daemon / the boto3 loop into DIR")
    options = parser.parse_args()
    if options.quick:
        options.size_gib, options.rss_sizes, options.files = 0.25, "0.25,0.5", 500
    PREWARM = not options.no_prewarm
    size = int(options.size_gib * GiB) // MiB * MiB
    rss_sizes = [int(float(s) * GiB) // MiB * MiB for s in options.rss_sizes.split(",")]
    cp, small = options.only in (None, "cp"), options.only in (None, "rsync")
    if options.profile:
        if not PY_SPY.exists():
            sys.exit(f"error: --profile needs {PY_SPY}: {PY_SPY.parent}/pip install py-spy")
        options.profile.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="glacierfs-bench-") as name:
        tmp = Path(name)
        # Peak disk: a source file, its copy in the server and up to CACHE of cache parts; the
        # tree, its copies in two vaults and in the mount's cache.
        need = GiB + max(
            [2 * n + min(n, CACHE) for n in [size, *rss_sizes] if cp]
            + [4 * options.files * (SMALL_MIN + SMALL_MAX) // 2 if small else 0])
        free = shutil.disk_usage(tmp).free
        if free < need:
            sys.exit(f"error: {tmp} has {free / GiB:.1f} GiB free; this run needs "
                     f"{need / GiB:.1f} GiB")
        print(f"temporary directory {tmp} ({free / GiB:.0f} GiB free); part size "
              f"{PART // MiB} MiB, {THREADS} upload threads, cache {CACHE // GiB} GiB; memory "
              f"{'prewarmed' if PREWARM else 'NOT prewarmed'}; load average "
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
        if cp:
            rounds, rss = cp_parts(tmp, size, rss_sizes, options.rounds)
        if small:
            total, small_rounds = small_part(tmp, options.files, options.seed, options.rounds,
                                             options.latency, options.profile)
    if cp:
        report_cp(size, rounds, rss)
    if small:
        report_small(options.files, total, small_rounds, options.latency)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f} (other work on the machine skews "
          "a single run)")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted (mounts, servers and temporary files were cleaned up)")
