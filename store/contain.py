"""Containment: every path a wheel, a lock or a saved view names stays inside its root.

Those names come from files pkgfs does not write: an entry point's name and a
``.data/scripts`` member (a wheel), a wheel's file name (a lock), the paths of a saved view
(a file in the store). The checks here decide what a safe name is; :class:`Root` makes
every write pkgfs makes outside a mount (a venv's scripts and data links) with them:

- the root is opened once, and each directory below it with ``O_DIRECTORY | O_NOFOLLOW``;
  every call works relative to those descriptors, so a symlink planted anywhere below the
  root is never followed, whatever happens to the path string meanwhile;
- a file is written under a temporary name and renamed into place with
  ``RENAME_NOREPLACE`` (or linked: ``link(2)`` never replaces either), so it appears whole
  and never replaces what was there, the venv's own ``python`` and ``activate`` included;
- each write returns a :class:`Made`, and :meth:`Root.remove` removes a path only while it
  is still exactly that: a file the user edited or replaced since stays.

Standard library only: the store layer checks index rows and saved views with it too.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .errors import UnsafePathError
from .layout import libc

__all__ = [
    "Made",
    "Root",
    "contained",
    "is_plain_name",
    "is_plain_path",
    "is_safe_path",
    "unsafe_path_in",
]

# A path with an empty, "." or ".." component, absolute, with a backslash or a NUL.
_UNSAFE_PATH = re.compile(r"\A/|(?:\A|/)\.{0,2}(?:/|\Z)|[\\\x00]")


def is_plain_name(name: str) -> bool:
    """Whether ``name`` is one plain file name: not empty, no ``/``, ``\\`` or NUL, and not
    starting with ``.`` (so neither ``.``, ``..`` nor a hidden file)."""
    return (
        bool(name)
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
    )


def is_safe_path(path: str) -> bool:
    """Whether ``path`` is a normalized relative path: not absolute, no empty, ``.`` or
    ``..`` component, no ``\\`` or NUL. Components may start with ``.`` (``.libs``)."""
    return _UNSAFE_PATH.search(path) is None


def unsafe_path_in(paths: Iterable[str]) -> str | None:
    """The first of ``paths`` that :func:`is_safe_path` refuses, or None; for many paths at
    once (a saved view's, at every mount) at a fraction of the cost of checking each.

    Joined as ``/p1/p2/.../``, every component of every path is bounded by ``/`` on both
    sides, so a path is unsafe exactly when the join holds ``//`` (an empty component, an
    absolute or an empty path), ``/./``, ``/../``, a backslash or a NUL.
    """
    paths = list(paths)
    joined = "/" + "/".join(paths) + "/"
    if paths and any(s in joined for s in ("//", "/./", "/../", "\\", "\x00")):
        return next(p for p in paths if not is_safe_path(p))
    return None


def is_plain_path(path: str) -> bool:
    """Whether every component of ``path`` is a plain name (:func:`is_plain_name`)."""
    return all(is_plain_name(part) for part in path.split("/"))


def contained(root: Path, name: str) -> Path:
    """``root / name``, when ``name`` is one plain file name that is not a symlink there.

    For names a lock gives (a wheel's file name): a download is written there and nowhere
    else. Raises :class:`UnsafePathError` otherwise.
    """
    if not is_plain_name(name):
        raise UnsafePathError(f"{name!r} is not one plain file name: not written into {root}")
    path = root / name
    if path.is_symlink():
        raise UnsafePathError(f"{path}: a symbolic link: not written through")
    return path


@dataclass(frozen=True)
class Made:
    """What pkgfs made at a path below a root: a file holding bytes of this sha256, or a
    symlink to this target. Saved as JSON, so that unmount removes exactly that."""

    path: str  # relative to the root, plain components
    sha256: str | None = None
    symlink: str | None = None

    def to_json(self) -> dict[str, str]:
        row = {"path": self.path}
        if self.sha256 is not None:
            row["sha256"] = self.sha256
        if self.symlink is not None:
            row["symlink"] = self.symlink
        return row

    @classmethod
    def from_json(cls, row: object) -> Made:
        """Raises ``ValueError`` for anything but a row :meth:`to_json` wrote."""
        if not isinstance(row, dict) or not isinstance(row.get("path"), str):
            raise ValueError(f"not a made path: {row!r}")
        sha256, symlink = row.get("sha256"), row.get("symlink")
        if not (isinstance(sha256, str) ^ isinstance(symlink, str)):
            raise ValueError(f"not a made path: {row!r}")
        return cls(row["path"], sha256, symlink)


_RENAME_NOREPLACE = 1  # linux/fs.h


def _rename_noreplace(directory: int, source: str, target: str) -> None:
    """Rename ``source`` to ``target`` in one directory; ``FileExistsError`` if ``target``
    exists. ``renameat2(RENAME_NOREPLACE)``, else (a filesystem without it) ``link(2)``."""
    source_b, target_b = os.fsencode(source), os.fsencode(target)
    if libc.renameat2(directory, source_b, directory, target_b, _RENAME_NOREPLACE) == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOSYS):
        raise OSError(err, os.strerror(err), target)
    os.link(source, target, src_dir_fd=directory, dst_dir_fd=directory, follow_symlinks=False)
    os.unlink(source, dir_fd=directory)


class Root:
    """A directory that writes stay inside: opened once; nothing below it followed.

    The root itself is the caller's (a venv the user named); every path below it is
    relative, made of plain names (:func:`is_plain_path`), and walked one directory at a
    time with ``O_NOFOLLOW``. Methods raise :class:`UnsafePathError` for any other path,
    and ``OSError`` as the system calls do (``ELOOP`` or ``ENOTDIR`` when a symlink or a
    file stands where a directory should be).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Root:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _parent(self, relative: str) -> tuple[int, str]:
        """A new descriptor of ``relative``'s directory, and its last component."""
        if not is_plain_path(relative):
            raise UnsafePathError(f"{self.path}: {relative!r} is not a path of plain names")
        *parents, name = relative.split("/")
        fd = os.dup(self._fd)
        try:
            for part in parents:
                child = os.open(
                    part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                )
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd, name

    def lstat(self, relative: str) -> os.stat_result | None:
        """What is at ``relative``, not following a symlink there; None if nothing is."""
        fd, name = self._parent(relative)
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(fd)

    def create_file(self, relative: str, data: bytes, mode: int) -> Made | None:
        """Write a new file at ``relative`` atomically; None (nothing written) if the path
        exists, as anything: a file, a symlink, even a dangling one."""
        fd, name = self._parent(relative)
        try:
            tmp = f".{name}.pkgfs-{secrets.token_hex(6)}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with open(os.open(tmp, flags, 0o600, dir_fd=fd), "wb") as stream:
                placed = False
                try:
                    stream.write(data)
                    os.fchmod(stream.fileno(), mode)
                    stream.flush()
                    _rename_noreplace(fd, tmp, name)
                    placed = True
                except FileExistsError:
                    return None
                finally:
                    if not placed:
                        os.unlink(tmp, dir_fd=fd)
        finally:
            os.close(fd)
        return Made(relative, sha256=hashlib.sha256(data).hexdigest())

    def create_symlink(self, relative: str, target: str) -> Made | None:
        """Make a symlink at ``relative`` pointing to ``target``; None if the path exists.
        ``symlink(2)`` is atomic and never replaces."""
        fd, name = self._parent(relative)
        try:
            os.symlink(target, name, dir_fd=fd)
        except FileExistsError:
            return None
        finally:
            os.close(fd)
        return Made(relative, symlink=target)

    def remove(self, made: Made) -> bool:
        """Remove ``made.path`` if it still holds exactly what was made there; False (and
        nothing removed) if it is gone, edited, or replaced. A symlink is removed itself,
        never followed. (A change in the instant between the check and the unlink is not
        seen: the user racing their own unmount.)"""
        try:
            fd, name = self._parent(made.path)
        except (OSError, UnsafePathError):
            return False
        try:
            if not self._holds(fd, name, made):
                return False
            os.unlink(name, dir_fd=fd)
            return True
        except FileNotFoundError:
            return False
        finally:
            os.close(fd)

    @staticmethod
    def _holds(fd: int, name: str, made: Made) -> bool:
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if made.symlink is not None:
                return stat.S_ISLNK(info.st_mode) and os.readlink(name, dir_fd=fd) == made.symlink
            if not stat.S_ISREG(info.st_mode):
                return False
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            file = os.open(name, flags, dir_fd=fd)
        except OSError:
            return False
        with open(file, "rb") as stream:
            return hashlib.file_digest(stream, "sha256").hexdigest() == made.sha256
