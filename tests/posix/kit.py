"""What the POSIX tests share: one real mount per module, a directory per test, ext4 beside it.

Each module of ``tests/posix/`` gets one real mount (by the CLI, ``--allow-other``; the
fixtures are in ``conftest.py``); every test works in its own directory of it, and where
ext4's answer matters, ``Case.both`` runs the same check on a plain directory of /tmp (ext4
or tmpfs) and on the mount and compares the results. A watchdog kills the mount's daemon if
a test hangs (so its calls fail with ENOTCONN instead of blocking the suite), and the next
test mounts again. Every subprocess has a timeout. When a module is done, the store must be
exactly as it was when mounted.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from tests.mountkit import (
    Env,
    digest_tree,
    force_unmount,
    needs_fuse,
    pkgfs_processes,
)

pytestmark = [
    needs_fuse,
    pytest.mark.skipif(os.geteuid() != 0, reason="owners, devices and other users: needs root"),
]

T = TypeVar("T")

USER = "pkgfs-test"  # the throwaway user of test_nonroot.py
TEST_TIMEOUT = 45.0  # seconds a test may take before the watchdog kills the daemon
RUN_TIMEOUT = 20.0  # seconds for a subprocess
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
NOBODY = 65534


@dataclass
class Mount:
    env: Env
    plain: Path  # a plain directory on the machine's own filesystem, to compare
    objects: dict[str, str] = field(default_factory=dict)  # the store's objects when mounted
    recovered: list[str] = field(default_factory=list)

    @property
    def site(self) -> Path:
        return self.env.site

    @property
    def store(self) -> Path:
        return Path(self.env.env["PKGFS_STORE"])

    def mount(self) -> None:
        self.env.pkgfs("mount", self.site, "--allow-other")

    def unmount(self) -> None:
        self.env.pkgfs("unmount", self.site)

    def alive(self) -> bool:
        """The mount answers (asked by a process of its own, which cannot hang us)."""
        try:
            proc = run("ls", "-a", self.site, check=False, timeout=5)
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == 0 and os.path.ismount(self.site) and "app" in proc.stdout

    def kill_daemon(self) -> None:
        for pid in pkgfs_processes(self.env.env):
            os.kill(pid, signal.SIGKILL)
        force_unmount(self.site)

    def recover(self, why: str) -> None:
        self.recovered.append(why)
        self.kill_daemon()
        self.mount()

    def verify_store(self) -> None:
        result = self.env.pkgfs("store", "verify", check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert digest_tree(self.store / "objects-v1") == self.objects


def run(
    *args: str | Path,
    cwd: Path | None = None,
    check: bool = True,
    timeout: float = RUN_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(map(str, args)), capture_output=True, text=True, cwd=cwd, timeout=timeout, check=False
    )
    if check:
        assert proc.returncode == 0, f"{args}: {proc.stderr}"
    return proc


@dataclass
class Case:
    mnt: Mount
    dir: Path  # this test's directory in the mount
    plain: Path  # and on the plain filesystem

    @property
    def site(self) -> Path:
        return self.mnt.site

    def both(self, fn: Callable[[Path], T]) -> T:
        """``fn`` on a fresh plain directory and on a fresh directory of the mount: equal."""
        n = len(list(self.plain.iterdir()))
        plain, mounted = self.plain / f"both-{n}", self.dir / f"both-{n}"
        plain.mkdir()
        mounted.mkdir()
        expected = fn(plain)
        got = fn(mounted)
        assert got == expected, f"mount answered {got!r}, the plain directory {expected!r}"
        return got


def outcome(fn: Callable[[], T]) -> T | str:
    """The result of ``fn``, or the name of the errno it failed with."""
    try:
        return fn()
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e))
    except NotImplementedError:
        return "NotImplementedError"


def write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


@dataclass(frozen=True)
class User:
    uid: int
    gid: int

    def run(self, fn: Callable[[], object], timeout: float = RUN_TIMEOUT) -> object:
        """``fn()`` in a forked child running as this user: its result, or the errno's name."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            try:
                os.close(r)
                os.setgroups([])
                os.setresgid(self.gid, self.gid, self.gid)
                os.setresuid(self.uid, self.uid, self.uid)
                data = json.dumps(["ok", outcome(fn)])
            except BaseException as e:
                data = json.dumps(["error", repr(e)])
            os.write(w, data.encode())
            os._exit(0)
        os.close(w)
        try:
            ready, _, _ = select.select([r], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"{fn} hung as uid {self.uid}")
            chunks = []
            while chunk := os.read(r, 65536):
                chunks.append(chunk)
        finally:
            os.close(r)
            os.waitpid(pid, 0)
        kind, value = json.loads(b"".join(chunks))
        assert kind == "ok", value
        return value
