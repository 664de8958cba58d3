"""The fusepy adapter: translate, call fs, map errors, log. Nothing else.

Paths arrive as str decoded with latin-1 (set in mount.py), which maps every byte to one
character and back, so any byte name survives the round trip to the core's bytes.
"""

from __future__ import annotations

import errno
import logging

from fuse import FuseOSError, Operations, fuse_get_context

from .errors import errno_for, is_expected
from .fs import GlacierFS

log = logging.getLogger(__name__)
ENCODING = "latin-1"


def _b(path: str) -> bytes:
    return path.encode(ENCODING)


def _caller() -> tuple[int, int, int]:
    """uid, gid and the calling *process* id: FUSE reports the thread id, and a writer's
    close may come from another thread of the process that opened the file."""
    uid, gid, tid = fuse_get_context()
    try:
        with open(f"/proc/{tid}/status") as status:
            for line in status:
                if line.startswith("Tgid:"):
                    return uid, gid, int(line.split()[1])
    except OSError:
        pass  # the thread is gone already; its id is all we have
    return uid, gid, tid


_TIME_KEYS = {"st_atime_ns": "st_atime", "st_mtime_ns": "st_mtime", "st_ctime_ns": "st_ctime"}


class GlacierOperations(Operations):
    use_ns = True  # utimens gets integer nanoseconds

    def __init__(self, make_fs, on_init=None, on_destroy=None) -> None:
        # The core is built in init(), after libfuse has daemonized: threads and sockets made
        # before the fork would not survive it.
        self._make_fs = make_fs
        self._on_init = on_init
        self._on_destroy = on_destroy
        self.fs: GlacierFS | None = None

    def __call__(self, op, *args):
        try:
            return getattr(self, op)(*args)
        except FuseOSError:
            raise
        except Exception as error:
            err = errno_for(error)
            if is_expected(error):
                log.debug("%s%r -> %s: %s", op, args[:1], errno.errorcode.get(err, err), error)
            else:
                log.error("%s%r failed unexpectedly", op, args[:1], exc_info=True)
            raise FuseOSError(err) from None

    # ---- lifecycle ------------------------------------------------------------------------

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

    def getattr(self, path, fh=None):
        # fusepy with use_ns wants integer nanoseconds under the st_*time keys.
        return {_TIME_KEYS.get(k, k): v for k, v in self.fs.getattr(_b(path)).items()}

    def readdir(self, path, fh):
        return [name.decode(ENCODING) for name in self.fs.readdir(_b(path))]

    def mkdir(self, path, mode):
        uid, gid, _ = _caller()
        self.fs.mkdir(_b(path), mode, uid, gid)

    def unlink(self, path):
        self.fs.unlink(_b(path))

    def rmdir(self, path):
        self.fs.rmdir(_b(path))

    def rename(self, old, new):
        self.fs.rename(_b(old), _b(new))

    def symlink(self, target, source):
        # fusepy: create `target` pointing at `source` (ln -s source target)
        uid, gid, _ = _caller()
        self.fs.symlink(_b(target), _b(source), uid, gid)

    def readlink(self, path):
        return self.fs.readlink(_b(path)).decode(ENCODING)

    def link(self, target, source):
        self.fs.link(_b(source), _b(target))

    def chmod(self, path, mode):
        self.fs.chmod(_b(path), mode)

    def chown(self, path, uid, gid):
        self.fs.chown(_b(path), uid, gid)

    def utimens(self, path, times=None):
        self.fs.utimens(_b(path), times[1] if times else None)

    def statfs(self, path):
        return self.fs.statfs()

    # ---- files ----------------------------------------------------------------------------

    def create(self, path, mode, fi=None):
        uid, gid, pid = _caller()
        return self.fs.create(_b(path), mode, uid, gid, pid)

    def open(self, path, flags):
        _, _, pid = _caller()
        return self.fs.open(_b(path), flags, pid)

    def read(self, path, size, offset, fh):
        return self.fs.read(fh, size, offset)

    def write(self, path, data, offset, fh):
        return self.fs.write(fh, data, offset)

    def truncate(self, path, length, fh=None):
        self.fs.truncate(_b(path), length, fh)

    def flush(self, path, fh):
        _, _, pid = _caller()
        self.fs.flush(fh, pid)

    def release(self, path, fh):
        self.fs.release(fh)

    def fsync(self, path, datasync, fh):
        self.fs.fsync(fh)

    def access(self, path, amode):
        self.fs.getattr(_b(path))  # existence; permissions are the kernel's (default_permissions)
        return 0

    def opendir(self, path):
        if not self.fs.catalog.resolve(_b(path)).is_dir:
            raise FuseOSError(errno.ENOTDIR)
        return 0

