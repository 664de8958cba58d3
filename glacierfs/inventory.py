"""`glacierfs inventory VAULT`: the catalog against a fresh inventory of the vault.

Three lists, and the catalog snapshots apart:

- archives the catalog does not know: not a file's content, not doomed (waiting to be
  deleted), not a catalog snapshot. A crash during a small file's upload can leave one
  (recovery.py warns), and so can other tools or another machine;
- catalog snapshots (snapshot.py): the catalog's current one, and older ones not deleted yet;
- catalog entries the vault does not have: files whose archive the inventory lacks.

Glacier takes a vault's inventory about once a day, so the comparison lags: a file written
since the inventory date shows as missing from the vault, an archive deleted since as unknown.
The output says so. The catalog is read like `glacierfs uploads` reads the journal: opened
read-only, without the cache lock, so a mount can keep running.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import click

from . import jobs
from .archive_names import decode
from .config import CATALOG_FILE, VaultConfig, format_size
from .errors import UserError
from .snapshot import described
from .uploads import open_vault
from .vault import user_errors

_PATHS = """
WITH RECURSIVE paths(ino, path) AS (
    SELECT 1, CAST('' AS BLOB)
    UNION ALL
    SELECT e.ino, p.path || CAST('/' AS BLOB) || e.name FROM entries e JOIN paths p
        ON e.parent = p.ino
)
SELECT i.archive_id, p.path, i.size FROM inodes i JOIN paths p ON p.ino = i.ino
WHERE i.archive_id IS NOT NULL
"""


def read_catalog(cache_dir: Path) -> tuple[dict[str, tuple[str, int]], set[str], set[str]] | None:
    """(archive id -> (path, size) of every stored file, doomed ids, snapshot ids) from the
    catalog in `cache_dir`, read-only; None if there is none."""
    path = cache_dir / CATALOG_FILE
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=30)
        conn.text_factory = bytes  # names are any bytes
        try:
            files = {archive_id.decode(): (name.decode("utf-8", "backslashreplace"), size)
                     for archive_id, name, size in conn.execute(_PATHS)}
            doomed = {row[0].decode() for row in conn.execute(
                "SELECT archive_id FROM doomed_archives")}
            tables = {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            snapshots = {row[0].decode() for row in conn.execute(
                "SELECT archive_id FROM catalog_snapshots")} if (
                b"catalog_snapshots" in tables) else set()
        finally:
            conn.close()
    except sqlite3.DatabaseError as error:
        raise UserError(f"cannot read the catalog {path}: {error}", exit_code=1) from None
    return files, doomed, snapshots


def run(config: VaultConfig, cache_dir: Path, local_dir: Path | None,
        poll_interval: float) -> None:
    with open_vault(config, local_dir, missing="") as vault, user_errors(vault.name):
        listing = jobs.inventory(vault, poll_interval,
                                 lambda line: click.echo(f"glacierfs: {line}", err=True))
    catalog = read_catalog(cache_dir)
    files, doomed, current = catalog or ({}, set(), set())
    in_vault = {a["ArchiveId"]: a for a in listing.archives}
    snapshots = [a for a in listing.archives if described(a.get("ArchiveDescription"))]
    unknown = [a for a in listing.archives if a["ArchiveId"] not in files
               and a["ArchiveId"] not in doomed and not described(a.get("ArchiveDescription"))]
    waiting = [a for a in listing.archives if a["ArchiveId"] in doomed]
    missing = sorted((path, size, archive_id) for archive_id, (path, size) in files.items()
                     if archive_id not in in_vault)
    total = sum(int(a["Size"]) for a in listing.archives)

    echo = click.echo
    echo(f"vault {config.vault}: inventory of {listing.date}: {len(listing.archives)} "
         f"archive(s), {format_size(total)}")
    echo("Glacier takes a vault's inventory about once a day: archives written or deleted "
         "since then are not reflected (a new file can show as missing from the vault, a "
         "deleted archive as unknown).")
    if catalog is None:
        echo(f"no catalog in {cache_dir}: every archive is unknown to it (`glacierfs recover "
             f"{config.vault}` builds one)")
    echo(f"\narchives the catalog does not know: {len(unknown)}")
    _table(echo, ["CREATED", "SIZE", "ARCHIVE ID", "DESCRIBED AS"],
           [[a.get("CreationDate", "?"), format_size(int(a["Size"])), a["ArchiveId"],
             _described_as(a.get("ArchiveDescription"))] for a in _by_date(unknown)])
    echo(f"\ncatalog snapshots: {len(snapshots)}")
    _table(echo, ["CREATED", "SIZE", "ARCHIVE ID", "STATE"],
           [[described(a["ArchiveDescription"])["created"], format_size(int(a["Size"])),
             a["ArchiveId"], "current" if a["ArchiveId"] in current else
             "old: the next mount deletes it" if a["ArchiveId"] in doomed else "old"]
            for a in _by_date(snapshots)])
    plain = [a for a in waiting if not described(a.get("ArchiveDescription"))]
    if plain:
        echo(f"\narchives waiting to be deleted (the next mount deletes them): {len(plain)}")
        _table(echo, ["CREATED", "SIZE", "ARCHIVE ID"],
               [[a.get("CreationDate", "?"), format_size(int(a["Size"])), a["ArchiveId"]]
                for a in _by_date(plain)])
    echo(f"\ncatalog entries the vault does not have: {len(missing)}")
    _table(echo, ["PATH", "SIZE", "ARCHIVE ID"],
           [[path, format_size(size), archive_id] for path, size, archive_id in missing])


def _by_date(archives: list[dict]) -> list[dict]:
    return sorted(archives, key=lambda a: (a.get("CreationDate") or "", a["ArchiveId"]))


def _described_as(description: str | None) -> str:
    info = decode(description)
    if info.path is None:
        return f"(no usable name: {(description or '')[:60]!r})"
    shown = b"/".join(info.path).decode("utf-8", "backslashreplace")
    return f"{shown}/ ({info.kind})" if info.is_dir else f"{shown} ({info.kind})"


def _table(echo, header: list[str], rows: list[list[str]]) -> None:
    if not rows:
        return
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        echo("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip())
