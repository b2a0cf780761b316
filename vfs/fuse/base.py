"""The FUSE layer's plumbing, shared by its handlers: the node table and each node's path,
per-inode locks, copy-up off the event loop, attributes as the kernel sees them, and the one
place where errors become ``pyfuse3.FUSEError`` (:func:`errors`).

:class:`OperationsBase` holds the state; ``names.py`` (the namespace) and ``files.py``
(attributes, data, extended attributes) are its handlers, and
:class:`pkgfs.vfs.fuse.operations.PkgfsOperations` puts them together.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import functools
import logging
import os
import stat
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

from pkgfs.vfs.overlay import Attributes, MergedTree

from .nodes import Node, NodeTable

__all__ = ["CACHE_TIMEOUT", "OperationsBase", "errors"]


log = logging.getLogger("pkgfs.vfs")

# The lower layer is immutable and the upper one changes only through us: long timeouts.
CACHE_TIMEOUT = 3600.0

P = ParamSpec("P")


R = TypeVar("R")


def errors(handler: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Answer every failure of ``handler`` with a FUSEError, logging the unexpected ones;
    count the request."""
    name = handler.__name__

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if args and isinstance(args[0], OperationsBase):
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


class OperationsBase(pyfuse3.Operations):
    """The state of one mounted environment's filesystem, and the helpers every handler
    uses. ``no_open`` selects the no-open mode (it needs the patched pyfuse3); ``uid``/
    ``gid`` own the lower layer as shown."""

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

    def _truncate(self, node: Node) -> None:
        os.ftruncate(self.nodes.fd(node, write=True), 0)

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
