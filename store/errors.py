"""The error tree of pkgfs.

Every error a user can cause derives from :class:`PkgfsError` and reads as one line. Each
also derives from the builtin that describes it best, so callers may catch either.
The CLI catches :class:`PkgfsError`, prints it on one line and exits 1.
"""

from __future__ import annotations

import os

__all__ = ["PkgfsError", "StoreError", "WheelError"]


class PkgfsError(Exception):
    """Base of every error pkgfs reports to a user as a single line."""


class StoreError(PkgfsError, OSError):
    """The store cannot be opened or written (permissions, layout from the future...)."""


class WheelError(PkgfsError, ValueError):
    """A wheel was refused. The message names the wheel file and the reason."""

    def __init__(self, wheel: str | os.PathLike[str], reason: str) -> None:
        self.wheel = os.path.basename(os.fspath(wheel))
        # One line, always: reasons built from archive member names may hold newlines.
        self.reason = " ".join(reason.split())
        super().__init__(f"{self.wheel}: {self.reason}")

    def __reduce__(self) -> tuple[type[WheelError], tuple[str, str]]:
        # Ingest workers are processes: the error travels back pickled.
        return (type(self), (self.wheel, self.reason))
