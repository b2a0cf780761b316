"""The merged tree of one environment: an immutable lower view and a copy-on-write upper dir.

Nothing here imports FUSE: the filesystem (``vfs/fuse/``) maps inodes and requests onto these
path operations, which raise ``OSError`` with the errno to answer.

The upper layer is an ordinary directory that mirrors site-packages and holds only what
changed, in the conventions of fuse-overlayfs (and AUFS before it):

- ``.wh.NAME`` in a directory hides the lower ``NAME`` (a whiteout);
- ``.wh..wh..opq`` in a directory hides all of the lower directory's entries (opaque).

Whiteouts are written only for names that exist below. Lower files are copied up before
their first change: the bytes go to a work directory on the upper's filesystem (reflinked
where the filesystem can), get their mode, owner and times, are fsynced, and are renamed into
place, and the parent directory is fsynced, so a crash never leaves a half-copied file
visible. The lower layer is never written: the store stays pristine for every other
environment.

The upper and work directories are opened once; every call below them is relative to those
descriptors and never follows a symlink (``lstat``, ``O_NOFOLLOW``, ``AT_SYMLINK_NOFOLLOW``),
so a symlink in the overlay that points back into the mount is never entered by the daemon
that serves it.

The upper layer's state (which paths exist, whiteouts, opaque directories) is loaded once
when the tree opens and then kept in memory, as this process is its only writer while
mounted; a lookup of an untouched path costs no system call.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import os
import posixpath
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pkgfs.store.layout import libc
from pkgfs.vfs.env.view import VIEW_MTIME, View, ViewFile

__all__ = ["OPAQUE", "UPPER_INODES", "WHITEOUT", "Attributes", "Change", "CopyUp", "MergedTree"]

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_FICLONE = 0x40049409  # linux/fs.h: share the source's blocks, when the filesystem can
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


@dataclass(frozen=True)
class Attributes:
    """What ``stat`` shows for a path of the merged tree: its ``st_*`` fields (times in ns)."""

    ino: int
    mode: int
    size: int
    mtime_ns: int
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    atime_ns: int = 0
    ctime_ns: int = 0
    blocks: int = 0
    rdev: int = 0

    @classmethod
    def of(cls, ino: int, info: os.stat_result, nlink: int | None = None) -> Attributes:
        """The attributes ``lstat`` gave for an upper file, under inode number ``ino``."""
        return cls(
            ino,
            info.st_mode,
            info.st_size,
            info.st_mtime_ns,
            info.st_nlink if nlink is None else nlink,
            info.st_uid,
            info.st_gid,
            info.st_atime_ns,
            info.st_ctime_ns,
            info.st_blocks,
            info.st_rdev,
        )


@dataclass(frozen=True)
class Change:
    """One path the upper layer changed: ``added``, ``modified``, ``deleted`` or ``replaced``."""

    path: str
    kind: str


@dataclass(frozen=True)
class CopyUp:
    """A copy-up prepared on the tree and run off it (:meth:`run` blocks on the whole file).

    ``run`` touches no state of the tree, only the file system, so the filesystem runs it in
    a worker thread while it goes on serving; it then calls :meth:`MergedTree.copy_up_done`.
    """

    path: str  # where the copy goes, relative to ``dest_fd``
    source: ViewFile
    objects: str
    dest_fd: int  # the upper directory, or the work directory for a file kept while open
    work_fd: int
    with_data: bool
    owner: tuple[int, int] | None

    def run(self) -> None:
        """Copy, set mode, owner and times, fsync, rename into place, fsync the parent."""
        name = f"copyup-{os.urandom(8).hex()}"
        fd = os.open(
            name, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600, dir_fd=self.work_fd
        )
        try:
            if self.with_data:
                _copy_data(self.source, self.objects, fd)
            os.fchmod(fd, 0o755 if self.source.executable else 0o644)
            if self.owner is not None:
                os.fchown(fd, *self.owner)
            os.utime(fd, ns=(_VIEW_MTIME_NS, _VIEW_MTIME_NS))
            os.fsync(fd)
            os.rename(name, self.path, src_dir_fd=self.work_fd, dst_dir_fd=self.dest_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self.work_fd)
            raise
        finally:
            os.close(fd)
        _fsync_dir(self.dest_fd, posixpath.dirname(self.path))


def _copy_data(file: ViewFile, objects: str, out: int) -> None:
    if file.data is not None:
        os.write(out, file.data)
        return
    assert file.digest is not None
    source = os.open(f"{objects}/{file.digest[:2]}/{file.digest[2:]}", os.O_RDONLY | os.O_CLOEXEC)
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


def _fsync_dir(dir_fd: int, path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _rel(path: str) -> str:
    return path or "."


def renameat2(src_fd: int, src: str, dst_fd: int, dst: str, flags: int) -> None:
    """``renameat2(2)``, which Python lacks. Raises ``OSError`` with its errno."""
    if libc.renameat2(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), dst)


class MergedTree:
    """Path operations on the lower view merged with the upper directory.

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
                return dataclasses.replace(Attributes.of(ino, info), mtime_ns=mtime)
            return Attributes.of(ino, info)
        found = self.lower(path)
        if found is None:
            raise _error(errno.ENOENT, path)
        return self.lower_attributes(found, ino)

    def lower_attributes(
        self, found: ViewFile | str, ino: int, nlink: int | None = None
    ) -> Attributes:
        """What ``stat`` shows for a lower entry: the view's time, the mount's owner."""
        uid, gid = self.owner
        t = _VIEW_MTIME_NS
        if found == "dir":
            return Attributes(ino, stat.S_IFDIR | 0o755, 4096, t, 2, uid, gid, t, t, 8)
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

    # -- copy-up -----------------------------------------------------------------------------

    def _chown_made(
        self, path: str, owner: tuple[int, int] | None, dir_fd: int | None = None
    ) -> None:
        if owner is not None and self.may_chown:
            os.chown(
                _rel(path),
                *owner,
                dir_fd=self.upper_fd if dir_fd is None else dir_fd,
                follow_symlinks=False,
            )

    def _ensure_upper_dir(self, path: str) -> None:
        """Create ``path`` and its parents in the upper layer, as the merged view has them."""
        if path == "" or path in self.upper_paths:
            return
        self._ensure_upper_dir(posixpath.dirname(path))
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o755, dir_fd=self.upper_fd)
        self._chmod(path, 0o755)
        self._chown_made(path, self.owner)
        os.utime(
            path, ns=(_VIEW_MTIME_NS, _VIEW_MTIME_NS), dir_fd=self.upper_fd, follow_symlinks=False
        )
        self.upper_paths.add(path)

    def copy_up_begin(self, path: str, with_data: bool = True) -> CopyUp | None:
        """Prepare the copy-up of ``path`` (its parents are made here); None when it needs
        none. Raises ``OSError`` (ENOENT) when ``path`` is not in the tree."""
        if path in self.upper_paths:
            return None
        found = self.lower(path)
        if found is None:
            raise _error(errno.ENOENT, path)
        if found == "dir":
            self._ensure_upper_dir(path)
            return None
        assert isinstance(found, ViewFile)
        self._ensure_upper_dir(posixpath.dirname(path))
        owner = self.owner if self.may_chown else None
        return CopyUp(path, found, self.objects, self.upper_fd, self.work_fd, with_data, owner)

    def copy_aside(self, file: ViewFile, name: str) -> CopyUp:
        """A copy of a lower file into the work directory as ``name``: for a lower file
        unlinked while open, then written."""
        owner = self.owner if self.may_chown else None
        return CopyUp(name, file, self.objects, self.work_fd, self.work_fd, True, owner)

    def copy_up_done(self, path: str) -> None:
        self.upper_paths.add(path)

    def copy_up(self, path: str, with_data: bool = True) -> None:
        """Give the upper layer its own copy of ``path``, atomically; a no-op if it has one."""
        job = self.copy_up_begin(path, with_data)
        if job is not None:
            job.run()
            self.copy_up_done(path)

    # -- changes ---------------------------------------------------------------------------

    def _prepare_new(self, path: str) -> None:
        parent = posixpath.dirname(path)
        if not self.is_dir(parent):
            raise _error(errno.ENOTDIR if self.exists(parent) else errno.ENOENT, parent)
        if self.exists(path):
            raise _error(errno.EEXIST, path)
        self._ensure_upper_dir(parent)

    def _made(self, path: str, owner: tuple[int, int] | None) -> None:
        self._chown_made(path, owner)
        self.upper_paths.add(path)
        self.created.add(path)
        self._drop_whiteout(path)

    def _chmod(self, path: str, mode: int) -> None:
        """chmod without following a symlink: Linux has no lchmod, so through an O_PATH fd."""
        fd = os.open(_rel(path), os.O_PATH | _NOFOLLOW, dir_fd=self.upper_fd)
        try:
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise _error(errno.EOPNOTSUPP, path)
            os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(mode))
        finally:
            os.close(fd)

    def create(self, path: str, flags: int, mode: int, owner: tuple[int, int] | None = None) -> int:
        """Create a new file in the upper layer with exactly ``mode`` (the caller's umask is
        already in it); return an fd opened with ``flags``."""
        self._prepare_new(path)
        flags = (flags & ~(os.O_CREAT | os.O_TRUNC | os.O_DIRECT)) | os.O_CREAT | os.O_EXCL
        fd = os.open(path, flags | _NOFOLLOW, mode & 0o7777, dir_fd=self.upper_fd)
        try:
            # Owner first: chown clears set-user-ID and set-group-ID, chmod then sets them.
            if owner is not None and self.may_chown:
                os.fchown(fd, *owner)
            os.fchmod(fd, stat.S_IMODE(mode))  # the daemon's own umask does not apply
        except BaseException:
            os.close(fd)
            raise
        self._made(path, None)
        return fd

    def mkdir(self, path: str, mode: int, owner: tuple[int, int] | None = None) -> None:
        self._prepare_new(path)
        hides_lower = path in self.whiteouts and path in self.view.dirs
        if hides_lower:
            # A new directory where a lower one was removed must not show the lower
            # entries again: it is built opaque in the work dir, then renamed into place.
            tmp = f"mkdir-{os.urandom(8).hex()}"
            os.mkdir(tmp, 0o700, dir_fd=self.work_fd)
            marker = os.open(
                f"{tmp}/{OPAQUE}", os.O_WRONLY | os.O_CREAT | _NOFOLLOW, 0o600, dir_fd=self.work_fd
            )
            os.close(marker)
            os.rename(tmp, path, src_dir_fd=self.work_fd, dst_dir_fd=self.upper_fd)
            self.opaque.add(path)
        else:
            os.mkdir(path, mode & 0o7777, dir_fd=self.upper_fd)
        self._chown_made(path, owner)  # before chmod, which sets what chown clears
        self._chmod(path, mode)
        self._made(path, None)

    def mknod(self, path: str, mode: int, rdev: int, owner: tuple[int, int] | None = None) -> None:
        """A FIFO, a socket, or (where this process may) a device node."""
        self._prepare_new(path)
        os.mknod(path, mode, rdev, dir_fd=self.upper_fd)
        self._chown_made(path, owner)  # before chmod, which sets what chown clears
        self._chmod(path, mode)
        self._made(path, None)

    def symlink(self, path: str, target: str, owner: tuple[int, int] | None = None) -> None:
        self._prepare_new(path)
        os.symlink(target, path, dir_fd=self.upper_fd)
        self._made(path, owner)

    def link(self, old: str, new: str) -> None:
        """A hard link in the upper layer; a lower ``old`` is copied up first."""
        if not self.exists(old):
            raise _error(errno.ENOENT, old)
        if self.is_dir(old):
            raise _error(errno.EPERM, old)
        self._prepare_new(new)
        self.copy_up(old)
        os.link(old, new, src_dir_fd=self.upper_fd, dst_dir_fd=self.upper_fd, follow_symlinks=False)
        self.upper_paths.add(new)
        self.created.add(new)
        self._drop_whiteout(new)

    def unlink(self, path: str, keep: str | None = None) -> None:
        """Remove a non-directory. With ``keep``, the upper file moves to that name in the
        work directory instead of being deleted, for an open file that must live on."""
        if not self.exists(path):
            raise _error(errno.ENOENT, path)
        if self.is_dir(path):
            raise _error(errno.EISDIR, path)
        self._remove(path, keep)

    def rmdir(self, path: str) -> None:
        if not self.exists(path):
            raise _error(errno.ENOENT, path)
        if not self.is_dir(path):
            raise _error(errno.ENOTDIR, path)
        if self.listdir(path):
            raise _error(errno.ENOTEMPTY, path)
        if path == "":
            raise _error(errno.EBUSY, path)
        self._remove(path)

    def _remove(self, path: str, keep: str | None = None) -> None:
        """Remove ``path`` from the merged view: whiteout first (if the lower has it), so a
        crash in between leaves the old state visible rather than a half-removed one."""
        if self.lower(path) is not None:
            self._ensure_upper_dir(posixpath.dirname(path))
            self._add_whiteout(path)
        if path in self.upper_paths:
            if self._upper_is_dir(path):
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=self.upper_fd)
                try:
                    for name in os.listdir(fd):  # only whiteouts and an opaque marker remain
                        os.unlink(name, dir_fd=fd)
                finally:
                    os.close(fd)
                os.rmdir(path, dir_fd=self.upper_fd)
                self._forget_below(path)
                self.opaque.discard(path)
            elif keep is not None:
                os.rename(path, keep, src_dir_fd=self.upper_fd, dst_dir_fd=self.work_fd)
            else:
                os.unlink(path, dir_fd=self.upper_fd)
            self.upper_paths.discard(path)
            self.created.discard(path)

    def _forget_below(self, path: str) -> None:
        prefix = path + "/"
        self.whiteouts = {w for w in self.whiteouts if not w.startswith(prefix)}
        self.opaque = {o for o in self.opaque if not o.startswith(prefix)}

    def _movable(self, path: str) -> None:
        """A directory with lower content cannot move (EXDEV, as overlayfs without
        redirects): callers such as pip and mv fall back to copying."""
        if self.is_dir(path):
            if self.lower(path) == "dir" and (path not in self.opaque or self.children.get(path)):
                raise _error(errno.EXDEV, path)
        else:
            self.copy_up(path)

    def rename(  # noqa: PLR0912 (rename(2)'s cases, one by one)
        self, old: str, new: str, noreplace: bool = False, keep: str | None = None
    ) -> None:
        """Rename within the merged tree, as ``rename(2)``. With ``keep``, a non-directory
        replaced at ``new`` stays alive under that name in the work directory."""
        if not self.exists(old):
            raise _error(errno.ENOENT, old)
        if old == "" or new == "":
            raise _error(errno.EBUSY, old)
        if new == old:
            return
        if new.startswith(old + "/"):
            raise _error(errno.EINVAL, new)
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
        self._movable(old)
        self._ensure_upper_dir(posixpath.dirname(new))
        if self.lower(old) is not None:
            self._add_whiteout(old)
        # The lower directory at ``new``, shown or whited out, must stay hidden below it.
        new_hides_lower_dir = self.lower(new) == "dir" or (
            new in self.whiteouts and new in self.view.dirs
        )
        moving_dir = self.is_dir(old)
        if self.exists(new) and self.is_dir(new):
            self._remove(new)
        elif keep is not None and new in self.upper_paths:
            # A second name for the file being replaced, so it lives on for who has it open.
            os.link(
                new, keep, src_dir_fd=self.upper_fd, dst_dir_fd=self.work_fd, follow_symlinks=False
            )
        if new_hides_lower_dir and moving_dir:
            # Marked opaque before it moves, so the rename carries the marker atomically:
            # a crash can never show the lower directory's old entries inside it.
            marker = os.open(
                f"{old}/{OPAQUE}", os.O_WRONLY | os.O_CREAT | _NOFOLLOW, 0o600, dir_fd=self.upper_fd
            )
            os.close(marker)
        os.rename(old, new, src_dir_fd=self.upper_fd, dst_dir_fd=self.upper_fd)
        self._drop_whiteout(new)
        self._move_state(old, new)
        if new_hides_lower_dir and moving_dir:
            self.opaque.add(new)

    def exchange(self, a: str, b: str) -> None:
        """``renameat2(RENAME_EXCHANGE)``: swap two existing entries atomically."""
        for path in (a, b):
            if not self.exists(path):
                raise _error(errno.ENOENT, path)
            if path == "":
                raise _error(errno.EBUSY, path)
        if a == b:
            return
        if a.startswith(b + "/") or b.startswith(a + "/"):
            raise _error(errno.EINVAL, b)
        for path in (a, b):
            self._movable(path)
        # A directory arriving where the lower layer has one (whited out) must hide it:
        # marked opaque before the swap, as in rename.
        opaque = [
            dst
            for src, dst in ((a, b), (b, a))
            if dst in self.view.dirs and self.is_dir(src) and src not in self.opaque
        ]
        for dst in opaque:
            src = a if dst == b else b
            marker = os.open(
                f"{src}/{OPAQUE}", os.O_WRONLY | os.O_CREAT | _NOFOLLOW, 0o600, dir_fd=self.upper_fd
            )
            os.close(marker)
        renameat2(self.upper_fd, a, self.upper_fd, b, _RENAME_EXCHANGE)
        self._swap_state(a, b)
        self.opaque.update(opaque)

    def _move_state(self, old: str, new: str) -> None:
        prefix = old + "/"

        def moved(p: str) -> str:
            return new + p[len(old) :] if p == old or p.startswith(prefix) else p

        was_created = {p for p in self.created if p == old or p.startswith(prefix)}
        self.upper_paths = {moved(p) for p in self.upper_paths}
        self.whiteouts = {moved(w) if w.startswith(prefix) else w for w in self.whiteouts}
        self.opaque = {moved(o) for o in self.opaque}
        self.created = (self.created - was_created) | {moved(p) for p in was_created} | {new}

    def _swap_state(self, a: str, b: str) -> None:
        def swapped(p: str) -> str:
            for x, y in ((a, b), (b, a)):
                if p == x or p.startswith(x + "/"):
                    return y + p[len(x) :]
            return p

        self.upper_paths = {swapped(p) for p in self.upper_paths}
        self.whiteouts = {swapped(w) if w not in (a, b) else w for w in self.whiteouts}
        self.opaque = {swapped(o) for o in self.opaque}
        self.created = {swapped(p) for p in self.created} | {a, b}

    def open_upper(self, path: str, flags: int) -> int:
        """An fd on the upper copy of ``path``, copying it up first (without data if truncated)."""
        self.copy_up(path, with_data=not flags & os.O_TRUNC)
        flags &= ~(os.O_CREAT | os.O_EXCL | os.O_DIRECT)
        return self.open_upper_fd(path, flags)

    def setattr(
        self,
        path: str,
        *,
        mode: int | None = None,
        size: int | None = None,
        times_ns: tuple[int, int] | None = None,
        owner: tuple[int, int] | None = None,
    ) -> None:
        """Change attributes of ``path``, copying it up first; never through a symlink.
        ``times_ns`` is (atime, mtime); ``owner`` (uid, gid), -1 for unchanged."""
        self.copy_up(path, with_data=size != 0)
        if size is not None:
            fd = self.open_upper_fd(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
        if owner is not None:
            os.chown(path, *owner, dir_fd=self.upper_fd, follow_symlinks=False)
        if mode is not None:
            self._chmod(path, mode)
        if times_ns is not None:
            os.utime(path, ns=times_ns, dir_fd=self.upper_fd, follow_symlinks=False)

    # -- extended attributes: user.* on upper files ---------------------------------------

    def _has_upper(self, path: str) -> bool:
        """True if ``path`` is in the upper layer, False if only below. Raises ENOENT."""
        if path in self.upper_paths or path == "":
            return True
        if not self.exists(path):
            raise _error(errno.ENOENT, path)
        return False

    @contextlib.contextmanager
    def _xattr_target(self, path: str) -> Iterator[tuple[str, bool]]:
        """A path that names the upper file itself (its O_PATH descriptor in /proc, so no
        symlink is followed), and whether it is a symlink."""
        fd = os.open(_rel(path), os.O_PATH | _NOFOLLOW, dir_fd=self.upper_fd)
        try:
            yield f"/proc/self/fd/{fd}", stat.S_ISLNK(os.fstat(fd).st_mode)
        finally:
            os.close(fd)

    def getxattr(self, path: str, name: str) -> bytes:
        if not self._has_upper(path):
            raise _error(errno.ENODATA, path)
        with self._xattr_target(path) as (target, is_link):
            if is_link:
                raise _error(errno.ENODATA, path)
            return os.getxattr(target, name)

    def listxattr(self, path: str) -> list[str]:
        if not self._has_upper(path):
            return []
        with self._xattr_target(path) as (target, is_link):
            if is_link:
                return []
            return [n for n in os.listxattr(target) if n.startswith("user.")]

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0) -> None:
        if not name.startswith("user."):
            raise _error(errno.EOPNOTSUPP, path)
        self.copy_up(path)
        with self._xattr_target(path) as (target, is_link):
            if is_link:
                raise _error(errno.EPERM, path)  # as ext4: no user.* on symlinks
            os.setxattr(target, name, value, flags)

    def removexattr(self, path: str, name: str) -> None:
        if not self._has_upper(path):
            raise _error(errno.ENODATA, path)
        with self._xattr_target(path) as (target, _is_link):
            os.removexattr(target, name)

    # -- what changed ----------------------------------------------------------------------

    def changes(self) -> list[Change]:
        """Every path the upper layer adds, modifies, deletes or replaces, sorted."""
        found = [Change(w, "deleted") for w in self.whiteouts if w not in self.upper_paths]
        for path in self.upper_paths:
            lower = path in self.view.files or path in self.view.dirs
            is_dir = self._upper_is_dir(path)
            if (path in self.opaque and lower) or (is_dir and path in self.view.files):
                found.append(Change(path, "replaced"))
            elif not lower:
                found.append(Change(path, "added"))
            elif not is_dir:
                found.append(Change(path, "modified"))
        return sorted(found, key=lambda c: c.path)

    def reset(self, paths: list[str] | None = None, empty_trash: bool = True) -> list[str]:
        """Drop the upper layer's changes at and below ``paths`` (all of them if None).
        What goes moves into the work directory's trash at once (one rename each); the
        trash is emptied here, or, with ``empty_trash`` False, by the caller's
        :meth:`empty_trash` (the filesystem runs it off its event loop). Returns the paths
        whose view changed, for the caller to invalidate."""
        touched = [c.path for c in self.changes()]
        if paths is not None:
            wanted = [p.strip("/") for p in paths]
            touched = [t for t in touched if any(t == w or t.startswith(w + "/") for w in wanted)]
        for path in sorted(touched, key=lambda p: -p.count("/")):
            if path in self.whiteouts:
                self._drop_whiteout(path)
            if path in self.upper_paths:
                if self._upper_is_dir(path):
                    self._forget_below(path)
                    self.upper_paths = {p for p in self.upper_paths if not p.startswith(path + "/")}
                    self.created = {p for p in self.created if not p.startswith(path + "/")}
                    self.opaque.discard(path)
                trash = f"trash-{os.urandom(8).hex()}"
                os.rename(path, trash, src_dir_fd=self.upper_fd, dst_dir_fd=self.work_fd)
                self.upper_paths.discard(path)
                self.created.discard(path)
        if empty_trash:
            self.empty_trash()
        return touched

    def empty_trash(self) -> None:
        """Delete what :meth:`reset` moved aside (blocks on whole trees)."""
        for name in os.listdir(self.work_fd):
            if name.startswith("trash-"):
                self._remove_work(name)
