"""Which server a client talks to: one per user, per state directory and per installation.

A server runs the code it imported when it started, so a client must never talk to a
server of other code: two checkouts, two venvs, or a pkgfs upgraded since the server
started. The server's **key** is a sha256 of the interpreter (``sys.executable``) and of
the location, size and mtime of every module of the installed ``pkgfs.store`` and
``pkgfs.vfs`` packages; any edit, upgrade or other location gives another key, hence
another server.

Everything about a server lives in ``$XDG_STATE_HOME/pkgfs/servers/`` (``~/.local/state``),
a directory of mode 0700 that only its user may enter (checked, as the mounts' state is):

- ``<key>.server``: the record, written once the server listens: four lines of text,
  ``pkgfs-server-record 1``, ``pid N``, ``socket @pkgfs-server-...`` and ``key <key>`` (a
  client reads it without json). Anything else (a ``<key>.json`` record of a pkgfs before
  this format, a damaged or foreign file) reads as "no server"; a starting server removes
  the ``.json`` records nothing holds. The socket is abstract (nothing stale after a
  ``kill -9``) and its name ends in 128 random bits, as each mount's control socket
  (``pkgfs.vfs.fuse.wire``): another user cannot bind it first, and both ends check
  ``SO_PEERCRED`` (same uid only).
- ``<key>.lock``: ``flock``-ed by the server for its life: at most one server per key.
- ``<key>.start``: ``flock``-ed by a client while it starts a server, so two commands at
  once start one.
- ``<key>.log``: a detached server's output.

This module imports only what a bare interpreter has loaded already (os, sys, stat) and
CPython's builtin sha256: the client imports it on every command, and hashlib (OpenSSL),
json and importlib.util would each cost it milliseconds.
"""

import os
import stat
import sys

# TYPE_CHECKING as a plain constant: importing typing would cost the client milliseconds
# (type checkers take any TYPE_CHECKING to be true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from hashlib import sha256
else:
    try:  # CPython's own sha256: hashlib loads OpenSSL (~3 ms), for the same digest
        from _sha256 import sha256  # 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # 3.12 and later
        except ImportError:
            from hashlib import sha256

__all__ = [
    "RECORD_TAG",
    "Server",
    "clear_old_records",
    "installation_key",
    "new_address",
    "server_for",
    "servers_dir",
]

RECORD_TAG = b"pkgfs-server-record 1"
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
_PACKAGES = ("store", "vfs")


def _package_dirs() -> list[str]:
    """The directories of pkgfs.store and pkgfs.vfs, wherever they are installed (an
    editable install maps them to a checkout's store/ and vfs/): what
    ``importlib.util.find_spec`` answers, asked of each finder of ``sys.meta_path`` as it
    does (importlib.util itself imports contextlib, functools and more: ~4 ms)."""
    parent = sys.modules["pkgfs"].__path__  # imported: this module is in it
    found: list[str] = []
    for name in _PACKAGES:
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = None if find_spec is None else find_spec(f"pkgfs.{name}", parent)
            if spec is not None:
                found.extend(spec.submodule_search_locations or ())
                break
    return found


def installation_key(
    package_dirs: "Sequence[str | os.PathLike[str]] | None" = None, executable: str = ""
) -> str:
    """The hex sha256 naming this installation: ``executable`` (default ``sys.executable``)
    and the path, size and mtime of every ``.py`` file below ``package_dirs`` (default:
    where pkgfs.store and pkgfs.vfs are installed). About a millisecond."""
    digest = sha256((executable or sys.executable).encode() + b"\0")
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


def servers_dir(environ: "Mapping[str, str]" = os.environ) -> str:
    """``$XDG_STATE_HOME/pkgfs/servers`` (``~/.local/state/...``), as pkgfs.store.xdg reads it."""
    value = environ.get("XDG_STATE_HOME", "")
    if not value or not os.path.isabs(value):
        value = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(value, "pkgfs", "servers")


def new_address(key: str) -> str:
    """A fresh, unguessable abstract socket name for the server of ``key`` (128 random
    bits from ``os.urandom``, as ``secrets.token_hex(16)``)."""
    return f"\0pkgfs-server-{os.getuid()}-{key[:16]}-{os.urandom(16).hex()}"


class Server:
    """Where the server of one key keeps its files (see the module's docstring). Paths are
    strings: the client does without pathlib."""

    def __init__(self, directory: str, key: str) -> None:
        self.directory, self.key = directory, key
        base = os.path.join(directory, key)
        self.record, self.lock, self.start_lock, self.log = (
            base + suffix for suffix in (".server", ".lock", ".start", ".log")
        )

    def make_directory(self) -> None:
        """Create the directory, mode 0700. Raises ``PermissionError`` when it exists but
        is another user's or open to others (then no server is used)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        info = os.lstat(self.directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise PermissionError(f"{self.directory}: not a directory of mode 0700 of yours")

    def read(self) -> tuple[int, str] | None:
        """The running server's (pid, socket address), or None when none is recorded, or
        the record is not one of this format and this key (see the module's docstring)."""
        try:
            fd = os.open(self.record, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            data = os.read(fd, 4096)
        except OSError:
            return None
        finally:
            os.close(fd)
        lines = data.split(b"\n")
        if len(lines) != 5 or lines[0] != RECORD_TAG or lines[4]:
            return None
        fields = {k: v for k, _, v in (line.partition(b" ") for line in lines[1:4])}
        pid, address = fields.get(b"pid", b""), fields.get(b"socket", b"")
        if not pid.isdigit() or not address.startswith(b"@pkgfs-server-"):
            return None
        if fields.get(b"key") != self.key.encode():
            return None
        return int(pid), "\0" + address[1:].decode(errors="replace")

    def write(self, pid: int, address: str) -> None:
        """Record the server listening at ``address``, atomically. Raises ``OSError``."""
        tmp = f"{self.record}.tmp{os.getpid()}"
        lines = [RECORD_TAG.decode(), f"pid {pid}", f"socket @{address[1:]}", f"key {self.key}"]
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, self.record)

    def forget(self) -> None:
        """Remove the record (the server stopped)."""
        try:  # noqa: SIM105 (contextlib would cost the client milliseconds)
            os.unlink(self.record)
        except FileNotFoundError:
            pass


def clear_old_records(directory: str, held: str = "") -> list[str]:
    """Remove the ``<key>.json`` records in ``directory`` left by a pkgfs before the
    record's text format whose server is gone (no process holds ``<key>.lock``; the
    caller holds the lock of the key ``held``); the names removed. A server that still
    runs keeps its record, and removes it itself when it stops. Called by a starting
    server, never by the client."""
    import fcntl  # noqa: PLC0415 (only in the server)

    removed: list[str] = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        record = os.path.join(directory, name)
        key = name[: -len(".json")]
        fd = -1 if key == held else os.open(record[:-5] + ".lock", _LOCK_FLAGS, 0o600)
        try:
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Held: its server, which writes the record only while it holds the lock, is
            # gone and cannot come back meanwhile.
            os.unlink(record)
            removed.append(name)
        except (BlockingIOError, FileNotFoundError):
            pass  # its server runs, or someone else removed the record
        finally:
            if fd >= 0:
                os.close(fd)
    return removed


def server_for(environ: "Mapping[str, str]" = os.environ) -> Server:
    """The server this installation would use for ``environ``'s user and state directory."""
    return Server(servers_dir(environ), installation_key())
