"""pkgfs as a user that is not root: FUSE failures name their cause, and a plain mount works.

A throwaway user (``pkgfs-test``, made with useradd if missing) runs pkgfs through
``runuser``. The checkout's .venv is not usable by it here (its interpreter lives under
/root, mode 0700), so the user gets a venv of the system's python3 of the same version
that adds the checkout's site-packages. A user's FUSE mount needs /dev/fuse readable and
writable (Debian ships it 0666); the test sets its mode for each case and restores it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mountkit import force_unmount, needs_fuse

USER = "pkgfs-test"
SYSTEM_PYTHON = Path("/usr/bin/python3")

pytestmark = [
    needs_fuse,
    pytest.mark.skipif(os.geteuid() != 0, reason="makes a throwaway user: needs root"),
    pytest.mark.skipif(shutil.which("runuser") is None, reason="needs runuser"),
]


def system_python_matches() -> bool:
    if not SYSTEM_PYTHON.exists():
        return False
    out = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return out.strip() == str(sys.version_info[:2])


@dataclass
class User:
    home: Path
    python: Path  # a venv with pkgfs, runnable by the user
    project: Path
    site: Path

    def pkgfs(
        self, *args: str | Path, path: str = "/usr/bin:/bin", module: str = "pkgfs.vfs"
    ) -> subprocess.CompletedProcess[str]:
        environ = [
            f"HOME={self.home}", f"PATH={path}", f"PKGFS_STORE={self.home / 'store'}",
            f"XDG_STATE_HOME={self.home / 'state'}", f"XDG_CACHE_HOME={self.home / 'cache'}",
        ]  # fmt: skip
        return subprocess.run(
            ["runuser", "-u", USER, "--", "env", "-i", *environ, self.python, "-m", module,
             *map(str, args)],
            capture_output=True, text=True, check=False, cwd=self.project,
        )  # fmt: skip


@pytest.fixture
def user() -> Iterator[User]:
    if not system_python_matches():
        pytest.skip(f"needs {SYSTEM_PYTHON} of Python {sys.version_info[:2]}")
    if subprocess.run(["id", USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True,
        )
    from tests.mountkit import environ_for, make_project  # noqa: PLC0415

    root = Path(tempfile.mkdtemp(prefix="pkgfs-nonroot-", dir="/tmp"))
    root.chmod(0o755)
    home = root / "home"
    home.mkdir()
    tools = root / "tools"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", tools], check=True)
    checkout_site = next(p for p in sys.path if p.endswith("site-packages"))
    (tools / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages" /
     "checkout.pth").write_text(f"import site; site.addsitedir({checkout_site!r})\n")  # fmt: skip
    env = make_project(home / "project", environ_for(root))
    shutil.rmtree(env.venv)
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", env.venv], check=True)
    subprocess.run(["chown", "-R", USER, home], check=True)
    mode = os.stat("/dev/fuse").st_mode & 0o777
    user = User(home, tools / "bin" / "python", env.project, env.site)
    try:
        yield user
    finally:
        user.pkgfs("server", "stop")  # a test that used the client started the user's own
        os.chmod("/dev/fuse", mode)
        force_unmount(env.site)
        shutil.rmtree(root, ignore_errors=True)


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("pkgfs: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_fuse_failures_name_their_cause(user: User) -> None:
    os.chmod("/dev/fuse", 0o600)
    error = one_error(user.pkgfs("mount", user.site))
    assert "/dev/fuse is not readable and writable by you" in error
    assert "chmod 0666 /dev/fuse" in error
    os.chmod("/dev/fuse", 0o666)  # noqa: S103 (as Debian ships it)
    error = one_error(user.pkgfs("mount", user.site, path="/nowhere"))
    assert error.startswith("pkgfs: error: fusermount3 is not installed")
    if "user_allow_other" not in Path("/etc/fuse.conf").read_text().split():
        error = one_error(user.pkgfs("mount", user.site, "--allow-other"))
        assert "--allow-other needs user_allow_other in /etc/fuse.conf" in error
    theirs = user.home / "root-owned"
    theirs.mkdir()
    error = one_error(user.pkgfs("mount", theirs, "--lock", user.project / "pylock.toml"))
    assert f"{theirs}: you cannot write to it" in error


def test_a_user_mounts_a_venv(user: User) -> None:
    os.chmod("/dev/fuse", 0o666)  # noqa: S103 (as Debian ships it)
    result = user.pkgfs("mount", user.site)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"mounted 3 packages at {user.site}")
    status = user.pkgfs("status")
    assert status.stdout.startswith(f"ok     {user.site}")
    python = user.project / ".venv" / "bin" / "python"
    ran = subprocess.run(
        ["runuser", "-u", USER, "--", python, "-c", "import app, ns.a; print(app.VALUE, ns.a.A)"],
        capture_output=True, text=True, check=False, cwd=user.project,
    )  # fmt: skip
    assert ran.stdout == "1 a\n", ran.stderr
    unmounted = user.pkgfs("unmount", user.site)
    assert unmounted.stdout == f"unmounted {user.site}\n", unmounted.stderr


def test_a_user_gets_a_server_of_their_own(user: User) -> None:
    os.chmod("/dev/fuse", 0o666)  # noqa: S103 (as Debian ships it)
    client = "pkgfs.vfs.server.client"
    result = user.pkgfs("mount", user.site, module=client)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"mounted 3 packages at {user.site}")
    status = user.pkgfs("server", "status")
    assert status.returncode == 0, status.stdout
    pid = int(status.stdout.split()[3])  # "the pkgfs server PID runs (...)"
    uid = int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])
    assert uid == pwd.getpwnam(USER).pw_uid  # the user's own server, not root's
    # Its records are the user's alone.
    servers = user.home / "state" / "pkgfs" / "servers"
    assert servers.stat().st_mode & 0o777 == 0o700
    assert servers.stat().st_uid == uid
    assert user.pkgfs("status", module=client).stdout.startswith(f"ok     {user.site}")
    unmounted = user.pkgfs("unmount", user.site, module=client)
    assert unmounted.stdout == f"unmounted {user.site}\n", unmounted.stderr
