"""`glacierfs mount` and `glacierfs umount`: check everything, mount, and take it down cleanly.

Order matters. Every check that can fail (settings, mount point, credentials, endpoint, vault)
runs before anything is mounted, so the user gets one line and a non-zero exit. Unless
--foreground, we fork before any thread exists (libfuse's own fork after Python threads exist
hangs). The daemon then opens the cache, catalog and vault, finishes the uploads a crash
interrupted (recovery.py), reports orphan uploads, and only then mounts: the command returns
once the mount is live, printing what recovery did.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .cache import PartCache
from .catalog import Catalog
from .config import (CACHE_LOCK_FILE, CATALOG_FILE, DEFAULT_SNAPSHOT_MINUTES, CacheConfig,
                     RestoreConfig, VaultConfig)
from .dirlock import DirLock
from .errors import UserError
from .fs import GlacierFS
from .recovery import find_orphans, recover
from .upload import UploadPool
from .vault import MOUNT_PATIENCE, Vault

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MountOptions:
    vault: VaultConfig
    cache: CacheConfig
    mountpoint: Path
    local_dir: Path | None = None  # run the local vault service in-process, storing here
    foreground: bool = False
    abort_orphans: bool = False  # abort multipart uploads in the vault the journal does not know
    allow_non_empty: bool = False  # mount over a directory with entries (hiding them)
    fuse_options: dict = field(default_factory=dict)
    # minutes between catalog snapshots; 0 = at unmount only
    snapshot_interval: float = DEFAULT_SNAPSHOT_MINUTES
    restore: RestoreConfig = field(default_factory=RestoreConfig)  # the poller; restore.py


def runtime_dir() -> Path:
    base = Path("/run") if os.geteuid() == 0 else Path(
        os.environ.get("XDG_RUNTIME_DIR", f"/tmp/glacierfs-{os.getuid()}"))
    path = base / "glacierfs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def canonical(mountpoint: Path) -> Path:
    """The absolute mount point path without stat-ing it: a mount point whose daemon is busy
    (or is us, inside init) would block the caller. Only the parent is resolved."""
    mountpoint = Path(os.path.abspath(mountpoint))
    return Path(os.path.realpath(mountpoint.parent)) / mountpoint.name


def pid_file(mountpoint: Path) -> Path:
    digest = hashlib.sha256(str(canonical(mountpoint)).encode()).hexdigest()[:16]
    return runtime_dir() / f"{digest}.pid"


def is_mounted(mountpoint: Path) -> bool:
    return mount_type(mountpoint) is not None


def mount_type(mountpoint: Path) -> str | None:
    """The file system type mounted on `mountpoint` ('fuse.glacierfs' for ours), or None."""
    target = str(canonical(mountpoint))
    return next((kind for point, kind in mounts() if point == target), None)


# /proc/self/mounts writes a space, tab, newline or backslash in a mount point as \NNN (octal);
# every other byte is as it is (a UTF-8 name stays UTF-8).
_MOUNTS_ESCAPE = re.compile(rb"\\([0-7]{3})")


def mounts() -> Iterator[tuple[str, str]]:
    """(mount point, file system type) of every mount, in /proc/self/mounts order."""
    with open("/proc/self/mounts", "rb") as table:
        for line in table:
            fields = line.split()
            if len(fields) > 2:
                point = _MOUNTS_ESCAPE.sub(lambda escape: bytes([int(escape[1], 8)]), fields[1])
                yield os.fsdecode(point), os.fsdecode(fields[2])


def parse_fuse_options(values: tuple[str, ...]) -> dict:
    options: dict = {}
    for value in values:
        for item in filter(None, value.split(",")):
            key, eq, val = item.partition("=")
            options[key] = val if eq else True
    return options


# What libfuse's fuse_main returns when it fails (its stderr, which says more, is the
# daemon's: /dev/null). -o options are libfuse's to parse, so a bad one ends here.
FUSE_MAIN_FAILURES = {
    "1": "libfuse refused the options (check the -o list: an unknown or malformed option?)",
    "2": "libfuse found no mount point",
    "3": "libfuse could not set up (check the -o list: an unknown or malformed option?)",
    "4": "the kernel refused the mount (check the -o list and /dev/fuse)",
    "5": "libfuse could not detach",
    "6": "libfuse could not set up its signal handlers",
    "7": "the file system failed while running (see the log)",
}


def _has_entries(directory: Path) -> bool:
    with os.scandir(directory) as entries:
        return next(entries, None) is not None


def _check_mountpoint(mountpoint: Path) -> None:
    if not mountpoint.exists():
        raise UserError(f"mount point {mountpoint} does not exist")
    if not mountpoint.is_dir():
        raise UserError(f"mount point {mountpoint} is not a directory")
    if is_mounted(mountpoint):
        raise UserError(f"{mountpoint} is already a mount point")
    if not os.access(mountpoint, os.W_OK | os.X_OK):
        raise UserError(f"mount point {mountpoint} is not writable by you")


def cache_lock(directory: Path) -> DirLock:
    """One mount per cache dir: a second would corrupt the catalog and the part files."""
    return DirLock(directory, CACHE_LOCK_FILE,
                   f"cache dir {directory} is in use by another glacierfs mount")


def _local_server(local_dir: Path):
    from .server import LocalVaultServer, ServerConfig

    return LocalVaultServer(ServerConfig(data_dir=local_dir))


def check_paths(options: MountOptions) -> None:
    """The mount point and where the mount keeps its files, refused before anything is made
    (the command line calls this before it opens the log in the cache dir)."""
    _check_mountpoint(options.mountpoint)
    point = Path(os.path.realpath(options.mountpoint))
    for what, path in (("cache dir", options.cache.directory), ("--local dir", options.local_dir)):
        # The daemon would open its own files through its own mount, and wait on itself.
        if path is not None and point in [resolved := Path(os.path.realpath(path)),
                                          *resolved.parents]:
            raise UserError(f"the {what} {path} is inside the mount point {options.mountpoint}")
    if not options.allow_non_empty and _has_entries(options.mountpoint):
        # As rclone does: files there would vanish from view, and look lost.
        raise UserError(f"mount point {options.mountpoint} is not empty (its entries would be "
                        "hidden while mounted; --allow-non-empty mounts anyway)")


def check(options: MountOptions) -> None:
    """Everything that can be refused, refused before mounting."""
    check_paths(options)
    cache_lock(options.cache.directory).release()
    if options.local_dir is not None:
        with _local_server(options.local_dir) as server:
            Vault(options.vault, reach=server.client_kwargs()).check(create=True)
    else:
        Vault(options.vault, retries=1).check(create=options.vault.create_vault)


def run(options: MountOptions) -> None:
    """Mount. In the foreground: until unmounted. Otherwise fork first (before any thread
    exists), and return once the child reports the mount live, or fail with its error."""
    if options.foreground:
        _serve(options, report=None)
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(read_end)
        os.setsid()
        _detach_stdio()
        code = 0
        try:
            _serve(options, report=write_end)
        except UserError as error:
            _report(write_end, f"E{error}")
            code = error.exit_code
        except BaseException as error:  # noqa: BLE001 - the parent must hear of it
            log.exception("mount failed")
            _report(write_end, f"E{type(error).__name__}: {error}")
            code = 1
        os._exit(code)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read().decode(errors="replace")
    except KeyboardInterrupt:  # Ctrl-C while the daemon starts: it must not mount after all
        _stop_daemon(pid, options.mountpoint)
        raise
    if message.startswith("OK"):
        for notice in message.splitlines()[1:]:
            sys.stderr.write(f"glacierfs: {notice}\n")
        return
    if message.startswith("E"):
        raise UserError(message[1:].strip().splitlines()[0], exit_code=1)
    _, status = os.waitpid(pid, 0)
    raise UserError(f"the mount process exited ({os.waitstatus_to_exitcode(status)}) before "
                    "the mount was live; see its log", exit_code=1)


def _stop_daemon(pid: int, mountpoint: Path, grace: float = 10.0) -> None:
    """Stop our daemon child (in its own session, so Ctrl-C did not reach it): SIGTERM, which
    unmounts if it got that far; after `grace` seconds, a lazy unmount and SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            force_unmount(mountpoint, pid)
            return
        time.sleep(0.1)
    force_unmount(mountpoint, None)  # exited (reaped): its pid may be another's already


def _detach_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _report(fd: int | None, message: str) -> None:
    if fd is None:
        return
    try:
        os.write(fd, message.encode())
        os.close(fd)
    except OSError:
        pass  # already reported


M_ARENA_MAX = -8  # glibc mallopt()


def _share_malloc_arenas() -> None:
    """Write buffers (1 MiB each, from the kernel, held until hashed) must not pile up.

    glibc gives each thread that allocates its own heap (arena, up to 8 per core), and a heap
    keeps the memory freed into it. With a dozen FUSE, hash and upload threads each passing
    1 MiB buffers around, the daemon's peak RSS grew with the file size (116 MiB at 1 GiB,
    156 MiB at 4 GiB). Two shared arenas keep it flat (88 and 96 MiB) at the same speed; a
    fixed mmap threshold did too but cost 10% (a fresh mapping per buffer). Not glibc (musl):
    nothing to do."""
    try:
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass


def _serve(options: MountOptions, report: int | None) -> None:
    """Check, then run FUSE in this process's foreground until unmounted."""
    _share_malloc_arenas()
    try:
        from .fuse_ops import ENCODING, GlacierFuse, GlacierOperations, fuse_argument
    except OSError as error:
        raise UserError(f"libfuse 3 is not usable: {error} (Debian: apt-get install fuse3; "
                        "or run scripts/setup.sh)") from None

    check(options)
    state: dict = {}

    def on_destroy() -> None:
        for close in state.get("closers", []):
            close()
        if "server" in state:
            state["server"].stop()
        pid_file(options.mountpoint).unlink(missing_ok=True)
        log.info("unmounted %s", options.mountpoint)

    try:
        fs, notices = _open(options, state)
    except BaseException:
        on_destroy()
        raise

    def make_fs() -> GlacierFS:
        from .statusfile import StatusWriter  # it imports this module

        pid_file(options.mountpoint).write_text(str(os.getpid()))
        # Catalog snapshots (snapshot.py): the last one at unmount, after the writers finish.
        state["closers"].insert(0, _snapshots(fs, options).start().stop)
        # `glacierfs status` reads what this thread writes; stopped first at destroy.
        state["closers"].insert(0, StatusWriter(fs, options.mountpoint).start().stop)
        fs.restores.start(options.restore, options.mountpoint)  # stopped by fs.shutdown()
        log.info("mounted vault %s on %s (cache %s, part size %d, %d upload threads)",
                 options.vault.vault, options.mountpoint, options.cache.directory,
                 options.cache.part_size, options.cache.upload_threads)
        return fs

    # libfuse 3 has no big_writes, atomic_o_trunc or max_write options: it asks the kernel for
    # atomic O_TRUNC itself (O_TRUNC arrives with open(), not as a truncate(0) before it, so a
    # failed overwrite keeps the old content) and for writes of up to 1 MiB.
    fuse_options = {
        "fsname": f"glacierfs:{options.vault.vault}",
        "subtype": "glacierfs",
        "default_permissions": True,
        **options.fuse_options,
    }
    operations = GlacierOperations(make_fs,
                                   on_init=lambda: _report(report, "\n".join(["OK", *notices])),
                                   on_destroy=on_destroy)
    try:
        GlacierFuse(operations, fuse_argument(str(options.mountpoint)), foreground=True,
                    nothreads=False, encoding=ENCODING,
                    **{key: fuse_argument(value) if isinstance(value, str) else value
                       for key, value in fuse_options.items()})
    except RuntimeError as error:  # mfusepy: libfuse could not mount; its code, or a text
        code = str(error.args[0]) if error.args else ""
        reason = FUSE_MAIN_FAILURES.get(code, code)
        raise UserError(f"cannot mount {options.mountpoint}: {reason}") from None


def _open(options: MountOptions, state: dict) -> tuple[GlacierFS, list[str]]:
    """Open the cache, catalog and vault (in this process, which will serve the mount), finish
    what a crash left, and look for orphan uploads. Returns the filesystem and notices for
    the user."""
    state["lock"] = cache_lock(options.cache.directory)
    threads = options.cache.upload_threads
    if options.local_dir is not None:
        state["server"] = _local_server(options.local_dir).start()
        vault = Vault(options.vault, reach=state["server"].client_kwargs(), pool_size=32)
        log.info("local vault service at %s (data in %s)", state["server"].endpoint_url,
                 options.local_dir)
    else:
        vault = Vault(options.vault, pool_size=threads + 4, patience=MOUNT_PATIENCE)
    cache = PartCache(options.cache.directory, options.cache.size)
    catalog_path = options.cache.directory / CATALOG_FILE
    new_catalog = not catalog_path.exists()
    catalog = Catalog(catalog_path, os.getuid(), os.getgid())
    state["closers"] = [cache.close, catalog.close]
    fs = GlacierFS(catalog, cache, vault, options.cache, UploadPool(threads))
    notices = []
    try:
        settled = recover(fs)
        if settled:
            notices.append(f"settled {settled} upload(s) left unfinished by a crash or by an "
                           "unmount that could not finish them (see the log)")
        orphans = find_orphans(vault, catalog.journal)
    except Exception as error:
        raise UserError(f"could not finish the uploads left unfinished ({error}); nothing "
                        "was lost: mount again once the vault is reachable", exit_code=1) from None
    for orphan in orphans:
        upload_id = orphan["MultipartUploadId"]
        what = f"upload {upload_id[:16]}... ({orphan['Path'] or 'no path'}, started " \
               f"{orphan.get('CreationDate', '?')})"
        if options.abort_orphans:
            vault.abort(upload_id)
            log.warning("aborted orphan %s", what)
        else:
            log.warning("orphan %s: in the vault, unknown to this catalog; `glacierfs uploads "
                        "%s --abort-orphans` or mount with --abort-orphans to abort it",
                        what, options.vault.vault)
    if orphans:
        verb = "aborted" if options.abort_orphans else "found"
        notices.append(f"{verb} {len(orphans)} orphan multipart upload(s) in vault "
                       f"{options.vault.vault} (see the log)")
    if new_catalog:
        notices += _unlisted_archives(vault, options)
    return fs, notices


def _unlisted_archives(vault: Vault, options: MountOptions) -> list[str]:
    """A new catalog on a vault that has archives: they will not show, and this catalog's
    snapshots would become the vault's newest (what `glacierfs recover` restores)."""
    try:
        count = vault.archive_count()
    except Exception as error:  # noqa: BLE001 - only a hint; the vault was checked before
        log.warning("could not count the vault's archives: %s", error)
        return []
    if not count:
        return []
    notice = (f"vault {options.vault.vault} holds {count} archive(s) (as of its last "
              f"inventory), but {options.cache.directory} had no catalog: this mount starts an "
              "empty one, so they do not show. If the vault was mounted before, unmount and run "
              f"`glacierfs recover {options.vault.vault}` with the same vault and cache options")
    log.warning("%s", notice)
    return [notice]


def _snapshots(fs: GlacierFS, options: MountOptions):
    from .snapshot import Snapshotter

    return Snapshotter(fs, options.cache.directory / CATALOG_FILE,
                       options.cache.directory / "snapshot", options.cache.part_size,
                       options.snapshot_interval * 60)


def umount(mountpoint: Path, timeout: float | None = None, progress=None) -> None:
    """Unmount, then wait for the daemon to finish its uploads and exit, calling progress()
    (if given) every tenth of a second meanwhile."""
    kind = mount_type(mountpoint)
    if kind is None:
        raise UserError(f"{mountpoint} is not mounted")
    if kind != "fuse.glacierfs":  # never another file system: `glacierfs umount /` would try
        raise UserError(f"{mountpoint} is not a glacierfs mount (it is a {kind} mount)")
    pid_path = pid_file(mountpoint)
    pid = int(pid_path.read_text()) if pid_path.exists() else None
    command = ["umount", str(mountpoint)] if os.geteuid() == 0 else [
        "fusermount3", "-u", str(mountpoint)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise UserError(f"cannot unmount {mountpoint}: {message[-1] if message else 'failed'}")
    if pid is None:
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    while alive(pid):
        if deadline is not None and time.monotonic() > deadline:
            raise UserError(f"glacierfs daemon {pid} is still finishing uploads")
        if progress is not None:
            progress()
        time.sleep(0.1)


def force_unmount(mountpoint: Path, pid: int | None) -> None:
    """The last resort when `umount` did not work (a dead or stuck daemon): a lazy unmount,
    then SIGKILL of the daemon. For cleanup in tests and benchmarks."""
    if is_mounted(mountpoint):
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
        if is_mounted(mountpoint):  # not root: FUSE's own helper
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def alive(pid: int) -> bool:
    """Whether a process runs. A zombie does not: the daemon is setsid'd and reparented, and
    where the reaper is slow (or, in some containers, absent) a killed daemon stays one."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
