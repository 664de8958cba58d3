"""The mfusepy (libfuse 3) adapter: translate, call fs, map errors, log. Nothing else.

Paths arrive as str decoded with latin-1 (set in mount.py), which maps every byte to one
character and back, so any byte name survives the round trip to the core's bytes.
"""

from __future__ import annotations

import errno
import functools
import logging
import os

from .errors import errno_for, is_expected
from .fs import GlacierFS

# mfusepy loads libfuse when it is imported, and looks for libfuse 2 first: where both are
# installed it would pick libfuse 2, whose high-level API drops an mtime-only setattr.
os.environ["FUSE_LIBRARY_NAME"] = "fuse3"
import mfusepy  # noqa: E402
from mfusepy import FUSE, FuseOSError, Operations, fuse_exit, fuse_get_context  # noqa: E402

if mfusepy.fuse_version_major != 3:
    raise OSError(f"libfuse 3 is needed, found libfuse {mfusepy.fuse_version_major}")

log = logging.getLogger(__name__)
# Paths cross mfusepy as str holding one character per byte: names are any bytes.
ENCODING = "latin-1"

# utimensat(2)'s markers. libfuse 3 passes them in tv_nsec with tv_sec 0, so with use_ns they
# arrive as these nanosecond counts (a real time 1.07 s after the epoch would look the same).
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
RENAME_NOREPLACE = 1


def _b(path: str) -> bytes:
    return path.encode(ENCODING)


def fuse_argument(text: str) -> str:
    """An argument for libfuse's command line (the mount point, an -o value) as mfusepy takes
    it: it encodes each one with ENCODING, so the str must hold the argument's own bytes (a
    mount point named in UTF-8 was sent as latin-1, and libfuse found no such directory)."""
    return os.fsencode(text).decode(ENCODING)


def _caller() -> tuple[int, int, int]:
    """uid, gid and the calling *process* id: FUSE reports the thread id, and a writer's
    close may come from another thread of the process that opened the file."""
    uid, gid, tid = fuse_get_context()
    try:
        fd = os.open(f"/proc/{tid}/status", os.O_RDONLY)
        try:
            status = os.read(fd, 4096)  # Tgid is on the fourth line
        finally:
            os.close(fd)
    except OSError:
        return uid, gid, tid  # the thread is gone already; its id is all we have
    start = status.index(b"\nTgid:") + len(b"\nTgid:")
    return uid, gid, int(status[start:status.index(b"\n", start)])


def _errors_mapped(operation):
    """The one error map: whatever an operation raises becomes FuseOSError(errno), logged in
    one line if expected and with a traceback otherwise. (mfusepy ignores __call__.)"""

    @functools.wraps(operation)
    def call(self, *args):
        try:
            return operation(self, *args)
        except FuseOSError:
            raise
        except Exception as error:
            err = errno_for(error)
            op = operation.__name__
            if is_expected(error):
                log.debug("%s%r -> %s: %s", op, args[:1], errno.errorcode.get(err, err), error)
            else:
                log.error("%s%r failed unexpectedly", op, args[:1], exc_info=True)
            raise FuseOSError(err) from None

    return call


_TIME_KEYS = {"st_atime_ns": "st_atime", "st_mtime_ns": "st_mtime", "st_ctime_ns": "st_ctime"}


def _direct_if_write_only(file_info) -> None:
    if file_info.flags & os.O_ACCMODE == os.O_WRONLY:
        file_info.direct_io = 1


class GlacierFuse(FUSE):
    """mfusepy's FUSE, with write-only handles uncached (below) and two fixes:

    - A failure in init() unmounts, and the constructor raises it. mfusepy's wrapper spares only
      a callback named "init" from its error handling (on libfuse 3 it is init_fuse_3), so the
      error would be logged and the mount left serving without a core.
    - rename keeps its flags: mfusepy drops them, which would turn renameat2(RENAME_EXCHANGE)
      into a rename that replaces (and deletes) the target.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._init_error: BaseException | None = None
        try:
            super().__init__(*args, **kwargs)
        finally:
            if self._init_error is not None:
                raise self._init_error

    def init_fuse_3(self, conn, config) -> None:
        try:
            super().init_fuse_3(conn, config)
        except BaseException as error:
            self._init_error = error
            fuse_exit()

    # A handle opened write-only bypasses the kernel's page cache (FOPEN_DIRECT_IO): the kernel
    # hands the writer's buffer straight to us instead of first copying it into page cache
    # pages nobody will read (this handle cannot read or be mmap'd). One copy less per byte:
    # cp of a large file got about 10% faster. Read-write handles keep the page cache.
    def create(self, path: bytes, mode: int, fip) -> int:
        # Not mfusepy's create: it calls inspect.signature() on operations.create for every
        # file created, to learn whether it takes the flags (ours does).
        file_info = fip.contents
        file_info.fh = self.operations.create(path.decode(self.encoding, self.errors), mode,
                                              file_info.flags)
        _direct_if_write_only(file_info)
        return 0

    def open(self, path: bytes, fip) -> int:
        result = super().open(path, fip)
        _direct_if_write_only(fip.contents)
        return result

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        # RENAME_NOREPLACE is safe as a plain rename: the kernel has looked the new name up
        # under the directory locks and refused an existing one with EEXIST.
        if flags & ~RENAME_NOREPLACE:
            raise FuseOSError(errno.EINVAL)  # what libfuse 2 (no rename2 at all) ended in
        return super().rename_fuse_3(old, new, flags)


class GlacierOperations(Operations):
    use_ns = True  # times are integer nanoseconds

    def __init__(self, make_fs, on_init=None, on_destroy=None) -> None:
        # The core is built in init(), after libfuse has daemonized: threads and sockets made
        # before the fork would not survive it.
        self._make_fs = make_fs
        self._on_init = on_init
        self._on_destroy = on_destroy
        self.fs: GlacierFS | None = None

    # ---- lifecycle: a failure here stops the mount (GlacierFuse raises it) ---------------

    def init(self, path):
        self.fs = self._make_fs()
        if self._on_init:
            self._on_init()

    def destroy(self, path):
        if self.fs is not None:
            self.fs.shutdown()
        if self._on_destroy:
            self._on_destroy()

    # ---- namespace ------------------------------------------------------------------------

    @_errors_mapped
    def getattr(self, path, fh=None):
        # use_ns wants integer nanoseconds under the st_*time keys.
        return {_TIME_KEYS.get(k, k): v for k, v in self.fs.getattr(_b(path)).items()}

    @_errors_mapped
    def readdir(self, path, fh):
        return [name.decode(ENCODING) for name in self.fs.readdir(_b(path))]

    @_errors_mapped
    def mkdir(self, path, mode):
        uid, gid, _ = _caller()
        self.fs.mkdir(_b(path), mode, uid, gid)

    @_errors_mapped
    def unlink(self, path):
        self.fs.unlink(_b(path))

    @_errors_mapped
    def rmdir(self, path):
        self.fs.rmdir(_b(path))

    @_errors_mapped
    def rename(self, old, new):
        self.fs.rename(_b(old), _b(new))

    @_errors_mapped
    def symlink(self, target, source):
        # create `target` pointing at `source` (ln -s source target)
        uid, gid, _ = _caller()
        self.fs.symlink(_b(target), _b(source), uid, gid)

    @_errors_mapped
    def readlink(self, path):
        return self.fs.readlink(_b(path)).decode(ENCODING)

    @_errors_mapped
    def link(self, target, source):
        self.fs.link(_b(source), _b(target))

    @_errors_mapped
    def mknod(self, path, mode, dev):
        uid, gid, pid = _caller()
        self.fs.mknod(_b(path), mode, uid, gid, pid)

    @_errors_mapped
    def chmod(self, path, mode):
        self.fs.chmod(_b(path), mode)

    @_errors_mapped
    def chown(self, path, uid, gid):
        self.fs.chown(_b(path), uid, gid)

    @_errors_mapped
    def utimens(self, path, times=None):
        mtime = times[1] if times else UTIME_NOW
        if mtime == UTIME_OMIT:
            return  # atime only (touch -a): atime is not kept, so nothing changes
        self.fs.utimens(_b(path), None if mtime == UTIME_NOW else mtime)

    @_errors_mapped
    def statfs(self, path):
        return self.fs.statfs()

    # ---- files ----------------------------------------------------------------------------

    @_errors_mapped
    def create(self, path, mode, fi=None):
        uid, gid, pid = _caller()
        return self.fs.create(_b(path), mode, uid, gid, pid)

    @_errors_mapped
    def open(self, path, flags):
        _, _, pid = _caller()
        return self.fs.open(_b(path), flags, pid)

    @_errors_mapped
    def read(self, path, size, offset, fh):
        return self.fs.read(fh, size, offset)

    @_errors_mapped
    def write(self, path, data, offset, fh):
        return self.fs.write(fh, data, offset)

    @_errors_mapped
    def truncate(self, path, length, fh=None):
        self.fs.truncate(_b(path), length, fh)

    @_errors_mapped
    def flush(self, path, fh):
        _, _, pid = _caller()
        self.fs.flush(fh, pid)

    @_errors_mapped
    def release(self, path, fh):
        self.fs.release(fh)

    @_errors_mapped
    def fsync(self, path, datasync, fh):
        self.fs.fsync(fh)

    # ---- extended attributes (restores) ----------------------------------------------------

    @_errors_mapped
    def getxattr(self, path, name, position=0):
        return self.fs.getxattr(_b(path), name)

    @_errors_mapped
    def listxattr(self, path):
        return self.fs.listxattr(_b(path))

    @_errors_mapped
    def setxattr(self, path, name, value, options, position=0):
        self.fs.setxattr(_b(path), name, value)

    @_errors_mapped
    def removexattr(self, path, name):
        self.fs.removexattr(_b(path), name)

    @_errors_mapped
    def access(self, path, amode):
        self.fs.getattr(_b(path))  # existence; permissions are the kernel's (default_permissions)
        return 0

    @_errors_mapped
    def opendir(self, path):
        if not self.fs.catalog.resolve(_b(path)).is_dir:
            raise FuseOSError(errno.ENOTDIR)
        return 0
