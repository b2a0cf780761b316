"""The merged tree of one environment: an immutable lower view and a copy-on-write upper dir.

Nothing here imports FUSE: the filesystem (``vfs/fuse/operations.py``) maps inodes and requests onto
these path operations, which raise ``OSError`` with the errno to answer.

The upper layer is an ordinary directory that mirrors site-packages and holds only what
changed, in the conventions of fuse-overlayfs (and AUFS before it):

- ``.wh.NAME`` in a directory hides the lower ``NAME`` (a whiteout);
- ``.wh..wh..opq`` in a directory hides all of the lower directory's entries (opaque).

Whiteouts are written only for names that exist below. Lower files are copied up before
their first change: the bytes go to a work directory on the upper's filesystem (reflinked
where the filesystem can), get their mode and times, are fsynced, and are renamed into
place, so a crash never leaves a half-copied file visible. The lower layer is never
written: the store stays pristine for every other environment.

The upper layer's state (which paths exist, whiteouts, opaque directories) is loaded once
when the tree opens and then kept in memory, as this process is its only writer while
mounted; a lookup of an untouched path costs no system call.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import posixpath
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pkgfs.vfs.env.view import VIEW_MTIME, View, ViewFile

__all__ = ["OPAQUE", "WHITEOUT", "Attributes", "Change", "MergedTree"]

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_FICLONE = 0x40049409  # linux/fs.h: share the source's blocks, when the filesystem can
_VIEW_MTIME_NS = VIEW_MTIME * 1_000_000_000
UPPER_INODES = 1 << 48  # inode numbers of files created in the upper layer start here


def _error(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


@dataclass(frozen=True)
class Attributes:
    """What ``stat`` shows for a path of the merged tree."""

    ino: int
    mode: int
    size: int
    mtime_ns: int
    nlink: int = 1


@dataclass(frozen=True)
class Change:
    """One path the upper layer changed: ``added``, ``modified``, ``deleted`` or ``replaced``."""

    path: str
    kind: str


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class MergedTree:
    """Path operations on the lower view merged with the upper directory."""

    def __init__(self, view: View, objects: Path, upper: Path, work: Path) -> None:
        self.view = view
        self.objects = str(objects)
        self.upper = upper
        self.work = work
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        self.children = view.children()
        # Stable inode numbers for lower paths: their rank in the sorted view, from 2
        # (1 is the root), the same on every mount of the same view.
        self.lower_inodes = {
            p: i for i, p in enumerate(sorted(self.view.dirs | self.view.files.keys()), 1)
        }
        self.upper_paths: set[str] = set()  # everything present in the upper layer
        self.whiteouts: set[str] = set()
        self.opaque: set[str] = set()
        self.created: set[str] = set()  # made in the upper layer during this mount
        self._scan_upper()

    # -- the upper layer on disk ---------------------------------------------------------

    def _scan_upper(self) -> None:
        root = str(self.upper)
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            rel = "" if rel == "." else rel
            for name in dirnames + filenames:
                if name == OPAQUE:
                    self.opaque.add(rel)
                elif name.startswith(WHITEOUT):
                    self.whiteouts.add(_join(rel, name[len(WHITEOUT) :]))
                else:
                    self.upper_paths.add(_join(rel, name))

    def upper_path(self, path: str) -> str:
        return os.path.join(self.upper, path) if path else str(self.upper)

    def _whiteout_file(self, path: str) -> str:
        parent, name = posixpath.split(path)
        return os.path.join(self.upper_path(parent), WHITEOUT + name)

    def _add_whiteout(self, path: str) -> None:
        fd = os.open(self._whiteout_file(path), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.close(fd)
        self.whiteouts.add(path)

    def _drop_whiteout(self, path: str) -> None:
        if path in self.whiteouts:
            os.unlink(self._whiteout_file(path))
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
            return stat.S_ISDIR(os.lstat(self.upper_path(path)).st_mode)
        return self.lower(path) == "dir"

    def inode(self, path: str) -> int:
        """The default inode number of ``path``: its lower rank, else one from the upper."""
        if path == "":
            return 1
        if path not in self.created and path in self.lower_inodes:
            return self.lower_inodes[path]
        return UPPER_INODES + os.lstat(self.upper_path(path)).st_ino

    def getattr(self, path: str, ino: int) -> Attributes:
        if path in self.upper_paths or path == "":
            info = os.lstat(self.upper_path(path))
            mtime = info.st_mtime_ns
            if stat.S_ISDIR(info.st_mode) and self.lower(path) == "dir":
                mtime = max(mtime, _VIEW_MTIME_NS)
            return Attributes(ino, info.st_mode, info.st_size, mtime, info.st_nlink)
        found = self.lower(path)
        if found is None:
            raise _error(errno.ENOENT, path)
        if found == "dir":
            return Attributes(ino, stat.S_IFDIR | 0o755, 4096, _VIEW_MTIME_NS, 2)
        assert isinstance(found, ViewFile)
        mode = 0o755 if found.executable else 0o644
        return Attributes(ino, stat.S_IFREG | mode, found.size, _VIEW_MTIME_NS)

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
            names.update(n for n in os.listdir(self.upper_path(path)) if not n.startswith(WHITEOUT))
        return sorted(names)

    def readlink(self, path: str) -> str:
        if path not in self.upper_paths:
            raise _error(errno.EINVAL, path)
        return os.readlink(self.upper_path(path))

    # -- reading -----------------------------------------------------------------------------

    def lower_source(self, path: str) -> str | bytes:
        """Where a lower file's bytes are: its store object's path, or its inline bytes."""
        found = self.lower(path)
        if not isinstance(found, ViewFile):
            raise _error(errno.ENOENT, path)
        if found.data is not None:
            return found.data
        assert found.digest is not None
        return f"{self.objects}/{found.digest[:2]}/{found.digest[2:]}"

    def open_lower(self, path: str) -> int | bytes:
        """A read-only fd on the store object, or the inline bytes of a generated file."""
        source = self.lower_source(path)
        if isinstance(source, bytes):
            return source
        return os.open(source, os.O_RDONLY | os.O_CLOEXEC)

    # -- copy-up -----------------------------------------------------------------------------

    def _ensure_upper_dir(self, path: str) -> None:
        """Create ``path`` and its parents in the upper layer, as the merged view has them."""
        if path == "" or path in self.upper_paths:
            return
        self._ensure_upper_dir(posixpath.dirname(path))
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.upper_path(path), 0o755)
        os.utime(self.upper_path(path), ns=(_VIEW_MTIME_NS, _VIEW_MTIME_NS))
        self.upper_paths.add(path)

    def copy_up(self, path: str, with_data: bool = True) -> None:
        """Give the upper layer its own copy of ``path``, atomically; a no-op if it has one."""
        if path in self.upper_paths:
            return
        found = self.lower(path)
        if found is None:
            raise _error(errno.ENOENT, path)
        if found == "dir":
            self._ensure_upper_dir(path)
            return
        assert isinstance(found, ViewFile)
        self._ensure_upper_dir(posixpath.dirname(path))
        fd, tmp = tempfile.mkstemp(dir=self.work, prefix="copyup-")
        try:
            if with_data:
                self._copy_data(found, fd)
            os.fchmod(fd, 0o755 if found.executable else 0o644)
            os.utime(fd, ns=(_VIEW_MTIME_NS, _VIEW_MTIME_NS))
            os.fsync(fd)
            os.rename(tmp, self.upper_path(path))
        except BaseException:
            os.unlink(tmp)
            raise
        finally:
            os.close(fd)
        self.upper_paths.add(path)

    def _copy_data(self, file: ViewFile, out: int) -> None:
        if file.data is not None:
            os.write(out, file.data)
            return
        assert file.digest is not None
        source = os.open(f"{self.objects}/{file.digest[:2]}/{file.digest[2:]}", os.O_RDONLY)
        try:
            try:
                fcntl.ioctl(out, _FICLONE, source)
            except OSError:
                remaining = file.size
                while remaining > 0:
                    try:
                        copied = os.copy_file_range(source, out, remaining)
                    except OSError as exc:
                        # Store and upper on different filesystems: Linux >= 5.19 refuses.
                        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS):
                            raise
                        copied = os.sendfile(out, source, None, remaining)
                    if copied == 0:
                        break
                    remaining -= copied
        finally:
            os.close(source)

    # -- changes ---------------------------------------------------------------------------

    def _prepare_new(self, path: str) -> None:
        parent = posixpath.dirname(path)
        if not self.is_dir(parent):
            raise _error(errno.ENOTDIR if self.exists(parent) else errno.ENOENT, parent)
        if self.exists(path):
            raise _error(errno.EEXIST, path)
        self._ensure_upper_dir(parent)

    def create(self, path: str, flags: int, mode: int) -> int:
        """Create a new file in the upper layer; return a writable fd."""
        self._prepare_new(path)
        flags |= os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        fd = os.open(self.upper_path(path), flags, mode)
        self.upper_paths.add(path)
        self.created.add(path)
        self._drop_whiteout(path)
        return fd

    def mkdir(self, path: str, mode: int) -> None:
        self._prepare_new(path)
        hides_lower = path in self.whiteouts and path in self.view.dirs
        if hides_lower:
            # A new directory where a lower one was removed must not show the lower
            # entries again: it is built opaque in the work dir, then renamed into place.
            tmp = tempfile.mkdtemp(dir=self.work, prefix="mkdir-")
            os.close(os.open(os.path.join(tmp, OPAQUE), os.O_WRONLY | os.O_CREAT, 0o600))
            os.chmod(tmp, mode & 0o7777)
            os.rename(tmp, self.upper_path(path))
            self.opaque.add(path)
        else:
            os.mkdir(self.upper_path(path), mode)
        self.upper_paths.add(path)
        self.created.add(path)
        self._drop_whiteout(path)

    def symlink(self, path: str, target: str) -> None:
        self._prepare_new(path)
        os.symlink(target, self.upper_path(path))
        self.upper_paths.add(path)
        self.created.add(path)
        self._drop_whiteout(path)

    def unlink(self, path: str) -> None:
        if not self.exists(path):
            raise _error(errno.ENOENT, path)
        if self.is_dir(path):
            raise _error(errno.EISDIR, path)
        self._remove(path)

    def rmdir(self, path: str) -> None:
        if not self.exists(path):
            raise _error(errno.ENOENT, path)
        if not self.is_dir(path):
            raise _error(errno.ENOTDIR, path)
        if self.listdir(path):
            raise _error(errno.ENOTEMPTY, path)
        self._remove(path)

    def _remove(self, path: str) -> None:
        """Remove ``path`` from the merged view: whiteout first (if the lower has it), so a
        crash in between leaves the old state visible rather than a half-removed one."""
        if self.lower(path) is not None:
            self._ensure_upper_dir(posixpath.dirname(path))
            self._add_whiteout(path)
        if path in self.upper_paths:
            target = self.upper_path(path)
            if os.path.isdir(target) and not os.path.islink(target):
                for name in os.listdir(target):  # only whiteouts and an opaque marker remain
                    os.unlink(os.path.join(target, name))
                os.rmdir(target)
                self._forget_below(path)
                self.opaque.discard(path)
            else:
                os.unlink(target)
            self.upper_paths.discard(path)
            self.created.discard(path)

    def _forget_below(self, path: str) -> None:
        prefix = path + "/"
        self.whiteouts = {w for w in self.whiteouts if not w.startswith(prefix)}
        self.opaque = {o for o in self.opaque if not o.startswith(prefix)}

    def rename(self, old: str, new: str, noreplace: bool = False) -> None:  # noqa: PLR0912 (rename(2)'s cases, one by one)
        """Rename within the merged tree. A directory with lower content cannot move
        (EXDEV, as overlayfs without redirects): callers such as pip fall back to copying."""
        if not self.exists(old):
            raise _error(errno.ENOENT, old)
        parent = posixpath.dirname(new)
        if not self.is_dir(parent):
            raise _error(errno.ENOTDIR if self.exists(parent) else errno.ENOENT, new)
        if self.exists(new):
            if noreplace:
                raise _error(errno.EEXIST, new)
            if self.is_dir(new):
                if not self.is_dir(old):
                    raise _error(errno.EISDIR, new)
                if self.listdir(new):
                    raise _error(errno.ENOTEMPTY, new)
            elif self.is_dir(old):
                raise _error(errno.ENOTDIR, new)
        if self.is_dir(old):
            if self.lower(old) == "dir" and (old not in self.opaque or self.children.get(old)):
                raise _error(errno.EXDEV, old)
        else:
            self.copy_up(old)
        self._ensure_upper_dir(posixpath.dirname(new))
        if self.lower(old) is not None:
            self._add_whiteout(old)
        # The lower directory at ``new``, shown or whited out, must stay hidden below it.
        new_hides_lower_dir = self.lower(new) == "dir" or (
            new in self.whiteouts and new in self.view.dirs
        )
        if self.exists(new) and self.is_dir(new):
            self._remove(new)
        moving_dir = self.is_dir(old)
        if new_hides_lower_dir and moving_dir:
            # Marked opaque before it moves, so the rename carries the marker atomically:
            # a crash can never show the lower directory's old entries inside it.
            marker = os.path.join(self.upper_path(old), OPAQUE)
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        os.rename(self.upper_path(old), self.upper_path(new))
        self._drop_whiteout(new)
        self._move_state(old, new)
        if new_hides_lower_dir and moving_dir:
            self.opaque.add(new)

    def _move_state(self, old: str, new: str) -> None:
        prefix = old + "/"

        def moved(p: str) -> str:
            return new + p[len(old) :] if p == old or p.startswith(prefix) else p

        was_created = {p for p in self.created if p == old or p.startswith(prefix)}
        self.upper_paths = {moved(p) for p in self.upper_paths}
        self.whiteouts = {moved(w) if w.startswith(prefix) else w for w in self.whiteouts}
        self.opaque = {moved(o) for o in self.opaque}
        self.created = (self.created - was_created) | {moved(p) for p in was_created} | {new}

    def open_upper(self, path: str, flags: int) -> int:
        """An fd on the upper copy of ``path``, copying it up first (without data if truncated)."""
        self.copy_up(path, with_data=not flags & os.O_TRUNC)
        return os.open(self.upper_path(path), (flags & ~os.O_CREAT) | os.O_CLOEXEC)

    def setattr(
        self,
        path: str,
        *,
        mode: int | None = None,
        size: int | None = None,
        times_ns: tuple[int, int] | None = None,
        owner: tuple[int, int] | None = None,
    ) -> None:
        self.copy_up(path, with_data=size != 0)
        target = self.upper_path(path)
        if size is not None:
            os.truncate(target, size)
        if mode is not None:
            os.chmod(target, stat.S_IMODE(mode), follow_symlinks=False)
        if owner is not None:
            os.chown(target, *owner, follow_symlinks=False)
        if times_ns is not None:
            os.utime(target, ns=times_ns, follow_symlinks=False)

    # -- what changed ----------------------------------------------------------------------

    def changes(self) -> list[Change]:
        """Every path the upper layer adds, modifies, deletes or replaces, sorted."""
        found = [Change(w, "deleted") for w in self.whiteouts if w not in self.upper_paths]
        for path in self.upper_paths:
            lower = path in self.view.files or path in self.view.dirs
            full = self.upper_path(path)
            is_dir = os.path.isdir(full) and not os.path.islink(full)
            if (path in self.opaque and lower) or (is_dir and path in self.view.files):
                found.append(Change(path, "replaced"))
            elif not lower:
                found.append(Change(path, "added"))
            elif not is_dir:
                found.append(Change(path, "modified"))
        return sorted(found, key=lambda c: c.path)

    def reset(self, paths: list[str] | None = None) -> list[str]:
        """Drop the upper layer's changes at and below ``paths`` (all of them if None).
        Returns the paths whose view changed, for the caller to invalidate."""
        touched = [c.path for c in self.changes()]
        if paths is not None:
            wanted = [p.strip("/") for p in paths]
            touched = [t for t in touched if any(t == w or t.startswith(w + "/") for w in wanted)]
        for path in sorted(touched, key=lambda p: -p.count("/")):
            full = self.upper_path(path)
            if path in self.whiteouts:
                os.unlink(self._whiteout_file(path))
                self.whiteouts.discard(path)
            if path in self.upper_paths:
                if os.path.isdir(full) and not os.path.islink(full):
                    shutil.rmtree(full)
                    self._forget_below(path)
                    self.upper_paths = {p for p in self.upper_paths if not p.startswith(path + "/")}
                    self.opaque.discard(path)
                else:
                    os.unlink(full)
                self.upper_paths.discard(path)
                self.created.discard(path)
        return touched
