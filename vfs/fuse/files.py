"""The handlers of attributes and data: getattr and setattr, statfs, open and create,
read, write, flush and fsync, fallocate and lseek, and extended attributes (``user.*``,
kept in the upper layer; a lower file is copied up first).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Sequence

import pyfuse3
import trio

from pkgfs.store.layout import libc

from .base import OperationsBase, errors
from .nodes import Node

__all__ = ["FileOperations"]

_XATTR_CREATE, _XATTR_REPLACE = 1, 2  # linux/xattr.h


class FileOperations(OperationsBase):
    """Attributes, data and xattrs, for :class:`~pkgfs.vfs.fuse.operations.PkgfsOperations`."""

    @errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attributes(self._stat(self._node(inode)))

    @errors
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        async with self._locked(node):
            size = attr.st_size if fields.update_size else None
            await self._copy_up(node, with_data=size != 0)
            times = None
            if fields.update_atime or fields.update_mtime:
                current = self._stat(node)
                times = (
                    attr.st_atime_ns if fields.update_atime else current.atime_ns,
                    attr.st_mtime_ns if fields.update_mtime else current.mtime_ns,
                )
            owner = None
            if fields.update_uid or fields.update_gid:
                owner = (
                    attr.st_uid if fields.update_uid else -1,
                    attr.st_gid if fields.update_gid else -1,
                )
            mode = attr.st_mode if fields.update_mode else None
            if node.path is not None:
                self.tree.setattr(node.path, mode=mode, size=size, times_ns=times, owner=owner)
            else:
                self._setattr_unlinked(node, mode, size, times, owner)
        return self._attributes(self._stat(node))

    def _setattr_unlinked(
        self,
        node: Node,
        mode: int | None,
        size: int | None,
        times: tuple[int, int] | None,
        owner: tuple[int, int] | None,
    ) -> None:
        """setattr of a file that has no name left (fchmod, ftruncate of an unlinked file)."""
        fd = self.nodes.fd(node, write=size is not None)
        if size is not None:
            os.ftruncate(fd, size)
        if owner is not None:
            os.fchown(fd, *owner)
        if mode is not None:
            os.fchmod(fd, stat.S_IMODE(mode))
        if times is not None:
            os.utime(fd, ns=times)

    @errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        info = os.fstatvfs(self.tree.upper_fd)
        data = pyfuse3.StatvfsData()
        for name in (
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
            setattr(data, name, getattr(info, name))
        return data

    # -- files ---------------------------------------------------------------------------------

    @errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if self.no_open:
            raise pyfuse3.FUSEError(errno.ENOSYS)  # no OPEN/RELEASE from now on
        node = self._node(inode)
        if flags & os.O_TRUNC:  # Linux truncates even with O_RDONLY (the kernel checked)
            # atomic_o_trunc: the kernel leaves the truncation to open.
            async with self._locked(node):
                await self._copy_up(node, with_data=False)
                self._truncate(node)
        # The inode is the handle. Data changes only through this mount, so the kernel may
        # keep a file's pages across opens.
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    @errors
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = self._child(parent_inode, name)
        owner = self._owner_for(self._node(parent_inode), ctx)
        fd = self.tree.create(path, os.O_RDWR, mode, owner)
        entry = self._entry(path)
        node = self.nodes.for_path(path)
        self.nodes.adopt(node, fd)
        # The handle is the inode, as for open: nothing waits for a RELEASE.
        return pyfuse3.FileInfo(fh=node.id, keep_cache=True), entry

    @errors
    async def read(self, fh: int, off: int, size: int, inode: int | None = None) -> bytes:
        node = self._node(fh if inode is None else inode)
        if node.lower is not None and node.lower.data is not None:
            return node.lower.data[off : off + size]
        return os.pread(self.nodes.fd(node), size, off)

    @errors
    async def write(self, fh: int, off: int, buf: bytes, inode: int | None = None) -> int:
        node = self._node(fh if inode is None else inode)
        if node.lower is not None:
            async with self._locked(node):
                await self._copy_up(node)
        return os.pwrite(self.nodes.fd(node, write=True), buf, off)

    @errors
    async def flush(self, fh: int, inode: int | None = None) -> None:
        # Nothing to do on close(2): ENOSYS tells the kernel to stop sending flushes for
        # the rest of the mount, saving a round trip on every close.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @errors
    async def fsync(self, fh: int, datasync: bool, inode: int | None = None) -> None:
        node = self._node(fh if inode is None else inode)
        if node.lower is None and not node.is_dir:
            # On a copy of the descriptor, off the loop: flushing a large file takes long,
            # and the node's own descriptor may be closed meanwhile (FORGET, or too many open).
            fd = os.dup(self.nodes.fd(node))
            try:
                await trio.to_thread.run_sync(os.fdatasync if datasync else os.fsync, fd)
            finally:
                os.close(fd)

    @errors
    async def fsyncdir(self, fh: int, datasync: bool, inode: int | None = None) -> None:
        node = self._node(fh if inode is None else inode)
        if node.path is not None and (node.path == "" or node.path in self.tree.upper_paths):
            fd = os.open(
                node.path or ".",
                os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                dir_fd=self.tree.upper_fd,
            )
            try:
                await trio.to_thread.run_sync(os.fsync, fd)
            finally:
                os.close(fd)

    @errors
    async def release(self, fh: int, inode: int | None = None) -> None:
        return None  # the handle is the inode: its descriptor goes at FORGET

    @errors
    async def releasedir(self, fh: int, inode: int | None = None) -> None:
        return None

    @errors
    async def fallocate(self, inode: int, fh: int, mode: int, offset: int, length: int) -> None:
        """``fallocate(2)`` on the upper copy (with the patched pyfuse3)."""
        node = self._node(inode)
        async with self._locked(node):
            await self._copy_up(node)
            fd = self.nodes.fd(node, write=True)
            if (
                libc.fallocate(fd, ctypes.c_int(mode), ctypes.c_long(offset), ctypes.c_long(length))
                != 0
            ):
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))

    @errors
    async def lseek(self, inode: int, fh: int, offset: int, whence: int) -> int:
        """SEEK_DATA and SEEK_HOLE as the file below answers them (with the patched pyfuse3)."""
        node = self._node(inode)
        if node.lower is not None and node.lower.data is not None:
            size = len(node.lower.data)
            if offset >= size:
                raise pyfuse3.FUSEError(errno.ENXIO)
            return offset if whence == os.SEEK_DATA else size
        return os.lseek(self.nodes.fd(node), offset, whence)

    @errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        text = os.fsdecode(name)
        if not text.startswith("user."):
            raise pyfuse3.FUSEError(errno.ENODATA)
        node = self._node(inode)
        unnamed = self._unnamed(node)
        if unnamed is not None:
            return os.getxattr(unnamed, text)
        return self.tree.getxattr(self._path(node), text)

    @errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        node = self._node(inode)
        if node.path is None:
            if node.lower is not None:
                return []
            unnamed = self._unnamed(node)
            assert unnamed is not None
            return [os.fsencode(n) for n in os.listxattr(unnamed) if n.startswith("user.")]
        return [os.fsencode(n) for n in self.tree.listxattr(self._path(node))]

    @errors
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        node = self._node(inode)
        text = os.fsdecode(name)
        async with self._locked(node):
            if not node.is_dir:
                await self._copy_up(node)
            unnamed = self._unnamed(node)
            if unnamed is None:
                self.tree.setxattr(self._path(node), text, value)
            elif not text.startswith("user."):
                raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
            else:
                os.setxattr(unnamed, text, value)

    @errors
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        node = self._node(inode)
        async with self._locked(node):
            unnamed = self._unnamed(node)
            if unnamed is not None:
                os.removexattr(unnamed, os.fsdecode(name))
            else:
                self.tree.removexattr(self._path(node), os.fsdecode(name))
