"""The locks that keep two commands off one environment: ``flock`` on its state directory
(a mount preparing, its daemon serving), its ``--overlay`` directory, and a switch's lock
file. Advisory, per open file: a lock is released when its descriptor is closed, so a
killed command or daemon never leaves one held.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from pkgfs.store.errors import MountError

__all__ = ["holding", "take"]


def take(path: Path, busy: str, *, create: bool = False) -> int:
    """An open descriptor of ``path`` (a directory, or a file made 0600 when ``create``)
    holding its exclusive ``flock``. Raises ``MountError`` with the message ``busy`` when
    another process holds it, ``OSError`` when it cannot be opened."""
    if create:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    else:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise MountError(busy) from None
    return fd


@contextlib.contextmanager
def holding(path: Path, busy: str, *, create: bool = False) -> Iterator[int]:
    """:func:`take` for the ``with`` block; the descriptor is closed (the lock released)
    after it."""
    fd = take(path, busy, create=create)
    try:
        yield fd
    finally:
        os.close(fd)
