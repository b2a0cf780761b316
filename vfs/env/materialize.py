"""A view written out as real files: a venv's site-packages without FUSE.

Where FUSE is absent (a CI runner or a container without ``/dev/fuse``), ``pkgfs
materialize`` writes the environment a mount would serve: every file of the view (the
store's objects, each wheel's RECORD and INSTALLER, the bytecode compiled once into the
store, the ``.pkgfs-data`` files the venv's data links point at), and then, as a mount does,
the scripts and links of ``pkgfs.vfs.env.venv.populate_venv``. Walking the view is the whole
method, so a materialized site-packages is, file for file, what the mount shows.

How each file is written (``LinkMode``), as uv's ``--link-mode`` names them:

- ``clone``: a reflink (``FICLONE``) where the filesystem can share the object's blocks
  (btrfs, XFS), else a copy in the kernel (``copy_file_range``); the default.
- ``copy``: always a copy.
- ``hardlink``: a link to the object itself, only on request. An edit through a hardlink
  would change the store, and every environment with it: this mode refuses unless every
  object it links is read-only (mode 0444, as the store makes them), so that an edit
  fails instead; an editor that replaces the file breaks only the link. Executable files
  and generated ones (RECORD, INSTALLER) are copied: an object's mode is shared.

Bytecode: the store's ``.pyc`` files are timestamp-based (PEP 552) against the fixed mtime
of every lower file (``VIEW_MTIME``); a copied file gets that mtime, so the ``.pyc`` is
valid as it is. A hardlinked source keeps its object's mtime, so its ``.pyc`` is written
as a copy whose header names that mtime (the code object does not depend on it).

Crash-safe: the tree is written into a directory beside site-packages (same filesystem),
then exchanged with it in one ``renameat2(RENAME_EXCHANGE)``; a failure before leaves the
venv as it was, and the old tree is removed only after.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import posixpath
import shutil
import stat
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from pkgfs.store.errors import MountError
from pkgfs.store.layout import DIR_MODE, libc
from pkgfs.store.objects import object_file

from .view import VIEW_MTIME, View, ViewFile

__all__ = [
    "PREFIX",
    "LinkMode",
    "Written",
    "exchange_into_place",
    "leftovers",
    "remove_tree",
    "write_tree",
]

_FICLONE = 0x40049409  # linux/fs.h
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100
_VIEW_NS = VIEW_MTIME * 1_000_000_000
PREFIX = ".pkgfs-materialize-"  # beside site-packages: the new tree, then the old one


class LinkMode(Enum):
    CLONE = "clone"
    COPY = "copy"
    HARDLINK = "hardlink"


@dataclass
class Written:
    """How many files were written each way, for the report (uv says which mode it used)."""

    reflinked: int = 0
    copied: int = 0
    hardlinked: int = 0
    generated: int = 0  # RECORD, INSTALLER: written from the view's own bytes
    bytes: int = 0
    mtimes: dict[str, int] = field(default_factory=dict)  # source path -> its mtime

    def describe(self) -> str:
        parts = [
            f"{n} {what}"
            for n, what in (
                (self.reflinked, "reflinked"),
                (self.copied, "copied"),
                (self.hardlinked, "hardlinked"),
                (self.generated, "generated"),
            )
            if n
        ]
        return ", ".join(parts) or "no files"


def leftovers(site_packages: Path) -> list[Path]:
    """What an interrupted materialize left beside ``site_packages`` (a new tree not yet
    exchanged, or an old one not yet removed): removed by the next one."""
    return sorted(site_packages.parent.glob(f"{PREFIX}*"))


def write_tree(view: View, objects: Path, into: Path, mode: LinkMode) -> Written:
    """Write every file and directory of ``view`` below the new directory ``into`` (made
    here, mode 0755; files 0644, or 0755 when executable; mtime ``VIEW_MTIME`` except
    hardlinks). Raises ``MountError`` (one line) when a hardlink cannot be made or the
    store's object is writable, ``OSError`` for anything else; ``into`` is then left for
    the caller to remove."""
    written = Written()
    into.mkdir(mode=DIR_MODE)
    os.chmod(into, DIR_MODE)  # whatever the umask, as python -m venv's site-packages
    for directory in sorted(view.dirs - {""}):
        os.mkdir(into / directory, DIR_MODE)
    pycs: list[tuple[str, ViewFile]] = []
    for path, file in sorted(view.files.items()):
        if mode is LinkMode.HARDLINK and path.endswith(".pyc") and "/__pycache__/" in f"/{path}":
            pycs.append((path, file))  # after their sources, whose mtimes they name
            continue
        _write_file(into, path, file, str(objects), mode, written)
    for path, file in pycs:
        _write_pyc(into, path, file, str(objects), written)
    for directory in sorted(view.dirs, reverse=True):  # as the mount shows them
        os.utime(into / directory, ns=(_VIEW_NS, _VIEW_NS))
    return written


def _write_file(  # noqa: PLR0917 (one file: where, what, from where, how, the tally)
    into: Path, path: str, file: ViewFile, objects: str, mode: LinkMode, written: Written
) -> None:
    target = into / path
    perm = 0o755 if file.executable else 0o644
    written.bytes += file.size
    if file.data is not None or file.digest is None:
        _create(target, perm, file.data or b"")
        written.generated += 1
        written.mtimes[path] = VIEW_MTIME
        return
    source = object_file(objects, file.digest)
    if mode is LinkMode.HARDLINK and not file.executable:
        written.mtimes[path] = _hardlink(source, target)
        written.hardlinked += 1
        return
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        if _clone_or_copy(source, fd, file.size, clone=mode is not LinkMode.COPY):
            written.reflinked += 1
        else:
            written.copied += 1
        os.fchmod(fd, perm)
        os.utime(fd, ns=(_VIEW_NS, _VIEW_NS))
    finally:
        os.close(fd)
    written.mtimes[path] = VIEW_MTIME


def _create(target: Path, perm: int, data: bytes) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fchmod(fd, perm)
        os.utime(fd, ns=(_VIEW_NS, _VIEW_NS))
    finally:
        os.close(fd)


def _clone_or_copy(source: str, out: int, size: int, *, clone: bool) -> bool:
    """The object's bytes into ``out``: True if reflinked, False if copied."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if clone:
            try:
                fcntl.ioctl(out, _FICLONE, src)
                return True
            except OSError:
                pass  # EOPNOTSUPP (ext4, tmpfs), EXDEV (another filesystem): copy
        remaining = size
        while remaining > 0:
            try:
                copied = os.copy_file_range(src, out, remaining)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                copied = os.sendfile(out, src, None, remaining)
            if copied == 0:
                break
            remaining -= copied
        return False
    finally:
        os.close(src)


def _hardlink(source: str, target: Path) -> int:
    """Link ``target`` to the object ``source``; its mtime (seconds). ``MountError`` when
    the object is writable or cannot be linked."""
    info = os.stat(source)
    if info.st_mode & 0o222:
        raise MountError(
            f"{source}: a store object that is writable ({stat.filemode(info.st_mode)}):"
            " hardlinks to it would let an edit change the store; run pkgfs store verify,"
            " or materialize with --link-mode clone"
        )
    try:
        os.link(source, target)
    except OSError as exc:
        why = {
            errno.EXDEV: "the venv and the store are on different filesystems",
            errno.EPERM: "the store's objects belong to another user, and the kernel"
            " (fs.protected_hardlinks) lets you link only files you own or may write",
            errno.EMLINK: "the object has as many links as its filesystem allows",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        raise MountError(
            f"{target}: cannot hardlink it to {source}: {why}; use --link-mode clone"
        ) from None
    return int(info.st_mtime)


def _write_pyc(into: Path, path: str, file: ViewFile, objects: str, written: Written) -> None:
    """A ``.pyc`` beside a hardlinked source: copied, its PEP 552 header naming the source's
    real mtime (bytes 8-11 of a timestamp-based pyc, flags 0)."""
    directory, name = posixpath.split(path)
    source = posixpath.join(posixpath.dirname(directory), name.split(".", 1)[0] + ".py")
    mtime = written.mtimes.get(source)
    if file.digest is None or mtime is None or mtime == VIEW_MTIME:
        _write_file(into, path, file, objects, LinkMode.CLONE, written)
        return
    with open(object_file(objects, file.digest), "rb") as f:
        data = bytearray(f.read())
    if len(data) >= 16 and int.from_bytes(data[4:8], "little") == 0:
        data[8:12] = (mtime & 0xFFFFFFFF).to_bytes(4, "little")
    _create(into / path, 0o644, bytes(data))
    written.copied += 1
    written.bytes += file.size


def exchange_into_place(new: Path, target: Path) -> Path | None:
    """Put the directory ``new`` at ``target`` in one step: exchanged with what is there
    (``renameat2(RENAME_EXCHANGE)``; the old tree is then at ``new``, returned for the
    caller to remove), or renamed when ``target`` does not exist (None). Raises ``OSError``."""
    if not target.exists():
        os.rename(new, target)
        return None
    if (
        libc.renameat2(
            _AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(target), _RENAME_EXCHANGE
        )
        == 0
    ):
        return new
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOSYS):
        raise OSError(err, os.strerror(err), str(target))
    # A filesystem without RENAME_EXCHANGE: two renames, the old tree set aside first.
    old = new.with_name(new.name + "-old")
    os.rename(target, old)
    try:
        os.rename(new, target)
    except OSError:
        os.rename(old, target)
        raise
    return old


def remove_tree(path: Path) -> None:
    """Remove a tree written here (or a leftover), whatever its files' modes."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
