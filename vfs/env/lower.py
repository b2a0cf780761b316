"""A view's lower paths, indexed once: each directory's listing, inode numbers, subdirectories.

The overlay needs three things derived from the lower paths alone (the view's files and
directories, never the upper layer): each directory's sorted entries, each path's stable
inode number (its rank in the sorted view, from 2; 1 is the root, the same on every mount of
the same view), and each directory's count of subdirectories (its link count is 2 plus
that, which ``find``'s leaf optimisation trusts). They cost O(files) to build and hold. The
mount server builds them once per kept view (``pkgfs.vfs.env.saved.keep_views``) and every
daemon it forks reads them, shared copy-on-write; a daemon of its own builds them itself.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Set
from dataclasses import dataclass

__all__ = ["LowerPaths", "lower_index"]


@dataclass(frozen=True)
class LowerPaths:
    """Read-only once built: the overlay never changes the lower layer."""

    children: dict[str, list[str]]  # directory -> its entries' names, sorted
    inodes: dict[str, int]  # path -> its inode number
    subdirs: dict[str, int]  # directory -> how many subdirectories it has


def lower_index(files: Iterable[str], dirs: Set[str]) -> LowerPaths:
    """The index of the lower paths ``files`` and ``dirs`` (``""`` is the root)."""
    files = set(files)
    children: dict[str, list[str]] = {d: [] for d in dirs}
    for path in (*files, *(d for d in dirs if d)):
        parent, name = posixpath.split(path)
        children[parent].append(name)
    for names in children.values():
        names.sort()
    inodes = {p: i for i, p in enumerate(sorted(dirs | files), 1)}
    subdirs: dict[str, int] = {}
    for d in dirs:
        if d:
            parent = posixpath.dirname(d)
            subdirs[parent] = subdirs.get(parent, 0) + 1
    return LowerPaths(children, inodes, subdirs)
