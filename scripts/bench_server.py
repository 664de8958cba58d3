"""How fast does `glacierfs serve` ingest UploadMultipartPart bodies, next to what loopback TCP
itself carries on this machine?

    .venv/bin/python scripts/bench_server.py [--total-mib 512] [--rounds 3]
                                             [--compare-waitress] [--profile]

The machine is small (2 cores) and shared, so absolute MB/s drift between runs: compare rows of
one run, as ratios. Each round measures every row once; the table shows the best round per row
(and all rounds). MB/s = 10^6 payload bytes per second.

- Ingest: boto3 clients in this process send 8 MiB parts to `python -m glacierfs serve`, a
  separate process (cheroot + werkzeug, 16 worker threads), with 1 and 4 client threads. Each
  thread has its own client; all threads write distinct ranges of the SAME multipart upload
  (thread t sends parts t+1, t+1+n, ...; each client first sends part 0 as a warm-up). A new
  upload per measurement, aborted afterwards so the disk does not fill.
  "precomputed hashes": every part's tree hash and SHA-256 are computed before timing and passed
  (checksum= and the x-amz-content-sha256 header), leaving the CPUs to the server. The header is
  set by a before-call handler registered FIRST: botocore's own before-call handler
  (add_glacier_checksums) hashes the body unless the header is already set, and a before-sign
  handler would run after that. "botocore hashes": the plain client hashes each part twice.
- Ceiling: a raw loopback socket copy of as many bytes, 1 and 4 stream pairs (sender threads
  sendall 8 MiB buffers; receiver threads recv_into a 1 MiB buffer and discard it).
- CPU columns: cores busy during the timed part (CPU seconds / wall seconds), for this process
  (clients; both socket ends for the raw copy) and the server process. Two cores = 2.0 in all.
- --compare-waitress: the same GlacierApp served by waitress (the [bench] extra), to back the
  README's choice of cheroot with a figure: with waitress's defaults, and tuned (1 MiB reads,
  bodies up to 64 MiB buffered in RAM instead of spooled to a temporary file).
- --profile: one more 4-client run with the server profiled; top entries printed after it
  stops. `python -m cProfile -m glacierfs serve` would profile only the main thread, which just
  waits for SIGTERM, so a small wrapper gives every thread its own cProfile profiler and merges
  them when `glacierfs serve` returns. Idle waits are left out of the listings.

Everything stays on 127.0.0.1; data directories live in a temporary directory removed at exit.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import os
import pstats
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from glacierfs.treehash import tree_hash  # noqa: E402

MiB = 1 << 20
TARGET_MBPS = 400
VAULT = "bench"
# Profile entries left out: threads waiting for work (and the main thread waiting for SIGTERM).
IDLE = (r"^(?!.*(acquire|threading\.py|queue\.py|epoll|threadpool\.py|connections\.py|sleep"
        r"|selectors\.py|unservicable|click|cli\.py|\(serve\)))")

# argv: DATA_DIR THREADS TUNED. GlacierApp served by waitress; prints the endpoint URL first.
# Untuned: waitress defaults (8 KiB recv; bodies over 512 KiB spooled to a temporary file).
# Tuned: 1 MiB recv and bodies up to 64 MiB kept in RAM (not an option for 4 GiB parts).
WAITRESS_RUNNER = r"""
import signal, sys
from pathlib import Path
import waitress
from glacierfs.server.app import GlacierApp
from glacierfs.server.config import ServerConfig
from glacierfs.server.runner import load_or_create_credentials
config = ServerConfig(data_dir=Path(sys.argv[1]))
credentials, _ = load_or_create_credentials(config)  # creates DATA_DIR/credentials
app = GlacierApp(config, credentials)
tuned = dict(recv_bytes=1 << 20, inbuf_overflow=64 << 20) if sys.argv[3] == "1" else {}
server = waitress.create_server(app, host="127.0.0.1", port=0, threads=int(sys.argv[2]),
                                max_request_body_size=1 << 40, **tuned)
print(f"http://127.0.0.1:{server.effective_port}", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
try:
    server.run()  # returns on SystemExit
finally:
    app.close()
"""

# argv: OUTFILE serve-args... `glacierfs serve` with one profiler per thread, merged at exit.
PROFILE_RUNNER = r"""
import cProfile, pstats, sys, threading
profilers = [cProfile.Profile()]
def start_profiler(*_):  # first profile event of each new thread: hand over to cProfile
    profilers.append(cProfile.Profile())
    profilers[-1].enable()
threading.setprofile(start_profiler)
profilers[0].enable()
from glacierfs.cli import main
try:
    main(sys.argv[2:])
except SystemExit:
    pass
finally:
    profilers[0].disable()
    pstats.Stats(*profilers).dump_stats(sys.argv[1])
"""


class Server:
    """A server subprocess: its first stdout line is its URL; keys in DATA_DIR/credentials."""

    def __init__(self, argv: list[str], data_dir: Path) -> None:
        self.log = data_dir.with_suffix(".log")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log)
        try:
            selector = selectors.DefaultSelector()
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout=30)
            self.url = self.proc.stdout.readline().decode().strip() if ready else ""
            if not self.url.startswith("http://127.0.0.1:"):
                raise RuntimeError(f"server did not start: {self.log.read_text()[-2000:]}")
            keys = configparser.ConfigParser()
            keys.read(data_dir / "credentials")
            self.keys = dict(keys["default"])
        except BaseException:
            self.stop()
            raise

    def client(self):
        return boto3.client(
            "glacier", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id=self.keys["aws_access_key_id"],
            aws_secret_access_key=self.keys["aws_secret_access_key"],
            config=Config(retries={"total_max_attempts": 1}, read_timeout=60),
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                print(f"warning: server ignored SIGTERM; killed. See {self.log}", file=sys.stderr)
        self.proc.stdout.close()
        return self.proc.returncode


class Parts:
    """`count` parts cut from a few distinct buffers, with hashes computed once, up front."""

    def __init__(self, part_size: int, count: int, distinct: int = 4) -> None:
        self.size, self.count = part_size, count
        self.buffers = [os.urandom(part_size) for _ in range(distinct)]
        hashes = [(tree_hash(b), hashlib.sha256(b).hexdigest()) for b in self.buffers]
        self.tree, self.sha = {}, {}  # by part index, by Content-Range header
        for index in range(count + 1):
            self.tree[index], self.sha[self.range(index)] = hashes[index % distinct]

    def range(self, index: int) -> str:
        return f"bytes {index * self.size}-{(index + 1) * self.size - 1}/*"

    def body(self, index: int) -> bytes:
        return self.buffers[index % len(self.buffers)]


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process, or of process `pid` (Linux /proc)."""
    if pid is None:
        return sum(os.times()[:2])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_threads(count: int, work, server_pid: int | None = None):
    """work(i) on `count` threads released together -> (seconds, client cores, server cores)."""
    barrier = threading.Barrier(count + 1)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as error:  # raised below, once every thread has ended
            errors.append(error)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    cpu = [cpu_seconds(), cpu_seconds(server_pid) if server_pid else 0.0]
    start = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    server = (cpu_seconds(server_pid) - cpu[1]) / elapsed if server_pid else float("nan")
    return elapsed, (cpu_seconds() - cpu[0]) / elapsed, server


def ingest(server: Server, parts: Parts, threads: int, precomputed: bool):
    """(MB/s, client cores, server cores) of `threads` clients filling one multipart upload."""

    def make_client():
        client = server.client()
        if precomputed:
            client.meta.events.register_first(
                "before-call.glacier.UploadMultipartPart",
                lambda params, **_: params["headers"].__setitem__(
                    "x-amz-content-sha256", parts.sha[params["headers"]["Content-Range"]]))
        return client

    clients = [make_client() for _ in range(threads)]
    upload_id = clients[0].initiate_multipart_upload(
        vaultName=VAULT, partSize=str(parts.size))["uploadId"]

    def send(client, index: int) -> None:
        extra = {"checksum": parts.tree[index]} if precomputed else {}
        client.upload_multipart_part(vaultName=VAULT, uploadId=upload_id,
                                     range=parts.range(index), body=parts.body(index), **extra)

    try:
        for client in clients:  # warm-up: connects, and loads what each client loads lazily
            send(client, 0)
        elapsed, *cores = run_threads(threads, lambda t: [
            send(clients[t], i) for i in range(t + 1, parts.count + 1, threads)], server.proc.pid)
    finally:
        clients[0].abort_multipart_upload(vaultName=VAULT, uploadId=upload_id)
        for client in clients:
            client.close()
    return (parts.count * parts.size / elapsed / 1e6, *cores)


def socket_copy(total: int, streams: int, chunk: int):
    """(MB/s, cores, nan) of a raw loopback TCP copy of `total` bytes over `streams` pairs."""
    payload = os.urandom(chunk)
    per_stream = total // streams // chunk
    with socket.create_server(("127.0.0.1", 0), backlog=streams) as listener:
        senders = [socket.create_connection(listener.getsockname()) for _ in range(streams)]
        receivers = [listener.accept()[0] for _ in range(streams)]

    def copy(i: int) -> None:
        if i < streams:
            for _ in range(per_stream):
                senders[i].sendall(payload)
            senders[i].shutdown(socket.SHUT_WR)
        else:
            buffer = memoryview(bytearray(MiB))
            while receivers[i - streams].recv_into(buffer):
                pass

    try:
        elapsed, cores, _ = run_threads(2 * streams, copy)
    finally:
        for sock in senders + receivers:
            sock.close()
    return per_stream * streams * chunk / elapsed / 1e6, cores, float("nan")


def serve_argv(data_dir: Path, profile_out: Path | None = None) -> list[str]:
    args = ["serve", "--data-dir", str(data_dir), "--port", "0", "--log-level", "warning"]
    if profile_out is None:
        return [sys.executable, "-m", "glacierfs", *args]
    return [sys.executable, "-c", PROFILE_RUNNER, str(profile_out), *args]


def measure_server(argv: list[str], data_dir: Path, parts: Parts, cases) -> list[tuple]:
    server = Server(argv, data_dir)
    try:
        server.client().create_vault(vaultName=VAULT)
        return [ingest(server, parts, threads, precomputed) for threads, precomputed in cases]
    finally:
        code = server.stop()
        if code != 0:
            print(f"warning: server exited with {code}; its log ends:\n"
                  f"{server.log.read_text()[-1500:]}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--total-mib", type=int, default=512, help="bytes per measurement")
    parser.add_argument("--part-mib", type=int, default=8, help="part size, a power of two")
    parser.add_argument("--rounds", type=int, default=3, help="each row is the best round")
    parser.add_argument("--compare-waitress", action="store_true")
    parser.add_argument("--profile", action="store_true", help="profile a 4-client server run")
    options = parser.parse_args()
    if options.compare_waitress:
        try:
            import waitress  # noqa: F401
        except ImportError:
            sys.exit("waitress is not installed: pip install -e '.[bench]'")
    parts = Parts(options.part_mib * MiB, max(4, options.total_mib // options.part_mib))
    total = parts.count * parts.size
    cases = [(1, True), (4, True), (1, False), (4, False)]
    cheroot = {True: "glacierfs serve (cheroot), precomputed hashes",
               False: "glacierfs serve (cheroot), botocore hashes"}
    rows: dict[tuple[str, int], list[tuple]] = {}

    def add(name: str, streams: int, result: tuple) -> None:
        rows.setdefault((name, streams), []).append(result)

    with tempfile.TemporaryDirectory(prefix="glacierfs-bench-") as tmp:
        for r in range(options.rounds):
            for n in (1, 4):
                add("raw loopback socket copy", n, socket_copy(total, n, parts.size))
            data = Path(tmp, f"cheroot-{r}")
            for (n, precomputed), result in zip(
                    cases, measure_server(serve_argv(data), data, parts, cases)):
                add(cheroot[precomputed], n, result)
            for tuned in ("0", "1") if options.compare_waitress else ():
                data = Path(tmp, f"waitress-{tuned}-{r}")
                data.mkdir()
                argv = [sys.executable, "-c", WAITRESS_RUNNER, str(data), "16", tuned]
                name = "waitress tuned" if tuned == "1" else "waitress defaults"
                for (n, _), result in zip(cases, measure_server(argv, data, parts, cases[:2])):
                    add(f"{name}, precomputed hashes", n, result)
        if options.profile:
            out, data = Path(tmp, "server.prof"), Path(tmp, "profiled")
            add("glacierfs serve under cProfile (slowed)", 4,
                measure_server(serve_argv(data, out), data, parts, [(4, True)])[0])

        best = {key: max(results) for key, results in rows.items()}
        raw = {n: best["raw loopback socket copy", n][0] for n in (1, 4)}
        print(f"\n{total // MiB} MiB per measurement, {parts.size // MiB} MiB parts, best of "
              f"{options.rounds} rounds; the clients of a measurement share one upload")
        print(f"{'configuration':<46} {'streams':>7} {'MB/s':>6} {'vs raw':>6} {'cli CPU':>7} "
              f"{'srv CPU':>7}  MB/s of each round")
        for (name, streams), (mbps, cli, srv) in best.items():
            each = " ".join(f"{result[0]:.0f}" for result in rows[name, streams])
            srv = f"{srv:.2f}" if srv == srv else "-"  # nan: no server process
            print(f"{name:<46} {streams:>7} {mbps:>6.0f} {mbps / raw[streams]:>6.2f} {cli:>7.2f} "
                  f"{srv:>7}  {each}")
        target = best[cheroot[True], 4][0]
        print(f"4-client ingest, precomputed hashes: {target:.0f} MB/s vs the {TARGET_MBPS} MB/s "
              f"target: {'meets' if target >= TARGET_MBPS else 'MISSES'} it "
              f"({target / TARGET_MBPS:.2f}x)")

        if options.profile:
            if not out.exists():
                sys.exit("error: the profiled server wrote no profile (did it stop cleanly?)")
            stats = pstats.Stats(str(out))
            print(f"\nServer profile, all threads, 4 clients, idle waits left out ({out}):")
            stats.sort_stats("cumulative").print_stats(IDLE, 15)
            stats.sort_stats("tottime").print_stats(IDLE, 15)


if __name__ == "__main__":
    main()
