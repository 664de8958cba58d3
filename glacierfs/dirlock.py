"""One process per directory: an exclusive flock on a file in it. The kernel drops the lock
when its process ends, kill -9 included, so nothing is left to clean up."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import UserError


class DirLock:
    def __init__(self, directory: Path, name: str, refusal: str) -> None:
        """Lock DIRECTORY/NAME, or raise UserError(refusal) while another process holds it."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.fd = os.open(Path(directory) / name, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise UserError(refusal) from None

    def release(self) -> None:
        os.close(self.fd)
