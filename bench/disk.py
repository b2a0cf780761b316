"""Disk taken by one environment: the filesystem's free counts, and what was allocated where.

``du`` cannot see hard-link sharing, so bench/mount.py reads two figures around each
creation: the drop in statvfs(2)'s free blocks and inodes (everything on the filesystem,
other writers too), and a walk of the places a contender writes (the venv, its store or
cache, its state), counting each inode once by (device, inode).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Free:
    """The work filesystem's free blocks (as bytes) and free inodes, after os.sync()."""

    bytes: int
    inodes: int

    @classmethod
    def now(cls, path: Path) -> Free:
        """Flush, then read statvfs(2) of ``path``'s filesystem."""
        os.sync()
        st = os.statvfs(path)
        return cls(st.f_bfree * st.f_frsize, st.f_ffree)


@dataclass(frozen=True)
class Node:
    """One inode seen under a snapshot's roots: where, its allocated bytes."""

    place: str
    allocated: int


Snapshot = dict[tuple[int, int], Node]


def snapshot(roots: Iterable[tuple[str, Path]], exclude: frozenset[Path]) -> Snapshot:
    """Every inode under ``roots`` (labelled places), hard links once, by (dev, ino).

    Other filesystems (a mount below a root) and ``exclude`` are skipped.
    """
    seen: Snapshot = {}
    for place, top in roots:
        if not top.exists():
            continue
        device = top.lstat().st_dev
        stack = [str(top)]
        while stack:
            path = stack.pop()
            st = os.lstat(path)
            if st.st_dev != device or Path(path) in exclude:
                continue
            seen.setdefault((st.st_dev, st.st_ino), Node(place, st.st_blocks * 512))
            if os.path.isdir(path) and not os.path.islink(path):
                stack += [entry.path for entry in os.scandir(path)]
    return seen


@dataclass(frozen=True)
class Disk:
    """What creating one environment took on disk.

    statvfs: the filesystem's drop in free blocks and inodes (everything, other writers too).
    counted: allocated bytes and inodes under the venv and the contender's store, cache and
    state, after minus before; ``new_inodes`` and ``new_bytes`` say where the new ones are.
    """

    statvfs_bytes: int
    statvfs_inodes: int
    counted_bytes: int
    counted_inodes: int
    new_inodes: dict[str, int]
    new_bytes: dict[str, int]  # allocated bytes of the new inodes, by place


def disk_delta(before: tuple[Free, Snapshot], after: tuple[Free, Snapshot]) -> Disk:
    """The Disk between two (free counts, snapshot) readings."""
    (free0, snap0), (free1, snap1) = before, after
    places: dict[str, int] = {}
    allocated: dict[str, int] = {}
    for key, node in snap1.items():
        if key not in snap0:
            places[node.place] = places.get(node.place, 0) + 1
            allocated[node.place] = allocated.get(node.place, 0) + node.allocated
    return Disk(
        statvfs_bytes=free0.bytes - free1.bytes,
        statvfs_inodes=free0.inodes - free1.inodes,
        counted_bytes=sum(n.allocated for n in snap1.values())
        - sum(n.allocated for n in snap0.values()),
        counted_inodes=len(snap1) - len(snap0),
        new_inodes=dict(sorted(places.items())),
        new_bytes=dict(sorted(allocated.items())),
    )
