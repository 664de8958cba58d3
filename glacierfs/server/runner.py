"""Run the local vault service: in-process on a background thread, or as `glacierfs serve`.

    with LocalVaultServer(ServerConfig(data_dir=tmp)) as server:
        client = boto3.client("glacier", **server.client_kwargs())
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import secrets
import socket
import sys
import threading
import urllib.request
from pathlib import Path

from cheroot import wsgi

from ..dirlock import DirLock
from ..errors import UserError
from .app import GlacierApp, InjectedDrop
from .auth import Credentials
from .config import ServerConfig

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "credentials"
CONFIG_FILE = "config"
PROFILE = "default"


UNREAD_BODY_DRAINED = 1 << 20  # bytes of an unread request body read to keep the connection


class _Gateway(wsgi.Gateway_10):
    """WSGI 1.0 plus two hooks: environ['glacierfs.abort']() hangs up on the client at once
    (the fault injector's dropped connection; WSGI itself has no way to say that), and
    environ['glacierfs.close_if_unread']() closes the connection after the response when
    much of the request body is unread."""

    def get_environ(self):
        environ = super().get_environ()
        connection = self.req.conn

        def abort() -> None:
            try:
                connection.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already gone

        environ["glacierfs.abort"] = abort

        def close_if_unread() -> None:
            if getattr(request.rfile, "remaining", 0) > UNREAD_BODY_DRAINED:
                request.close_connection = True  # not drained (in one read) but hung up on

        request = self.req
        environ["glacierfs.close_if_unread"] = close_if_unread
        return environ


class _HTTPServer(wsgi.Server):
    """cheroot's server with its error output sent to logging, and injected drops kept quiet."""

    def error_log(self, msg="", level=logging.INFO, traceback=False):
        if sys.exc_info()[0] is InjectedDrop:
            return
        log.log(level, "http: %s", msg, exc_info=traceback)


def load_or_create_credentials(config: ServerConfig) -> tuple[Credentials, bool]:
    """Options first; else the pair stored in DATA_DIR/credentials; else a new random pair.

    Returns the credentials and whether they live in the data dir's credentials file.
    """
    if config.access_key is not None:
        return Credentials(config.access_key, config.secret_key), False
    path = Path(config.data_dir) / CREDENTIALS_FILE
    parser = configparser.ConfigParser()
    if path.exists():
        parser.read(path)
        section = parser[PROFILE] if parser.has_section(PROFILE) else None
        if section and section.get("aws_access_key_id") and section.get("aws_secret_access_key"):
            return Credentials(section["aws_access_key_id"], section["aws_secret_access_key"]), True
        raise UserError(f"{path} has no [{PROFILE}] access key pair; fix or delete it")
    creds = Credentials("AKGF" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30))
    parser[PROFILE] = {
        "aws_access_key_id": creds.access_key,
        "aws_secret_access_key": creds.secret_key,
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        parser.write(out)
    return creds, True


class LocalVaultServer:
    """The Glacier-compatible service on loopback, started and stopped from Python."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        Path(config.data_dir).mkdir(parents=True, exist_ok=True)
        self.credentials, self.credentials_in_data_dir = load_or_create_credentials(config)
        self.app: GlacierApp | None = None
        self._http: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock: DirLock | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> "LocalVaultServer":
        # Two services on one data dir would sweep each other's blobs being written.
        data_dir = Path(self.config.data_dir)
        self._lock = DirLock(data_dir, "serve.lock",
                             f"{data_dir} is served by another glacierfs process already "
                             "(`glacierfs serve`, or a mount with --local); reach it with the "
                             f"endpoint_url in {data_dir / CONFIG_FILE}")
        try:
            self._listen()
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._http.serve, name="glacierfs-serve",
                                        daemon=True)
        self._thread.start()
        self._write_cli_config()
        return self

    def _listen(self) -> None:
        self.app = GlacierApp(self.config, self.credentials)
        http = _HTTPServer(
            (self.config.host, self.config.port), self.app, numthreads=self.config.threads,
            server_name="glacierfs",
        )
        http.gateway = _Gateway
        # cheroot's select timeout, which is also how long stop() waits: 0.5 s by default.
        http.expiration_interval = 0.05
        # Parts are up to 4 GiB; cheroot's own body limit would refuse them.
        http.max_request_body_size = 0
        if self.config.port:
            # A service restarted after kill -9 gets its port back at once: the killed one's
            # connections can hold it for minutes (FIN-WAIT, while clients have not noticed).
            # SO_REUSEPORT would also let two live services share the port, so refuse that.
            _refuse_if_listening(self.config.host, self.config.port)
            http.reuse_port = True
        try:
            http.prepare()
        except OSError as error:
            raise UserError(
                f"cannot listen on {self.config.host}:{self.config.port}: {error.strerror or error}"
            ) from None
        self._http = http

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()
            self._http = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.app is not None:
            self.app.close()
            self.app = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "LocalVaultServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- what clients need --------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._http is not None, "server not started"
        return self._http.bind_addr[1]

    @property
    def endpoint_url(self) -> str:
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def client_kwargs(self) -> dict:
        """Keyword arguments for boto3.client('glacier', ...) that reach this server."""
        return {
            "endpoint_url": self.endpoint_url,
            "region_name": self.config.region,
            "aws_access_key_id": self.credentials.access_key,
            "aws_secret_access_key": self.credentials.secret_key,
        }

    def _write_cli_config(self) -> None:
        """DATA_DIR/config names the region and this run's endpoint, next to the credentials."""
        if not self.credentials_in_data_dir:
            return
        path = Path(self.config.data_dir) / CONFIG_FILE
        parser = configparser.ConfigParser()
        parser[PROFILE] = {"region": self.config.region, "endpoint_url": self.endpoint_url}
        temp = path.with_suffix(".tmp")
        with open(temp, "w") as out:
            parser.write(out)
        os.replace(temp, path)

    def usage_hint(self) -> str:
        data_dir = Path(self.config.data_dir).resolve()
        if self.credentials_in_data_dir:
            return (
                f"AWS CLI: export AWS_SHARED_CREDENTIALS_FILE={data_dir / CREDENTIALS_FILE} "
                f"AWS_CONFIG_FILE={data_dir / CONFIG_FILE}; then aws glacier list-vaults "
                f"--account-id -"
            )
        return (
            f"AWS CLI: aws glacier list-vaults --account-id - --endpoint-url {self.endpoint_url} "
            f"--region {self.config.region} (with the access key you gave)"
        )

    # ---- test hooks ---------------------------------------------------------------------

    def stats(self) -> dict:
        assert self.app is not None, "server not started"
        return self.app.faults.snapshot()

    def set_faults(self, spec: str) -> None:
        assert self.app is not None, "server not started"
        self.app.faults.set_spec(spec)

    def reset_stats(self) -> None:
        assert self.app is not None, "server not started"
        self.app.faults.reset_counts()


def _refuse_if_listening(host: str, port: int) -> None:
    try:
        with socket.create_connection((host, port), timeout=1):
            pass
    except OSError:
        return  # nobody answers: free, or held only by a dead service's sockets
    raise UserError(f"cannot listen on {host}:{port}: another service is listening there")


def remote_stats(endpoint_url: str) -> dict:
    """Request counts of a server running in another process."""
    with urllib.request.urlopen(endpoint_url + "/_glacierfs/stats", timeout=10) as reply:
        return json.load(reply)


def remote_set_faults(endpoint_url: str, spec: str) -> None:
    request = urllib.request.Request(
        endpoint_url + "/_glacierfs/faults", data=spec.encode(), method="PUT"
    )
    with urllib.request.urlopen(request, timeout=10):
        pass
