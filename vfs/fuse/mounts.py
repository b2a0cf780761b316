"""The kernel's side of mounts: the mount table, ``fusermount3``, and whether FUSE can work.

``/proc/self/mountinfo`` (proc(5)): one line per mount; field 5 is the mount point,
"relative to the process's root directory", with space, tab, newline and backslash written
as octal escapes (``\\040``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import time
from pathlib import Path

from pkgfs.store.errors import MountError

__all__ = [
    "alive",
    "check_fuse",
    "fusermount",
    "in_mountinfo",
    "mount_state",
    "wait_for_exit",
]


def mount_state(mountpoint: Path) -> str:
    """``ok`` (mounted and answering), ``stale`` (mounted, daemon gone) or ``unmounted``."""
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
    target = os.path.realpath(mountpoint) if mountpoint.exists() else str(mountpoint)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            # mountinfo escapes spaces and such as octal: \040
            if fields[4].encode().decode("unicode_escape") == target:
                return True
    return False


def fusermount(mountpoint: Path, lazy: bool) -> None:
    command = ["fusermount3", "-u", *(["-z"] if lazy else []), str(mountpoint)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        raise MountError(f"{mountpoint}: cannot unmount: {reason}")


def check_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        raise MountError(
            "/dev/fuse is missing: load the fuse module, or give the container --device /dev/fuse"
        )
    if shutil.which("fusermount3") is None:
        raise MountError("fusermount3 is not installed: apt-get install fuse3")


def wait_for_exit(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def alive(pid: int) -> bool:
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
