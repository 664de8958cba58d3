"""The one place that turns an error into an errno, and the errors users see.

- UserError: bad input or unusable settings. The CLI prints its message on one line and exits
  with its code, never a traceback.
- FsError: a filesystem operation refused on purpose, with its errno and the reason.
- errno_for(): every exception the core can raise, mapped to the errno the mount replies with.
"""

from __future__ import annotations

import errno
import logging
import sqlite3

log = logging.getLogger(__name__)


class UserError(Exception):
    """A problem the user can fix; `str(e)` is the whole one-line message."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class FsError(Exception):
    """A deliberate refusal inside the mount: an errno and a reason for the log."""

    def __init__(self, err: int, reason: str) -> None:
        super().__init__(reason)
        self.errno = err
        self.reason = reason

    def __str__(self) -> str:
        return f"{errno.errorcode.get(self.errno, self.errno)}: {self.reason}"


class UploadFailed(FsError):
    """The vault refused or lost an upload for good (after retries)."""

    def __init__(self, reason: str, err: int = errno.EIO) -> None:
        super().__init__(err, reason)


# Glacier error codes that mean "this will not work if you try again".
_CLIENT_ERRNO = {
    "ResourceNotFoundException": errno.ENOENT,
    "AccessDeniedException": errno.EACCES,
    "InvalidSignatureException": errno.EACCES,
    "UnrecognizedClientException": errno.EACCES,
    "MissingAuthenticationTokenException": errno.EACCES,
    "LimitExceededException": errno.EDQUOT,
    "ThrottlingException": errno.EAGAIN,
    "RequestTimeoutException": errno.ETIMEDOUT,
}


def errno_for(error: BaseException) -> int:
    """The errno for any exception; unexpected ones are EIO (and logged by the caller)."""
    if isinstance(error, FsError):
        return error.errno
    if isinstance(error, OSError) and error.errno:
        return error.errno
    if isinstance(error, sqlite3.Error):  # the catalog or a cache index on a full disk
        full = getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        return errno.ENOSPC if full or "disk is full" in str(error) else errno.EIO
    code = getattr(error, "response", {}).get("Error", {}).get("Code") if hasattr(
        error, "response") else None
    if code:
        return _CLIENT_ERRNO.get(code, errno.EIO)
    return errno.EIO


def is_expected(error: BaseException) -> bool:
    """Expected failures are logged as one line; anything else gets a traceback at debug."""
    return isinstance(error, (FsError, OSError)) or hasattr(error, "response") or (
        errno_for(error) == errno.ENOSPC)
