"""Where the store lives and how its directory is laid out.

::

    $STORE/
      objects-v1/ab/cdef...   one immutable, read-only file per distinct content, named by sha256
      index-v1.sqlite         which wheels exist and which object backs each of their files
      views-v2/<key>          saved views: a lock's wheels as one tree, checksummed (sealed.py)
      tmp/                    staging of ingests and views in progress; garbage after a crash
      lock                    flock: shared by every writer while open, exclusive for gc

A format change gets a new bucket (``objects-v2``, ``index-v2``) rather than a migration in
place, so an older pkgfs never misreads a newer store. Saved views are on their second:
``views-v1/`` held them unsealed, and a store that has one simply no longer reads it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import StoreError
from .objects import object_file
from .xdg import data_home

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "STORE_ENV",
    "StoreLayout",
    "default_store_path",
    "libc",
    "make_shared_dir",
    "resolve_store_path",
    "syncfs",
]

# A store is shared: every user may read every file and enter every directory, whatever the
# umask of the process that wrote them (a root shell with umask 077 would otherwise make a
# store nobody else can read). Only its owner writes. Objects and saved views are 0444.
DIR_MODE = 0o755
FILE_MODE = 0o644  # the index (SQLite gives its -wal and -shm files the same mode)

STORE_ENV = "PKGFS_STORE"


def default_store_path(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_DATA_HOME/pkgfs``, or ``~/.local/share/pkgfs`` (XDG Base Directory spec)."""
    return data_home(environ) / "pkgfs"


def resolve_store_path(
    explicit: str | os.PathLike[str] | None, environ: Mapping[str, str] = os.environ
) -> Path:
    """``--store DIR``, else ``$PKGFS_STORE``, else the XDG default."""
    if explicit:
        return Path(explicit).absolute()
    from_env = environ.get(STORE_ENV, "")
    if from_env:
        return Path(from_env).absolute()
    return default_store_path(environ)


@dataclass(frozen=True)
class StoreLayout:
    """Paths inside one store directory."""

    root: Path

    @property
    def objects(self) -> Path:
        return self.root / "objects-v1"

    @property
    def index(self) -> Path:
        return self.root / "index-v1.sqlite"

    @property
    def views(self) -> Path:
        return self.root / "views-v2"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def lock(self) -> Path:
        """Held shared by every writer while the store is open, exclusively by ``gc``."""
        return self.root / "lock"

    def writable(self) -> bool:
        """Whether this process may write the store: its directory, objects and index (an
        existing store) are writable by it, on a filesystem mounted read-write. False for a
        read-only mount, another user's store, or a directory without write permission."""
        paths = [self.root, self.objects, self.index] if self.index.exists() else [self.root]
        return all(os.access(p, os.W_OK) for p in paths if p.exists()) and self.root.exists()

    def object_path(self, digest: str) -> Path:
        """The file holding the content whose sha256 is ``digest`` (64 lowercase hex digits)."""
        return Path(object_file(str(self.objects), digest))

    def create(self) -> None:
        """Make the directories; safe to call concurrently from several processes."""
        try:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            for path in (self.root, self.objects, self.tmp):
                make_shared_dir(path)
        except OSError as exc:
            raise StoreError(f"cannot create store at {self.root}: {exc.strerror}") from exc


def make_shared_dir(path: Path | str) -> None:
    """Make the directory ``path`` (its parent exists) mode 0755 whatever the umask, or
    leave it as it is if it exists; safe to call concurrently. Raises ``OSError``."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return
    os.chmod(path, DIR_MODE)


# The C library, for the system calls Python lacks (syncfs here, renameat2 in contain.py).
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def syncfs(path: Path) -> None:
    """Flush every dirty page of the filesystem holding ``path`` to disk.

    One ``syncfs(2)`` per ingest costs far less than an ``fsync`` per object, and gives the
    ordering that matters: objects are durable before the index commit that refers to them.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)
