"""The lower layer's index: a view, each directory's entries, and inode numbers that last.

:class:`pkgfs.vfs.overlay.layers.Layers` reads the lower layer through one
:class:`LowerIndex`. A mount starts with the index of its view; when the environment
switches to another view (its lock changed, or a rollback), :func:`index_view` builds the
new index from the old one, off the filesystem's event loop, and the layers install it at
once.

Inode numbers: on the first view, a path's number is its rank in the sorted view (stable
across mounts of the same view). Across a switch, a path whose entry is the same in both
views (the same bytes and mode, or a directory in both) keeps its number; every other path
takes a number above any the mount has used, so a file whose content changed never shows
under a number the kernel may still hold for its old bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pkgfs.vfs.env.lower import lower_index
from pkgfs.vfs.env.view import View, ViewFile

__all__ = ["LowerIndex", "index_view", "same_entry"]


@dataclass
class LowerIndex:
    """What the layers derive from a view (built in :func:`index_view`)."""

    view: View
    children: dict[str, list[str]]  # each directory's entries, sorted
    inodes: dict[str, int]  # path -> inode number ("" is 1)
    subdirs: dict[str, int]  # each directory's number of subdirectories
    high: int  # the highest number this mount has given a lower path
    # Paths (of either view) whose entry differs from the previous view's: what the
    # kernel must forget. Empty for a mount's first view.
    changed: list[str] = field(default_factory=list)


def same_entry(a: ViewFile | str | None, b: ViewFile | str | None) -> bool:
    """True when two lower entries (a file, ``"dir"``, or None) show the same thing."""
    return a == b


def _entry(view: View, path: str) -> ViewFile | str | None:
    if path in view.dirs:
        return "dir"
    return view.files.get(path)


def index_view(view: View, before: LowerIndex | None = None) -> LowerIndex:
    """The index of ``view``; with ``before`` (the index being replaced), the numbers of
    unchanged paths carried over and the changed paths listed. O(paths of both views).

    A mount's first view uses the view's own index of its paths when it has one (the mount
    server builds it once per lock, and every daemon it forks shares it copy-on-write), else
    builds it (:func:`pkgfs.vfs.env.lower.lower_index`): either way a path's number is its
    rank in the sorted view."""
    paths = view.index or lower_index(view.files.keys(), view.dirs)
    if before is None:
        return LowerIndex(view, paths.children, paths.inodes, paths.subdirs, len(paths.inodes))
    old = before.view
    high = before.high
    inodes = {}
    changed = []
    for path in sorted(paths.inodes):
        number = before.inodes.get(path)
        if number is not None and same_entry(_entry(old, path), _entry(view, path)):
            inodes[path] = number
            continue
        high += 1
        inodes[path] = high
        changed.append(path)
    changed += [p for p in before.inodes if p not in inodes]  # gone from the new view
    inodes[""] = 1
    return LowerIndex(view, paths.children, inodes, paths.subdirs, high, sorted(changed))
