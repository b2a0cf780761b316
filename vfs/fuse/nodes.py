"""The inodes a mount has handed to the kernel: numbers, lookup counts, per-inode files.

The kernel names a file by the node id it was given at lookup, until it sends FORGET for
it; meanwhile the name may be renamed, unlinked or replaced. So each node follows its file,
not a path:

- **Numbers.** A lower path keeps its rank in the view (stable across mounts); every other
  node takes the next number of a counter that never goes back, with the mount's
  generation, so no number is reused while the kernel may still hold it (the upper file's
  own ``st_ino``, which ext4 reuses at once, is never a node id). An upper file keeps its
  number for as long as it exists, across FORGET and lookup again, as ext4 keeps an inode's:
  ``upper_ids`` maps its ``st_ino`` to its number until the daemon removes the file's last
  name (and its orphan, if it had one).
- **Open files without OPEN.** In the kernel's no-open mode there are no file handles: each
  node holds at most one descriptor on its file (the store object, or the upper file once
  copied up), opened on first use and closed on FORGET, or earlier when too many are open
  (least recently used first; it is reopened from its name).
- **Unlinked but open.** A node unlinked or replaced while the kernel still holds it keeps its
  file alive under an ``orphan-<id>`` name in the work directory until FORGET, as ext4 keeps
  an open file's inode: ``fstat``, reads and writes through it go on working.

Nothing here answers the kernel: ``operations.py`` does, through this table.
"""

from __future__ import annotations

import contextlib
import os
import resource
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass

from pkgfs.vfs.env.view import ViewFile
from pkgfs.vfs.overlay import UPPER_INODES, Attributes, MergedTree

__all__ = ["Node", "NodeTable"]

ROOT = 1


@dataclass(eq=False, slots=True)
class Node:
    """One inode the kernel may hold.

    ``path`` is its merged path while it has one; ``lower`` the lower file it still shows
    (None once copied up, and for directories and upper files); ``orphan`` its name in the
    work directory once unlinked while held. ``fd`` is -1 or a descriptor on its data,
    writable when ``writable``."""

    id: int
    path: str | None
    lower: ViewFile | None
    is_dir: bool
    lookups: int = 0
    orphan: str | None = None
    fd: int = -1
    writable: bool = False
    links: set[str] | None = None  # its other merged paths, if hard-linked (rare: no set)
    gone: Attributes | None = None  # a directory removed while held: what fstat still shows

    def names(self) -> set[str]:
        """Every merged path naming it."""
        found = set(self.links or ())
        if self.path is not None:
            found.add(self.path)
        return found

    def only_name(self, path: str) -> bool:
        """True if ``path`` is its one name: removing it leaves the file nameless."""
        return self.path == path and not self.links


class NodeTable:
    """Node ids to nodes, and merged paths to node ids, for one mount."""

    def __init__(self, tree: MergedTree, max_fds: int | None = None) -> None:
        self.tree = tree
        root = Node(ROOT, "", None, True, lookups=1)
        self.nodes: dict[int, Node] = {ROOT: root}
        self.by_path: dict[str, int] = {"": ROOT}
        # Upper files and directories given a number: st_ino -> node id, while they exist.
        self.upper_ids: dict[int, int] = {}
        self.next_id = UPPER_INODES
        # Seconds since the epoch: node ids of an earlier mount of the same view, kept by an
        # NFS client, do not resolve to this mount's files.
        self.generation = int(time.time()) & 0xFFFFFFFF
        self.open_fds: OrderedDict[int, None] = OrderedDict()  # node ids holding an fd, LRU
        if max_fds is None:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            if soft != hard:
                with contextlib.suppress(ValueError, OSError):
                    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                    soft = hard
            max_fds = max(64, min(soft, 1 << 20) // 2)
        self.max_fds = max_fds

    # -- finding nodes -----------------------------------------------------------------------

    def get(self, ino: int) -> Node:
        """The node ``ino``. Raises ``KeyError`` if the kernel was never given it."""
        return self.nodes[ino]

    def at(self, path: str) -> Node | None:
        """The node known at ``path``, if any."""
        ino = self.by_path.get(path)
        return None if ino is None else self.nodes.get(ino)

    def for_path(self, path: str) -> Node:
        """The node at ``path`` of the merged tree, made if the kernel holds none yet."""
        known = self.at(path)
        if known is not None:
            return known
        tree = self.tree
        if path in tree.upper_paths:
            info = tree.lstat(path)
            is_dir = stat.S_ISDIR(info.st_mode)
            rank = 0 if info.st_nlink > 1 and not is_dir else tree.inode(path)
            ino = rank if rank and rank not in self.nodes else self.upper_ids.get(info.st_ino, 0)
            if ino in self.nodes:  # another name of a file the kernel holds: a hard link
                node = self.nodes[ino]
                self.name(node, path)
                return node
            if not ino:
                ino = rank if rank and rank not in self.nodes else self._new_id()
            if ino != rank:
                self.upper_ids[info.st_ino] = ino
            node = Node(ino, path, None, is_dir)
        else:
            rank = tree.inode(path)
            ino = rank if rank and rank not in self.nodes else self._new_id()
            found = tree.lower(path)
            lower = found if isinstance(found, ViewFile) else None
            node = Node(ino, path, lower, path == "" or found == "dir")
        self.nodes[ino] = node
        self.name(node, path)
        return node

    def removed(self, info: os.stat_result | None, kept: bool = False) -> None:
        """The daemon removed a name of the upper file ``info`` describes (lstat taken just
        before); when that was its last name and it is not ``kept`` as an orphan, the file
        is gone and its ``st_ino``, which ext4 may hand out again at once, no longer names
        its node."""
        if info is not None and not kept and (info.st_nlink <= 1 or stat.S_ISDIR(info.st_mode)):
            self.upper_ids.pop(info.st_ino, None)

    def forget_upper_ids(self) -> None:
        """After a reset: keep numbers only for upper files that nodes still name (the rest
        may be gone, their ``st_ino`` free to be reused)."""
        self.upper_ids = {
            st_ino: ino
            for st_ino, ino in self.upper_ids.items()
            if ino in self.nodes and self.nodes[ino].path is not None
        }

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def name(self, node: Node, path: str) -> None:
        """``path`` now names ``node`` (a lookup, a new file, a hard link, a rename)."""
        if node.path is None:
            node.path = path
        elif node.path != path:
            node.links = (node.links or set()) | {path}
        self.by_path[path] = node.id

    def unname(self, node: Node, path: str) -> None:
        """``path`` no longer names ``node``; it keeps another name if it has one."""
        if self.by_path.get(path) == node.id:
            del self.by_path[path]
        if node.links:
            node.links.discard(path)
        if node.path == path:
            node.path = node.links.pop() if node.links else None
        if not node.links:
            node.links = None

    def moved(self, old: str, new: str) -> None:
        """Every known path at or below ``old`` is now at or below ``new``."""
        prefix = old + "/"
        for path in [p for p in self.by_path if p == old or p.startswith(prefix)]:
            node = self.nodes[self.by_path[path]]
            renamed = new + path[len(old) :]
            self.unname(node, path)
            self.name(node, renamed)

    def swapped(self, a: str, b: str) -> None:
        """Every known path at or below ``a`` is now below ``b``, and the reverse."""
        moving = []
        for path in list(self.by_path):
            for x, y in ((a, b), (b, a)):
                if path == x or path.startswith(x + "/"):
                    moving.append((self.nodes[self.by_path[path]], path, y + path[len(x) :]))
        for node, path, _renamed in moving:
            self.unname(node, path)
        for node, _path, renamed in moving:
            self.name(node, renamed)

    def detach(self, path: str) -> Node | None:
        """Forget that ``path`` names its node (reset took it away); the node keeps its open
        descriptor, if any, and nothing else."""
        node = self.at(path)
        if node is not None:
            self.unname(node, path)
        return node

    # -- lookups -----------------------------------------------------------------------------

    def forget(self, ino: int, count: int) -> None:
        """The kernel dropped ``count`` references to ``ino``; at none, the node goes, with
        its descriptor and, if unlinked while open, its file."""
        node = self.nodes.get(ino)
        if node is None or ino == ROOT:
            return
        node.lookups -= count
        if node.lookups > 0:
            return
        self.close(node)
        if node.orphan is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(node.orphan, dir_fd=self.tree.work_fd)
        for path in node.names():
            if self.by_path.get(path) == ino:
                del self.by_path[path]
        if node.orphan is not None or node.path is None:  # its file is gone, or soon will be
            for key in [k for k, v in self.upper_ids.items() if v == ino]:
                del self.upper_ids[key]
        del self.nodes[ino]

    # -- descriptors -------------------------------------------------------------------------

    def close(self, node: Node) -> None:
        if node.fd >= 0:
            os.close(node.fd)
            node.fd = -1
            self.open_fds.pop(node.id, None)

    def adopt(self, node: Node, fd: int) -> None:
        """``fd``, writable, is ``node``'s descriptor now (a file just created)."""
        self.close(node)
        node.fd, node.writable = fd, True
        self._opened(node)

    def _opened(self, node: Node) -> None:
        self.open_fds[node.id] = None
        while len(self.open_fds) > self.max_fds:
            oldest = next(iter(self.open_fds))
            self.close(self.nodes[oldest])

    def fd(self, node: Node, write: bool = False) -> int:
        """A descriptor on ``node``'s data: the store object while it is lower, else its
        upper (or orphaned) file, writable if ``write``. Raises ``OSError``: ESTALE for a
        node whose file is gone, EBADF when asked to write a lower file (copy it up
        first), as ``open`` for the rest."""
        if node.fd >= 0 and (node.writable or not write):
            self.open_fds.move_to_end(node.id)
            return node.fd
        self.close(node)
        if node.lower is not None:
            if write:
                raise OSError(9, "a lower file is not writable", node.path)  # EBADF
            node.fd = os.open(self.tree.object_path(node.lower), os.O_RDONLY | os.O_CLOEXEC)
            node.writable = False
        else:
            node.fd, node.writable = self._open_upper(node)
        self._opened(node)
        return node.fd

    def _open_upper(self, node: Node) -> tuple[int, bool]:
        if node.orphan is not None:
            where, dir_fd = node.orphan, self.tree.work_fd
        elif node.path is not None:
            where, dir_fd = node.path, self.tree.upper_fd
        else:
            raise OSError(116, "its file is gone", str(node.id))  # ESTALE
        last: OSError | None = None
        for flags, writable in ((os.O_RDWR, True), (os.O_RDONLY, False), (os.O_WRONLY, True)):
            try:
                fd = os.open(where, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            except PermissionError as exc:  # a mode this (non-root) process cannot open
                last = exc
                continue
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(22, "not a regular file", where)  # EINVAL
            return fd, writable
        assert last is not None
        raise last
