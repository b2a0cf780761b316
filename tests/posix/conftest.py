"""The POSIX tests' fixtures: a mount per module, a case per test, the throwaway user."""

from __future__ import annotations

import pwd
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mountkit import (
    digest_tree,
    environ_for,
    make_project,
)
from tests.posix.kit import (
    RUN_TIMEOUT,
    TEST_TIMEOUT,
    USER,
    Case,
    Mount,
    User,
)


@pytest.fixture(scope="module")
def mnt() -> Iterator[Mount]:
    # Below /tmp with every directory 0755: another user must reach the mountpoint.
    root = Path(tempfile.mkdtemp(prefix="pkgfs-posix-", dir="/tmp"))
    root.chmod(0o755)
    env = make_project(root / "project", environ_for(root))
    (root / "plain").mkdir()
    mount = Mount(env, root / "plain")
    try:
        mount.mount()
        mount.objects = digest_tree(mount.store / "objects-v1")
        yield mount
        # The lower layer is immutable: after everything the module did, the store is as it was.
        assert mount.alive(), "the mount no longer answers"
        mount.verify_store()
        assert not mount.recovered, f"the mount had to be recovered: {mount.recovered}"
    finally:
        mount.kill_daemon()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def case(mnt: Mount, request: pytest.FixtureRequest) -> Iterator[Case]:
    if not mnt.alive():
        mnt.recover(f"not answering before {request.node.name}")
    name = "t-" + re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)
    (mnt.site / name).mkdir()
    (mnt.plain / name).mkdir()
    fired: list[bool] = []

    def watchdog() -> None:
        fired.append(True)
        mnt.kill_daemon()

    timer = threading.Timer(TEST_TIMEOUT, watchdog)
    timer.start()
    try:
        yield Case(mnt, mnt.site / name, mnt.plain / name)
    finally:
        timer.cancel()
    assert not fired, f"hung for {TEST_TIMEOUT}s: the daemon was killed"
    assert mnt.alive(), "the mount no longer answers"


@pytest.fixture(scope="module")
def user() -> User:
    if shutil.which("useradd") is None and not _has_user():
        pytest.skip("needs useradd")
    if not _has_user():
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True, timeout=RUN_TIMEOUT,
        )  # fmt: skip
    entry = pwd.getpwnam(USER)
    return User(entry.pw_uid, entry.pw_gid)


def _has_user() -> bool:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return False
    return True
