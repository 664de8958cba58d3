"""Placing archives into a catalog by what their descriptions say (archive_names.py).

Rules (README, "Recovering a catalog"):

- A file is created at the path its description names, with missing directories created on
  the way; size and tree hash come from the inventory, the mtime from the description (else
  the archive's CreationDate). Files are 0644, directories 0755, owned by whoever recovers.
- Several archives with one path: the newest (CreationDate) keeps the name, each older one is
  NAME~CREATIONDATE (e.g. `photo.jpg~20261122T054754.325Z`) beside it. An entry the catalog
  already had at that path (from a snapshot: older than anything added after it) is moved to
  its own NAME~DATE the same way (an empty one is dropped), and the newest keeps its mode and
  owner: it is that file, overwritten; so does a file recover dropped there (its archive was
  deleted by the overwrite). A directory keeps its name and a file that would replace it gets
  NAME~DATE, unless the directory is empty (its files were deleted after the snapshot): then
  it goes.
- An archive without a usable name (no description, not a safe relative path, or a path
  glacierfs cut short to fit the description), or whose path runs through a file, goes to
  /.glacierfs-unnamed/ARCHIVE_ID; the log line says why (and how a cut path begins).
- A FastGlacier folder marker becomes a directory.
- A directory's mtime ends as the newest of its own (if it existed) and what was added in it.

Everything happens in the caller's transaction: a catalog is rebuilt whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import stat
from dataclasses import dataclass, field

from .archive_names import NAME_MAX, Described, decode, parse_time
from .catalog import ROOT_INO, Catalog
from .config import DEFAULT_PART_SIZE

log = logging.getLogger(__name__)

UNNAMED_DIR = b".glacierfs-unnamed"
FILE_MODE = stat.S_IFREG | 0o644
DIR_MODE = stat.S_IFDIR | 0o755


@dataclass
class Placed:
    """What naming did, for the summary."""
    files: int = 0
    directories: int = 0
    renamed: list[bytes] = field(default_factory=list)  # paths given a ~DATE suffix
    unnamed: int = 0
    kinds: dict[str, int] = field(default_factory=dict)  # description form -> archives


def creation_ns(archive: dict) -> int:
    return parse_time(archive.get("CreationDate")) or 0


def dated_name(name: bytes, when_ns: int) -> bytes:
    """NAME~20261122T054754.325Z, NAME cut (on a UTF-8 boundary) to keep 255 bytes."""
    when = dt.datetime.fromtimestamp(when_ns / 1e9, dt.timezone.utc)
    suffix = (when.strftime("~%Y%m%dT%H%M%S.") + f"{when.microsecond // 1000:03d}Z").encode()
    base = name[:NAME_MAX - len(suffix)]
    if len(base) < len(name):
        while base and base[-1] & 0xC0 == 0x80:  # continuation bytes of a cut character
            base = base[:-1]
        if base and base[-1] >= 0xC0:  # its lead byte
            base = base[:-1]
    return base + suffix


class Namer:
    def __init__(self, catalog: Catalog, uid: int, gid: int,
                 inventory: dict[str, dict]) -> None:
        self.catalog = catalog
        self.uid, self.gid = uid, gid
        self.inventory = inventory  # archive id -> inventory entry (for existing files' dates)
        self.placed = Placed()
        self._depth: dict[int, int] = {ROOT_INO: 0}
        self._parent: dict[int, int] = {}
        self._original: dict[int, int | None] = {}  # dir -> its mtime before (None: new)
        self._newest: dict[int, int] = {}  # dir -> newest mtime added directly in it
        # path -> (mode, uid, gid) of a file the catalog had there before (recover fills it
        # with files it dropped): a newer archive at that path is that file overwritten.
        self.inherited: dict[tuple[bytes, ...], tuple[int, int, int]] = {}

    # ---- the whole job --------------------------------------------------------------------

    def add(self, archives: list[dict]) -> Placed:
        described = [(a, decode(a.get("ArchiveDescription"))) for a in archives]
        described = [(a, d) for a, d in described if d.kind != "snapshot"]
        groups: dict[tuple[bytes, ...], list[dict]] = {}
        unnamed = []
        for archive, info in described:
            self.placed.kinds[info.kind] = self.placed.kinds.get(info.kind, 0) + 1
            if info.path is None or info.truncated:
                unnamed.append((archive, info))
            elif info.is_dir:
                self._directory(info.path, self._mtime(archive, info))
            else:
                groups.setdefault(info.path, []).append(archive)
        # Deepest paths first: a name that is both a file and a directory stays a directory
        # (holding its files) and the file gets NAME~DATE, whatever the order in the vault.
        for path in sorted(groups, key=lambda p: (-len(p), p)):
            versions = sorted(groups[path], key=lambda a: (creation_ns(a), a["ArchiveId"]))
            self._file(path, versions[-1], dated=False)
            for older in reversed(versions[:-1]):
                self._file(path, older, dated=True)
        for archive, info in unnamed:
            if info.truncated:
                begins = b"/".join(info.path or ()).decode("utf-8", "backslashreplace")
                why = f"its path was cut short to fit the description (it begins {begins!r})"
            else:
                why = ("no usable name in its description "
                       f"{(archive.get('ArchiveDescription') or '')[:80]!r}")
            self._unnamed(archive, why)
        self._settle_directory_times()
        return self.placed

    # ---- files ----------------------------------------------------------------------------

    def _mtime(self, archive: dict, info: Described | None = None) -> int:
        if info is not None and info.mtime_ns is not None:
            return info.mtime_ns
        return creation_ns(archive)

    def _file(self, path: tuple[bytes, ...], archive: dict, dated: bool) -> None:
        info = decode(archive.get("ArchiveDescription"))
        mtime = self._mtime(archive, info)
        parent = self._directory(path[:-1], mtime)
        if parent is None:
            self._unnamed(archive, f"{b'/'.join(path)!r} runs through a file")
            return
        name = path[-1]
        if dated:
            name = self._free(parent, dated_name(name, creation_ns(archive)), archive)
            self.placed.renamed.append(b"/".join(path[:-1] + (name,)))
        existing = self.catalog.lookup(parent, name)
        if existing is not None:
            node = self.catalog.inode(existing)
            if node.is_dir and not self.catalog.children(existing):
                # An empty directory (its files deleted after the snapshot): the file, newer,
                # was made after it went.
                self._touch(parent)
                self.catalog.rmdir(parent, name)
            elif node.is_dir:  # a directory keeps its name
                name = self._free(parent, dated_name(name, creation_ns(archive)), archive)
                self.placed.renamed.append(b"/".join(path[:-1] + (name,)))
            else:
                # The same file, overwritten: the new content keeps its mode and owner.
                self.inherited.setdefault(path, (node.mode, node.uid, node.gid))
                self._touch(parent)
                if node.archive_id is None:  # an empty file: nothing to keep beside it
                    self.catalog.unlink(parent, name)
                else:  # older content: it moves aside to its own dated name
                    when = (creation_ns(self.inventory[node.archive_id])
                            if node.archive_id in self.inventory else node.mtime_ns)
                    aside = self._free(parent, dated_name(name, when), archive)
                    self.catalog.rename(parent, name, parent, aside)
                    self.placed.renamed.append(b"/".join(path[:-1] + (aside,)))
        self._create_file(parent, name, archive, mtime,
                          None if dated else self.inherited.get(path))

    def _free(self, parent: int, name: bytes, archive: dict) -> bytes:
        """`name`, or, if taken, `name~ID` (a start of the archive id): never an existing
        entry."""
        if self.catalog.lookup(parent, name) is None:
            return name
        tagged = name[:NAME_MAX - 10] + b"~" + archive["ArchiveId"][:8].encode()
        if self.catalog.lookup(parent, tagged) is None:
            return tagged
        return archive["ArchiveId"].encode()  # ids are unique

    def _create_file(self, parent: int, name: bytes, archive: dict, mtime: int,
                     owner: tuple[int, int, int] | None = None) -> None:
        """`owner`: (mode, uid, gid) to keep, else 0644 and whoever recovers."""
        self._touch(parent)
        mode, uid, gid = owner or (FILE_MODE, self.uid, self.gid)
        node = self.catalog.create(parent, name, mode, uid, gid)
        # No cached parts: reads give ENODATA until restored. The cache key is new and the
        # part size the default, so a restore lays the parts out like a written file's.
        self.catalog.set_stored(node.ino, int(archive["Size"]), archive["ArchiveId"],
                                archive["SHA256TreeHash"], DEFAULT_PART_SIZE,
                                secrets.token_hex(12), [])
        self.catalog.set_attributes(node.ino, mtime_ns=mtime)
        self._newest[parent] = max(self._newest.get(parent, mtime), mtime)
        self.placed.files += 1

    def _unnamed(self, archive: dict, why: str) -> None:
        log.warning("archive %s: %s; it is /%s/%s", archive["ArchiveId"], why,
                    UNNAMED_DIR.decode(), archive["ArchiveId"])
        mtime = creation_ns(archive)
        parent = self._directory((UNNAMED_DIR,), mtime)
        if parent is None:  # a file took the name: make room (it is a rare, odd file)
            self._touch(ROOT_INO)
            self.catalog.rename(ROOT_INO, UNNAMED_DIR, ROOT_INO,
                                self._free(ROOT_INO, dated_name(UNNAMED_DIR, mtime), archive))
            parent = self._directory((UNNAMED_DIR,), mtime)
        name = self._free(parent, archive["ArchiveId"].encode(), archive)
        self._create_file(parent, name, archive, mtime)
        self.placed.unnamed += 1

    # ---- directories ----------------------------------------------------------------------

    def _directory(self, path: tuple[bytes, ...], mtime: int) -> int | None:
        """The directory at `path`, made with its missing parents; None if a component is not
        a directory."""
        ino = ROOT_INO
        for depth, name in enumerate(path, start=1):
            child = self.catalog.lookup(ino, name)
            if child is None:
                self._touch(ino)
                child = self.catalog.create(ino, name, DIR_MODE, self.uid, self.gid).ino
                self._original[child] = None
                self._newest[child] = mtime
                self.placed.directories += 1
            elif not self.catalog.inode(child).is_dir:
                return None
            self._depth[child] = depth
            self._parent[child] = ino
            ino = child
        return ino

    def _touch(self, directory: int) -> None:
        """`directory` is about to change: remember its mtime from before."""
        if directory not in self._original:
            self._original[directory] = self.catalog.inode(directory).mtime_ns

    def _settle_directory_times(self) -> None:
        for ino in sorted(self._original, key=lambda i: -self._depth.get(i, 0)):
            times = [t for t in (self._original[ino], self._newest.get(ino)) if t is not None]
            if not times:
                continue
            self.catalog.set_attributes(ino, mtime_ns=max(times))
            parent = self._parent.get(ino)
            if self._original[ino] is None and parent is not None:  # new: it changed parent
                self._newest[parent] = max(self._newest.get(parent, 0), max(times))
