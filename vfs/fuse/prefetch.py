"""Bytecode read ahead: when Python opens one module's ``.pyc``, its neighbours' are next.

After the page cache is dropped (a reboot, memory pressure, a fresh container), a first
import reads each ``.pyc`` through one READ request, and the daemon reads the store object
with one small random read of the disk, one after another: the store keeps every file in
its own object, away from its neighbours, where a venv's ``__pycache__`` files lie together.
So the first lookup in a lower ``__pycache__`` directory asks the kernel to read all of that
directory's objects ahead (``posix_fadvise(POSIX_FADV_WILLNEED)``), in a worker thread, many
at once; the READs that follow find their pages cached. Nothing here changes what is read:
only when. ``PKGFS_PREFETCH=0`` turns it off (to compare).
"""

from __future__ import annotations

import contextlib
import os
import posixpath

import trio

from pkgfs.vfs.env.view import ViewFile
from pkgfs.vfs.overlay import MergedTree

__all__ = ["Prefetch"]

QUEUED = 64  # directories waiting to be read ahead; more are dropped (it is only a hint)


class Prefetch:
    """Reads ahead the store objects of lower ``__pycache__`` directories, once each."""

    def __init__(self, tree: MergedTree, enabled: bool = True) -> None:
        self.tree = tree
        self.enabled = enabled
        self.asked: set[str] = set()
        self._send, self._receive = trio.open_memory_channel[list[str]](QUEUED)

    def looked_up(self, path: str) -> None:
        """The kernel looked up ``path`` (a merged path); costs a set lookup when there is
        nothing to do."""
        parent = posixpath.dirname(path)
        if not self.enabled or parent in self.asked or not parent.endswith("__pycache__"):
            return
        self.asked.add(parent)
        objects = []
        for name in self.tree.children.get(parent, ()):
            found = self.tree.lower(f"{parent}/{name}")
            if isinstance(found, ViewFile) and found.digest is not None:
                objects.append(self.tree.object_path(found))
        if objects:
            with contextlib.suppress(trio.WouldBlock):
                self._send.send_nowait(objects)

    async def run(self) -> None:
        """Read ahead what :meth:`looked_up` queued, until cancelled (the daemon's nursery
        runs it beside ``pyfuse3.main``)."""
        async with self._receive:
            async for objects in self._receive:
                await trio.to_thread.run_sync(_read_ahead, objects)


def _read_ahead(objects: list[str]) -> None:
    for path in objects:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue  # a hint: the READ will say what is wrong
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)
