"""The `glacierfs` command line.

Every expected failure ends as one line on stderr and a non-zero exit: click's usage errors and
our UserError alike. A traceback means a bug.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import math
import os
import signal
import sys
import threading
from pathlib import Path

import click

from . import __version__
from .config import (CACHE_LOCK_FILE, DEFAULT_RESTORE_POLL, DEFAULT_SNAPSHOT_MINUTES, LOG_FILE,
                     TIERS, printable)
from .errors import UserError

LOG_LEVELS = ["debug", "info", "warning", "error"]
# Libraries whose debug output is noise in our log: mfusepy logs every errno we return with a
# traceback, botocore dumps every request. Our own records say what failed, in one line.
QUIET_LIBRARIES = ("fuse", "botocore", "boto3", "urllib3", "s3transfer")


def _quiet_libraries() -> None:
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.INFO)


class OneLineFormatter(logging.Formatter):
    """One record, one line. A file name may hold a newline (or a terminal escape), which
    would split the line, or forge one that looks like another record; such characters are
    shown escaped. A traceback still follows on lines of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))


def _setup_logging(level: str, log_file: Path | None = None) -> None:
    """Records go to stderr, or to log_file with the process id (a mount's log file is
    shared by its command and its daemon)."""
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
        fields = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    else:
        handler = logging.FileHandler(log_file)
        fields = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(OneLineFormatter(fields))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    _quiet_libraries()


class PathArg(click.Path):
    """click.Path that refuses an empty string, which would mean the current directory: an
    unset variable in a script (`--data-dir "$DIR"`) must not aim a command at it."""

    def __init__(self, **kwargs) -> None:
        super().__init__(path_type=Path, **kwargs)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path", param, ctx)
        return super().convert(value, param, ctx)


class Finite(click.FloatRange):
    """A number in [min, max], never nan (which passes any range check) or inf: sleeps and
    timers would fail on them, in a thread, long after the command was accepted."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__(min=low, max=high)

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number", param, ctx)
        return number


DAY = 86_400.0


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="glacierfs")
def cli() -> None:
    """glacierfs: Amazon S3 Glacier vaults as a filesystem, and a local Glacier service."""


@cli.command()
@click.option("--data-dir", required=True, type=PathArg(file_okay=False),
              help="Where vaults, archives and uploads are stored (created if missing).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Loopback unless you say otherwise.")
@click.option("--port", default=0, show_default=True, type=int,
              help="TCP port; 0 picks a free one.")
@click.option("--region", default="us-east-1", show_default=True)
@click.option("--account-id", default="123456789012", show_default=True,
              help="12-digit account id used in ARNs and Location headers.")
@click.option("--access-key", envvar="GLACIERFS_ACCESS_KEY",
              help="Access key id clients must sign with [env GLACIERFS_ACCESS_KEY]. "
                   "Default: a random pair stored in DATA_DIR/credentials.")
@click.option("--secret-key", envvar="GLACIERFS_SECRET_KEY",
              help="Secret access key [env GLACIERFS_SECRET_KEY].")
@click.option("--job-delay", default=0.0, show_default=True, type=Finite(0, 1000 * DAY),
              help="Seconds a retrieval job stays InProgress.")
@click.option("--upload-expiry", default=86400.0, show_default=True, type=Finite(1, 1000 * DAY),
              help="Seconds of inactivity after which a multipart upload disappears.")
@click.option("--latency", "latency_ms", default=0.0, show_default=True,
              type=Finite(0, 1000 * DAY),
              help="Milliseconds added to every request.")
@click.option("--faults", default="", help="Fault injection rules, e.g. "
              "'UploadMultipartPart:500:0.1' (see README).")
@click.option("--seed", type=int, default=None, help="Seed for reproducible fault injection.")
@click.option("--threads", default=16, show_default=True, type=int,
              help="HTTP worker threads.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
def serve(data_dir: Path, log_level: str, **options) -> None:
    """Run the local Glacier-compatible vault service.

    Prints the endpoint URL as the first line on stdout, then serves until SIGTERM or SIGINT.
    """
    from .server import LocalVaultServer, ServerConfig

    _setup_logging(log_level)
    server = LocalVaultServer(ServerConfig(data_dir=data_dir, **options))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    try:
        print(server.endpoint_url, flush=True)
        click.echo(f"glacierfs serve: region {server.config.region}, account "
                   f"{server.config.account_id}, data in {data_dir}", err=True)
        click.echo(server.usage_hint(), err=True)
        while not stop.wait(3600):
            pass
    finally:
        server.stop()
        click.echo("glacierfs serve: stopped", err=True)


def vault_options(command):
    """The options that say which vault, with which credentials, and which cache: shared by
    `mount` and `uploads`, which must agree on them."""

    @functools.wraps(command)
    def one_service(*args, **kwargs):
        if kwargs.get("local_dir") is not None and kwargs.get("endpoint_url") is not None:
            raise click.UsageError("--local runs its own vault service, so it cannot be "
                                   "combined with --endpoint-url")
        return command(*args, **kwargs)

    decorated = one_service
    for option in reversed([
        click.option("--endpoint-url",
                     help="Glacier endpoint (default: the AWS one for the region)."),
        click.option("--region", help="AWS region (default: from the AWS config chain)."),
        click.option("--profile", help="AWS profile for credentials and region."),
        click.option("--local", "local_dir", type=PathArg(file_okay=False),
                     help="Run the local vault service in-process, storing in this directory."),
        click.option("--cache-dir", type=PathArg(file_okay=False),
                     help="Part cache and catalog [default: ~/.cache/glacierfs/VAULT, or "
                          "LOCAL/mount-cache/VAULT with --local]."),
    ]):
        decorated = option(decorated)
    return decorated


def default_cache_dir(vault: str, local_dir: Path | None) -> Path:
    return (local_dir / "mount-cache" / vault if local_dir is not None
            else Path.home() / ".cache" / "glacierfs" / vault)


@cli.command()
@click.argument("vault")
@click.argument("mountpoint", type=PathArg())
@vault_options
@click.option("--create-vault", is_flag=True, help="Create the vault if it does not exist.")
@click.option("--cache-size", default="2GiB", show_default=True,
              help="Disk the cache may use; writes wait when it is full of unsent parts.")
@click.option("--part-size", default="64MiB", show_default=True,
              help="Multipart part size: 1 MiB x 2^n. A file can have 10,000 parts.")
@click.option("--upload-threads", default=4, show_default=True, type=int,
              help="Parts uploaded in parallel.")
@click.option("--async-close", is_flag=True,
              help="close(2) returns once the file is safe in the cache, not once it is in "
                   "the vault: uploads run in the background (--upload-threads at a time), "
                   "failed ones are retried, and close no longer reports them.")
@click.option("--abort-orphans", is_flag=True,
              help="Abort multipart uploads in the vault that this cache's journal does not "
                   "know (left by a lost cache or another tool); default: only report them.")
@click.option("--allow-non-empty", is_flag=True,
              help="Mount over a directory that has entries (they are hidden while mounted).")
@click.option("--restore-poll", default=DEFAULT_RESTORE_POLL, show_default=True,
              type=Finite(0.01, DAY),
              help="Seconds between two checks of the retrieval jobs of restores.")
@click.option("--restore-on-read", metavar="TIER",
              help="Reading a file that is not cached starts its restore with this tier "
                   "(Expedited, Standard, Bulk); the read still fails (ENODATA) until it is.")
@click.option("-f", "--foreground", is_flag=True, help="Stay in the foreground.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
@click.option("--log-file", type=PathArg(dir_okay=False),
              help="Log here [default: CACHE_DIR/glacierfs.log, or stderr with --foreground].")
@click.option("-o", "fuse_options", multiple=True,
              help="FUSE mount options, comma-separated (e.g. allow_other).")
@click.option("--snapshot-interval", default=DEFAULT_SNAPSHOT_MINUTES, show_default=True,
              type=Finite(0, 365 * DAY / 60), metavar="MINUTES",
              help="Upload a snapshot of the catalog this often while it changes (and at "
                   "unmount, if it changed); 0 = only at unmount. `glacierfs recover` "
                   "restores it.")
def mount(vault: str, mountpoint: Path, endpoint_url, region, profile, create_vault, local_dir,
          cache_dir, cache_size, part_size, upload_threads, async_close, abort_orphans,
          allow_non_empty,
          restore_poll, restore_on_read, foreground, log_level, log_file, fuse_options,
          snapshot_interval) -> None:
    """Mount a Glacier vault as a directory."""
    from .config import CacheConfig, RestoreConfig, VaultConfig, parse_size
    from .mount import MountOptions, check_paths, parse_fuse_options, run

    cache_dir = cache_dir or default_cache_dir(vault, local_dir)
    options = MountOptions(
        vault=VaultConfig(vault, endpoint_url=endpoint_url, region=region, profile=profile,
                          create_vault=create_vault),
        cache=CacheConfig(directory=cache_dir.absolute(),
                          size=parse_size(cache_size, "--cache-size"),
                          part_size=parse_size(part_size, "--part-size"),
                          upload_threads=upload_threads, async_close=async_close),
        mountpoint=mountpoint.absolute(),
        local_dir=local_dir.absolute() if local_dir is not None else None,
        foreground=foreground,
        abort_orphans=abort_orphans,
        allow_non_empty=allow_non_empty,
        fuse_options=parse_fuse_options(fuse_options),
        snapshot_interval=snapshot_interval,
        restore=RestoreConfig(poll_interval=restore_poll, on_read=restore_on_read),
    )
    check_paths(options)  # before the log file is made, maybe in a refused place
    with _taken_back_on_failure(options.cache.directory):
        if foreground and log_file is None:
            _setup_logging(log_level)
        else:
            log_file = log_file or cache_dir / LOG_FILE
            log_file.parent.mkdir(parents=True, exist_ok=True)
            _setup_logging(log_level, log_file)
        run(options)


# What a command that failed leaves in a cache dir it made (nothing else is removed).
FAILED_START_LEFTOVERS = {CACHE_LOCK_FILE, LOG_FILE}


@contextlib.contextmanager
def _taken_back_on_failure(cache_dir: Path):
    """If the block fails, remove the cache dir (and its parents) it made, when all it holds
    is the lock and the log: a typo in a vault name must not leave ~/.cache/glacierfs/TYPO
    behind. A dir with anything else (a catalog) stays as it is."""
    made = []  # the directories of cache_dir that do not exist yet, deepest first
    path = cache_dir
    while not path.exists() and path != path.parent:
        made.append(path)
        path = path.parent
    try:
        yield
    except BaseException:
        _remove_unused(made)
        raise


def _remove_unused(made: list[Path]) -> None:
    for directory in made:
        try:
            leftovers = set(os.listdir(directory))
            if leftovers - FAILED_START_LEFTOVERS:
                return
            for name in leftovers:
                os.unlink(directory / name)
            directory.rmdir()
        except OSError:
            return


@cli.command()
@click.argument("mountpoint", type=PathArg())
def umount(mountpoint: Path) -> None:
    """Unmount, then wait for pending uploads (with progress bars while any are pending)."""
    from .mount import umount as do_umount
    from .progress import UmountProgress

    try:
        with UmountProgress(mountpoint.absolute()) as progress:
            do_umount(mountpoint.absolute(), progress=progress)
    except KeyboardInterrupt:
        raise UserError("stopped waiting; if the unmount had happened, the daemon goes on with "
                        "the uploads in the background and exits when they are done (its log "
                        "says when)", exit_code=130) from None


@cli.command()
@click.argument("vault")
@vault_options
@click.option("--abort", "abort", metavar="UPLOAD_ID", multiple=True,
              help="Abort this upload (repeatable). Refused for an upload the journal of "
                   "this cache knows, unless --force.")
@click.option("--abort-orphans", is_flag=True,
              help="Abort every upload the journal of this cache does not know.")
@click.option("--force", is_flag=True,
              help="Allow --abort of an upload the journal knows (its mount's file then "
                   "fails), and --abort-orphans without a catalog in the cache dir.")
def uploads(vault: str, endpoint_url, region, profile, local_dir, cache_dir, abort,
            abort_orphans, force) -> None:
    """List the multipart uploads in progress in VAULT, or abort some.

    Each is listed with the path its description names, its part size, creation date, the
    parts the vault holds, and whether this cache's journal knows it ("ours": a running or
    crashed mount of this cache will finish it) or not ("orphan").
    """
    from .config import VaultConfig
    from .uploads import run as run_uploads

    run_uploads(VaultConfig(vault, endpoint_url=endpoint_url, region=region, profile=profile),
                (cache_dir or default_cache_dir(vault, local_dir)).absolute(),
                local_dir.absolute() if local_dir is not None else None,
                abort, abort_orphans, force)


@cli.command()
@click.argument("mountpoint", type=PathArg())
@click.option("--watch", is_flag=True,
              help="Refresh every second until no upload is pending.")
def status(mountpoint: Path, watch: bool) -> None:
    """Pending uploads of a mount (progress bars: bytes, parts, rate) and its cache use."""
    from .progress import show_status

    show_status(mountpoint.absolute(), watch)


@cli.command()
@click.argument("vault")
@vault_options
@click.option("--force", is_flag=True,
              help="Replace a catalog the cache dir already has (it is kept as a backup).")
@click.option("--poll-interval", default=60.0, show_default=True, metavar="SECONDS",
              type=Finite(0.01, DAY), help="How often to ask whether a job is done.")
@click.option("--tier", type=click.Choice(TIERS, case_sensitive=False),
              default="Standard", show_default=True,
              help="Retrieval tier for the catalog snapshot (Expedited: minutes, costs more).")
@click.option("--snapshot", metavar="ARCHIVE_ID",
              help="Restore this catalog snapshot (its archive id, or the start of it), not the "
                   "newest: another catalog's (recover lists them).")
def recover(vault: str, endpoint_url, region, profile, local_dir, cache_dir, force,
            poll_interval, tier, snapshot) -> None:
    """Rebuild the catalog of VAULT in a cache dir that has none (a new machine).

    Takes the vault's inventory, restores the newest catalog snapshot and adds the archives
    written after it; a vault without snapshots (written by other tools) is named from its
    archive descriptions. Inventory and retrieval jobs take hours on Glacier.
    """
    from .config import VaultConfig
    from .rebuild import run as run_recover

    cache_dir = (cache_dir or default_cache_dir(vault, local_dir)).absolute()
    with _taken_back_on_failure(cache_dir):
        run_recover(VaultConfig(vault, endpoint_url=endpoint_url, region=region,
                                profile=profile),
                    cache_dir, local_dir.absolute() if local_dir is not None else None, force,
                    poll_interval, tier, snapshot)


@cli.command()
@click.argument("vault")
@vault_options
@click.option("--poll-interval", default=60.0, show_default=True, metavar="SECONDS",
              type=Finite(0.01, DAY), help="How often to ask whether the job is done.")
def inventory(vault: str, endpoint_url, region, profile, local_dir, cache_dir,
              poll_interval) -> None:
    """Compare the catalog with a fresh inventory of VAULT.

    Lists archives the catalog does not know, its snapshots, and catalog entries whose
    archive the vault does not have. Glacier's inventory lags by up to a day.
    """
    from .config import VaultConfig
    from .inventory import run as run_inventory

    run_inventory(VaultConfig(vault, endpoint_url=endpoint_url, region=region, profile=profile),
                  (cache_dir or default_cache_dir(vault, local_dir)).absolute(),
                  local_dir.absolute() if local_dir is not None else None, poll_interval)


@cli.command()
@click.argument("paths", metavar="PATH...", nargs=-1, required=True,
                type=PathArg())
@click.option("--tier", type=click.Choice(TIERS, case_sensitive=False),
              default="Standard", show_default=True,
              help="Retrieval tier: Expedited (minutes), Standard (hours), Bulk (cheapest).")
@click.option("--wait", is_flag=True,
              help="Show progress bars until every file is restored (or failed).")
def restore(paths: tuple[Path, ...], tier: str, wait: bool) -> None:
    """Restore files of a mount (directories: every file below) from the vault into the cache.

    Each file gets `setfattr -n user.glacier.restore -v TIER`; reads work once
    `getfattr -n user.glacier.state FILE` says cached.
    """
    from .restore_cmd import run as run_restore

    run_restore(paths, tier, wait)


# `-o` keys that are glacierfs options when mounted from /etc/fstab (mount.fuse runs
# `glacierfs VAULT MOUNTPOINT -o opts`), and mount(8)-only keys that FUSE must not see.
FSTAB_OPTIONS = {"local", "cache_dir", "cache_size", "part_size", "upload_threads",
                 "endpoint_url", "region", "profile", "log_file", "log_level",
                 "snapshot_interval", "restore_poll", "restore_on_read"}
FSTAB_FLAGS = {"create_vault", "foreground", "abort_orphans", "async_close",
               "allow_non_empty"}
MOUNT8_ONLY = {"_netdev", "nofail", "noauto", "auto", "user", "users", "nouser", "defaults"}


def fstab_args(argv: list[str]) -> list[str]:
    """`VAULT MOUNTPOINT -o a,b=c` (the mount.fuse calling form) -> `mount ...` arguments."""
    positional, options = [], []
    items = iter(argv)
    for arg in items:
        if arg == "-o":
            options.extend(filter(None, next(items, "").split(",")))
        elif arg.startswith("-o"):
            options.extend(filter(None, arg[2:].split(",")))
        else:
            positional.append(arg)
    args = ["mount", *positional]
    fuse = []
    for option in options:
        key, eq, value = option.partition("=")
        if key in FSTAB_OPTIONS and eq:
            args += [f"--{key.replace('_', '-')}", value]
        elif key in FSTAB_FLAGS and not eq:
            args.append(f"--{key.replace('_', '-')}")
        elif key not in MOUNT8_ONLY:
            fuse.append(option)
    if fuse:
        args += ["-o", ",".join(fuse)]
    return args


def _fstab_form(argv: list[str]) -> list[str]:
    """The `mount ...` arguments of the mount.fuse calling form; UserError for a mistyped
    command (`glacierfs stauts ...` must not mount a vault named stauts) or for options that
    form does not take."""
    similar = difflib.get_close_matches(argv[0], list(cli.commands), n=1, cutoff=0.75)
    if similar:
        raise UserError(f"no such command '{argv[0]}' (did you mean '{similar[0]}'?)")
    dashed = [a for a in argv if a.startswith("-") and not a.startswith("-o")]
    if dashed:
        raise UserError(f"no such command '{argv[0]}'; the fstab form `glacierfs VAULT "
                        f"MOUNTPOINT -o OPTIONS` takes no {dashed[0]} (see `glacierfs mount`)")
    return fstab_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and not argv[0].startswith("-") and argv[0] not in cli.commands:
            argv = _fstab_form(argv)
        code = cli.main(args=argv, prog_name="glacierfs", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("glacierfs: aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        click.echo(f"glacierfs: {error.format_message()}", err=True)
        sys.exit(error.exit_code)
    except UserError as error:
        click.echo(f"glacierfs: {error}", err=True)
        sys.exit(error.exit_code)
    except OSError as error:  # a path that cannot be made or written (a read-only disk, ...)
        where = f": {error.filename}" if error.filename else ""
        click.echo(f"glacierfs: {error.strerror or error}{where}", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
