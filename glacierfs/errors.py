"""Errors users see.

UserError is the one exception type for bad input and unusable settings: the CLI prints its
message on one line and exits with its code, never a traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; `str(e)` is the whole one-line message."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
