"""The error tree of pkgfs: every error a user can cause, in one place.

Every error a user can cause derives from :class:`PkgfsError` and reads as one line. Each
also derives from the builtin that describes it best, so callers may catch either (as
pypa/installer's ``class X(ValueError, InstallerError)``). The CLI catches
:class:`PkgfsError`, prints it on one line and exits 1; anything else is a bug in pkgfs.

This module lives in ``pkgfs.store`` because every layer imports the store; the errors of
the upper layers (views, mounts) are declared here too, so there is one tree to read.
"""

from __future__ import annotations

import os
import re

__all__ = [
    "BuildError",
    "BytecodeError",
    "FetchError",
    "LockError",
    "MountError",
    "NotFoundError",
    "PkgfsError",
    "ReadOnlyStoreError",
    "StoreError",
    "TargetError",
    "UnsafePathError",
    "UsageError",
    "ViewError",
    "WheelError",
    "one_line",
    "redact",
]

# user:token@ in a URL: credentials are never printed, logged or written to a state file.
# Up to the authority's last "@" (RFC 3986: the host follows the last one), so a password
# with a raw "@" in it is hidden whole.
_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")


def redact(text: str) -> str:
    """``text`` with the userinfo of every URL in it replaced by ``***``."""
    return _CREDENTIALS.sub(r"\g<scheme>***@", text)


def one_line(text: str) -> str:
    """``text`` on one line (whitespace runs, newlines included, become one space), redacted."""
    return redact(" ".join(text.split()))


class PkgfsError(Exception):
    """Base of every error pkgfs reports to a user as a single line."""

    def __str__(self) -> str:
        return one_line(super().__str__())


class UsageError(PkgfsError, ValueError):
    """A command given options that do not go together, or missing what it needs: the
    command line's fault, so it exits 2, as argparse does for its own usage errors."""

    exit_status = 2


class StoreError(PkgfsError, OSError):
    """The store cannot be opened or written (permissions, layout from the future...)."""


class ReadOnlyStoreError(StoreError):
    """A command needs to write to a store it may only read (a read-only mount, another
    user's store, a directory without write permission). The message names the store and
    what is missing, and says to run ``pkgfs sync`` where the store is writable."""

    def __init__(
        self, root: str | os.PathLike[str], missing: str, command: str = "pkgfs sync"
    ) -> None:
        self.root = os.fspath(root)
        self.missing = missing
        self.command = command
        super().__init__(
            f"the store at {self.root} is read-only: run `{command}` where it is writable"
            f" ({missing})"
        )

    def __reduce__(self) -> tuple[type[ReadOnlyStoreError], tuple[str, str, str]]:
        return (type(self), (self.root, self.missing, self.command))


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


class LockError(PkgfsError, ValueError):
    """A lockfile cannot be turned into wheels. The message names the file and the problem."""

    def __init__(self, lock: str | os.PathLike[str], reason: str) -> None:
        self.lock = os.fspath(lock)
        self.reason = " ".join(reason.split())
        super().__init__(f"{self.lock}: {self.reason}")

    def __reduce__(self) -> tuple[type[LockError], tuple[str, str]]:
        return (type(self), (self.lock, self.reason))


class FetchError(PkgfsError, OSError):
    """An index or a download failed. The message names the URL (redacted) or file."""


class NotFoundError(FetchError):
    """The server answered 404 or 410: the page or file is not there. For an index or a
    find-links page this means "not here", not a failure."""


class TargetError(PkgfsError, OSError):
    """The target interpreter cannot be found or run."""


class BytecodeError(PkgfsError, OSError):
    """The target interpreter could not be run to compile."""


class UnsafePathError(PkgfsError, ValueError):
    """A name that a wheel, a lock or a saved view gives would lead outside its directory."""


class ViewError(PkgfsError, ValueError):
    """The wheels cannot be composed into one environment, or a saved view is damaged."""


class MountError(PkgfsError, OSError):
    """A mount cannot be made, found or undone. The message names the mountpoint."""


class BuildError(PkgfsError, OSError):
    """A wheel could not be built from a lock's source or an editable project, or the source
    is not what the lock pins. The message names the package and the source (or the
    project's directory), and the build's log when kept."""

    log: str | None = None  # the build's output, kept in the store's tmp/, when it ran
