"""The FUSE filesystem: kernel requests, by inode, mapped onto a :class:`MergedTree`.

Two ways to serve, chosen per mount (:func:`pkgfs.vfs.fuse.features.no_open_support`):

- **no-open** (pyfuse3 with ``.ci/pyfuse3/no-open.patch``): OPEN and OPENDIR answer ENOSYS,
  so the kernel stops sending OPEN/RELEASE and OPENDIR/RELEASEDIR for the whole connection,
  keeps every file's pages (``FOPEN_KEEP_CACHE``) and caches directory listings; READ, WRITE,
  FSYNC and READDIRPLUS then carry the inode (fh 0). ``O_TRUNC`` arrives as SETATTR, as
  FUSE_CAP_ATOMIC_O_TRUNC is off. See ``fuse_file_open()`` in the kernel's fs/fuse/file.c and
  libfuse's notes on FUSE_CAP_NO_OPEN_SUPPORT.
- **open** (stock pyfuse3): OPEN and OPENDIR answer with the inode as file handle and
  ``keep_cache``; RELEASE has nothing to do.

Either way a handle is only an inode: every file's data is reached through its node
(``nodes.py``), which holds one descriptor per inode. A lower file is copied up on its first
write, truncate, chmod, chown, utime, link or xattr, not on open; the copy runs in a worker
thread (``trio.to_thread``) under the node's lock, so other requests go on meanwhile and two
changes to one file are never interleaved. Reset likewise moves what it drops aside at once
and deletes it off the loop.

Every handler answers only with ``pyfuse3.FUSEError``: :func:`_errors` maps an ``OSError``
to its errno, and logs anything unexpected with its traceback before answering EIO, so the
daemon keeps serving. ``forget`` never raises. The daemon never follows a symlink and never
touches its own mount: the tree works through directory descriptors (``vfs/overlay/``).

The lower layer never changes, so the kernel may cache entries, attributes and file data for
long. Changes made through the mount are seen by the kernel as it makes them; changes made
behind its back (``pkgfs reset``) are followed by explicit invalidations.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import ctypes
import dataclasses
import errno
import functools
import hashlib
import logging
import os
import posixpath
import stat
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

from pkgfs.store.layout import libc
from pkgfs.vfs.overlay import Attributes, MergedTree
from pkgfs.vfs.overlay.lower import LowerIndex

from .nodes import ROOT, Node, NodeTable

__all__ = ["PkgfsOperations"]

log = logging.getLogger("pkgfs.vfs")

# The lower layer is immutable and the upper one changes only through us: long timeouts.
CACHE_TIMEOUT = 3600.0
_XATTR_CREATE, _XATTR_REPLACE = 1, 2  # linux/xattr.h

P = ParamSpec("P")


@functools.lru_cache(maxsize=1 << 16)
def _cookie(name: str) -> int:
    """A directory entry's offset: 62 bits of its name's hash, above those of . and .."""
    digest = hashlib.blake2b(os.fsencode(name), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 2) + 3


R = TypeVar("R")


def _errors(handler: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Answer every failure of ``handler`` with a FUSEError, logging the unexpected ones;
    count the request."""
    name = handler.__name__

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if args and isinstance(args[0], PkgfsOperations):
            args[0].requests[name] += 1
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s", name)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class PkgfsOperations(pyfuse3.Operations):
    """pyfuse3 operations for one mounted environment.

    ``no_open`` selects the no-open mode (it needs the patched pyfuse3); ``uid``/``gid`` own
    the lower layer as shown."""

    enable_writeback_cache = False

    def __init__(self, tree: MergedTree, uid: int, gid: int, no_open: bool = False) -> None:
        super().__init__()
        self.tree = tree
        self.uid = uid
        self.gid = gid
        self.no_open = no_open
        # Read by the patched pyfuse3 at init (and ignored by stock pyfuse3).
        self.pass_inode_with_fh = no_open
        self.enable_atomic_o_trunc = not no_open
        self.nodes = NodeTable(tree)
        self.locks: dict[int, trio.Lock] = {}
        self.requests: collections.Counter[str] = collections.Counter()
        # The mount's state directory, where a switch finds its next config (daemon.py).
        self.state: Path | None = None

    @property
    def mode(self) -> str:
        """``"no-open"`` or ``"open"``: how the kernel talks to this mount."""
        return "no-open" if self.no_open else "open"

    # -- nodes -------------------------------------------------------------------------------

    def _node(self, inode: int) -> Node:
        try:
            return self.nodes.get(inode)
        except KeyError:  # never given to the kernel, or forgotten by it
            raise pyfuse3.FUSEError(errno.ESTALE) from None

    def _path(self, node: Node) -> str:
        if node.path is None:
            raise pyfuse3.FUSEError(errno.ENOENT)  # unlinked: it has no name to work on
        return node.path

    def _child(self, parent: int, name: bytes) -> str:
        if len(name) > 255:  # NAME_MAX, as ext4
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        text = os.fsdecode(name)
        if "/" in text or text in (".", ".."):
            raise pyfuse3.FUSEError(errno.ENOENT)
        if text.startswith(".wh."):
            # ".wh." names are the upper layer's whiteouts; they cannot be files here.
            raise pyfuse3.FUSEError(errno.EINVAL)
        base = self._path(self._node(parent))
        return f"{base}/{text}" if base else text

    @contextlib.asynccontextmanager
    async def _locked(self, *nodes: Node | None) -> AsyncIterator[None]:
        """Hold the locks of ``nodes`` (in id order): changes to one file never interleave."""
        ids = sorted({n.id for n in nodes if n is not None})
        async with contextlib.AsyncExitStack() as stack:
            for ino in ids:
                lock = self.locks.setdefault(ino, trio.Lock())
                await stack.enter_async_context(lock)
                stack.callback(self._drop_lock, ino)
            yield

    def _drop_lock(self, ino: int) -> None:
        lock = self.locks.get(ino)
        if lock is not None and not lock.locked() and lock.statistics().tasks_waiting == 0:
            del self.locks[ino]

    async def _copy_up(self, node: Node, with_data: bool = True) -> None:
        """Give ``node`` its own upper file (or orphaned copy), off the event loop. The
        caller holds the node's lock."""
        if node.lower is None:
            return
        lower = node.lower
        if node.path is not None:
            path = node.path
            job = self.tree.copy_up_begin(path, with_data)
            if job is not None:
                await trio.to_thread.run_sync(job.run)
            self.tree.copy_up_done(path)
        else:  # a lower file unlinked while open, now written: its copy lives aside
            name = f"orphan-{node.id}"
            await trio.to_thread.run_sync(self.tree.copy_aside(lower, name).run)
            node.orphan = name
        self.nodes.close(node)
        node.lower = None

    def _attributes(self, a: Attributes) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = a.ino
        entry.generation = self.nodes.generation
        entry.entry_timeout = CACHE_TIMEOUT
        entry.attr_timeout = CACHE_TIMEOUT
        entry.st_mode = a.mode
        entry.st_nlink = a.nlink
        entry.st_uid = a.uid
        entry.st_gid = a.gid
        entry.st_rdev = a.rdev
        entry.st_size = a.size
        entry.st_blksize = 4096
        entry.st_blocks = a.blocks
        entry.st_atime_ns = a.atime_ns
        entry.st_mtime_ns = a.mtime_ns
        entry.st_ctime_ns = a.ctime_ns
        return entry

    def _stat(self, node: Node) -> Attributes:
        """What ``stat`` shows for ``node``, wherever its file now is."""
        tree = self.tree
        if node.path is not None:
            attrs = tree.getattr(node.path, node.id)
            if node.orphan is not None:  # its work name is no link
                attrs = dataclasses.replace(attrs, nlink=attrs.nlink - 1)
            return attrs
        if node.orphan is not None:
            info = os.stat(node.orphan, dir_fd=tree.work_fd, follow_symlinks=False)
            return Attributes.of(node.id, info, nlink=info.st_nlink - 1)  # its work name
        if node.gone is not None:
            return node.gone
        if node.lower is not None:
            return tree.lower_attributes(node.lower, node.id, nlink=0)
        if node.fd >= 0:
            return Attributes.of(node.id, os.fstat(node.fd))
        raise pyfuse3.FUSEError(errno.ENOENT)

    def _entry(self, path: str) -> pyfuse3.EntryAttributes:
        """The entry for ``path``, counting one more lookup the kernel now holds."""
        node = self.nodes.for_path(path)
        attrs = self._attributes(self._stat(node))
        node.lookups += 1
        return attrs

    def _owner_for(self, parent: Node, ctx: pyfuse3.RequestContext) -> tuple[int, int]:
        """Who owns a file the caller makes: the caller, with the group of a set-group-ID
        directory (as ext4)."""
        parent_attrs = self._stat(parent)
        gid = parent_attrs.gid if parent_attrs.mode & stat.S_ISGID else ctx.gid
        return ctx.uid, gid

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
        return self._attributes(self._stat(self._node(inode)))

    @_errors
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

    @_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return os.fsencode(self.tree.readlink(self._path(self._node(inode))))

    @_errors
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

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        self.requests["forget"] += 1
        for inode, count in inode_list:
            try:
                self.nodes.forget(inode, count)
            except Exception:
                log.exception("forget %d", inode)

    # -- directories ---------------------------------------------------------------------------

    @_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if self.no_open:
            raise pyfuse3.FUSEError(errno.ENOSYS)  # no OPENDIR/RELEASEDIR from now on
        node = self._node(inode)
        if not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    @_errors
    async def readdir(
        self, fh: int, start_id: int, token: pyfuse3.ReaddirToken, inode: int | None = None
    ) -> None:
        node = self._node(fh if inode is None else inode)
        path = self._path(node)
        # Offsets are cookies, not positions: a stable hash of each name, the listing sorted
        # by it (as ext4's htree), so entries added or removed while a listing is read
        # (rm -r, git clean) never make it skip or repeat one.
        listing = sorted((_cookie(n), n) for n in self.tree.listdir(path))
        entries = [(1, "."), (2, ".."), *listing]
        start = bisect.bisect_right(entries, (start_id, "\U0010ffff"))
        for cookie, name in entries[start:]:
            if name in (".", ".."):
                # Not lookups: the kernel takes no reference for these two.
                if name == ".":
                    target = node
                else:
                    target = self.nodes.at(posixpath.dirname(path)) or self._node(ROOT)
                attrs = self._attributes(self._stat(target))
                if not pyfuse3.readdir_reply(token, name.encode(), attrs, cookie):
                    break
                continue
            child = f"{path}/{name}" if path else name
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._entry(child), cookie):
                # Not sent: the kernel did not take this entry, so it holds no lookup.
                self.nodes.for_path(child).lookups -= 1
                break

    @_errors
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        parent = self._node(parent_inode)
        owner = self._owner_for(parent, ctx)
        if self._stat(parent).mode & stat.S_ISGID:
            mode |= stat.S_ISGID  # as ext4: a directory inherits set-group-ID
        self.tree.mkdir(path, mode, owner)
        return self._entry(path)

    @_errors
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        owner = self._owner_for(self._node(parent_inode), ctx)
        self.tree.mknod(path, mode, rdev, owner)
        return self._entry(path)

    @_errors
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        owner = self._owner_for(self._node(parent_inode), ctx)
        self.tree.symlink(path, os.fsdecode(target), owner)
        return self._entry(path)

    @_errors
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        new = self._child(new_parent_inode, new_name)
        async with self._locked(node):
            old = self._path(node)
            await self._copy_up(node)
            self.tree.link(old, new)
        info = self.tree.lstat(new)
        self.nodes.upper_ids[info.st_ino] = node.id
        self.nodes.name(node, new)
        node.lookups += 1
        return self._attributes(self._stat(node))

    @staticmethod
    def _keep_name(node: Node | None, path: str) -> str | None:
        """The work-directory name under which ``node``'s upper file must live on once
        ``path`` stops naming it: when it is a file the kernel holds, ``path`` is its last
        name, and it is not kept already. None when it may simply go."""
        if (
            node is not None
            and not node.is_dir
            and node.only_name(path)
            and node.lower is None
            and node.lookups > 0
            and node.orphan is None
        ):
            return f"orphan-{node.id}"
        return None

    def _upper_stat(self, path: str) -> os.stat_result | None:
        """``lstat`` of ``path`` in the upper layer, or None where it has no upper file."""
        if path not in self.tree.upper_paths:
            return None
        try:
            return self.tree.lstat(path)
        except FileNotFoundError:
            return None

    async def _unname(self, path: str, remove: Callable[[str | None], None]) -> None:
        """Remove ``path`` with ``remove(keep)``: a non-directory the kernel still holds,
        with no other name, lives on in the work directory (``keep``) until FORGET."""
        node = self.nodes.at(path)
        async with self._locked(node):
            keep = self._keep_name(node, path)
            before = self._upper_stat(path)
            remove(keep)
            self.nodes.removed(before, kept=keep is not None)
            if node is not None:
                self.nodes.unname(node, path)
                if keep is not None:
                    node.orphan = keep

    @_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._child(parent_inode, name)
        await self._unname(path, lambda keep: self.tree.unlink(path, keep))

    @_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._child(parent_inode, name)
        before = self._upper_stat(path)
        node = self.nodes.at(path)
        last = self._stat(node) if node is not None else None
        self.tree.rmdir(path)
        self.nodes.removed(before)
        if node is not None and last is not None:
            self.nodes.unname(node, path)
            # As ext4: a directory removed while still open (a shell's cwd) stats with no
            # links; listing it shows nothing, which the kernel answers itself.
            node.gone = dataclasses.replace(last, nlink=0)

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
        if flags & 4:  # RENAME_WHITEOUT: overlayfs's own, not offered here
            raise pyfuse3.FUSEError(errno.EINVAL)
        old = self._child(parent_inode_old, name_old)
        new = self._child(parent_inode_new, name_new)
        moving, replaced = self.nodes.at(old), self.nodes.at(new)
        if moving is None and self.tree.exists(old):
            moving = self.nodes.for_path(old)  # copy-up below goes through its node
        if flags & pyfuse3.RENAME_EXCHANGE:
            async with self._locked(moving, replaced):
                for node in (moving, replaced):
                    if node is not None and not node.is_dir:
                        await self._copy_up(node)
                self.tree.exchange(old, new)
                self.nodes.swapped(old, new)
            return
        if moving is not None and moving is replaced:
            return  # two names of one file: rename(2) does nothing
        async with self._locked(moving, replaced):
            if moving is not None and not moving.is_dir:
                await self._copy_up(moving)
            await self._rename(old, new, replaced, bool(flags & pyfuse3.RENAME_NOREPLACE))

    async def _rename(self, old: str, new: str, replaced: Node | None, noreplace: bool) -> None:
        keep = self._keep_name(replaced, new)
        before = self._upper_stat(new)
        self.tree.rename(old, new, noreplace=noreplace, keep=keep)
        self.nodes.removed(before, kept=keep is not None)
        if replaced is not None:
            self.nodes.unname(replaced, new)
            if keep is not None:
                replaced.orphan = keep
        self.nodes.moved(old, new)

    # -- files ---------------------------------------------------------------------------------

    @_errors
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

    def _truncate(self, node: Node) -> None:
        os.ftruncate(self.nodes.fd(node, write=True), 0)

    @_errors
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

    @_errors
    async def read(self, fh: int, off: int, size: int, inode: int | None = None) -> bytes:
        node = self._node(fh if inode is None else inode)
        if node.lower is not None and node.lower.data is not None:
            return node.lower.data[off : off + size]
        return os.pread(self.nodes.fd(node), size, off)

    @_errors
    async def write(self, fh: int, off: int, buf: bytes, inode: int | None = None) -> int:
        node = self._node(fh if inode is None else inode)
        if node.lower is not None:
            async with self._locked(node):
                await self._copy_up(node)
        return os.pwrite(self.nodes.fd(node, write=True), buf, off)

    @_errors
    async def flush(self, fh: int, inode: int | None = None) -> None:
        # Nothing to do on close(2): ENOSYS tells the kernel to stop sending flushes for
        # the rest of the mount, saving a round trip on every close.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @_errors
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

    @_errors
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

    @_errors
    async def release(self, fh: int, inode: int | None = None) -> None:
        return None  # the handle is the inode: its descriptor goes at FORGET

    @_errors
    async def releasedir(self, fh: int, inode: int | None = None) -> None:
        return None

    @_errors
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

    @_errors
    async def lseek(self, inode: int, fh: int, offset: int, whence: int) -> int:
        """SEEK_DATA and SEEK_HOLE as the file below answers them (with the patched pyfuse3)."""
        node = self._node(inode)
        if node.lower is not None and node.lower.data is not None:
            size = len(node.lower.data)
            if offset >= size:
                raise pyfuse3.FUSEError(errno.ENXIO)
            return offset if whence == os.SEEK_DATA else size
        return os.lseek(self.nodes.fd(node), offset, whence)

    # -- extended attributes: user.* in the upper layer --------------------------------------
    # Lower files have none. Other namespaces are not stored (security.capability is asked
    # for before every write: it answers at once).

    def _unnamed(self, node: Node) -> str | None:
        """For a file unlinked while held, a path to its data (through its descriptor in
        /proc, so xattr calls reach it as they would through an fd on ext4); None while it
        has a name. Raises ENODATA for a lower file, which has no attributes."""
        if node.path is not None:
            return None
        if node.lower is not None:
            raise pyfuse3.FUSEError(errno.ENODATA)
        return f"/proc/self/fd/{self.nodes.fd(node)}"

    @_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        text = os.fsdecode(name)
        if not text.startswith("user."):
            raise pyfuse3.FUSEError(errno.ENODATA)
        node = self._node(inode)
        unnamed = self._unnamed(node)
        if unnamed is not None:
            return os.getxattr(unnamed, text)
        return self.tree.getxattr(self._path(node), text)

    @_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        node = self._node(inode)
        if node.path is None:
            if node.lower is not None:
                return []
            unnamed = self._unnamed(node)
            assert unnamed is not None
            return [os.fsencode(n) for n in os.listxattr(unnamed) if n.startswith("user.")]
        return [os.fsencode(n) for n in self.tree.listxattr(self._path(node))]

    @_errors
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

    @_errors
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        node = self._node(inode)
        async with self._locked(node):
            unnamed = self._unnamed(node)
            if unnamed is not None:
                os.removexattr(unnamed, os.fsdecode(name))
            else:
                self.tree.removexattr(self._path(node), os.fsdecode(name))

    # -- pkgfs reset ----------------------------------------------------------------------------

    async def reset(self, paths: list[str] | None) -> list[tuple[int, bytes | None]]:
        """Drop overlay changes. Waits for changes in flight, moves what goes aside at once,
        and deletes it off the loop. Returns what the kernel must forget: (parent inode,
        name) entries and (inode, None) file data, for the caller to invalidate outside any
        request handler (invalidating from inside one can deadlock against the kernel)."""
        await self.wait_changes()
        invalidations = self.dropped(self.tree.reset(paths, empty_trash=False))
        await trio.to_thread.run_sync(self.tree.empty_trash)
        return invalidations

    async def wait_changes(self) -> None:
        """Wait until no change to a file is in flight (copy-ups, truncations)."""
        while busy := [lock for lock in self.locks.values() if lock.locked()]:
            async with busy[0]:
                pass

    def dropped(self, paths: list[str]) -> list[tuple[int, bytes | None]]:
        """The overlay no longer has ``paths`` (the tree dropped them): their nodes let go
        of their names, and what the kernel must forget is returned, as :meth:`reset` says."""
        invalidations: list[tuple[int, bytes | None]] = []
        for path in paths:
            parent, name = posixpath.split(path)
            parent_ino = self.nodes.by_path.get(parent)
            if parent_ino is not None:
                invalidations.append((parent_ino, os.fsencode(name)))
                invalidations.append((parent_ino, None))
            prefix = path + "/"
            for known in [p for p in self.nodes.by_path if p == path or p.startswith(prefix)]:
                node = self.nodes.detach(known)
                if node is not None:
                    invalidations.append((node.id, None))
        self.nodes.forget_upper_ids()
        return invalidations

    # -- a switch to another view (pkgfs.vfs.fuse.switch) -----------------------------------

    def switch_view(self, index: LowerIndex) -> list[tuple[int, bytes | None]]:
        """Serve ``index`` (made by :func:`pkgfs.vfs.overlay.lower.index_view` from the
        tree's own) as the lower layer from now on, at once (no await). A node whose lower
        entry changed lets go of its name: a process holding it keeps reading the old bytes
        (the store keeps them: the previous view's wheels are gc roots), and a new lookup
        gets the new file under a new number. Returns what the kernel must forget, for the
        caller to invalidate outside any request handler."""
        tree = self.tree
        held: list[tuple[Node, Attributes | None]] = []
        for path in index.changed:
            node = self.nodes.at(path)
            if node is not None and path not in tree.upper_paths and node.only_name(path):
                held.append((node, self._stat(node) if node.is_dir else None))
        tree.install(index)
        invalidations: list[tuple[int, bytes | None]] = []
        for path in index.changed:
            parent, name = posixpath.split(path)
            parent_ino = self.nodes.by_path.get(parent)
            if parent_ino is not None:
                invalidations.append((parent_ino, os.fsencode(name)))
                invalidations.append((parent_ino, None))
        for node, last in held:
            assert node.path is not None
            self.nodes.unname(node, node.path)
            if last is not None:  # a directory the view no longer has: as rmdir leaves it
                node.gone = dataclasses.replace(last, nlink=0)
            invalidations.append((node.id, None))
        return list(dict.fromkeys(invalidations))
