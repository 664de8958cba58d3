"""How does `cp` into a glacierfs mount compare with what the same bytes cost without it?

    .venv/bin/python scripts/bench.py [--size-gib 2] [--rss-sizes 1,4] [--rounds 2] [--quick]
                                      [--no-prewarm]

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

Everything runs on 127.0.0.1 inside one temporary directory on local disk. Source files and
server data are deleted after each measurement. Mounts, servers and the passthrough process
are always unmounted/stopped in finally blocks, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import configparser
import mmap
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from glacierfs.mount import is_mounted, pid_file  # noqa: E402
from glacierfs.treehash import combine_hex  # noqa: E402

MiB, GiB = 1 << 20, 1 << 30
PART, THREADS, CACHE = 64 * MiB, 4, 2 * GiB
VAULT = "bench"
GLACIERFS = [sys.executable, "-m", "glacierfs"]
PREWARM = True  # --no-prewarm turns it off

# argv: BACKING_DIR MOUNTPOINT. Every operation cp needs, straight to the backing directory.
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
    def create(self, path, mode, fi=None):
        return os.open(self.root + path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    def open(self, path, flags): return os.open(self.root + path, flags)
    def write(self, path, data, offset, fh): return os.pwrite(fh, data, offset)
    def truncate(self, path, length, fh=None): os.truncate(self.root + path, length)
    def flush(self, path, fh): return 0
    def release(self, path, fh): os.close(fh); return 0
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


def warm(source: Path) -> None:
    """The same starting point for every timing: the source in the page cache (read once
    more: this VM pages out memory idle for a minute), memory warm, and no dirty pages (so no
    writeback of earlier files lands inside the timing).

    Warm memory: this VM hands free memory back to its host (virtio-balloon free page
    reporting), and the first touch of such a page costs a host fault: new page cache then
    fills at ~0.4 GB/s instead of several GB/s, so whichever way needs the most fresh pages,
    or runs first, pays for it. Touching and freeing 3x the file size of anonymous memory just
    before the timing leaves warm free pages behind, as on an ordinary machine."""
    with open(source, "rb") as src:
        while src.read(PART):
            pass
    if PREWARM:
        room = proc_field("/proc/meminfo", "MemAvailable") - 2 * GiB
        chunks = max(1, min(3 * source.stat().st_size + GiB, room) // PART)
        with mmap.mmap(-1, chunks * PART) as memory:
            zeros = bytes(PART)
            for _ in range(chunks):
                memory.write(zeros)
    os.sync()


@contextmanager
def serve(data_dir: Path):
    """A fresh `glacierfs serve` process -> (url, pid, keys); stopped and its data deleted."""
    log = data_dir.with_suffix(".log")
    with open(log, "wb") as err:  # own session: Ctrl-C must not stop it before the unmount
        proc = subprocess.Popen([*GLACIERFS, "serve", "--data-dir", str(data_dir), "--port", "0",
                                 "--log-level", "warning"], stdout=subprocess.PIPE, stderr=err,
                                start_new_session=True)
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
        if is_mounted(mountpoint):
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


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
    warm(source)
    before = (resource.getrusage(resource.RUSAGE_CHILDREN), cpu_seconds(daemon),
              cpu_seconds(server) if server else 0.0)
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
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return dict(seconds=seconds, mbps=size / seconds / 1e6,
                finish=end - (sampler.written_at or end), rss_peak=sampler.peak,
                rss_end=proc_field(f"/proc/{daemon}/status", "VmRSS"),
                client=(after.ru_utime + after.ru_stime - before[0].ru_utime
                        - before[0].ru_stime) / seconds,
                daemon=(cpu_seconds(daemon) - before[1]) / seconds,
                server=(cpu_seconds(server) - before[2]) / seconds if server else None)


def glacierfs_cp(tmp: Path, name: str, source: Path, size: int) -> dict:
    """cp into a fresh mount on a fresh server: timings, daemon RSS and write_bytes."""
    mnt, cache, data = tmp / f"{name}-mnt", tmp / f"{name}-cache", tmp / f"{name}-server"
    mnt.mkdir()
    pid = None
    with serve(data) as (url, server_pid, _):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_SHARED_CREDENTIALS_FILE=str(data / "credentials"),
                   AWS_CONFIG_FILE=str(data / "config"), AWS_EC2_METADATA_DISABLED="true")
        try:
            subprocess.run([*GLACIERFS, "mount", VAULT, str(mnt), "--endpoint-url", url,
                            "--create-vault", "--cache-dir", str(cache), "--part-size", "64M",
                            "--cache-size", "2G", "--upload-threads", str(THREADS)],
                           env=env, check=True, timeout=60, capture_output=True)
            pid = int(pid_file(mnt).read_text())
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
        except subprocess.CalledProcessError as error:
            raise RuntimeError(f"{error.cmd[2:4]} failed: {error.stderr}") from None
        finally:
            unmount(mnt, pid, [*GLACIERFS, "umount", str(mnt)])
            shutil.rmtree(cache, ignore_errors=True)


def boto3_upload(tmp: Path, name: str, source: Path, size: int) -> dict:
    """A plain boto3 multipart upload of the file to a fresh server, THREADS parts at a time."""
    with serve(tmp / f"{name}-server") as (url, server_pid, keys):
        client = boto3.client(
            "glacier", endpoint_url=url, region_name="us-east-1",
            aws_access_key_id=keys["aws_access_key_id"],
            aws_secret_access_key=keys["aws_secret_access_key"],
            config=Config(retries={"total_max_attempts": 1}, read_timeout=120,
                          max_pool_connections=THREADS))
        client.create_vault(vaultName=VAULT)

        def send(index: int) -> str:
            with open(source, "rb") as src:
                body = os.pread(src.fileno(), PART, index * PART)
            first = index * PART
            return client.upload_multipart_part(
                vaultName=VAULT, uploadId=upload_id, body=body,
                range=f"bytes {first}-{first + len(body) - 1}/*")["checksum"]

        warm(source)
        before = (sum(os.times()[:2]), cpu_seconds(server_pid))
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
                    client=(sum(os.times()[:2]) - before[0]) / (end - start), daemon=None,
                    server=(cpu_seconds(server_pid) - before[1]) / (end - start))


def passthrough_cp(tmp: Path, name: str, source: Path, size: int) -> dict:
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
        return timed_cp(source, mnt / "file.bin", size, proc.pid, None)
    finally:
        unmount(mnt, None, ["fusermount3", "-u", str(mnt)])
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(backing, ignore_errors=True)


WAYS = {"glacierfs cp": glacierfs_cp, "boto3 multipart upload": boto3_upload,
        "passthrough FUSE cp": passthrough_cp}


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def report(size: int, rounds: dict[str, list[dict]], rss: dict[int, dict]) -> None:
    def cores(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    best = {way: max(results, key=lambda r: r["mbps"]) for way, results in rounds.items()}
    print(f"\n1. Throughput, one {size / MiB:.0f} MiB file: best of {len(rounds['glacierfs cp'])}"
          " rounds (cores busy: CPU s / wall s)")
    print(f"{'':<24} {'seconds':>8} {'finish':>7} {'MB/s':>7} {'client':>7} {'FUSE':>6} "
          f"{'server':>6}  MB/s of each round")
    for way, row in best.items():
        each = " ".join(f"{r['mbps']:.0f}" for r in rounds[way])
        print(f"{way:<24} {row['seconds']:>8.2f} {row['finish']:>7.2f} {row['mbps']:>7.1f} "
              f"{cores(row['client']):>7} {cores(row['daemon']):>6} {cores(row['server']):>6}"
              f"  {each}")
    ours = best["glacierfs cp"]["mbps"]
    for way, goal in (("boto3 multipart upload", 0.9), ("passthrough FUSE cp", 0.8)):
        ratio = ours / best[way]["mbps"]
        print(f"glacierfs cp / {way:<23} {ratio:5.2f}  goal >= {goal:.2f}: "
              f"{verdict(ratio >= goal)}")

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


def main() -> None:
    global PREWARM
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gib", type=float, default=2, help="file size for parts 1 and 3")
    parser.add_argument("--rss-sizes", default="1,4", help="GiB, comma-separated, for part 2")
    parser.add_argument("--rounds", type=int, default=2, help="part 1 rounds; best is shown")
    parser.add_argument("--quick", action="store_true", help="smoke run: 0.25 GiB; 0.25,0.5")
    parser.add_argument("--no-prewarm", action="store_true",
                        help="do not warm memory before each timing (see warm())")
    options = parser.parse_args()
    if options.quick:
        options.size_gib, options.rss_sizes = 0.25, "0.25,0.5"
    PREWARM = not options.no_prewarm
    size = int(options.size_gib * GiB) // MiB * MiB
    rss_sizes = [int(float(s) * GiB) // MiB * MiB for s in options.rss_sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="glacierfs-bench-") as name:
        tmp = Path(name)
        # Peak disk: a source file, its copy in the server and up to CACHE of cache parts.
        need = max(2 * n + min(n, CACHE) for n in [size, *rss_sizes]) + GiB
        free = shutil.disk_usage(tmp).free
        if free < need:
            sys.exit(f"error: {tmp} has {free / GiB:.1f} GiB free; this run needs "
                     f"{need / GiB:.1f} GiB")
        print(f"temporary directory {tmp} ({free / GiB:.0f} GiB free); part size "
              f"{PART // MiB} MiB, {THREADS} upload threads, cache {CACHE // GiB} GiB; memory "
              f"{'prewarmed' if PREWARM else 'NOT prewarmed'}; load average "
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)

        rounds: dict[str, list[dict]] = {way: [] for way in WAYS}
        source = make_source(tmp / "source.bin", size)
        try:
            for r in range(options.rounds):
                for way in list(WAYS)[::-1 if r % 2 else 1]:
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
    report(size, rounds, rss)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f} (other work on the machine skews "
          "a single run)")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted (mounts, servers and temporary files were cleaned up)")
