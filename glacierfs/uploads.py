"""`glacierfs uploads VAULT`: the multipart uploads in progress in a vault, which of them this
cache's journal knows, and aborting the ones nobody will finish.

An upload the journal knows ("ours") belongs to a mount of this cache: a live mount is writing
it, or the next mount finishes it (recovery.py) after a crash. Every other upload is an orphan,
left by a lost cache, another machine or another tool, and it is billed for its parts until it
is aborted (or expires). --abort-orphans aborts orphans only; aborting one of ours takes
--force, as does --abort-orphans when there is no catalog to tell the two apart.

The journal is read from the catalog database opened read-only (sqlite `mode=ro`), without the
cache lock: a mount may be running on this cache, and a read-only reader in WAL mode neither
waits for it nor changes anything. The journal is read after the vault is listed, so an upload
a mount initiates meanwhile (journaled right after InitiateMultipartUpload returns) is ours.
"""

from __future__ import annotations

import configparser
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import click

from .archive_names import described_path
from .config import CATALOG_FILE, VaultConfig
from .config import format_size as human
from .errors import UserError
from .vault import Vault, is_not_found, user_errors


@dataclass(frozen=True)
class Upload:
    upload_id: str
    path: str  # from the description's JSON "path", else the description itself
    part_size: int
    created: str
    parts: int  # parts the vault holds (ListParts)
    uploaded: int  # their bytes
    ours: bool  # this cache's journal knows it


def journaled_upload_ids(cache_dir: Path) -> set[str] | None:
    """The upload ids in the journal of the catalog in `cache_dir`; None if there is none."""
    rows = _journal_rows(cache_dir, "SELECT upload_id FROM uploads WHERE upload_id IS NOT NULL")
    return None if rows is None else {upload_id for (upload_id,) in rows}


def unfinished_uploads(cache_dir: Path) -> int:
    """How many files the journal of the catalog in `cache_dir` still has to upload (their
    parts wait in the cache for a mount to finish them)."""
    rows = _journal_rows(cache_dir, "SELECT COUNT(*) FROM uploads")
    return rows[0][0] if rows else 0


def _journal_rows(cache_dir: Path, sql: str) -> list[tuple] | None:
    """The rows of a query on the journal, read-only; None without a catalog."""
    path = cache_dir / CATALOG_FILE
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):  # a catalog from before the journal
            return []
        raise UserError(f"cannot read the catalog {path}: {error}", exit_code=1) from None


@contextmanager
def open_vault(config: VaultConfig, local_dir: Path | None,
               missing: str = " (mount it with --create-vault first)") -> Iterator[Vault]:
    """The vault, checked to exist (`missing` ends the message if it does not). With
    `local_dir`: on the local vault service already serving that directory (a mount's
    embedded one, or `glacierfs serve`), else on one started here for the duration (two
    services on one directory would sweep each other's files)."""
    if local_dir is None:
        vault = Vault(config, retries=1)
        vault.check(create=False, missing=missing)
        yield vault
        return
    if not local_dir.is_dir():
        raise UserError(f"{local_dir} holds no local vault service data")
    client_kwargs = _running_service(local_dir)
    if client_kwargs is not None:
        yield _local_vault(config, client_kwargs, missing)
        return
    from .server import LocalVaultServer, ServerConfig

    with LocalVaultServer(ServerConfig(data_dir=local_dir)) as server:
        yield _local_vault(config, server.client_kwargs(), missing)


def _running_service(local_dir: Path) -> dict | None:
    """boto3 client arguments for a local vault service that serves `local_dir` now: each
    start writes its endpoint into DIR/config, next to DIR/credentials."""
    from .server import remote_stats

    parser = configparser.ConfigParser()
    parser.read([local_dir / "config", local_dir / "credentials"])
    section = parser["default"] if parser.has_section("default") else {}
    url = section.get("endpoint_url")
    if not url or not section.get("aws_access_key_id"):
        return None
    try:
        remote_stats(url)
    except (OSError, ValueError):
        return None  # not running (any more)
    return {"endpoint_url": url, "region_name": section.get("region", "us-east-1"),
            "aws_access_key_id": section["aws_access_key_id"],
            "aws_secret_access_key": section.get("aws_secret_access_key", "")}


def _local_vault(config: VaultConfig, client_kwargs: dict, missing: str) -> Vault:
    vault = Vault(config, retries=1, reach=client_kwargs)
    vault.check(create=False, missing=missing)
    return vault


def list_uploads(vault: Vault, cache_dir: Path) -> tuple[list[Upload], bool]:
    """Every upload in progress with its parts; and whether this cache has a catalog."""
    found = []
    with user_errors(vault.name):
        listed = vault.list_uploads()
        for upload in listed:
            try:
                parts = vault.list_parts(upload["MultipartUploadId"])
            except Exception as error:
                if is_not_found(error):
                    continue  # finished or aborted since the listing
                raise
            found.append((upload, parts))
    known = journaled_upload_ids(cache_dir)
    uploads = [
        Upload(upload_id=upload["MultipartUploadId"],
               path=_shown_path(upload.get("ArchiveDescription") or ""),
               part_size=int(upload.get("PartSizeInBytes") or 0),
               created=upload.get("CreationDate") or "?",
               parts=len(parts), uploaded=sum(size for size, _ in parts.values()),
               ours=known is not None and upload["MultipartUploadId"] in known)
        for upload, parts in found
    ]
    return uploads, known is not None


def _shown_path(description: str) -> str:
    path = described_path(description)
    if path is not None:
        return path
    return description or "(no description)"


def table(uploads: list[Upload]) -> list[str]:
    rows = [("JOURNAL", "CREATED", "PART SIZE", "PARTS", "UPLOADED", "UPLOAD ID", "PATH")]
    rows += [("ours" if u.ours else "orphan", u.created, human(u.part_size), str(u.parts),
              human(u.uploaded), u.upload_id, u.path) for u in uploads]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    right = {2, 3, 4}  # sizes and counts
    return ["  ".join([*(cell.rjust(w) if i in right else cell.ljust(w)
                         for i, (cell, w) in enumerate(zip(row, widths))), row[-1]])
            for row in rows]


def run(config: VaultConfig, cache_dir: Path, local_dir: Path | None, abort: tuple[str, ...],
        abort_orphans: bool, force: bool) -> None:
    """The `glacierfs uploads` command: list, or abort (every refusal before any abort)."""
    with open_vault(config, local_dir) as vault:
        uploads, has_catalog = list_uploads(vault, cache_dir)
        if not abort and not abort_orphans:
            _print_list(uploads, has_catalog, config.vault, cache_dir)
            return
        by_id = {upload.upload_id: upload for upload in uploads}
        for upload_id in abort:
            upload = by_id.get(upload_id)
            if upload is None:
                raise UserError(f"no multipart upload {upload_id!r} in progress in vault "
                                f"{config.vault!r} (`glacierfs uploads {config.vault}` lists "
                                "them)")
            if upload.ours and not force:
                raise UserError(f"upload {upload_id} ({upload.path}) is in the journal of "
                                f"{cache_dir}: a mount is writing it, or the next mount "
                                "finishes it; --force aborts it anyway")
        if abort_orphans and not has_catalog and not force:
            raise UserError(f"no catalog in {cache_dir}, so orphans cannot be told from a "
                            "mount's uploads; pass the mount's --cache-dir, or --force to "
                            "abort every upload in progress")
        chosen = [by_id[upload_id] for upload_id in dict.fromkeys(abort)]
        if abort_orphans:
            chosen += [u for u in uploads if not u.ours and u.upload_id not in abort]
        if not chosen:
            click.echo(f"no orphan uploads in vault {config.vault}")
        for upload in chosen:
            _abort(vault, upload)


def _abort(vault: Vault, upload: Upload) -> None:
    with user_errors(vault.name):
        try:
            vault.abort(upload.upload_id)
        except Exception as error:
            if not is_not_found(error):
                raise
            click.echo(f"gone already: upload {upload.upload_id} ({upload.path})")
            return
    click.echo(f"aborted upload {upload.upload_id} ({upload.path}, {upload.parts} part(s), "
               f"{human(upload.uploaded)})")


def _print_list(uploads: list[Upload], has_catalog: bool, vault: str, cache_dir: Path) -> None:
    if not has_catalog:
        click.echo(f"glacierfs: no catalog in {cache_dir}: every upload counts as an orphan",
                   err=True)
    if not uploads:
        click.echo(f"no multipart uploads in progress in vault {vault}")
        return
    for line in table(uploads):
        click.echo(line)
    orphans = sum(1 for upload in uploads if not upload.ours)
    click.echo(f"{len(uploads)} upload(s): {len(uploads) - orphans} ours, {orphans} orphan(s)"
               # the same command: its vault and cache options say which journal decides
               + ("; the same command with --abort-orphans aborts the orphans"
                  if orphans else ""))
