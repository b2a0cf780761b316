"""The FUSE filesystem: kernel requests mapped onto a :class:`MergedTree`.

Every handler answers only with ``pyfuse3.FUSEError``: :func:`_errors` maps an ``OSError``
to its errno, and logs anything unexpected with its traceback before answering EIO, so the
daemon keeps serving. ``forget`` never raises.

The lower layer never changes, so the kernel may cache entries, attributes and file data
for long (``keep_cache`` keeps the page cache across opens of a lower file). Changes made
through the mount are seen by the kernel as it makes them; changes made behind its back
(``pkgfs reset``) are followed by explicit invalidations.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import posixpath
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from pkgfs.vfs.overlay import Attributes, MergedTree

__all__ = ["PkgfsOperations"]

log = logging.getLogger("pkgfs.vfs")

# The lower layer is immutable and the upper one changes only through us: long timeouts.
CACHE_TIMEOUT = 3600.0

P = ParamSpec("P")
R = TypeVar("R")


def _errors(handler: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Answer every failure of ``handler`` with a FUSEError, logging the unexpected ones."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class _Handle:
    """An open file: an fd on the upper file or the store object, or inline bytes.

    A lower file's object is opened on its first read only: with keep_cache most opens of
    a lower file are served from the page cache and never read.
    """

    __slots__ = ("data", "fd", "object", "path", "writable")

    def __init__(
        self,
        path: str,
        fd: int | None,
        data: bytes | None,
        writable: bool,
        object_path: str | None = None,
    ) -> None:
        self.path = path
        self.fd = fd
        self.data = data
        self.writable = writable
        self.object = object_path


class PkgfsOperations(pyfuse3.Operations):
    """pyfuse3 operations for one mounted environment."""

    enable_writeback_cache = False

    def __init__(self, tree: MergedTree, uid: int, gid: int) -> None:
        super().__init__()
        self.tree = tree
        self.uid = uid
        self.gid = gid
        self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: ""}
        self.inodes: dict[str, int] = {"": pyfuse3.ROOT_INODE}
        self.lookups: dict[int, int] = {}
        self.handles: dict[int, _Handle] = {}
        self.next_handle = 1

    # -- inodes ------------------------------------------------------------------------------

    def _path(self, inode: int) -> str:
        try:
            return self.paths[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ESTALE) from None

    def _child(self, parent: int, name: bytes) -> str:
        text = os.fsdecode(name)
        if "/" in text or text in (".", "..") or text.startswith(".wh."):
            # ".wh." names are the upper layer's whiteouts; they cannot be files here.
            raise pyfuse3.FUSEError(errno.EINVAL if text.startswith(".wh.") else errno.ENOENT)
        return posixpath.join(self._path(parent), text) if self._path(parent) else text

    def _inode(self, path: str) -> int:
        known = self.inodes.get(path)
        if known is not None:
            return known
        ino = self.tree.inode(path)
        stale = self.paths.get(ino)
        if stale is not None and stale != path:
            self.inodes.pop(stale, None)
        self.paths[ino] = path
        self.inodes[path] = ino
        return ino

    def _entry(self, path: str, count: bool = True) -> pyfuse3.EntryAttributes:
        ino = self._inode(path)
        attrs = self._attributes(self.tree.getattr(path, ino))
        if count:
            self.lookups[ino] = self.lookups.get(ino, 0) + 1
        return attrs

    def _attributes(self, a: Attributes) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = a.ino
        entry.generation = 0
        entry.entry_timeout = CACHE_TIMEOUT
        entry.attr_timeout = CACHE_TIMEOUT
        entry.st_mode = a.mode
        entry.st_nlink = a.nlink
        entry.st_uid = self.uid
        entry.st_gid = self.gid
        entry.st_rdev = 0
        entry.st_size = a.size
        entry.st_blksize = 4096
        entry.st_blocks = (a.size + 511) // 512
        entry.st_atime_ns = a.mtime_ns
        entry.st_mtime_ns = a.mtime_ns
        entry.st_ctime_ns = a.mtime_ns
        return entry

    def _moved(self, old: str, new: str) -> None:
        prefix = old + "/"
        for path, ino in list(self.inodes.items()):
            if path == old or path.startswith(prefix):
                renamed = new + path[len(old) :]
                del self.inodes[path]
                self.inodes[renamed] = ino
                self.paths[ino] = renamed

    def _dropped(self, path: str) -> None:
        """``path`` no longer names its inode. The inode keeps its last path (for handles
        still open on it) until the kernel forgets it."""
        self.inodes.pop(path, None)

    # -- lookups and attributes -----------------------------------------------------------

    @_errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        if not self.tree.exists(path):
            # Cache the absence too: imports probe many names that are not there.
            negative = pyfuse3.EntryAttributes()
            negative.st_ino = 0
            negative.entry_timeout = CACHE_TIMEOUT
            return negative
        return self._entry(path)

    @_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path = self._path(inode)
        return self._attributes(self.tree.getattr(path, inode))

    @_errors
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        path = self._path(inode)
        times = None
        if fields.update_atime or fields.update_mtime:
            current = self.tree.getattr(path, inode)
            times = (
                attr.st_atime_ns if fields.update_atime else current.mtime_ns,
                attr.st_mtime_ns if fields.update_mtime else current.mtime_ns,
            )
        owner = None
        if fields.update_uid or fields.update_gid:
            owner = (
                attr.st_uid if fields.update_uid else -1,
                attr.st_gid if fields.update_gid else -1,
            )
        self.tree.setattr(
            path,
            mode=attr.st_mode if fields.update_mode else None,
            size=attr.st_size if fields.update_size else None,
            times_ns=times,
            owner=owner,
        )
        handle = self.handles.get(fh) if fh is not None else None
        if handle is not None and not handle.writable and fields.update_size:
            # ftruncate through a read-only handle: it now reads the (copied-up) file.
            self._reopen_upper(handle)
        return self._attributes(self.tree.getattr(path, inode))

    @_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return os.fsencode(self.tree.readlink(self._path(inode)))

    @_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        info = os.statvfs(self.tree.upper)
        data = pyfuse3.StatvfsData()
        for field in (
            "f_bsize",
            "f_frsize",
            "f_blocks",
            "f_bfree",
            "f_bavail",
            "f_files",
            "f_ffree",
            "f_favail",
            "f_namemax",
        ):
            setattr(data, field, getattr(info, field))
        return data

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            left = self.lookups.get(inode, 0) - count
            if left > 0:
                self.lookups[inode] = left
                continue
            self.lookups.pop(inode, None)
            path = self.paths.get(inode)
            if (
                inode != pyfuse3.ROOT_INODE
                and path is not None
                and not any(h.path == path for h in self.handles.values())
            ):
                del self.paths[inode]
                if self.inodes.get(path) == inode:
                    del self.inodes[path]

    # -- directories ---------------------------------------------------------------------------

    @_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        path = self._path(inode)
        if not self.tree.is_dir(path):
            raise OSError(errno.ENOTDIR, "not a directory")
        return inode

    @_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        path = self._path(fh)
        names = self.tree.listdir(path)
        for index in range(start_id, len(names)):
            child = posixpath.join(path, names[index]) if path else names[index]
            if not pyfuse3.readdir_reply(
                token, os.fsencode(names[index]), self._entry(child), index + 1
            ):
                # Not sent: the kernel did not take this entry, so it holds no lookup.
                ino = self.inodes[child]
                self.lookups[ino] -= 1
                break

    @_errors
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        self.tree.mkdir(path, mode)
        return self._entry(path)

    @_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._child(parent_inode, name)
        self.tree.rmdir(path)
        self._dropped(path)

    @_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._child(parent_inode, name)
        self.tree.unlink(path)
        self._dropped(path)

    @_errors
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        self.tree.symlink(path, os.fsdecode(target))
        return self._entry(path)

    @_errors
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        old = self._child(parent_inode_old, name_old)
        new = self._child(parent_inode_new, name_new)
        self.tree.rename(old, new, noreplace=bool(flags & pyfuse3.RENAME_NOREPLACE))
        self._dropped(new)
        self._moved(old, new)

    @_errors
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EPERM)  # hard links would alias layers

    @_errors
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EPERM)  # only files, directories and symlinks

    # -- files ---------------------------------------------------------------------------------

    def _new_handle(self, handle: _Handle) -> int:
        fh = self.next_handle
        self.next_handle += 1
        self.handles[fh] = handle
        return fh

    def _reopen_upper(self, handle: _Handle) -> None:
        if handle.fd is not None:
            os.close(handle.fd)
        handle.fd = self.tree.open_upper(handle.path, os.O_RDONLY)
        handle.data = None
        handle.object = None

    @_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        path = self._path(inode)
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        if writable or flags & os.O_TRUNC or path in self.tree.upper_paths:
            # With O_TRUNC the kernel drops the file's cached pages itself (atomic_o_trunc).
            fd = self.tree.open_upper(path, flags)
            return pyfuse3.FileInfo(fh=self._new_handle(_Handle(path, fd, None, writable)))
        source = self.tree.lower_source(path)
        if isinstance(source, bytes):
            handle = _Handle(path, None, source, False)
        else:
            handle = _Handle(path, None, None, False, object_path=source)
        # A lower file never changes: the kernel may keep its pages across opens.
        return pyfuse3.FileInfo(fh=self._new_handle(handle), keep_cache=True)

    @_errors
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = self._child(parent_inode, name)
        fd = self.tree.create(path, flags & ~os.O_CREAT, mode)
        entry = self._entry(path)
        handle = _Handle(path, fd, None, True)
        return pyfuse3.FileInfo(fh=self._new_handle(handle)), entry

    @_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.handles[fh]
        if handle.data is not None:
            return handle.data[off : off + size]
        if handle.fd is None:
            assert handle.object is not None
            handle.fd = os.open(handle.object, os.O_RDONLY | os.O_CLOEXEC)
        return os.pread(handle.fd, size, off)

    @_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.handles[fh]
        if not handle.writable or handle.fd is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return os.pwrite(handle.fd, buf, off)

    @_errors
    async def flush(self, fh: int) -> None:
        # Nothing to do on close(2): ENOSYS tells the kernel to stop sending flushes for
        # the rest of the mount, saving a round trip on every close.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self.handles[fh]
        if handle.writable and handle.fd is not None:
            (os.fdatasync if datasync else os.fsync)(handle.fd)

    @_errors
    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh)
        if handle.fd is not None:
            os.close(handle.fd)

    # -- extended attributes: none ---------------------------------------------------------
    # ENOSYS makes the kernel stop asking (and answer EOPNOTSUPP itself): otherwise every
    # write would first ask for security.capability.

    @_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        raise pyfuse3.FUSEError(errno.ENOSYS)

    # -- pkgfs reset ----------------------------------------------------------------------------

    def reset(self, paths: list[str] | None) -> list[tuple[int, bytes | None]]:
        """Drop overlay changes. Returns what the kernel must forget: (parent inode, name)
        entries and (inode, None) file data, for the caller to invalidate outside any
        request handler (invalidating from inside one can deadlock against the kernel)."""
        invalidations: list[tuple[int, bytes | None]] = []
        for path in self.tree.reset(paths):
            parent, name = posixpath.split(path)
            parent_ino = self.inodes.get(parent)
            if parent_ino is not None:
                invalidations.append((parent_ino, os.fsencode(name)))
                invalidations.append((parent_ino, None))
            ino = self.inodes.get(path)
            if ino is not None:
                invalidations.append((ino, None))
        return invalidations
