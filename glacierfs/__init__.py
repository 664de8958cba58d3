"""glacierfs: a filesystem for Amazon S3 Glacier vaults, and a local Glacier-compatible service."""

__version__ = "0.1.0"
