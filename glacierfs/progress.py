"""Progress bars of `glacierfs status` and `glacierfs umount`, drawn from the mount daemon's
status file (statusfile.py), and of `glacierfs restore --wait` (restore_cmd.py).

The numbers come from another process, so no tqdm object owns a bar here: each snapshot is
drawn with tqdm's format_meter, one line per file being uploaded or restored and one for the
cache. On a
terminal the lines are redrawn in place; anywhere else (a log, a test, a pipe) a new block is
printed only when the progress changed, at most every few seconds, so output stays line-based
and quiet.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from .config import format_size as human
from .config import printable
from .errors import UserError
from .mount import alive, mount_type
from .statusfile import read_status, status_file

STALE = 5.0  # seconds: an older snapshot means the daemon is busy (or stuck); it is flagged
QUIET = 5.0  # seconds between two blocks of non-terminal output
BAR = "{desc}  {percentage:3.0f}%|{bar:12}| {text}"
PATH_WIDTH = 40


def _meter(desc: str, n: int, total: int, text: str, ascii: bool) -> str:
    return tqdm.format_meter(min(n, total), total, 0, prefix=desc, ascii=ascii,
                             bar_format=BAR, text=text)


def _desc(path: str, width: int) -> str:
    return (path if len(path) <= width else "..." + path[-(width - 3):]).ljust(width)


def _shown(path: str) -> str:
    # as `glacierfs uploads` and archive descriptions show it; a newline in a name would
    # split the bar
    return printable(path.lstrip("/"))


def writer_line(writer: dict, width: int, ascii: bool) -> str:
    size, done = writer["size"], writer["bytes_uploaded"]
    parts = f"{writer['parts_uploaded']}/{writer['parts']} parts"
    busy = [f"{writer[key]} {label}" for key, label in
            (("parts_in_flight", "sending"), ("parts_queued", "queued")) if writer[key]]
    if busy:
        parts += f" ({', '.join(busy)})"
    rate = writer.get("rate") or 0.0
    speed = f"{human(rate)}/s"
    # A failed writer in the status is an --async-close upload waiting to be tried again.
    state = {"closing": "closing", "failed": "failed, tried again soon"}.get(writer["state"],
                                                                            "writing")
    if rate and size > done and state == "closing":  # while writing, the size still grows
        speed += f", {tqdm.format_interval((size - done) / rate)} left"
    text = f"{human(done)} of {human(size)}, {parts}, {speed}, {state}"
    return _meter(_desc(_shown(writer["path"]), width), done, size, text, ascii)


def restore_line(restore: dict, width: int, ascii: bool, now: float | None = None) -> str:
    """One restore (the status file's `restores[]`, or a file `glacierfs restore --wait`
    follows): bytes downloaded and verified of the archive's size, and where it is."""
    now = time.time() if now is None else now
    size, done, state = restore["size"], restore["bytes_downloaded"], restore["state"]
    since = (f", job started {tqdm.format_interval(max(now - restore['started'], 0))} ago"
             if restore.get("started") else "")
    tier = restore.get("tier") or "?"
    text = {
        "waiting": f"waiting for the job ({tier}{since})",
        "downloading": f"downloading ({tier}{since})",
        "cached": "restored: cached",
        "failed": f"failed: {restore.get('error')}",
    }.get(state, state)
    if state in ("waiting", "downloading"):
        text = f"{human(done)} of {human(size)}, {text}"
    return _meter(_desc(_shown(restore["path"]), width), done, max(size, 1), text, ascii)


def cache_line(cache: dict, width: int, ascii: bool) -> str:
    text = (f"{human(cache['reserved'])} of {human(cache['limit'])} held by unsent parts; "
            f"uploaded parts kept: {human(cache['uploaded'])}")
    return _meter(_desc("(cache)", width), cache["reserved"], cache["limit"], text, ascii)


def render(status: dict, ascii: bool, now: float | None = None) -> list[str]:
    """The lines for one snapshot: a heading, a bar per pending file, the cache."""
    now = time.time() if now is None else now
    writers = status["writers"]
    heading = (f"glacierfs on {status['mountpoint']} (vault {status['vault']}, pid "
               f"{status['pid']}): ")
    heading += (f"{len(writers)} upload(s) pending, {human(status['rate'])}/s"
                if writers else "no uploads pending")
    restores = status.get("restores", [])  # daemons from before restores have none
    running = sum(1 for r in restores if r["state"] != "failed")
    if restores:
        heading += f"; {running} restore(s) running"
        if running < len(restores):
            heading += f", {len(restores) - running} failed"
    age = now - status["time"]
    if age > STALE:
        heading += f" (as of {age:.0f} s ago: the daemon is busy)"
    width = min(PATH_WIDTH, max([len("(cache)")] + [len(_shown(w["path"]))
                                                    for w in writers + restores]))
    return [heading, *(writer_line(w, width, ascii) for w in writers),
            *(restore_line(r, width, ascii, now) for r in restores),
            cache_line(status["cache"], width, ascii)]


def _changes(status: dict) -> tuple:
    """What a new non-terminal block is printed for (not rates or the clock)."""
    return tuple((w["path"], w["state"], w["size"], w["parts"], w["parts_uploaded"])
                 for w in status["writers"]) + restore_changes(status)


def restore_changes(status: dict) -> tuple:
    return tuple((r["path"], r["state"], r["bytes_downloaded"])
                 for r in status.get("restores", []))


def restoring(status: dict) -> bool:
    """Whether a restore is still running (failed ones are over)."""
    return any(r["state"] != "failed" for r in status.get("restores", []))


class Display:
    """Blocks of lines on `stream`: redrawn in place on a terminal; elsewhere a new block
    only when its progress changed, at most every `quiet` seconds (or when forced)."""

    def __init__(self, stream: TextIO, quiet: float = QUIET, draw=None, changes=None) -> None:
        self.stream = stream
        self.draw = draw or render  # (status, ascii) -> lines
        self.changes = changes or _changes  # status -> what a new non-terminal block is for
        self.tty = stream.isatty()
        encoding = (getattr(stream, "encoding", None) or "").lower()
        self.ascii = not (self.tty and encoding.startswith("utf"))
        self.quiet = quiet
        self._drawn = 0  # lines drawn last time (terminal)
        self._last: tuple | None = None
        self._last_time = 0.0

    def show(self, status: dict, force: bool = False) -> None:
        lines = self.draw(status, self.ascii)
        if self.tty:
            columns = shutil.get_terminal_size().columns
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.stream.write(up + "".join(line[:columns - 1] + "\x1b[K\n" for line in lines)
                              + "\x1b[J")
            self._drawn = len(lines)
        else:
            key = self.changes(status)
            now = time.monotonic()
            if not force and (key == self._last or now - self._last_time < self.quiet):
                return
            self._last, self._last_time = key, now
            self.stream.write("".join(line + "\n" for line in lines))
        self.stream.flush()

    def erase(self) -> None:
        """Take the bars off a terminal (they are finished); elsewhere they stay."""
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0


def mount_status(mountpoint: Path) -> dict:
    """The daemon's last snapshot of a live glacierfs mount; UserError for anything else."""
    kind = mount_type(mountpoint)
    if kind != "fuse.glacierfs":
        what = "nothing is mounted there" if kind is None else f"it is a {kind} mount"
        raise UserError(f"{mountpoint} is not a glacierfs mount ({what})")
    status = read_status(mountpoint)
    if status is None:
        raise UserError(f"the glacierfs daemon of {mountpoint} has written no status (it is "
                        "still starting, or a version without `glacierfs status`)", exit_code=1)
    if not alive(status["pid"]):
        raise UserError(f"the glacierfs daemon of {mountpoint} (pid {status['pid']}) is not "
                        "running", exit_code=1)
    return status


def show_status(mountpoint: Path, watch: bool) -> None:
    """`glacierfs status`: one snapshot, or (--watch) refresh until nothing is pending."""
    display = Display(sys.stdout)
    status = mount_status(mountpoint)
    while watch and (status["writers"] or restoring(status)):
        display.show(status)
        time.sleep(1.0)
        pid, status = status["pid"], read_status(mountpoint)
        if status is None:  # removed at the end of an unmount
            print(f"glacierfs: {mountpoint} was unmounted and its uploads finished")
            return
        if not alive(pid):
            raise UserError(f"the glacierfs daemon of {mountpoint} (pid {pid}) exited with "
                            "uploads or restores pending", exit_code=1)
    display.show(status, force=True)


class UmountProgress:
    """Called while `glacierfs umount` waits for the daemon: bars on stderr while anything
    is pending, and nothing at all when nothing is."""

    POLL = 0.5  # seconds between two readings of the status file

    def __init__(self, mountpoint: Path) -> None:
        self.mountpoint = mountpoint
        self.display = Display(sys.stderr)
        self.shown = False
        self._next = 0.0

    def __enter__(self) -> "UmountProgress":
        return self

    def __call__(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.POLL
        try:
            status = read_status(self.mountpoint)
        except UserError:
            return  # a display only
        if status is not None and status["writers"]:
            if not self.shown:
                sys.stderr.write(f"glacierfs: unmounted {self.mountpoint}; waiting for "
                                 f"{len(status['writers'])} upload(s) to finish\n")
            self.display.show(status, force=not self.shown)
            self.shown = True

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            return
        if self.shown:
            self.display.erase()
        # The daemon has exited. It removes its status file when every upload finished, and
        # leaves a last one when some still failed (or it was killed): say so, and fail, so
        # that nobody takes the cache those uploads live in for something to delete.
        left = read_status(self.mountpoint)
        status_file(self.mountpoint).unlink(missing_ok=True)
        unfinished = left and left.get("unfinished", len(left["writers"]))
        if unfinished:
            cache = left.get("cache_dir")
            raise UserError(
                f"unmounted {self.mountpoint}, but {unfinished} upload(s) could not finish "
                f"(the mount's log says why); they are safe in the cache"
                f"{f' {cache}' if cache else ''}, and the next mount of it finishes them",
                exit_code=1)
        if self.shown:
            sys.stderr.write("glacierfs: every pending upload finished\n")
            sys.stderr.flush()
