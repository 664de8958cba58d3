"""`glacierfs recover VAULT`: a catalog for a cache dir that has none (docs/design.md).

1. Refuse a cache dir that has a catalog (unless --force: it is kept as a backup) or that a
   mount is using (the cache lock).
2. Take the vault's inventory (an inventory-retrieval job; hours on Glacier).
3. With catalog snapshots in it (snapshot.py): retrieve the newest, check its tree hash (the
   one the service sends, and the one of the bytes), gunzip it, and settle what the copy held
   in flight: files still being written are dropped (their uploads never completed, or
   completed after the copy: then they are among the newer archives below), the upload
   journal is emptied, files whose archive is no longer in the vault (deleted after the
   copy) are dropped, doomed archives the vault no longer has are forgotten. The restored
   snapshot becomes the catalog's snapshot; older ones are doomed (the next mount deletes
   them). Then the archives written after the copy are added from their descriptions:
   CreationDate after the copy's time (less 15 minutes, SigV4's clock-skew limit, so a
   skewed local clock cannot hide one), not named by the catalog, not doomed in it.
4. Without snapshots (a vault other tools wrote): every archive is named from its
   description (naming.py).
5. The catalog is built beside the final name and renamed into place, so an interrupted
   recover leaves no half catalog.
"""

from __future__ import annotations

import datetime as dt
import gzip
import logging
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import botocore.exceptions
import click

from . import jobs
from .archive_names import parse_time
from .cache import fsync_path
from .catalog import Catalog
from .config import CATALOG_FILE, VaultConfig, format_size
from .errors import UserError
from .mount import cache_lock
from .naming import Namer, Placed, creation_ns
from .snapshot import Snapshot, described, ensure_schema, record, same_catalog
from .uploads import open_vault, unfinished_uploads
from .vault import is_not_found, user_errors

log = logging.getLogger(__name__)

CLOCK_SKEW_NS = 15 * 60 * 10**9  # SigV4 refuses requests from clocks further off than this
SUFFIXES = ("", "-wal", "-shm")  # an SQLite database's files


@dataclass
class Outcome:
    snapshot: dict | None = None  # the inventory entry of the snapshot restored
    created: str = ""  # its copy time
    placed: Placed = field(default_factory=Placed)
    dropped: list[bytes] = field(default_factory=list)  # files whose archive left the vault
    unfinished: int = 0  # files the copy held mid-write
    others: list[dict] = field(default_factory=list)  # other catalogs' snapshots
    left_alone: int = 0  # unknown archives older than the snapshot
    files: int = 0
    directories: int = 0


def run(config: VaultConfig, cache_dir: Path, local_dir: Path | None, force: bool,
        poll_interval: float, tier: str, snapshot: str | None = None) -> None:
    """`snapshot`: the archive id (or its start) of the catalog snapshot to restore, instead
    of the newest."""
    catalog_path = cache_dir / CATALOG_FILE
    if catalog_path.exists() and not force:
        raise UserError(f"{cache_dir} already has a catalog ({CATALOG_FILE}); --force "
                        "replaces it (keeping it as a backup)")
    lock = cache_lock(cache_dir)  # refuses while a mount uses this cache dir
    try:
        # Their parts are in this cache and only the old catalog's journal names them: a new
        # catalog would make the next mount remove them as leftovers.
        if unfinished := unfinished_uploads(cache_dir):
            raise UserError(f"{cache_dir} has {unfinished} upload(s) that a mount has not "
                            "finished: mount it once to finish them (the files are in its "
                            "catalog), then recover")
        with open_vault(config, local_dir, missing="") as vault, user_errors(vault.name):
            listing = jobs.inventory(vault, poll_interval, _note)
            temp = cache_dir / f"{CATALOG_FILE}.recovering"
            _remove(temp)
            try:
                outcome = _build(vault, listing, temp, cache_dir, tier, poll_interval,
                                 snapshot)
                backup = _install(temp, catalog_path)
            finally:
                _remove(temp)
    finally:
        lock.release()
    _summary(config.vault, catalog_path, listing, outcome, backup)


def _note(line: str) -> None:
    click.echo(f"glacierfs: {line}", err=True)


def _build(vault, listing: jobs.Inventory, temp: Path, cache_dir: Path, tier: str,
           poll_interval: float, chosen: str | None) -> Outcome:
    by_id = {a["ArchiveId"]: a for a in listing.archives}
    snapshots = sorted((a for a in listing.archives if described(a.get("ArchiveDescription"))),
                       key=_created)
    outcome = Outcome()
    if chosen is not None:
        snapshots = snapshots[:snapshots.index(_chosen(snapshots, chosen)) + 1]
    if snapshots:
        newest = _restore_newest(vault, snapshots[-1:] if chosen else snapshots, temp,
                                 cache_dir, tier, poll_interval)
        # Those after it: left the vault (the inventory is older), or chosen against. Those
        # of another catalog (another machine's) are left alone: listed, never doomed.
        fields = described(newest["ArchiveDescription"])
        outcome.others = [a for a in by_id.values() if (other := described(
            a.get("ArchiveDescription"))) and not same_catalog(fields, other)]
        snapshots = [a for a in snapshots[:snapshots.index(newest) + 1]
                     if a not in outcome.others]
        outcome.snapshot = newest
        outcome.created = fields["created"]
    catalog = Catalog(temp, os.getuid(), os.getgid())
    try:
        ensure_schema(catalog.db)
        with catalog.db.transaction() as conn:
            namer = Namer(catalog, os.getuid(), os.getgid(), by_id)
            if snapshots:
                candidates = _settle_snapshot(catalog, conn, by_id, snapshots, outcome,
                                              namer.inherited)
            else:
                candidates = listing.archives
            outcome.placed = namer.add(candidates)
            counts = conn.execute("SELECT (mode & 61440) = 16384 AS dir, COUNT(*) AS n "
                                  "FROM inodes WHERE ino != 1 GROUP BY 1").fetchall()
        for row in counts:
            setattr(outcome, "directories" if row["dir"] else "files", row["n"])
        catalog.db.query("PRAGMA journal_mode=DELETE")  # one self-contained file to rename
    finally:
        catalog.close()
    return outcome


def _created(snapshot: dict) -> tuple[str, str]:
    """The order of snapshots (inventory entries): by their copy time."""
    return described(snapshot["ArchiveDescription"])["created"], snapshot.get("CreationDate") or ""


def _chosen(snapshots: list[dict], start: str) -> dict:
    """The snapshot whose archive id is or starts with `start` (recover --snapshot)."""
    found = [a for a in snapshots if a["ArchiveId"].startswith(start)]
    if len(found) != 1:
        raise UserError(f"{'no' if not found else len(found)} catalog snapshot(s) in the "
                        f"inventory have an archive id starting with {start!r}; "
                        f"{_listed(snapshots) or 'the inventory lists none'}")
    return found[0]


def _listed(snapshots: list[dict]) -> str:
    """The snapshots, newest first, as `recover --snapshot` takes them."""
    return "; ".join(
        f"{described(a['ArchiveDescription'])['created']}: {format_size(int(a['Size']))}, "
        f"--snapshot {a['ArchiveId'][:16]}" for a in reversed(snapshots))


def _restore_newest(vault, snapshots: list[dict], temp: Path, cache_dir: Path, tier: str,
                    poll_interval: float) -> dict:
    """Restore the newest snapshot the vault still has, and return it. The inventory is about
    a day old: a mount may have replaced and deleted the newest one it lists since."""
    for archive in reversed(snapshots):
        try:
            _restore(vault, archive, temp, cache_dir, tier, poll_interval)
            return archive
        except botocore.exceptions.ClientError as error:
            if not is_not_found(error):
                raise
            _note(f"the catalog snapshot of {described(archive['ArchiveDescription'])['created']}"
                  " is no longer in the vault; trying the one before it")
    raise UserError("none of the catalog snapshots in the inventory is in the vault any more; "
                    "run recover again once Glacier's next inventory lists the newer ones "
                    "(about a day)", exit_code=1)


def _restore(vault, archive: dict, temp: Path, cache_dir: Path, tier: str,
             poll_interval: float) -> None:
    """The snapshot archive, checked and gunzipped into `temp`."""
    packed = cache_dir / f"{CATALOG_FILE}.snapshot.gz"
    try:
        jobs.retrieve(vault, archive, packed, tier, poll_interval, _note)
        try:
            with gzip.open(packed, "rb") as src, open(temp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        except (OSError, EOFError) as error:
            raise UserError(f"the catalog snapshot (archive {archive['ArchiveId']}) is not "
                            f"gzip data: {error}", exit_code=1) from None
    finally:
        packed.unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(temp)
        try:
            tables = {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            sound = conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        finally:
            conn.close()
    except sqlite3.DatabaseError as error:
        tables, sound = set(), str(error)
    if sound is not True or not {"inodes", "entries"} <= tables:
        raise UserError(f"the catalog snapshot (archive {archive['ArchiveId']}) is not a "
                        f"sound glacierfs catalog ({sound if sound is not True else tables})",
                        exit_code=1)


def _settle_snapshot(catalog: Catalog, conn, by_id: dict[str, dict], snapshots: list[dict],
                     outcome: Outcome, inherited: dict) -> list[dict]:
    """Make the restored copy true for the vault as it is now; return the archives to add.
    `inherited` gets the mode and owner of each file dropped (a newer archive at its path is
    that file overwritten)."""
    unfinished = conn.execute("SELECT ino FROM inodes WHERE state = 'writing'").fetchall()
    for row in unfinished:
        catalog.remove(row["ino"])
    outcome.unfinished = len(unfinished)
    conn.execute("DELETE FROM upload_parts")
    conn.execute("DELETE FROM uploads")
    for row in conn.execute("SELECT ino, archive_id, mode, uid, gid FROM inodes "
                            "WHERE archive_id IS NOT NULL").fetchall():
        if row["archive_id"] not in by_id:
            path = catalog.path_of(row["ino"])
            log.info("%s: archive %s is no longer in the vault; dropped", path,
                     row["archive_id"])
            outcome.dropped.append(path)
            inherited[tuple(path.lstrip(b"/").split(b"/"))] = (row["mode"], row["uid"],
                                                               row["gid"])
            catalog.remove(row["ino"])
    for archive_id, _ in catalog.journal.doomed():
        if archive_id not in by_id:
            catalog.journal.deleted(archive_id)
    changes = conn.execute("SELECT count FROM catalog_changes").fetchone()["count"]
    newest = snapshots[-1]
    copied = described(newest["ArchiveDescription"])
    # The copy names the snapshots before it as they were then: keep those the vault has.
    for row in conn.execute("SELECT archive_id FROM catalog_snapshots").fetchall():
        if row["archive_id"] not in by_id:
            conn.execute("DELETE FROM catalog_snapshots WHERE archive_id = ?",
                         (row["archive_id"],))
    # The copy cannot know its own archive. Record it (its `changes` those of the copy, so the
    # changes made here count as new: the next mount snapshots them), with the older ones,
    # which are doomed as a mount dooms them.
    record(catalog, _snapshot(newest, changes),
           older=[_snapshot(archive, changes=-1) for archive in snapshots[:-1]])
    known = {row["archive_id"] for row in conn.execute(
        "SELECT archive_id FROM inodes WHERE archive_id IS NOT NULL")}
    known |= {archive_id for archive_id, _ in catalog.journal.doomed()}
    since = (parse_time(copied["created"]) or 0) - CLOCK_SKEW_NS
    unknown = [a for a in by_id.values()
               if a["ArchiveId"] not in known and not described(a.get("ArchiveDescription"))]
    newer = [a for a in unknown if creation_ns(a) > since]
    outcome.left_alone = len(unknown) - len(newer)
    return newer


def _snapshot(archive: dict, changes: int) -> Snapshot:
    """An inventory entry of a catalog snapshot as snapshot.record takes it."""
    fields = described(archive["ArchiveDescription"])
    return Snapshot(archive["ArchiveId"], fields["created"], int(archive["Size"]),
                    archive["SHA256TreeHash"], changes, fields["path"])


def _remove(path: Path) -> None:
    for suffix in SUFFIXES:
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _install(temp: Path, catalog_path: Path) -> Path | None:
    """Rename the new catalog into place; an existing one (--force) becomes a backup."""
    backup = None
    # A -wal or -shm without its database (removed by hand) goes too: SQLite would play
    # that old log into the new catalog.
    leftovers = [suffix for suffix in SUFFIXES if Path(f"{catalog_path}{suffix}").exists()]
    if leftovers:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        backup = catalog_path.with_name(f"{CATALOG_FILE}.before-recover-{stamp}")
        for suffix in leftovers:
            Path(f"{catalog_path}{suffix}").rename(f"{backup}{suffix}")
    fsync_path(temp)  # the file's bytes, then its new name
    os.replace(temp, catalog_path)
    fsync_path(catalog_path.parent)
    return backup


def _summary(vault: str, catalog_path: Path, listing: jobs.Inventory, outcome: Outcome,
             backup: Path | None) -> None:
    placed = outcome.placed
    lines = [(f"recovered the catalog of vault {vault} into {catalog_path}: "
              f"{outcome.files} file(s) and symlink(s), {outcome.directories} directories")]
    if outcome.snapshot is not None:
        lines.append(f"  from the catalog snapshot of {outcome.created} (archive "
                     f"{outcome.snapshot['ArchiveId'][:16]}..., "
                     f"{format_size(int(outcome.snapshot['Size']))}), plus {placed.files} "
                     "archive(s) written after it")
        if outcome.dropped:
            lines.append(f"  dropped {len(outcome.dropped)} file(s) whose archive is no longer "
                         "in the vault (deleted after the snapshot)")
        if outcome.unfinished:
            lines.append(f"  dropped {outcome.unfinished} file(s) that were still being "
                         "written when the snapshot was taken")
        if outcome.left_alone:
            lines.append(f"  left alone {outcome.left_alone} archive(s) older than the "
                         "snapshot that it does not name (`glacierfs inventory` lists them)")
        if outcome.others:
            # A second machine mounted this vault with a new cache dir: two catalogs. The
            # newest snapshot may be its near-empty one.
            lines.append(f"  the vault also holds {len(outcome.others)} snapshot(s) of another "
                         "catalog (the vault was mounted from another cache dir), left alone; "
                         "to recover from one instead, run this again with --force and "
                         + _listed(sorted(outcome.others, key=_created)))
    else:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(placed.kinds.items()))
        lines.append(f"  no catalog snapshot in the vault: named {placed.files} archive(s) "
                     f"from their descriptions ({kinds or 'none'})")
    if placed.renamed:
        lines.append(f"  {len(placed.renamed)} older version(s) of a name kept as NAME~DATE")
    if placed.unnamed:
        lines.append(f"  {placed.unnamed} archive(s) without a usable name are in "
                     "/.glacierfs-unnamed/ (named by archive id)")
    if backup is not None:
        lines.append(f"  the previous catalog is kept as {backup}")
    lines.append(f"Glacier's inventory is from {listing.date} and is refreshed about once a "
                 "day: archives written since then are not in it; `glacierfs inventory "
                 f"{vault}` lists them once they are.")
    for line in lines:
        click.echo(line)
