"""Which server a client talks to: one per user, per state directory and per installation.

A server runs the code it imported when it started, so a client must never talk to a
server of other code: two checkouts, two venvs, or a pkgfs upgraded since the server
started. The server's **key** is a sha256 of the interpreter (``sys.executable``) and of
the location, size and mtime of every module of the installed ``pkgfs.store`` and
``pkgfs.vfs`` packages; any edit, upgrade or other location gives another key, hence
another server.

Everything about a server lives in ``$XDG_STATE_HOME/pkgfs/servers/`` (``~/.local/state``),
a directory of mode 0700 that only its user may enter (checked, as the mounts' state is):

- ``<key>.json``: the record, ``{"pid": ..., "socket": "@pkgfs-server-..."}``, written once
  the server listens. The socket is abstract (nothing stale after a ``kill -9``) and its
  name ends in 128 random bits, as each mount's control socket (``pkgfs.vfs.fuse.wire``):
  another user cannot bind it first, and both ends check ``SO_PEERCRED`` (same uid only).
- ``<key>.lock``: ``flock``-ed by the server for its life: at most one server per key.
- ``<key>.start``: ``flock``-ed by a client while it starts a server, so two commands at
  once start one.
- ``<key>.log``: a detached server's output.

This module imports only the standard library: the client imports it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import stat
import sys
from collections.abc import Mapping, Sequence

__all__ = ["Server", "installation_key", "new_address", "server_for", "servers_dir"]

_PACKAGES = ("store", "vfs")


def _package_dirs() -> list[str]:
    """The directories of pkgfs.store and pkgfs.vfs, wherever they are installed (an
    editable install maps them to a checkout's store/ and vfs/)."""
    import importlib.util  # noqa: PLC0415 (only here: the client's one lookup)

    found: list[str] = []
    for name in _PACKAGES:
        spec = importlib.util.find_spec(f"pkgfs.{name}")
        if spec is not None and spec.submodule_search_locations:
            found.extend(spec.submodule_search_locations)
    return found


def installation_key(
    package_dirs: Sequence[str | os.PathLike[str]] | None = None, executable: str = ""
) -> str:
    """The hex sha256 naming this installation: ``executable`` (default ``sys.executable``)
    and the path, size and mtime of every ``.py`` file below ``package_dirs`` (default:
    where pkgfs.store and pkgfs.vfs are installed). About a millisecond."""
    digest = hashlib.sha256((executable or sys.executable).encode() + b"\0")
    for root in package_dirs if package_dirs is not None else _package_dirs():
        digest.update(os.path.realpath(root).encode() + b"\0")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith(".py"):
                    info = os.stat(os.path.join(dirpath, name))
                    line = f"{dirpath}/{name} {info.st_size} {info.st_mtime_ns}\0"
                    digest.update(line.encode())
    return digest.hexdigest()


def servers_dir(environ: Mapping[str, str] = os.environ) -> str:
    """``$XDG_STATE_HOME/pkgfs/servers`` (``~/.local/state/...``), as pkgfs.store.xdg reads it."""
    value = environ.get("XDG_STATE_HOME", "")
    if not value or not os.path.isabs(value):
        value = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(value, "pkgfs", "servers")


def new_address(key: str) -> str:
    """A fresh, unguessable abstract socket name for the server of ``key``."""
    return f"\0pkgfs-server-{os.getuid()}-{key[:16]}-{secrets.token_hex(16)}"


class Server:
    """Where the server of one key keeps its files (see the module's docstring). Paths are
    strings: the client does without pathlib."""

    def __init__(self, directory: str, key: str) -> None:
        self.directory, self.key = directory, key
        base = os.path.join(directory, key)
        self.record, self.lock, self.start_lock, self.log = (
            base + suffix for suffix in (".json", ".lock", ".start", ".log")
        )

    def make_directory(self) -> None:
        """Create the directory, mode 0700. Raises ``PermissionError`` when it exists but
        is another user's or open to others (then no server is used)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        info = os.lstat(self.directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise PermissionError(f"{self.directory}: not a directory of mode 0700 of yours")

    def read(self) -> tuple[int, str] | None:
        """The running server's (pid, socket address), or None when none recorded."""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            with open(self.record, encoding="utf-8") as f:
                data = json.load(f)
            return int(data["pid"]), str(data["socket"]).replace("@", "\0", 1)
        return None

    def write(self, pid: int, address: str) -> None:
        """Record the server listening at ``address``, atomically. Raises ``OSError``."""
        tmp = f"{self.record}.tmp{os.getpid()}"
        data = {"pid": pid, "socket": address.replace("\0", "@", 1), "key": self.key}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data) + "\n")
        os.replace(tmp, self.record)

    def forget(self) -> None:
        """Remove the record (the server stopped)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.record)


def server_for(environ: Mapping[str, str] = os.environ) -> Server:
    """The server this installation would use for ``environ``'s user and state directory."""
    return Server(servers_dir(environ), installation_key())
