"""The namespace handlers: lookup and forget, directories and their listings, links,
unlink, rmdir and rename (``rename2``'s ``RENAME_NOREPLACE`` and ``RENAME_EXCHANGE`` as
the kernel passes them), each on the merged tree by path and answered by inode.
"""

from __future__ import annotations

import bisect
import dataclasses
import errno
import functools
import hashlib
import logging
import os
import posixpath
import stat
from collections.abc import Sequence

import pyfuse3

from .base import CACHE_TIMEOUT, OperationsBase, errors
from .nodes import ROOT, Node

__all__ = ["NameOperations"]

log = logging.getLogger("pkgfs.vfs")


@functools.lru_cache(maxsize=1 << 16)
def _cookie(name: str) -> int:
    """A directory entry's offset: 62 bits of its name's hash, above those of . and .."""
    digest = hashlib.blake2b(os.fsencode(name), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 2) + 3


class NameOperations(OperationsBase):
    """Lookups and changes to names, for :class:`~pkgfs.vfs.fuse.operations.PkgfsOperations`."""

    # -- lookups and attributes -----------------------------------------------------------

    @errors
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

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        self.requests["forget"] += 1
        for inode, count in inode_list:
            try:
                self.nodes.forget(inode, count)
            except Exception:
                log.exception("forget %d", inode)

    @errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return os.fsencode(self.tree.readlink(self._path(self._node(inode))))

    # -- directories ---------------------------------------------------------------------------

    @errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if self.no_open:
            raise pyfuse3.FUSEError(errno.ENOSYS)  # no OPENDIR/RELEASEDIR from now on
        node = self._node(inode)
        if not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    @errors
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

    @errors
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

    @errors
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        owner = self._owner_for(self._node(parent_inode), ctx)
        self.tree.mknod(path, mode, rdev, owner)
        return self._entry(path)

    @errors
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        owner = self._owner_for(self._node(parent_inode), ctx)
        self.tree.symlink(path, os.fsdecode(target), owner)
        return self._entry(path)

    @errors
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

    @errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._child(parent_inode, name)
        await self._unname(path, lambda keep: self.tree.unlink(path, keep))

    @errors
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

    @errors
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
