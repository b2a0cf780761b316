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

Every handler answers only with ``pyfuse3.FUSEError``: ``base.errors`` maps an ``OSError`` to
its errno, and logs anything unexpected with its traceback before answering EIO, so the
daemon keeps serving. ``forget`` never raises. The daemon never follows a symlink and never
touches its own mount: the tree works through directory descriptors (``vfs/overlay/``).

The lower layer never changes, so the kernel may cache entries, attributes and file data for
long. Changes made through the mount are seen by the kernel as it makes them; changes made
behind its back (``pkgfs reset``, a switch) are followed by explicit invalidations.

The handlers live by theme: ``base.py`` (nodes, locks, copy-up, attributes, error mapping),
``names.py`` (the namespace), ``files.py`` (attributes, data, xattrs); this module adds what
the control socket asks (reset, switch).
"""

from __future__ import annotations

import dataclasses
import os
import posixpath

import trio

from pkgfs.vfs.overlay import Attributes
from pkgfs.vfs.overlay.lower import LowerIndex

from .files import FileOperations
from .names import NameOperations
from .nodes import Node

__all__ = ["PkgfsOperations"]


class PkgfsOperations(NameOperations, FileOperations):
    """pyfuse3 operations for one mounted environment (``__init__`` as
    :class:`~pkgfs.vfs.fuse.base.OperationsBase`): every handler, and the changes the
    control socket asks for."""

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
