"""`glacierfs restore PATH...`: start restores through a mount, and (--wait) follow them.

It talks to the mount daemon only through the mount itself: setting the extended attribute
`user.glacier.restore` to a tier on a file starts its restore, and `user.glacier.state` tells
how far it got (restore.py). So there is one mechanism, `setfattr`/`getfattr` reach the same
thing, and the kernel checks that the caller may write the file.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections import Counter
from pathlib import Path

import click

from .errors import UserError
from .mount import mounts
from .progress import Display, restore_changes, restore_line
from .restore import RESTORE, STATE

POLL = 1.0  # seconds between two readings of the files' states


def containing_mount(path: Path) -> tuple[Path, str]:
    """The mount point under which `path` lies, and its file system type."""
    target = os.path.realpath(path)
    best, kind = Path("/"), "?"
    for point, point_kind in mounts():
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(str(best)):
            best, kind = Path(point), point_kind
    return best, kind


def files_under(path: Path) -> list[Path]:
    """The file itself, or every regular file below a directory (symlinks not followed)."""
    if not path.is_dir() or path.is_symlink():
        return [path]
    found = []
    with os.scandir(path) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False):
                found += files_under(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                found.append(Path(entry.path))
    return found


def parse_state(value: str) -> dict:
    """`restoring phase=waiting tier=Bulk ...` -> {'state': 'restoring', 'phase': ...}.
    `error=` is always the last field and runs to the end of the value."""
    head, _, rest = value.strip().partition(" ")
    fields = {"state": head}
    if rest.startswith("error="):
        rest, fields["error"] = "", rest[len("error="):]
    elif " error=" in rest:
        rest, _, fields["error"] = rest.partition(" error=")
    for item in rest.split():
        key, _, val = item.partition("=")
        fields[key] = val
    return fields


def read_state(path: Path) -> dict:
    return parse_state(os.getxattr(path, STATE).decode("utf-8", "replace"))


def _seconds(iso: str | None) -> float | None:
    if not iso or iso == "-":
        return None
    return dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.timezone.utc).timestamp()


def _row(shown: str, size: int, fields: dict) -> dict:
    """A file's state as a restore line (progress.restore_line) draws it."""
    state = fields["state"]
    if state == "restoring":
        state = fields.get("phase", "waiting")
    elif state == "archived":
        state = "failed"
        fields.setdefault("error", "no restore is running for it any more")
    done = int(fields.get("downloaded", 0)) if state != "cached" else size
    return {"path": shown, "state": state, "tier": fields.get("tier"),
            "size": int(fields.get("size", size)), "bytes_downloaded": done,
            "started": _seconds(fields.get("started")), "error": fields.get("error")}


def _draw(status: dict, ascii: bool) -> list[str]:
    rows = status["restores"]
    counts = Counter(row["state"] for row in rows)
    heading = f"glacierfs: restoring {len(rows)} file(s): " + ", ".join(
        f"{counts[state]} {label}" for state, label in
        (("cached", "cached"), ("downloading", "downloading"), ("waiting", "waiting for a job"),
         ("failed", "failed")) if counts[state])
    width = min(40, max(len(row["path"]) for row in rows))
    return [heading, *(restore_line(row, width, ascii) for row in rows)]


def run(paths: tuple[Path, ...], tier: str, wait: bool) -> None:
    targets: list[Path] = []
    for path in paths:
        point, kind = containing_mount(path)
        if kind != "fuse.glacierfs":
            raise UserError(f"{path} is not inside a glacierfs mount (it is on {point}, "
                            f"{kind})")
        try:
            os.lstat(path)  # its own error: a dead mount says "not connected", not missing
        except OSError as error:
            raise UserError(f"{path}: {error.strerror}") from None
        targets += files_under(path)
    counts: Counter[str] = Counter()
    failed: list[str] = []
    sizes: dict[Path, int] = {}
    for path in targets:
        try:
            sizes[path] = os.stat(path).st_size
            state = read_state(path)["state"]
            if state == "archived":
                os.setxattr(path, RESTORE, tier.encode())
                state = "started"
            counts[state] += 1
        except OSError as error:
            click.echo(f"glacierfs: {path}: cannot restore: {error.strerror}", err=True)
            failed.append(str(path))
    click.echo(f"glacierfs: {counts['started']} restore(s) started (tier {tier}); "
               f"{counts['restoring']} being restored already, {counts['cached']} cached, "
               f"{counts['uploading']} being written" + (f", {len(failed)} refused"
                                                         if failed else ""))
    if wait:  # a refused file is counted once, not followed
        refused = set(failed)
        failed += _wait([path for path in targets if path in sizes
                         and str(path) not in refused], sizes)
    if failed:
        raise UserError(f"{len(failed)} of {len(targets)} file(s) not restored", exit_code=1)


def _wait(paths: list[Path], sizes: dict[Path, int]) -> list[str]:
    """Poll each file's state until every one is cached (or failed); bars on stderr."""
    display = Display(sys.stderr, draw=_draw, changes=restore_changes)
    while True:
        rows = []
        for path in paths:
            try:
                rows.append(_row(str(path), sizes[path], read_state(path)))
            except OSError as error:
                rows.append(_row(str(path), sizes[path], {"state": "archived",
                                                          "error": error.strerror}))
        done = all(row["state"] in ("cached", "failed", "uploading") for row in rows)
        if rows:
            display.show({"restores": rows}, force=done)
        if done:
            break
        time.sleep(POLL)
    failed = [row for row in rows if row["state"] == "failed"]
    for row in failed:
        click.echo(f"glacierfs: {row['path']}: not restored: {row['error']}", err=True)
    click.echo(f"glacierfs: {len(rows) - len(failed)} file(s) restored and readable")
    return [row["path"] for row in failed]
