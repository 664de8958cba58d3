"""Shared fixtures: the local vault service in-process, and as a real `glacierfs serve` process.

Every fixture stops what it started, also when the test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from glacierfs.server import LocalVaultServer, ServerConfig

# Fail fast in tests: one attempt, no client-side retries unless a test asks for them
# (botocore's max_attempts counts retries; total_max_attempts counts attempts).
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


@pytest.fixture
def server(tmp_path: Path):
    """An in-process local vault service on a random loopback port."""
    with LocalVaultServer(ServerConfig(data_dir=tmp_path / "vault-data")) as srv:
        yield srv


@pytest.fixture
def glacier(server: LocalVaultServer):
    """A boto3 glacier client for `server`, with retries off."""
    return boto3.client("glacier", config=NO_RETRIES, **server.client_kwargs())


@pytest.fixture
def vault(glacier) -> str:
    glacier.create_vault(vaultName="test-vault")
    return "test-vault"


class ServeProcess:
    """`glacierfs serve` in a child process; stopped (or killed) at teardown."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "glacierfs", "serve", "--data-dir", str(data_dir), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self.proc.kill()
            _, err = self.proc.communicate(timeout=30)
            raise RuntimeError(f"glacierfs serve did not start: {line!r} {err}")
        self.endpoint_url = line

    def client(self, **kwargs):
        import configparser

        creds = configparser.ConfigParser()
        creds.read(self.data_dir / "credentials")
        return boto3.client(
            "glacier",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=creds["default"]["aws_access_key_id"],
            aws_secret_access_key=creds["default"]["aws_secret_access_key"],
            config=kwargs.pop("config", NO_RETRIES),
            **kwargs,
        )

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        return self.proc.returncode


@pytest.fixture
def serve_process(tmp_path: Path):
    """Factory: start `glacierfs serve` processes; all are stopped at teardown."""
    started: list[ServeProcess] = []

    def start(*args: str, data_dir: Path | None = None) -> ServeProcess:
        proc = ServeProcess(data_dir or tmp_path / "serve-data", *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
