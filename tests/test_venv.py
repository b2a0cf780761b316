"""What a mount writes into its venv (scripts, data links), with real mounts: never outside
bin/ and the venv, never over the venv's own files, and unmount removes only that."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pkgfs.store.sealed import seal, unseal
from pkgfs.vfs.env.view import SharedView
from tests.conftest import PKGFS, snapshot
from tests.wheelmaker import WheelMaker

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fusermount3",
)

PY = f"python{sys.version_info.major}.{sys.version_info.minor}"
# Entry points named as the venv's own files: pip's own wheel ships a "pip" one.
VENV_NAMES = ("python", "python3", "activate", "pip")


@dataclass
class Project:
    root: Path
    env: dict[str, str]

    @property
    def venv(self) -> Path:
        return self.root / ".venv"

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def site(self) -> Path:
        return self.venv / "lib" / PY / "site-packages"

    def pkgfs(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*PKGFS, *map(str, args)],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
            cwd=self.root,
        )
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    def warnings(self, proc: subprocess.CompletedProcess[str]) -> list[str]:
        return [w for w in proc.stderr.splitlines() if w.startswith("pkgfs: warning: ")]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    root = tmp_path / "project"
    (root / "wheels").mkdir(parents=True)
    entry_points = "".join(f"{name} = app.cli:main\n" for name in ("app-cli", *VENV_NAMES))
    wheel = WheelMaker(
        name="app",
        files={
            "app/__init__.py": "",
            "app/cli.py": "def main() -> None:\n    print('app-cli ran')\n",
            "app-1.0.data/scripts/app-tool": "#!python\nprint('tool ran')\n",
            "app-1.0.data/data/share/app/config.txt": "shipped config\n",
        },
        executable=frozenset({"app-1.0.data/scripts/app-tool"}),
        entry_points=f"[console_scripts]\n{entry_points}",
    ).build(root / "wheels")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (root / "pylock.toml").write_text(
        'lock-version = "1.0"\ncreated-by = "pkgfs-tests"\nrequires-python = ">=3.9"\n'
        '[[packages]]\nname = "app"\nversion = "1.0"\n'
        f'wheels = [{{ path = "wheels/{wheel.name}", hashes = {{ sha256 = "{digest}" }} }}]\n'
    )
    venv.create(root / ".venv", with_pip=False)
    (root / ".venv" / "bin" / "pip").write_text("#!/bin/sh\necho the venv's own pip\n")
    env = {**os.environ, "HOME": str(tmp_path / "home"), "PKGFS_STORE": str(tmp_path / "store")}
    env |= {"XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("VIRTUAL_ENV", None)
    made = Project(root, env)
    try:
        yield made
    finally:
        subprocess.run(
            ["fusermount3", "-u", "-z", str(made.site)], capture_output=True, check=False
        )


def _bin(project: Project) -> dict[str, tuple[int, str]]:
    """bin/ as it is: each entry's type and mode, and its bytes or its link's target."""
    state = snapshot(project.bin)
    for name in state:
        if (project.bin / name).is_symlink():
            state[name] = (state[name][0], os.readlink(project.bin / name))
    return state


def test_scripts_never_replace_the_venvs_own_files(project: Project) -> None:
    before = _bin(project)

    mounted = project.pkgfs("mount", project.site)

    # python, python3 and activate are the venv's by name: the view never makes them (nor
    # lists them in RECORD); pip is an ordinary name that the venv happens to have.
    assert project.warnings(mounted) == [
        f"pkgfs: warning: {project.bin / 'pip'}: exists, kept; the locked script pip is skipped"
    ]
    now = _bin(project)
    assert {name: now[name] for name in before} == before  # python, activate, pip: untouched
    assert sorted(now.keys() - before.keys()) == ["app-cli", "app-tool"]
    ran = subprocess.run([project.bin / "app-cli"], capture_output=True, text=True, check=True)
    assert ran.stdout == "app-cli ran\n"

    project.pkgfs("unmount", project.site)
    assert _bin(project) == before


def test_unmount_removes_only_what_the_mount_made(project: Project, tmp_path: Path) -> None:
    project.pkgfs("mount", project.site)
    record = json.loads(next((tmp_path / "state").rglob("scripts.json")).read_text())
    made = {row["path"]: row for row in record["made"]}
    assert set(made) == {"bin/app-cli", "bin/app-tool", "share"}
    assert made["share"]["symlink"] == str(project.site / ".pkgfs-data" / "share")
    tool = (project.bin / "app-tool").read_bytes()
    assert made["bin/app-tool"]["sha256"] == hashlib.sha256(tool).hexdigest()

    (project.bin / "app-tool").unlink()
    (project.bin / "app-tool").write_text("the user's own tool\n")  # replaced
    (project.bin / "later").write_text("written by pip after the mount\n")
    (project.venv / "share").unlink()
    (project.venv / "share").symlink_to(tmp_path)  # the user's own link

    unmounted = project.pkgfs("unmount", project.site)

    assert not (project.bin / "app-cli").exists()  # made by the mount, unchanged: removed
    assert (project.bin / "app-tool").read_text() == "the user's own tool\n"
    assert (project.bin / "later").exists()
    assert os.readlink(project.venv / "share") == str(tmp_path)
    assert unmounted.returncode == 0


def test_a_symlink_in_the_venv_is_never_followed(project: Project, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (project.bin / "app-cli").symlink_to(outside / "app-cli")  # dangling, into outside
    (project.venv / "share").symlink_to(outside)

    mounted = project.pkgfs("mount", project.site)

    assert os.listdir(outside) == []
    warnings = project.warnings(mounted)
    assert f"pkgfs: warning: {project.bin / 'app-cli'}: exists, kept;" in "\n".join(warnings)
    assert f"pkgfs: warning: {project.venv / 'share'}: exists, kept;" in "\n".join(warnings)
    project.pkgfs("unmount", project.site)
    assert os.readlink(project.bin / "app-cli") == str(outside / "app-cli")
    assert os.readlink(project.venv / "share") == str(outside)
    assert os.listdir(outside) == []


def test_a_tampered_saved_view_writes_nothing_outside_bin(project: Project, tmp_path: Path) -> None:
    project.pkgfs("mount", project.site)
    project.pkgfs("unmount", project.site)
    (saved,) = (tmp_path / "store" / "views-v2").iterdir()
    good = saved.read_bytes()
    shared = SharedView.load(unseal(good))
    for name in ("../../escaped", "../../../escaped", str(tmp_path / "escaped")):
        shared.parts[0].scripts.append(("entry", name, "app.cli", "main", "console"))
    saved.write_bytes(seal(shared.dump()))  # a valid checksum, recomputed
    before = snapshot(tmp_path)

    project.pkgfs("mount", project.site)

    created = snapshot(tmp_path).keys() - before.keys()
    outside = [p for p in created if not p.startswith(("project/.venv/", "state/", "store/"))]
    assert outside == []
    assert not any("escaped" in path for path in created)
    assert saved.read_bytes() == good  # composed again, from the index


def test_a_remount_after_kill_9_makes_the_scripts_again_without_warnings(
    project: Project,
) -> None:
    project.pkgfs("mount", project.site)
    (row,) = json.loads(project.pkgfs("status", "--json").stdout)
    os.kill(int(row["pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while json.loads(project.pkgfs("status", "--json", check=False).stdout)[0]["state"] != "stale":
        assert time.monotonic() < deadline
        time.sleep(0.05)

    remounted = project.pkgfs("mount", project.site)

    assert [w for w in project.warnings(remounted) if "locked script app" in w] == []
    assert (project.bin / "app-cli").exists()
    project.pkgfs("unmount", project.site)
    assert not (project.bin / "app-cli").exists()
    assert not (project.venv / "share").is_symlink()
