"""What the merged tree answers about a path: its attributes, and how the upper layer changed it."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Attributes", "Change"]


@dataclass(frozen=True)
class Attributes:
    """What ``stat`` shows for a path of the merged tree: its ``st_*`` fields (times in ns)."""

    ino: int
    mode: int
    size: int
    mtime_ns: int
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    atime_ns: int = 0
    ctime_ns: int = 0
    blocks: int = 0
    rdev: int = 0

    @classmethod
    def of(cls, ino: int, info: os.stat_result, nlink: int | None = None) -> Attributes:
        """The attributes ``lstat`` gave for an upper file, under inode number ``ino``."""
        return cls(
            ino,
            info.st_mode,
            info.st_size,
            info.st_mtime_ns,
            info.st_nlink if nlink is None else nlink,
            info.st_uid,
            info.st_gid,
            info.st_atime_ns,
            info.st_ctime_ns,
            info.st_blocks,
            info.st_rdev,
        )


@dataclass(frozen=True)
class Change:
    """One path the upper layer changed: ``added``, ``modified``, ``deleted`` or ``replaced``."""

    path: str
    kind: str
