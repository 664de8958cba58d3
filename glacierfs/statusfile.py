"""The mount daemon's status file, read by `glacierfs status` and `glacierfs umount`.

The daemon writes it next to its pid file (same name, suffix `.status`), about once a second,
from one daemon thread that runs from the moment the mount is live until destroy, when the file
is removed. Each write is atomic (a temporary file, then rename), so a reader sees a whole
snapshot or the previous one. The format is in docs/design.md ("The status file").

Upload rates are computed here, in the daemon, over a sliding window of the bytes each writer's
parts have had confirmed by the vault: a one-shot `glacierfs status` then needs one reading.
Bytes count as uploaded when the vault confirms a whole part, so the rate moves in part steps.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path

from .errors import UserError
from .mount import pid_file

log = logging.getLogger(__name__)

VERSION = 1
INTERVAL = 1.0  # seconds between two writes
RATE_WINDOW = 10.0  # seconds of history behind each upload rate


def status_file(mountpoint: Path) -> Path:
    return pid_file(mountpoint).with_suffix(".status")


class StatusWriter:
    """The daemon thread that keeps the status file of one mount up to date."""

    def __init__(self, fs, mountpoint: Path, interval: float = INTERVAL) -> None:
        self.fs = fs  # a GlacierFS
        self.mountpoint = mountpoint
        self.path = status_file(mountpoint)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status", daemon=True)
        self._history: dict[str, deque[tuple[float, int]]] = {}
        self._failing = False

    def start(self) -> "StatusWriter":
        self._thread.start()
        return self

    def stop(self) -> None:
        """At unmount, after the last uploads: remove the file, or, if an upload still failed,
        leave a last snapshot saying how many, for `glacierfs umount` to report."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        unfinished = len(self.fs.journal.entries())
        if unfinished:
            self._write(unfinished=unfinished, cache_dir=str(self.fs.cache.directory))
        else:
            self.path.unlink(missing_ok=True)

    def _run(self) -> None:
        while True:
            self._write()
            if self._stop.wait(self.interval):
                return

    def _write(self, **final) -> None:
        try:
            snapshot = {**self.snapshot(), **final}
            temp = self.path.with_suffix(".status.tmp")
            temp.write_text(json.dumps(snapshot))
            os.replace(temp, self.path)
            self._failing = False
        except Exception as error:  # noqa: BLE001 - a status display must not stop the mount
            if not self._failing:
                log.warning("cannot write the status file %s: %s", self.path, error)
            self._failing = True

    def snapshot(self) -> dict:
        now = time.time()
        status = self.fs.status()
        for writer in status["writers"]:
            writer["rate"] = self._rate(writer, now)
        live = {writer["id"] for writer in status["writers"]}
        for gone in set(self._history) - live:
            del self._history[gone]
        return {
            "version": VERSION,
            "pid": os.getpid(),
            "time": now,
            "interval": self.interval,
            "mountpoint": str(self.mountpoint),
            "vault": self.fs.vault.name,
            "part_size": self.fs.config.part_size,
            "rate": sum(writer["rate"] for writer in status["writers"]),
            **status,
        }

    def _rate(self, writer: dict, now: float) -> float:
        """Bytes per second the vault confirmed over the last RATE_WINDOW seconds."""
        uploaded = writer["bytes_uploaded"]
        history = self._history.setdefault(writer["id"], deque([(writer["started"], 0)]))
        history.append((now, uploaded))
        while len(history) > 1 and now - history[1][0] >= RATE_WINDOW:
            history.popleft()
        first_time, first_bytes = history[0]
        if now <= first_time or uploaded <= first_bytes:  # a rewritten part counts again
            return 0.0
        return (uploaded - first_bytes) / (now - first_time)


def read_status(mountpoint: Path) -> dict | None:
    """The last snapshot the daemon of `mountpoint` wrote, or None if there is none."""
    try:
        status = json.loads(status_file(mountpoint).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read the status of {mountpoint}: {error}", exit_code=1)
    return status if isinstance(status, dict) and status.get("version") == VERSION else None
