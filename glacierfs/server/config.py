"""Settings of the local vault service, validated once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

DEFAULT_ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"
DAY = 24 * 3600


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free port
    region: str = DEFAULT_REGION
    account_id: str = DEFAULT_ACCOUNT_ID
    access_key: str | None = None  # None = load or generate a pair in data_dir
    secret_key: str | None = None
    job_delay: float = 0.0  # seconds a job stays InProgress
    upload_expiry: float = DAY  # seconds of inactivity before an upload disappears
    latency_ms: float = 0.0  # added to every request
    faults: str = ""  # see faults.py / README
    seed: int | None = None
    threads: int = 16  # HTTP worker threads

    def __post_init__(self) -> None:
        if not re.fullmatch(r"\d{12}", self.account_id):
            raise UserError(f"--account-id must be 12 digits, got {self.account_id!r}")
        if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", self.region):
            raise UserError(f"--region does not look like an AWS region: {self.region!r}")
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port must be 0-65535, got {self.port}")
        for name in ("job_delay", "upload_expiry", "latency_ms"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must not be negative")
        if (self.access_key is None) != (self.secret_key is None):
            raise UserError("--access-key and --secret-key go together")
        if self.threads < 1:
            raise UserError("--threads must be at least 1")

    def vault_arn(self, name: str) -> str:
        return f"arn:aws:glacier:{self.region}:{self.account_id}:vaults/{name}"
