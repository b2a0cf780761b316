"""``pkgfs run``, the containers' entrypoint, with real FUSE mounts: it makes the venv,
mounts, runs the command in it, forwards signals, unmounts whatever ends it, and exits with
the command's status."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pkgfs.vfs.fuse.mounts import in_mountinfo
from tests.conftest import PKGFS
from tests.mountkit import PY, Env, environ_for, make_project, needs_fuse, pkgfs_processes

pytestmark = needs_fuse


@pytest.fixture
def project(tmp_path: Path) -> Env:
    return make_project(tmp_path / "project", environ_for(tmp_path))


def _site(venv: Path) -> Path:
    return venv / "lib" / PY / "site-packages"  # not glob: it fails on a stale mount


def _start(project: Env, venv: Path, *command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PKGFS, "run", "--lock", "pylock.toml", "--venv", str(venv), "--", *command],
        cwd=project.project,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_run_mounts_runs_and_unmounts(project: Env, tmp_path: Path) -> None:
    venv = tmp_path / "venv"  # made by run, without pip
    code = "import app, ns.a, sys; print(app.VALUE, ns.a.A, sys.prefix); sys.exit(3)"
    proc = _start(project, venv, "sh", "-c", f"app-cli && python -c '{code}'")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err  # CMD's own status
    assert out.splitlines() == ["app-cli ran", f"1 a {venv}"]  # venv's bin first on PATH
    assert f"mounted 3 packages at {_site(venv)}" in err
    assert not in_mountinfo(_site(venv))
    assert not (venv / "bin" / "app-cli").exists()  # the mount's scripts went with it
    assert not list(_site(venv).iterdir())  # never had pip
    assert pkgfs_processes(project.env) == set()  # no daemon left
    # pkgfs run mounts it when it runs: mount --all (and a server's start) leave it be.
    assert project.pkgfs("mount", "--all").returncode == 0
    assert not in_mountinfo(_site(venv))


def test_run_forwards_sigterm_and_exits_with_the_status(project: Env, tmp_path: Path) -> None:
    venv, ready, seen = tmp_path / "venv", tmp_path / "ready", tmp_path / "seen"
    code = (
        "import signal, sys, time, pathlib, app\n"
        "def stop(n, f):\n"
        f"    pathlib.Path({str(seen)!r}).write_text(str(n)); sys.exit(7)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n"
    )
    proc = _start(project, venv, "python", "-c", code)
    _wait_for(ready, proc)
    assert in_mountinfo(_site(venv))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 7, err
    assert seen.read_text() == str(int(signal.SIGTERM))
    assert not in_mountinfo(_site(venv))
    assert pkgfs_processes(project.env) == set()


def test_run_reports_a_command_killed_by_the_signal_as_the_shell_does(
    project: Env, tmp_path: Path
) -> None:
    venv, ready = tmp_path / "venv", tmp_path / "ready"
    proc = _start(project, venv, "sh", "-c", f"touch {ready}; exec sleep 60")
    _wait_for(ready, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert not in_mountinfo(_site(venv))


def test_run_without_command_serves_until_stopped(project: Env, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    proc = _start(project, venv)
    _wait_for(venv / "bin" / "app-cli", proc)  # written once the mount answers
    assert project.run(venv / "bin" / "python", "-c", "import app; print(app.VALUE)") == "1\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert not in_mountinfo(_site(venv))
    assert pkgfs_processes(project.env) == set()


def test_run_uses_an_existing_venv_and_says_a_missing_command_as_the_shell(
    project: Env, tmp_path: Path
) -> None:
    proc = _start(project, project.venv, "no-such-command")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 127
    assert "pkgfs: error: no-such-command: command not found" in err
    assert not in_mountinfo(project.site)
    assert pkgfs_processes(project.env) == set()


def test_run_recovers_a_venv_whose_daemon_was_killed(project: Env, tmp_path: Path) -> None:
    """A crashed sidecar: its ``pkgfs run`` and the mount's daemon killed, the mount left
    stale. Running again clears the stale mount and mounts anew."""
    venv = tmp_path / "venv"
    proc = _start(project, venv)
    _wait_for(venv / "bin" / "app-cli", proc)
    for pid in pkgfs_processes(project.env):
        os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    assert in_mountinfo(_site(venv))  # stale: Transport endpoint is not connected
    again = _start(project, venv, "app-cli")
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert out == "app-cli ran\n"
    assert "cleared a stale mount" in err
    assert not in_mountinfo(_site(venv))
