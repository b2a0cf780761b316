"""The layers of one environment, read: the lower view, the upper directory, and how a path
resolves through them (whiteouts, opaque directories); what ``stat`` and ``readdir`` show.

The upper layer's state (which paths exist, whiteouts, opaque directories) is loaded once
when the layers open and then kept in memory, as the mount is its only writer; resolving an
untouched path costs no system call.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import posixpath
import shutil
import stat
from pathlib import Path

from pkgfs.store.layout import libc
from pkgfs.vfs.env.lower import lower_index
from pkgfs.vfs.env.view import VIEW_MTIME, View, ViewFile

from .attributes import Attributes

__all__ = ["OPAQUE", "UPPER_INODES", "WHITEOUT", "Layers"]

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_RENAME_NOREPLACE = 1  # linux/fs.h, renameat2(2) flags
_RENAME_EXCHANGE = 2
_VIEW_MTIME_NS = VIEW_MTIME * 1_000_000_000
UPPER_INODES = 1 << 48  # inode numbers not taken from a lower rank start here
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
# Names in the work directory: files copied up or made opaque before they move into place,
# files unlinked while still open (kept until the kernel forgets them), reset trash.
_WORK_PREFIXES = ("copyup-", "mkdir-", "orphan-", "trash-")


def _error(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _rel(path: str) -> str:
    return path or "."


def renameat2(src_fd: int, src: str, dst_fd: int, dst: str, flags: int) -> None:
    """``renameat2(2)``, which Python lacks. Raises ``OSError`` with its errno."""
    if libc.renameat2(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), dst)


class Layers:
    """The lower view and the upper directory of one environment, read.

    ``owner`` is the (uid, gid) the lower layer shows (the mount's user); when this process
    may (it is root), copies and directories it makes in the upper layer get that owner, and
    new files the owner the caller asks for."""

    def __init__(
        self,
        view: View,
        objects: Path,
        upper: Path,
        work: Path,
        owner: tuple[int, int] | None = None,
    ) -> None:
        self.view = view
        self.objects = str(objects)
        self.upper = upper
        self.work = work
        self.owner = owner if owner is not None else (os.getuid(), os.getgid())
        self.may_chown = os.geteuid() == 0
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        self.upper_fd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.work_fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        # Derived from the lower paths alone, once per view (pkgfs.vfs.env.lower).
        index = view.index or lower_index(view.files.keys(), view.dirs)
        self.children = index.children
        self.lower_inodes = index.inodes
        self.lower_subdirs = index.subdirs
        self.upper_paths: set[str] = set()  # everything present in the upper layer
        self.whiteouts: set[str] = set()
        self.opaque: set[str] = set()
        self.created: set[str] = set()  # made in the upper layer during this mount
        self._scan_upper()

    def close(self) -> None:
        os.close(self.upper_fd)
        os.close(self.work_fd)

    # -- the upper layer on disk ---------------------------------------------------------

    def _scan_upper(self) -> None:
        pending = [""]
        while pending:
            rel = pending.pop()
            with os.scandir(self.upper_path(rel)) as entries:
                for entry in entries:
                    name = entry.name
                    if name == OPAQUE:
                        self.opaque.add(rel)
                    elif name.startswith(WHITEOUT):
                        self.whiteouts.add(_join(rel, name[len(WHITEOUT) :]))
                    else:
                        self.upper_paths.add(_join(rel, name))
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(_join(rel, name))

    def clean_work(self) -> None:
        """Remove what a crashed mount left in the work directory: half-made copies,
        unlinked files that were still open, reset trash. Only the mount's owner calls it."""
        for name in os.listdir(self.work_fd):
            if name.startswith(_WORK_PREFIXES):
                self._remove_work(name)

    def _remove_work(self, name: str) -> None:
        info = os.stat(name, dir_fd=self.work_fd, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(name, dir_fd=self.work_fd)
        else:
            os.unlink(name, dir_fd=self.work_fd)

    def upper_path(self, path: str) -> str:
        """The absolute path of ``path`` in the upper directory (for people and tools; the
        tree itself reaches it through its descriptor)."""
        return os.path.join(self.upper, path) if path else str(self.upper)

    def lstat(self, path: str) -> os.stat_result:
        """``lstat`` of the upper ``path``."""
        return os.stat(_rel(path), dir_fd=self.upper_fd, follow_symlinks=False)

    def _upper_is_dir(self, path: str) -> bool:
        return stat.S_ISDIR(self.lstat(path).st_mode)

    def _add_whiteout(self, path: str) -> None:
        parent, name = posixpath.split(path)
        fd = os.open(
            _join(parent, WHITEOUT + name),
            os.O_WRONLY | os.O_CREAT | _NOFOLLOW,
            0o600,
            dir_fd=self.upper_fd,
        )
        os.close(fd)
        self.whiteouts.add(path)

    def _drop_whiteout(self, path: str) -> None:
        if path in self.whiteouts:
            parent, name = posixpath.split(path)
            os.unlink(_join(parent, WHITEOUT + name), dir_fd=self.upper_fd)
            self.whiteouts.discard(path)

    # -- resolution ------------------------------------------------------------------------

    def lower_visible(self, path: str) -> bool:
        """True if the lower layer's ``path`` shows through (no whiteout, no opaque parent)."""
        if path in self.whiteouts:
            return False
        parent = path
        while parent:
            parent = posixpath.dirname(parent)
            if parent in self.opaque or (parent and parent in self.whiteouts):
                return False
        return True

    def lower(self, path: str) -> ViewFile | str | None:
        """The lower entry showing at ``path``: a file, ``"dir"``, or None."""
        if not self.lower_visible(path):
            return None
        if path in self.view.dirs:
            return "dir"
        return self.view.files.get(path)

    def exists(self, path: str) -> bool:
        return path in self.upper_paths or self.lower(path) is not None

    def is_dir(self, path: str) -> bool:
        if path in self.upper_paths:
            return self._upper_is_dir(path)
        return path == "" or self.lower(path) == "dir"

    def inode(self, path: str) -> int:
        """The lower rank of ``path`` (1 for the root), else 0: the filesystem numbers the
        rest itself."""
        if path == "":
            return 1
        if path not in self.created:
            return self.lower_inodes.get(path, 0)
        return 0

    def getattr(self, path: str, ino: int) -> Attributes:
        """What ``stat`` shows at ``path``, under inode number ``ino``."""
        if path in self.upper_paths or path == "":
            info = self.lstat(path)
            if stat.S_ISDIR(info.st_mode) and self.lower(path) == "dir":
                mtime = max(info.st_mtime_ns, _VIEW_MTIME_NS)
                nlink = info.st_nlink + self._lower_only_subdirs(path)
                return dataclasses.replace(Attributes.of(ino, info), mtime_ns=mtime, nlink=nlink)
            return Attributes.of(ino, info)
        found = self.lower(path)
        if found is None:
            raise _error(errno.ENOENT, path)
        if found == "dir":
            return self.lower_attributes(found, ino, 2 + self.lower_subdirs.get(path, 0))
        return self.lower_attributes(found, ino)

    def _lower_only_subdirs(self, path: str) -> int:
        """The lower subdirectories showing in the merged directory ``path`` that the upper
        layer does not have (its own link count counts those it has)."""
        if path in self.opaque or not self.lower_subdirs.get(path):
            return 0
        count = 0
        for name in self.children.get(path, ()):
            child = _join(path, name)
            if child in self.view.dirs and child not in self.upper_paths:
                count += child not in self.whiteouts
        return count

    def lower_attributes(
        self, found: ViewFile | str, ino: int, nlink: int | None = None
    ) -> Attributes:
        """What ``stat`` shows for a lower entry: the view's time, the mount's owner."""
        uid, gid = self.owner
        t = _VIEW_MTIME_NS
        if found == "dir":
            links = 2 if nlink is None else nlink
            return Attributes(ino, stat.S_IFDIR | 0o755, 4096, t, links, uid, gid, t, t, 8)
        assert isinstance(found, ViewFile)
        mode = stat.S_IFREG | (0o755 if found.executable else 0o644)
        blocks = (found.size + 4095) // 4096 * 8  # as ext4 allocates: whole 4 KiB blocks
        return Attributes(
            ino, mode, found.size, t, 1 if nlink is None else nlink, uid, gid, t, t, blocks
        )

    def listdir(self, path: str) -> list[str]:
        """The merged entries of a directory, sorted."""
        if not self.is_dir(path):
            raise _error(errno.ENOTDIR if self.exists(path) else errno.ENOENT, path)
        names: set[str] = set()
        if path not in self.opaque and self.lower(path) == "dir":
            names.update(
                n for n in self.children.get(path, ()) if _join(path, n) not in self.whiteouts
            )
        if path in self.upper_paths or path == "":
            fd = os.open(_rel(path), os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=self.upper_fd)
            try:
                names.update(n for n in os.listdir(fd) if not n.startswith(WHITEOUT))
            finally:
                os.close(fd)
        return sorted(names)

    def readlink(self, path: str) -> str:
        if path not in self.upper_paths:
            raise _error(errno.EINVAL, path)
        return os.readlink(path, dir_fd=self.upper_fd)

    # -- reading -----------------------------------------------------------------------------

    def object_path(self, file: ViewFile) -> str:
        assert file.digest is not None
        return f"{self.objects}/{file.digest[:2]}/{file.digest[2:]}"

    def lower_source(self, path: str) -> str | bytes:
        """Where a lower file's bytes are: its store object's path, or its inline bytes."""
        found = self.lower(path)
        if not isinstance(found, ViewFile):
            raise _error(errno.ENOENT, path)
        if found.data is not None:
            return found.data
        return self.object_path(found)

    def open_lower(self, path: str) -> int | bytes:
        """A read-only fd on the store object, or the inline bytes of a generated file."""
        source = self.lower_source(path)
        if isinstance(source, bytes):
            return source
        return os.open(source, os.O_RDONLY | os.O_CLOEXEC)

    def open_upper_fd(self, path: str, flags: int) -> int:
        """An fd on the upper file ``path`` (no copy-up, no symlink followed)."""
        return os.open(path, flags | _NOFOLLOW, dir_fd=self.upper_fd)
