"""Copy-up: a lower file's bytes, mode, owner and times copied into the upper layer, atomically.

As fuse-overlayfs does it: the copy is made in the work directory (which is on the upper's
filesystem), reflinked where the filesystem can (``FICLONE``), else copied in the kernel
(``copy_file_range``, or ``sendfile`` across filesystems); it gets its mode, owner and
times, is fsynced, and only then renamed into place, and the parent directory is fsynced.
A crash at any instant leaves either no upper file or the whole one, and at most a
``copyup-*`` leftover in the work directory, which the next mount removes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import posixpath
from dataclasses import dataclass

from pkgfs.vfs.env.view import VIEW_MTIME, ViewFile

__all__ = ["CopyUp", "fsync_dir"]

_FICLONE = 0x40049409  # linux/fs.h: share the source's blocks, when the filesystem can
_VIEW_MTIME_NS = VIEW_MTIME * 1_000_000_000
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class CopyUp:
    """A copy-up prepared on the tree and run off it (:meth:`run` blocks on the whole file).

    ``run`` touches no state of the tree, only the file system, so the filesystem runs it in
    a worker thread while it goes on serving; it then calls :meth:`MergedTree.copy_up_done`.
    """

    path: str  # where the copy goes, relative to ``dest_fd``
    source: ViewFile
    objects: str
    dest_fd: int  # the upper directory, or the work directory for a file kept while open
    work_fd: int
    with_data: bool
    owner: tuple[int, int] | None

    def run(self) -> None:
        """Copy, set mode, owner and times, fsync, rename into place, fsync the parent."""
        name = f"copyup-{os.urandom(8).hex()}"
        fd = os.open(
            name, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600, dir_fd=self.work_fd
        )
        try:
            if self.with_data:
                _copy_data(self.source, self.objects, fd)
            os.fchmod(fd, 0o755 if self.source.executable else 0o644)
            if self.owner is not None:
                os.fchown(fd, *self.owner)
            os.utime(fd, ns=(_VIEW_MTIME_NS, _VIEW_MTIME_NS))
            os.fsync(fd)
            os.rename(name, self.path, src_dir_fd=self.work_fd, dst_dir_fd=self.dest_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self.work_fd)
            raise
        finally:
            os.close(fd)
        fsync_dir(self.dest_fd, posixpath.dirname(self.path))


def _copy_data(file: ViewFile, objects: str, out: int) -> None:
    if file.data is not None:
        os.write(out, file.data)
        return
    assert file.digest is not None
    source = os.open(f"{objects}/{file.digest[:2]}/{file.digest[2:]}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.ioctl(out, _FICLONE, source)
        except OSError:
            remaining = file.size
            while remaining > 0:
                try:
                    copied = os.copy_file_range(source, out, remaining)
                except OSError as exc:
                    # Store and upper on different filesystems: Linux >= 5.19 refuses.
                    if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS):
                        raise
                    copied = os.sendfile(out, source, None, remaining)
                if copied == 0:
                    break
                remaining -= copied
    finally:
        os.close(source)


def fsync_dir(dir_fd: int, path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
