"""The merged tree: path operations on the lower view and the upper directory together.

The rules it follows (whiteouts, opaque directories, copy-up, never following a symlink)
are described in this package's ``__init__``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import Iterator

from pkgfs.vfs.env.view import ViewFile

from .attributes import Change
from .copyup import CopyUp
from .layers import (
    _NOFOLLOW,
    _RENAME_EXCHANGE,
    _VIEW_MTIME_NS,
    OPAQUE,
    Layers,
    _error,
    _rel,
    renameat2,
)

__all__ = ["MergedTree"]


class MergedTree(Layers):
    """Path operations on the lower view merged with the upper directory: reading (from
    :class:`Layers`), copy-up, changes, extended attributes, and dropping changes."""

    # -- copy-up -----------------------------------------------------------------------------

    def _chown_made(
        self, path: str, owner: tuple[int, int] | None, dir_fd: int | None = None
    ) -> None:
        if owner is not None and self.may_chown:
            os.chown(
                _rel(path),
                *owner,
                dir_fd=self.upper_fd if dir_fd is None else dir_fd,
                follow_symlinks=False,
            )

    def _ensure_upper_dir(self, path: str) -> None:
        """Create ``path`` and its parents in the upper layer, as the merged view has them."""
        if path == "" or path in self.upper_paths:
            return
        self._ensure_upper_dir(posixpath.dirname(path))
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o755, dir_fd=self.upper_fd)
        self._chmod(path, 0o755)
        self._chown_made(path, self.owner)
        os.utime(
            path, ns=(_VIEW_MTIME_NS, _VIEW_MTIME_NS), dir_fd=self.upper_fd, follow_symlinks=False
        )
        self.upper_paths.add(path)

    def copy_up_begin(self, path: str, with_data: bool = True) -> CopyUp | None:
        """Prepare the copy-up of ``path`` (its parents are made here); None when it needs
        none. Raises ``OSError`` (ENOENT) when ``path`` is not in the tree."""
        if path in self.upper_paths:
            return None
        found = self.lower(path)
        if found is None:
            raise _error(errno.ENOENT, path)
        if found == "dir":
            self._ensure_upper_dir(path)
            return None
        assert isinstance(found, ViewFile)
        self._ensure_upper_dir(posixpath.dirname(path))
        owner = self.owner if self.may_chown else None
        return CopyUp(path, found, self.objects, self.upper_fd, self.work_fd, with_data, owner)

    def copy_aside(self, file: ViewFile, name: str) -> CopyUp:
        """A copy of a lower file into the work directory as ``name``: for a lower file
        unlinked while open, then written."""
        owner = self.owner if self.may_chown else None
        return CopyUp(name, file, self.objects, self.work_fd, self.work_fd, True, owner)

    def copy_up_done(self, path: str) -> None:
        self.upper_paths.add(path)

    def copy_up(self, path: str, with_data: bool = True) -> None:
        """Give the upper layer its own copy of ``path``, atomically; a no-op if it has one."""
        job = self.copy_up_begin(path, with_data)
        if job is not None:
            job.run()
            self.copy_up_done(path)

    # -- changes ---------------------------------------------------------------------------

    def _prepare_new(self, path: str) -> None:
        parent = posixpath.dirname(path)
        if not self.is_dir(parent):
            raise _error(errno.ENOTDIR if self.exists(parent) else errno.ENOENT, parent)
        if self.exists(path):
            raise _error(errno.EEXIST, path)
        self._ensure_upper_dir(parent)

    def _made(self, path: str, owner: tuple[int, int] | None) -> None:
        self._chown_made(path, owner)
        self.upper_paths.add(path)
        self.created.add(path)
        self._drop_whiteout(path)

    def _chmod(self, path: str, mode: int) -> None:
        """chmod without following a symlink: Linux has no lchmod, so through an O_PATH fd."""
        fd = os.open(_rel(path), os.O_PATH | _NOFOLLOW, dir_fd=self.upper_fd)
        try:
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise _error(errno.EOPNOTSUPP, path)
            os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(mode))
        finally:
            os.close(fd)

    def create(self, path: str, flags: int, mode: int, owner: tuple[int, int] | None = None) -> int:
        """Create a new file in the upper layer with exactly ``mode`` (the caller's umask is
        already in it); return an fd opened with ``flags``."""
        self._prepare_new(path)
        flags = (flags & ~(os.O_CREAT | os.O_TRUNC | os.O_DIRECT)) | os.O_CREAT | os.O_EXCL
        fd = os.open(path, flags | _NOFOLLOW, mode & 0o7777, dir_fd=self.upper_fd)
        try:
            # Owner first: chown clears set-user-ID and set-group-ID, chmod then sets them.
            if owner is not None and self.may_chown:
                os.fchown(fd, *owner)
            os.fchmod(fd, stat.S_IMODE(mode))  # the daemon's own umask does not apply
        except BaseException:
            os.close(fd)
            raise
        self._made(path, None)
        return fd

    def mkdir(self, path: str, mode: int, owner: tuple[int, int] | None = None) -> None:
        self._prepare_new(path)
        hides_lower = path in self.whiteouts and path in self.view.dirs
        if hides_lower:
            # A new directory where a lower one was removed must not show the lower
            # entries again: it is built opaque in the work dir, then renamed into place.
            tmp = f"mkdir-{os.urandom(8).hex()}"
            os.mkdir(tmp, 0o700, dir_fd=self.work_fd)
            marker = os.open(
                f"{tmp}/{OPAQUE}", os.O_WRONLY | os.O_CREAT | _NOFOLLOW, 0o600, dir_fd=self.work_fd
            )
            os.close(marker)
            os.rename(tmp, path, src_dir_fd=self.work_fd, dst_dir_fd=self.upper_fd)
            self.opaque.add(path)
        else:
            os.mkdir(path, mode & 0o7777, dir_fd=self.upper_fd)
        self._chown_made(path, owner)  # before chmod, which sets what chown clears
        self._chmod(path, mode)
        self._made(path, None)

    def mknod(self, path: str, mode: int, rdev: int, owner: tuple[int, int] | None = None) -> None:
        """A FIFO, a socket, or (where this process may) a device node."""
        self._prepare_new(path)
        os.mknod(path, mode, rdev, dir_fd=self.upper_fd)
        self._chown_made(path, owner)  # before chmod, which sets what chown clears
        self._chmod(path, mode)
        self._made(path, None)

    def symlink(self, path: str, target: str, owner: tuple[int, int] | None = None) -> None:
        self._prepare_new(path)
        os.symlink(target, path, dir_fd=self.upper_fd)
        self._made(path, owner)

    def link(self, old: str, new: str) -> None:
        """A hard link in the upper layer; a lower ``old`` is copied up first."""
        if not self.exists(old):
            raise _error(errno.ENOENT, old)
        if self.is_dir(old):
            raise _error(errno.EPERM, old)
        self._prepare_new(new)
        self.copy_up(old)
        os.link(old, new, src_dir_fd=self.upper_fd, dst_dir_fd=self.upper_fd, follow_symlinks=False)
        self.upper_paths.add(new)
        self.created.add(new)
        self._drop_whiteout(new)

    def unlink(self, path: str, keep: str | None = None) -> None:
        """Remove a non-directory. With ``keep``, the upper file moves to that name in the
        work directory instead of being deleted, for an open file that must live on."""
        if not self.exists(path):
            raise _error(errno.ENOENT, path)
        if self.is_dir(path):
            raise _error(errno.EISDIR, path)
        self._remove(path, keep)

    def rmdir(self, path: str) -> None:
        if not self.exists(path):
            raise _error(errno.ENOENT, path)
        if not self.is_dir(path):
            raise _error(errno.ENOTDIR, path)
        if self.listdir(path):
            raise _error(errno.ENOTEMPTY, path)
        if path == "":
            raise _error(errno.EBUSY, path)
        self._remove(path)

    def _remove(self, path: str, keep: str | None = None) -> None:
        """Remove ``path`` from the merged view: whiteout first (if the lower has it), so a
        crash in between leaves the old state visible rather than a half-removed one."""
        if self.lower(path) is not None:
            self._ensure_upper_dir(posixpath.dirname(path))
            self._add_whiteout(path)
        if path in self.upper_paths:
            if self._upper_is_dir(path):
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=self.upper_fd)
                try:
                    for name in os.listdir(fd):  # only whiteouts and an opaque marker remain
                        os.unlink(name, dir_fd=fd)
                finally:
                    os.close(fd)
                os.rmdir(path, dir_fd=self.upper_fd)
                self._forget_below(path)
                self.opaque.discard(path)
            elif keep is not None:
                os.rename(path, keep, src_dir_fd=self.upper_fd, dst_dir_fd=self.work_fd)
            else:
                os.unlink(path, dir_fd=self.upper_fd)
            self.upper_paths.discard(path)
            self.created.discard(path)

    def _forget_below(self, path: str) -> None:
        prefix = path + "/"
        self.whiteouts = {w for w in self.whiteouts if not w.startswith(prefix)}
        self.opaque = {o for o in self.opaque if not o.startswith(prefix)}

    def _movable(self, path: str) -> None:
        """A directory with lower content cannot move (EXDEV, as overlayfs without
        redirects): callers such as pip and mv fall back to copying."""
        if self.is_dir(path):
            if self.lower(path) == "dir" and (path not in self.opaque or self.children.get(path)):
                raise _error(errno.EXDEV, path)
        else:
            self.copy_up(path)

    def rename(  # noqa: PLR0912 (rename(2)'s cases, one by one)
        self, old: str, new: str, noreplace: bool = False, keep: str | None = None
    ) -> None:
        """Rename within the merged tree, as ``rename(2)``. With ``keep``, a non-directory
        replaced at ``new`` stays alive under that name in the work directory."""
        if not self.exists(old):
            raise _error(errno.ENOENT, old)
        if old == "" or new == "":
            raise _error(errno.EBUSY, old)
        if new == old:
            return
        if new.startswith(old + "/"):
            raise _error(errno.EINVAL, new)
        parent = posixpath.dirname(new)
        if not self.is_dir(parent):
            raise _error(errno.ENOTDIR if self.exists(parent) else errno.ENOENT, new)
        if self.exists(new):
            if noreplace:
                raise _error(errno.EEXIST, new)
            if self.is_dir(new):
                if not self.is_dir(old):
                    raise _error(errno.EISDIR, new)
                if self.listdir(new):
                    raise _error(errno.ENOTEMPTY, new)
            elif self.is_dir(old):
                raise _error(errno.ENOTDIR, new)
        self._movable(old)
        self._ensure_upper_dir(posixpath.dirname(new))
        if self.lower(old) is not None:
            self._add_whiteout(old)
        # The lower directory at ``new``, shown or whited out, must stay hidden below it.
        new_hides_lower_dir = self.lower(new) == "dir" or (
            new in self.whiteouts and new in self.view.dirs
        )
        moving_dir = self.is_dir(old)
        if self.exists(new) and self.is_dir(new):
            self._remove(new)
        elif keep is not None and new in self.upper_paths:
            # A second name for the file being replaced, so it lives on for who has it open.
            os.link(
                new, keep, src_dir_fd=self.upper_fd, dst_dir_fd=self.work_fd, follow_symlinks=False
            )
        if new_hides_lower_dir and moving_dir:
            # Marked opaque before it moves, so the rename carries the marker atomically:
            # a crash can never show the lower directory's old entries inside it.
            marker = os.open(
                f"{old}/{OPAQUE}", os.O_WRONLY | os.O_CREAT | _NOFOLLOW, 0o600, dir_fd=self.upper_fd
            )
            os.close(marker)
        os.rename(old, new, src_dir_fd=self.upper_fd, dst_dir_fd=self.upper_fd)
        self._drop_whiteout(new)
        self._move_state(old, new)
        if new_hides_lower_dir and moving_dir:
            self.opaque.add(new)

    def exchange(self, a: str, b: str) -> None:
        """``renameat2(RENAME_EXCHANGE)``: swap two existing entries atomically."""
        for path in (a, b):
            if not self.exists(path):
                raise _error(errno.ENOENT, path)
            if path == "":
                raise _error(errno.EBUSY, path)
        if a == b:
            return
        if a.startswith(b + "/") or b.startswith(a + "/"):
            raise _error(errno.EINVAL, b)
        for path in (a, b):
            self._movable(path)
        # A directory arriving where the lower layer has one (whited out) must hide it:
        # marked opaque before the swap, as in rename.
        opaque = [
            dst
            for src, dst in ((a, b), (b, a))
            if dst in self.view.dirs and self.is_dir(src) and src not in self.opaque
        ]
        for dst in opaque:
            src = a if dst == b else b
            marker = os.open(
                f"{src}/{OPAQUE}", os.O_WRONLY | os.O_CREAT | _NOFOLLOW, 0o600, dir_fd=self.upper_fd
            )
            os.close(marker)
        renameat2(self.upper_fd, a, self.upper_fd, b, _RENAME_EXCHANGE)
        self._swap_state(a, b)
        self.opaque.update(opaque)

    def _move_state(self, old: str, new: str) -> None:
        prefix = old + "/"

        def moved(p: str) -> str:
            return new + p[len(old) :] if p == old or p.startswith(prefix) else p

        was_created = {p for p in self.created if p == old or p.startswith(prefix)}
        self.upper_paths = {moved(p) for p in self.upper_paths}
        self.whiteouts = {moved(w) if w.startswith(prefix) else w for w in self.whiteouts}
        self.opaque = {moved(o) for o in self.opaque}
        self.created = (self.created - was_created) | {moved(p) for p in was_created} | {new}

    def _swap_state(self, a: str, b: str) -> None:
        def swapped(p: str) -> str:
            for x, y in ((a, b), (b, a)):
                if p == x or p.startswith(x + "/"):
                    return y + p[len(x) :]
            return p

        self.upper_paths = {swapped(p) for p in self.upper_paths}
        self.whiteouts = {swapped(w) if w not in (a, b) else w for w in self.whiteouts}
        self.opaque = {swapped(o) for o in self.opaque}
        self.created = {swapped(p) for p in self.created} | {a, b}

    def open_upper(self, path: str, flags: int) -> int:
        """An fd on the upper copy of ``path``, copying it up first (without data if truncated)."""
        self.copy_up(path, with_data=not flags & os.O_TRUNC)
        flags &= ~(os.O_CREAT | os.O_EXCL | os.O_DIRECT)
        return self.open_upper_fd(path, flags)

    def setattr(
        self,
        path: str,
        *,
        mode: int | None = None,
        size: int | None = None,
        times_ns: tuple[int, int] | None = None,
        owner: tuple[int, int] | None = None,
    ) -> None:
        """Change attributes of ``path``, copying it up first; never through a symlink.
        ``times_ns`` is (atime, mtime); ``owner`` (uid, gid), -1 for unchanged."""
        self.copy_up(path, with_data=size != 0)
        if size is not None:
            fd = self.open_upper_fd(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
        if owner is not None:
            os.chown(path, *owner, dir_fd=self.upper_fd, follow_symlinks=False)
        if mode is not None:
            self._chmod(path, mode)
        if times_ns is not None:
            os.utime(path, ns=times_ns, dir_fd=self.upper_fd, follow_symlinks=False)

    # -- extended attributes: user.* on upper files ---------------------------------------

    def _has_upper(self, path: str) -> bool:
        """True if ``path`` is in the upper layer, False if only below. Raises ENOENT."""
        if path in self.upper_paths or path == "":
            return True
        if not self.exists(path):
            raise _error(errno.ENOENT, path)
        return False

    @contextlib.contextmanager
    def _xattr_target(self, path: str) -> Iterator[tuple[str, bool]]:
        """A path that names the upper file itself (its O_PATH descriptor in /proc, so no
        symlink is followed), and whether it is a symlink."""
        fd = os.open(_rel(path), os.O_PATH | _NOFOLLOW, dir_fd=self.upper_fd)
        try:
            yield f"/proc/self/fd/{fd}", stat.S_ISLNK(os.fstat(fd).st_mode)
        finally:
            os.close(fd)

    def getxattr(self, path: str, name: str) -> bytes:
        if not self._has_upper(path):
            raise _error(errno.ENODATA, path)
        with self._xattr_target(path) as (target, is_link):
            if is_link:
                raise _error(errno.ENODATA, path)
            return os.getxattr(target, name)

    def listxattr(self, path: str) -> list[str]:
        if not self._has_upper(path):
            return []
        with self._xattr_target(path) as (target, is_link):
            if is_link:
                return []
            return [n for n in os.listxattr(target) if n.startswith("user.")]

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0) -> None:
        if not name.startswith("user."):
            raise _error(errno.EOPNOTSUPP, path)
        self.copy_up(path)
        with self._xattr_target(path) as (target, is_link):
            if is_link:
                raise _error(errno.EPERM, path)  # as ext4: no user.* on symlinks
            os.setxattr(target, name, value, flags)

    def removexattr(self, path: str, name: str) -> None:
        if not self._has_upper(path):
            raise _error(errno.ENODATA, path)
        with self._xattr_target(path) as (target, _is_link):
            os.removexattr(target, name)

    # -- what changed ----------------------------------------------------------------------

    def changes(self) -> list[Change]:
        """Every path the upper layer adds, modifies, deletes or replaces, sorted."""
        found = [Change(w, "deleted") for w in self.whiteouts if w not in self.upper_paths]
        for path in self.upper_paths:
            lower = path in self.view.files or path in self.view.dirs
            is_dir = self._upper_is_dir(path)
            if (path in self.opaque and lower) or (is_dir and path in self.view.files):
                found.append(Change(path, "replaced"))
            elif not lower:
                found.append(Change(path, "added"))
            elif not is_dir:
                found.append(Change(path, "modified"))
        return sorted(found, key=lambda c: c.path)

    def reset(self, paths: list[str] | None = None, empty_trash: bool = True) -> list[str]:
        """Drop the upper layer's changes at and below ``paths`` (all of them if None).
        What goes moves into the work directory's trash at once (one rename each); the
        trash is emptied here, or, with ``empty_trash`` False, by the caller's
        :meth:`empty_trash` (the filesystem runs it off its event loop). Returns the paths
        whose view changed, for the caller to invalidate."""
        touched = [c.path for c in self.changes()]
        if paths is not None:
            wanted = [p.strip("/") for p in paths]
            touched = [t for t in touched if any(t == w or t.startswith(w + "/") for w in wanted)]
        for path in sorted(touched, key=lambda p: -p.count("/")):
            if path in self.whiteouts:
                self._drop_whiteout(path)
            if path in self.upper_paths:
                if self._upper_is_dir(path):
                    self._forget_below(path)
                    self.upper_paths = {p for p in self.upper_paths if not p.startswith(path + "/")}
                    self.created = {p for p in self.created if not p.startswith(path + "/")}
                    self.opaque.discard(path)
                trash = f"trash-{os.urandom(8).hex()}"
                os.rename(path, trash, src_dir_fd=self.upper_fd, dst_dir_fd=self.work_fd)
                self.upper_paths.discard(path)
                self.created.discard(path)
        if empty_trash:
            self.empty_trash()
        return touched

    def empty_trash(self) -> None:
        """Delete what :meth:`reset` moved aside (blocks on whole trees)."""
        for name in os.listdir(self.work_fd):
            if name.startswith("trash-"):
                self._remove_work(name)
