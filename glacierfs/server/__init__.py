"""`glacierfs serve`: a local, disk-backed service that speaks the Glacier vault REST API."""

from .config import ServerConfig
from .runner import LocalVaultServer, remote_set_faults, remote_stats

__all__ = ["LocalVaultServer", "ServerConfig", "remote_set_faults", "remote_stats"]
