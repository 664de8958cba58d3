"""Durable blob files for the local vault service.

Every byte a client sends lands in a file under DATA_DIR/blobs whose name the server made up
(random hex), never a name derived from a vault name or id. A body is streamed to DATA_DIR/tmp in
1 MiB reads while its SHA-256 and tree hash are computed in the same pass, fsynced, then renamed
into place and the directory fsynced. So memory stays flat whatever the body size, and a file the
database points at is always complete. Files nobody points at (a crash between rename and
commit) are swept at start-up.

A multipart archive is a *composite* blob: a directory holding hard links to its parts' blobs,
named by position. CompleteMultipartUpload then costs one link per part and two directory
fsyncs, as on the real service, instead of copying (and fsyncing) every byte a second time: a
2 GiB Complete took seconds of disk writes, a 100 GiB one would outlast the client's timeout.
Readers see one byte sequence either way (read_range, tree_hash_range).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from ..treehash import TreeHasher
from .errors import RequestTimeout

READ_SIZE = 1 << 20  # one tree-hash leaf per read: hashing never needs to re-slice


class IncompleteBody(RequestTimeout):
    """The client sent fewer bytes than its Content-Length (it went away mid-body)."""


@dataclass
class Ingested:
    """A body written to a temporary file with both of its hashes."""

    temp_path: Path
    size: int
    sha256: str
    tree_hash: str


_TEMP_NAME = re.compile(r"[0-9a-f]{32}")


class BlobStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "blobs"
        self.tmp = data_dir / "tmp"
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        # What we left in tmp/ was never acknowledged to a client. Only our own names go: a
        # data dir given by mistake may hold someone's tmp/ with files of theirs.
        for leftover in self.tmp.iterdir():
            if _TEMP_NAME.fullmatch(leftover.name):
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)

    def _temp_path(self) -> Path:
        return self.tmp / secrets.token_hex(16)  # matches _TEMP_NAME

    def path(self, name: str) -> Path:
        return self.root / name[:2] / name

    def ingest(self, stream: BinaryIO, length: int) -> Ingested:
        """Stream `length` bytes from `stream` to a temp file, hashing as they pass."""
        temp = self._temp_path()
        content = hashlib.sha256()
        tree = TreeHasher()
        remaining = length
        try:
            with open(temp, "wb") as out:
                while remaining:
                    chunk = stream.read(min(READ_SIZE, remaining))
                    if not chunk:
                        raise IncompleteBody(f"body ended {remaining} bytes early")
                    remaining -= len(chunk)
                    content.update(chunk)
                    tree.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return Ingested(temp, length, content.hexdigest(), tree.hexdigest())

    def new_temp(self) -> Path:
        return self._temp_path()

    def commit(self, temp: Path) -> str:
        """Move a finished, fsynced temp file into the store; return its blob name."""
        name = secrets.token_hex(16)
        final = self.path(name)
        final.parent.mkdir(exist_ok=True)
        os.replace(temp, final)
        _fsync_dir(final.parent)
        return name

    def link(self, name: str) -> str:
        """A second durable name for the same bytes (job output survives archive deletion)."""
        source = self.path(name)
        if source.is_dir():
            return self.compose_paths(self._pieces(source))
        new = secrets.token_hex(16)
        target = self.path(new)
        target.parent.mkdir(exist_ok=True)
        os.link(source, target)
        _fsync_dir(target.parent)
        return new

    def compose(self, names: list[str]) -> str:
        """A composite blob of these single blobs, in order; they stay valid on their own."""
        return self.compose_paths([self.path(name) for name in names])

    def compose_paths(self, pieces: list[Path]) -> str:
        temp = self._temp_path()
        temp.mkdir()
        try:
            for index, piece in enumerate(pieces):
                os.link(piece, temp / f"{index:06d}")
            _fsync_dir(temp)
            return self.commit(temp)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise

    @staticmethod
    def _pieces(path: Path) -> list[Path]:
        return sorted(path.iterdir()) if path.is_dir() else [path]

    def remove(self, name: str | None) -> None:
        if name:
            path = self.path(name)
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def discard(self, temp: Path) -> None:
        temp.unlink(missing_ok=True)

    def all_names(self) -> Iterator[str]:
        for sub in self.root.iterdir():
            if sub.is_dir():
                for blob in sub.iterdir():
                    yield blob.name

    def sweep(self, referenced: set[str]) -> int:
        """Delete blobs no row refers to; return how many."""
        removed = 0
        for name in list(self.all_names()):
            if name not in referenced:
                self.remove(name)
                removed += 1
        return removed

    def read_range(self, name: str, first: int, last: int) -> Iterator[bytes]:
        """Bytes first..last (inclusive) of a blob, single or composite, in reads of at most
        READ_SIZE."""
        position, remaining = 0, last - first + 1  # position: where the piece starts
        for piece in self._pieces(self.path(name)):
            if not remaining:
                break
            size = piece.stat().st_size
            if first < position + size:  # pieces wholly before the range are not opened
                with open(piece, "rb") as src:
                    src.seek(max(first - position, 0))
                    while remaining and src.tell() < size:
                        chunk = src.read(min(READ_SIZE, remaining))
                        remaining -= len(chunk)
                        yield chunk
            position += size
        if remaining:
            raise OSError(f"blob {name} is shorter than expected")

    def tree_hash_range(self, name: str, first: int, last: int) -> str:
        hasher = TreeHasher()
        for chunk in self.read_range(name, first, last):
            hasher.update(chunk)
        return hasher.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
