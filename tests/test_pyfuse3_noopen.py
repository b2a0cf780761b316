"""pyfuse3's no-open mode (.ci/pyfuse3/no-open.patch), tried on a real mount of a tiny filesystem.

The filesystem runs in a child process (``python -m tests.test_pyfuse3_noopen MNT EVENTS MODE``)
and records every request it answers, so the tests can count what the kernel sent. In mode
``no-open`` it answers OPEN and OPENDIR with ENOSYS and opts in to the patch's
``pass_inode_with_fh`` and ``enable_atomic_o_trunc = False``; in mode ``stock`` it opens as
stock pyfuse3 filesystems do, which must behave the same with or without the patch.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import pyfuse3
import pytest
import trio

from pkgfs.vfs.fuse import features

ROOT = Path(__file__).resolve().parent.parent

needs_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fusermount3",
)
needs_patch = pytest.mark.skipif(
    not features.no_open_support(),
    reason="the installed pyfuse3 lacks .ci/pyfuse3/no-open.patch (.ci/setup builds it)",
)

# inode -> (parent inode, name, contents); a directory's contents are None.
TREE: dict[int, tuple[int, bytes, bytes | None]] = {
    pyfuse3.ROOT_INODE: (pyfuse3.ROOT_INODE, b"", None),
    2: (pyfuse3.ROOT_INODE, b"alpha", b"alpha data\n"),
    3: (pyfuse3.ROOT_INODE, b"bravo", b"bravo, other data\n"),
    4: (pyfuse3.ROOT_INODE, b"sub", None),
    5: (4, b"charlie", b"charlie\n"),
}
ALPHA, BRAVO, SUB, CHARLIE = 2, 3, 4, 5

# One recorded request: handler name, the fh it got, and the inode it got (or None).
Event = tuple[str, int | None, int | None]


class TinyFS(pyfuse3.Operations):
    """Two files and a directory holding a third, writable in memory; every request recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.data = {
            ino: contents for ino, (_, _, contents) in TREE.items() if contents is not None
        }
        self.events: list[Event] = []
        self.live: TextIO | None = None  # request names, one per line, as they come

    def _note(self, name: str, fh: int | None, inode: int | None) -> None:
        self.events.append((name, fh, inode))
        if self.live is not None:
            self.live.write(name + "\n")
            self.live.flush()

    def _attrs(self, inode: int) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode
        if inode in self.data:
            entry.st_mode = stat.S_IFREG | 0o644
            entry.st_size = len(self.data[inode])
        else:
            entry.st_mode = stat.S_IFDIR | 0o755
            entry.st_nlink = 2
        return entry

    def _children(self, inode: int) -> list[int]:
        return [ino for ino, (parent, _, _) in TREE.items() if parent == inode and ino != inode]

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self._note("lookup", None, parent_inode)
        for ino in self._children(parent_inode):
            if TREE[ino][1] == name:
                return self._attrs(ino)
        raise pyfuse3.FUSEError(errno.ENOENT)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._note("getattr", None, inode)
        return self._attrs(inode)

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        if fields.update_size:
            self._note("truncate", fh, inode)
            self.data[inode] = self.data[inode][: attr.st_size].ljust(attr.st_size, b"\0")
        else:
            self._note("setattr", fh, inode)
        return self._attrs(inode)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        self._note("open", None, inode)
        if flags & os.O_TRUNC:
            self.data[inode] = b""
        return pyfuse3.FileInfo(fh=inode)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        self._note("opendir", None, inode)
        return inode

    async def read(self, fh: int, off: int, size: int, inode: int | None = None) -> bytes:
        self._note("read", fh, inode)
        return self.data[fh if inode is None else inode][off : off + size]

    async def write(self, fh: int, off: int, buf: bytes, inode: int | None = None) -> int:
        self._note("write", fh, inode)
        ino = fh if inode is None else inode
        old = self.data[ino].ljust(off, b"\0")
        self.data[ino] = old[:off] + buf + old[off + len(buf) :]
        return len(buf)

    async def readdir(
        self, fh: int, start_id: int, token: pyfuse3.ReaddirToken, inode: int | None = None
    ) -> None:
        self._note("readdir", fh, inode)
        children = self._children(fh if inode is None else inode)
        for index, ino in enumerate(children[start_id:], start_id + 1):
            if not pyfuse3.readdir_reply(token, TREE[ino][1], self._attrs(ino), index):
                break

    async def flush(self, fh: int, inode: int | None = None) -> None:
        self._note("flush", fh, inode)

    async def release(self, fh: int, inode: int | None = None) -> None:
        self._note("release", fh, inode)

    async def releasedir(self, fh: int, inode: int | None = None) -> None:
        self._note("releasedir", fh, inode)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, _ in inode_list:
            self._note("forget", None, inode)


class NoOpenFS(TinyFS):
    """TinyFS in the kernel's no-open mode: nothing to open, so every request names its inode."""

    pass_inode_with_fh = True
    enable_atomic_o_trunc = False

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        self._note("open", None, inode)
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        self._note("opendir", None, inode)
        raise pyfuse3.FUSEError(errno.ENOSYS)


def serve(mountpoint: str, events: str, mode: str) -> None:
    """Mounts TinyFS (mode "stock") or NoOpenFS (mode "no-open") until unmounted from outside,
    then writes the requests it answered to *events* as JSON."""
    fs = NoOpenFS() if mode == "no-open" else TinyFS()
    fs.live = open(events + ".live", "w")  # noqa: SIM115 (open for the process's life)
    pyfuse3.init(fs, mountpoint, set(pyfuse3.default_options) | {"fsname=tinyfs"})
    try:
        print("mounted", flush=True)
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)
        Path(events).write_text(json.dumps(fs.events))


@contextlib.contextmanager
def mounted(tmp_path: Path, mode: str) -> Iterator[tuple[Path, list[Event]]]:
    """The tiny filesystem mounted in a child process; the yielded list is filled with the
    requests it answered once the block is left (and the filesystem unmounted)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "events.json"
    events: list[Event] = []
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.test_pyfuse3_noopen", str(mnt), str(log), mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "mounted\n", "the tiny filesystem did not mount"
        yield mnt, events
    finally:
        # A plain unmount, not a lazy one: the kernel sends the RELEASEs still queued after
        # the last close before DESTROY, so the counts below are whole. Lazy only as a
        # fallback (a test failed with a file still open).
        plain = subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, check=False)
        if plain.returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, check=False)
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    events.extend((name, fh, inode) for name, fh, inode in json.loads(log.read_text()))


def _walk_and_truncate(mnt: Path) -> None:
    """Lists both directories, reads all three files, then truncates and rewrites alpha."""
    assert sorted(os.listdir(mnt)) == ["alpha", "bravo", "sub"]
    assert (mnt / "alpha").read_bytes() == b"alpha data\n"
    assert (mnt / "bravo").read_bytes() == b"bravo, other data\n"
    assert os.listdir(mnt / "sub") == ["charlie"]
    assert (mnt / "sub" / "charlie").read_bytes() == b"charlie\n"
    assert (mnt / "alpha").read_bytes() == b"alpha data\n"
    fd = os.open(mnt / "alpha", os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"new\n")
    finally:
        os.close(fd)
    assert (mnt / "alpha").read_bytes() == b"new\n"


def _inodes(events: list[Event], name: str) -> set[int | None]:
    return {inode for event, _, inode in events if event == name}


def _fhs(events: list[Event], name: str) -> set[int | None]:
    return {fh for event, fh, _ in events if event == name}


@needs_fuse
@needs_patch
def test_no_open_mode_names_the_inode_and_sends_no_open_after_the_first(tmp_path: Path) -> None:
    with mounted(tmp_path, "no-open") as (mnt, events):
        _walk_and_truncate(mnt)
    count = Counter(name for name, _, _ in events)

    # The first OPEN and OPENDIR are answered ENOSYS; the kernel sends no others, and no RELEASE.
    assert count["open"] == 1
    assert count["opendir"] == 1
    assert count["release"] == count["releasedir"] == 0

    # Every file request carries fh 0, and the patch passes the inode it is about.
    for name in ("read", "write", "flush", "readdir"):
        assert _fhs(events, name) == {0}, name
    assert _inodes(events, "read") == {ALPHA, BRAVO, CHARLIE}
    assert _inodes(events, "readdir") == {pyfuse3.ROOT_INODE, SUB}
    assert _inodes(events, "write") == {ALPHA}

    # With FUSE_CAP_ATOMIC_O_TRUNC off, open(O_TRUNC) arrives as a size change, with no fh.
    assert ("truncate", None, ALPHA) in events


@needs_fuse
def test_stock_mode_is_unchanged(tmp_path: Path) -> None:
    """A filesystem that does not opt in gets what stock pyfuse3 gives it, patched or not."""
    with mounted(tmp_path, "stock") as (mnt, events):
        _walk_and_truncate(mnt)
        # RELEASE and RELEASEDIR follow close(2) asynchronously: wait for them (up to 10 s)
        # before unmounting, or the last one may be cut off by the unmount.
        live = tmp_path / "events.json.live"
        for _ in range(200):
            seen = Counter(live.read_text().split())
            if seen["open"] == seen["release"] and seen["opendir"] == seen["releasedir"]:
                break
            time.sleep(0.05)
    count = Counter(name for name, _, _ in events)

    assert count["open"] == count["release"] >= 5
    assert count["opendir"] == count["releasedir"] >= 2
    for name in ("read", "write", "flush", "release", "readdir", "releasedir"):
        assert _inodes(events, name) == {None}, name
    assert _fhs(events, "read") == {ALPHA, BRAVO, CHARLIE}
    assert _fhs(events, "readdir") == {pyfuse3.ROOT_INODE, SUB}
    # Atomic O_TRUNC stays on: the truncation comes with the OPEN, not as a SETATTR.
    assert "truncate" not in count


def test_no_open_support_matches_the_installed_pyfuse3() -> None:
    patched = "pass_inode_with_fh" in vars(pyfuse3.Operations)
    assert features.no_open_support() is patched
    # .ci/setup labels the build it patched; that build must announce the feature.
    if "+noopen." in importlib.metadata.version("pyfuse3"):
        assert features.no_open_support()


def test_features_does_not_import_pyfuse3() -> None:
    probe = "import sys, pkgfs.vfs.fuse.features; print('pyfuse3' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout == "False\n"


if __name__ == "__main__":
    serve(*sys.argv[1:4])
