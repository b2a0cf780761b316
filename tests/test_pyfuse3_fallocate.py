"""pyfuse3's fallocate and lseek (.ci/pyfuse3/fallocate-lseek.patch), tried on a real mount.

The filesystem runs in a child process (``python -m tests.test_pyfuse3_fallocate MNT BACKING
MODE``) and serves one file, ``f``, whose data is the real file BACKING: fallocate goes to libc's
``fallocate(2)`` with the mode it was given, lseek to ``os.lseek`` with SEEK_DATA or SEEK_HOLE, so
through the mount both must behave as on the backing filesystem. In mode ``open`` the file is
opened as stock pyfuse3 filesystems do (fh 1); in mode ``no-open`` OPEN is answered with ENOSYS, as
in pkgfs's overlay, and the handlers must find the file by the inode alone (fh 0).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyfuse3
import pytest
import trio

from pkgfs.vfs.fuse import features

ROOT = Path(__file__).resolve().parent.parent
FILE = 2  # the inode of "f"
MiB = 1 << 20
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02

needs_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fusermount3",
)
needs_patch = pytest.mark.skipif(
    not features.fallocate_lseek_support(),
    reason="the installed pyfuse3 lacks .ci/pyfuse3/fallocate-lseek.patch (.ci/setup builds it)",
)
MODES = [
    "open",
    pytest.param(
        "no-open",
        marks=pytest.mark.skipif(
            not features.no_open_support(),
            reason="the installed pyfuse3 lacks .ci/pyfuse3/no-open.patch (.ci/setup builds it)",
        ),
    ),
]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """``fallocate(2)`` with its mode flags, which ``os.posix_fallocate`` cannot pass."""
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class BackedFS(pyfuse3.Operations):
    """A root directory holding one file, ``f``, whose data and size are those of *backing*."""

    def __init__(self, backing: str, no_open: bool) -> None:
        super().__init__()
        self.fd = os.open(backing, os.O_RDWR)
        self.no_open = no_open
        # Set on the instance, so that the mode "open" runs on a pyfuse3 without no-open.patch.
        self.pass_inode_with_fh = no_open
        self.enable_atomic_o_trunc = not no_open

    def _check(self, inode: int, fh: int) -> None:
        """The patch passes the inode; the fh is 0 when OPEN was answered with ENOSYS."""
        if inode != FILE or fh != (0 if self.no_open else FILE):
            raise pyfuse3.FUSEError(errno.EBADF)

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if parent_inode != pyfuse3.ROOT_INODE or name != b"f":
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self.getattr(FILE, ctx)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode
        if inode == FILE:
            backing = os.fstat(self.fd)
            entry.st_mode = stat.S_IFREG | 0o644
            entry.st_size = backing.st_size
            entry.st_blocks = backing.st_blocks
        else:
            entry.st_mode = stat.S_IFDIR | 0o755
            entry.st_nlink = 2
        entry.st_uid, entry.st_gid = os.getuid(), os.getgid()
        return entry

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if self.no_open:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        return pyfuse3.FileInfo(fh=inode)

    async def flush(self, fh: int, inode: int | None = None) -> None:
        pass

    async def release(self, fh: int, inode: int | None = None) -> None:
        pass

    async def fsync(self, fh: int, datasync: bool, inode: int | None = None) -> None:
        pass

    async def fallocate(self, inode: int, fh: int, mode: int, offset: int, length: int) -> None:
        self._check(inode, fh)
        try:
            fallocate(self.fd, mode, offset, length)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None

    async def lseek(self, inode: int, fh: int, offset: int, whence: int) -> int:
        self._check(inode, fh)
        try:
            return os.lseek(self.fd, offset, whence)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None


def serve(mountpoint: str, backing: str, mode: str) -> None:
    """Mounts BackedFS until unmounted from outside."""
    fs = BackedFS(backing, no_open=mode == "no-open")
    pyfuse3.init(fs, mountpoint, set(pyfuse3.default_options) | {"fsname=backedfs"})
    try:
        print("mounted", flush=True)
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)


@contextlib.contextmanager
def mounted(tmp_path: Path, mode: str) -> Iterator[tuple[Path, Path]]:
    """Yields ``f`` through the mount and the (initially empty) file backing it."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    backing = tmp_path / "backing"
    backing.touch()
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.test_pyfuse3_fallocate", str(mnt), str(backing), mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "mounted\n", "the filesystem did not mount"
        yield mnt / "f", backing
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, check=False)
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()


@needs_fuse
@needs_patch
@pytest.mark.parametrize("mode", MODES)
def test_fallocate_grows_and_punches_the_backing_file(tmp_path: Path, mode: str) -> None:
    with mounted(tmp_path, mode) as (f, backing):
        # Stock pyfuse3 answers ENOSYS, and the kernel fails this with EOPNOTSUPP.
        subprocess.run(["fallocate", "-l", "1M", str(f)], check=True)
        assert backing.stat().st_size == MiB
        assert backing.stat().st_blocks * 512 >= MiB  # allocated, not a hole
        assert f.stat().st_size == MiB

        fd = os.open(f, os.O_RDWR)
        try:
            # Mode flags reach the backing file: allocate past the end keeping the size, then
            # punch the first half out.
            fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 2 * MiB)
            assert backing.stat().st_size == f.stat().st_size == MiB
            allocated = backing.stat().st_blocks * 512
            assert allocated >= 2 * MiB
            fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, MiB // 2)
            assert backing.stat().st_blocks * 512 == allocated - MiB // 2
            assert backing.stat().st_size == MiB
        finally:
            os.close(fd)


@needs_fuse
@needs_patch
@pytest.mark.parametrize("mode", MODES)
def test_lseek_finds_holes_and_data_as_the_backing_file_does(tmp_path: Path, mode: str) -> None:
    with mounted(tmp_path, mode) as (f, backing):
        os.truncate(backing, MiB)  # all hole
        fd = os.open(f, os.O_RDONLY)
        try:
            # The kernel's own answer, when the filesystem has no lseek, would be 0 (all data).
            with pytest.raises(OSError, match=rf"^\[Errno {errno.ENXIO}\]"):
                os.lseek(fd, 0, os.SEEK_DATA)
            assert os.lseek(fd, 0, os.SEEK_HOLE) == 0

            with backing.open("r+b") as out:
                out.seek(MiB // 2)
                out.write(b"data" * 1024)
            assert os.lseek(fd, 0, os.SEEK_DATA) == MiB // 2
            hole = os.lseek(fd, MiB // 2, os.SEEK_HOLE)
            assert MiB // 2 < hole < MiB
            direct = os.open(backing, os.O_RDONLY)
            try:
                assert hole == os.lseek(direct, MiB // 2, os.SEEK_HOLE)
            finally:
                os.close(direct)
        finally:
            os.close(fd)


def test_fallocate_lseek_support_matches_the_installed_pyfuse3() -> None:
    assert features.fallocate_lseek_support() is ("lseek" in vars(pyfuse3.Operations))


if __name__ == "__main__":
    serve(*sys.argv[1:4])
