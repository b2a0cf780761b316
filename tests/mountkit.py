"""Real mounts for tests: a project with a lock of test wheels and a venv, and pkgfs run
against it as a process. Each test module makes its own fixtures from these helpers."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PKGFS, isolated, stop_servers
from tests.wheelmaker import WheelMaker

__all__ = [
    "APP_FILES",
    "PY",
    "Env",
    "digest_tree",
    "environ_for",
    "fails",
    "force_unmount",
    "make_project",
    "needs_fuse",
    "pkgfs_processes",
    "stop_servers",
]

needs_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fusermount3",
)

PY = f"python{sys.version_info.major}.{sys.version_info.minor}"

APP_FILES = {
    "app/__init__.py": "VALUE = 1\n",
    "app/cli.py": "def main() -> None:\n    print('app-cli ran')\n",
    "app/data.txt": "lower data\n",
    "app/sub/__init__.py": "",
    "app/sub/mod.py": "X = 'sub'\n",
    "app-1.0.data/scripts/app-tool": "#!python\nprint('tool ran')\n",
    "app-1.0.data/data/share/app/config.txt": "shipped config\n",
}


@dataclass
class Env:
    project: Path
    venv: Path
    env: dict[str, str]

    @property
    def site(self) -> Path:
        return self.venv / "lib" / PY / "site-packages"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def pkgfs(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*PKGFS, *map(str, args)],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
            cwd=self.project,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"pkgfs {args} failed: {proc.stderr}")
        return proc

    def run(self, *args: str | Path) -> str:
        # From the project directory, so nothing of the checkout is on the path.
        proc = subprocess.run(
            list(map(str, args)),
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
            cwd=self.project,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def pip(self, *args: str) -> str:
        return self.run(
            sys.executable,
            "-m",
            "pip",
            "--python",
            self.python,
            "--disable-pip-version-check",
            *args,
        )

    def status(self) -> list[dict[str, object]]:
        # status exits 1 when a mount is stale or its lock changed (a healthcheck).
        proc = self.pkgfs("status", "--json", check=False)
        assert proc.returncode in (0, 1), proc.stderr
        rows: list[dict[str, object]] = json.loads(proc.stdout)
        return [r for r in rows if r["mountpoint"] == str(self.site)]


def _pylock(project: Path, wheels: list[Path]) -> None:
    lines = ['lock-version = "1.0"', 'created-by = "pkgfs-tests"', 'requires-python = ">=3.9"', ""]
    for wheel in wheels:
        name, version = wheel.name.split("-")[:2]
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        lines += [
            "[[packages]]",
            f'name = "{name}"',
            f'version = "{version}"',
            f'wheels = [{{ path = "wheels/{wheel.name}", hashes = {{ sha256 = "{digest}" }} }}]',
            "",
        ]
    (project / "pylock.toml").write_text("\n".join(lines))


def make_project(
    root: Path,
    env: dict[str, str],
    extra: dict[str, dict[str, bytes | str]] | None = None,
    wheels: Sequence[WheelMaker] = (),
) -> Env:
    """A project in ``root``: app, nsa and nsb (and ``extra``: name -> files, and ``wheels``)
    locked in a pylock.toml, and a venv without pip."""
    project = root
    wheels_dir = project / "wheels"
    wheels_dir.mkdir(parents=True)
    built = [
        WheelMaker(
            name="app",
            files=APP_FILES,
            executable=frozenset({"app-1.0.data/scripts/app-tool"}),
            entry_points="[console_scripts]\napp-cli = app.cli:main\n",
            requires_dist=["nsa"],
        ).build(wheels_dir),
        WheelMaker(name="nsa", files={"ns/a/__init__.py": "A = 'a'\n"}).build(wheels_dir),
        WheelMaker(name="nsb", files={"ns/b/__init__.py": "B = 'b'\n"}).build(wheels_dir),
    ]
    for name, files in (extra or {}).items():
        built.append(WheelMaker(name=name, files=files).build(wheels_dir))
    built += [wheel.build(wheels_dir) for wheel in wheels]
    _pylock(project, built)
    venv.create(project / ".venv", with_pip=False)
    return Env(project, project / ".venv", env)


def environ_for(tmp_path: Path) -> dict[str, str]:
    """The environment pkgfs runs in for a test: its store, state and cache in ``tmp_path``."""
    env = {**isolated(dict(os.environ)), "HOME": str(tmp_path / "home")}
    env["PKGFS_STORE"] = str(tmp_path / "store")
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def force_unmount(path: Path) -> None:
    subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, check=False)


def pkgfs_processes(env: dict[str, str]) -> set[int]:
    """Pids of every running ``python -m pkgfs.vfs`` of this test (its XDG_STATE_HOME):
    commands and mount daemons. Other tests may run beside this one."""
    mine = f"XDG_STATE_HOME={env['XDG_STATE_HOME']}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if (
                entry.name.isdigit()
                and b"pkgfs.vfs" in (entry / "cmdline").read_bytes()
                and mine in (entry / "environ").read_bytes().split(b"\0")
            ):
                found.add(int(entry.name))
    return found


def fails(project: Env, *args: str | Path) -> str:
    """Run pkgfs, which must fail with one error line, leaving no state and no daemon."""
    state = Path(project.env["XDG_STATE_HOME"])
    before = sorted(state.rglob("*")) if state.exists() else []
    running = pkgfs_processes(project.env)
    result = project.pkgfs(*args, check=False)
    assert result.returncode == 1, result
    errors = [line for line in result.stderr.splitlines() if line.startswith("pkgfs: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    after = sorted(state.rglob("*")) if state.exists() else []
    assert after == before  # nothing left behind
    # No daemon either: mount forks its daemon first (fuse/spawn.py) and must reap it.
    assert pkgfs_processes(project.env) <= running
    return errors[0]


def digest_tree(root: Path) -> dict[str, str]:
    """Each file below ``root`` (relative path) -> the sha256 of its bytes."""
    found = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found
