"""The kernel's side of mounts: the mount table, ``fusermount3``, and whether FUSE can work.

``/proc/self/mountinfo`` (proc(5)): one line per mount; field 5 is the mount point,
"relative to the process's root directory", with space, tab, newline and backslash written
as octal escapes (``\\040``). The kernel writes the path's bytes as they are otherwise (no
encoding), so the table is read as bytes and compared with ``os.fsencode`` of the path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path

from pkgfs.store.errors import MountError

__all__ = [
    "UNRESPONSIVE_AFTER",
    "BusyError",
    "alive",
    "check_fuse",
    "fusermount",
    "in_mountinfo",
    "mount_state",
    "mountpoints",
    "wait_for_exit",
]

FUSE_DEVICE = "/dev/fuse"
UNRESPONSIVE_AFTER = 5.0  # seconds a daemon may take to answer statfs before status gives up
FUSE_CONF = "/etc/fuse.conf"

_OCTAL = re.compile(rb"\\([0-7]{3})")


class BusyError(MountError):
    """The mountpoint is busy: a process has files open or its working directory in it."""


def mountpoints(mountinfo: str = "/proc/self/mountinfo") -> list[bytes]:
    """Every mount point in the kernel's table, as the bytes of its path, escapes decoded."""
    with open(mountinfo, "rb") as f:
        lines = f.read().splitlines()
    return [_OCTAL.sub(lambda m: bytes([int(m[1], 8)]), line.split(b" ")[4]) for line in lines]


def mount_state(mountpoint: Path, timeout: float | None = None) -> str:
    """``ok`` (mounted and answering), ``stale`` (mounted, daemon gone) or ``unmounted``;
    with ``timeout`` (seconds), ``unresponsive`` when the daemon has not answered within
    it (stopped, or hung): without one, asking a hung daemon waits as long as it does.

    Raises ``OSError`` when the mountpoint cannot be asked for another reason.
    """
    if timeout is None:
        return _mount_state(mountpoint)
    answer: list[str | OSError] = []
    done = threading.Event()

    def ask() -> None:
        try:
            answer.append(_mount_state(mountpoint))
        except OSError as exc:
            answer.append(exc)
        finally:
            done.set()

    # A thread, as a FUSE request cannot be given up on: left waiting, it ends with the
    # process (a daemon thread; the kernel lets a killed process's request go).
    threading.Thread(target=ask, name="pkgfs-statfs", daemon=True).start()
    if not done.wait(timeout):
        return "unresponsive"
    if isinstance(answer[0], OSError):
        raise answer[0]
    return answer[0]


def _mount_state(mountpoint: Path) -> str:
    if not in_mountinfo(mountpoint):
        return "unmounted"
    try:
        # statfs always reaches the daemon; stat may be answered from the kernel's cache.
        os.statvfs(mountpoint)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            return "stale"
        raise
    return "ok"


def in_mountinfo(mountpoint: Path) -> bool:
    """Whether ``mountpoint`` (its real path, when it can be resolved) is a mount point."""
    # realpath, not Path.exists: a stale mount's stat fails with ENOTCONN, which
    # Path.exists raises; realpath keeps a component it cannot stat as it is.
    return os.fsencode(os.path.realpath(mountpoint)) in mountpoints()


def fusermount(mountpoint: Path, lazy: bool) -> None:
    """Unmount ``mountpoint`` with ``fusermount3 -u`` (``-z``: detach now, even if busy).

    Raises :class:`BusyError` when it is busy (never with ``lazy``), ``MountError`` else.
    """
    if shutil.which("fusermount3") is None:
        raise MountError(f"{mountpoint}: cannot unmount: {_NO_FUSERMOUNT}")
    command = ["fusermount3", "-u", *(["-z"] if lazy else []), str(mountpoint)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        if "busy" in reason:
            raise BusyError(f"{mountpoint}: busy: {reason}")
        raise MountError(f"{mountpoint}: cannot unmount: {reason}")


_NO_FUSERMOUNT = "fusermount3 is not installed (it mounts and unmounts FUSE): apt-get install fuse3"


def check_fuse(mountpoint: Path | None = None, allow_other: bool = False) -> None:
    """Check that this user can make a FUSE mount at ``mountpoint``, before any work is done.

    Raises ``MountError`` naming the cause and what to do: ``/dev/fuse`` missing or not
    readable and writable by this user, no ``fusermount3``, ``allow_other`` refused by
    ``/etc/fuse.conf``, or a mountpoint this user cannot write (a user's FUSE mount
    needs one it owns, or may write).
    """
    # Where FUSE cannot work at all, the environment can still be written as files.
    instead = "; without FUSE, pkgfs materialize VENV writes the environment as real files"
    if not os.path.exists(FUSE_DEVICE):
        raise MountError(
            f"{FUSE_DEVICE} is missing: load the fuse module (modprobe fuse), or give the"
            f" container --device {FUSE_DEVICE}{instead}"
        )
    if not os.access(FUSE_DEVICE, os.R_OK | os.W_OK):
        info = os.stat(FUSE_DEVICE)
        raise MountError(
            f"{FUSE_DEVICE} is not readable and writable by you (mode"
            f" {stat.filemode(info.st_mode)}, owner uid {info.st_uid}, gid {info.st_gid}):"
            f" ask an administrator to make it mode 0666, as most distributions ship it"
            f" (chmod 0666 {FUSE_DEVICE}){instead}"
        )
    try:  # a container's device cgroup may refuse it although its mode allows it
        os.close(os.open(FUSE_DEVICE, os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        raise MountError(
            f"{FUSE_DEVICE} cannot be opened ({exc.strerror}): a container needs"
            f" --device {FUSE_DEVICE} --cap-add SYS_ADMIN{instead}"
        ) from None
    if shutil.which("fusermount3") is None:
        raise MountError(_NO_FUSERMOUNT)
    if os.geteuid() == 0:
        return
    if allow_other and not _user_allow_other():
        raise MountError(
            f"--allow-other needs user_allow_other in {FUSE_CONF} for a user that is not root:"
            f" ask an administrator to add that line, or mount without --allow-other"
        )
    if mountpoint is not None and mountpoint.is_dir() and not os.access(mountpoint, os.W_OK):
        raise MountError(
            f"{mountpoint}: you cannot write to it, and a FUSE mount by a user that is not"
            f" root needs a mountpoint that user may write: mount a directory you own"
        )


def _user_allow_other(conf: str = FUSE_CONF) -> bool:
    try:
        with open(conf, encoding="utf-8", errors="replace") as f:
            return any(line.strip() == "user_allow_other" for line in f)
    except OSError:
        return False


def wait_for_exit(pid: int, timeout: float = 10.0) -> bool:
    """Wait until process ``pid`` is gone (or a zombie); False if it outlived ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is not serving.
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", encoding="utf-8") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    return True
