"""``pkgfs materialize``: the environment a mount serves, written into a venv as real files.

Compared file by file with what the mount serves for the same venv; imported, checked by
pip, and run with ``python -v`` to see that the store's bytecode is loaded, not compiled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import snapshot
from tests.mountkit import Env, digest_tree, environ_for, force_unmount, make_project, needs_fuse

PYC_LOADED = re.compile(r"# code object from '([^']+\.pyc)'")


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Env]:
    env = make_project(tmp_path / "project", environ_for(tmp_path))
    try:
        yield env
    finally:
        force_unmount(env.site)


def _scripts(env: Env) -> dict[str, str]:
    return {
        k: v
        for k, v in digest_tree(env.venv / "bin").items()
        if not k.startswith(("py", "activate", "Activate"))
    }


@needs_fuse
def test_materialized_is_what_the_mount_serves(project: Env) -> None:
    project.pkgfs("mount", project.site)
    served, scripts = digest_tree(project.site), _scripts(project)
    assert "app/__pycache__/__init__.cpython-311.pyc" in served  # the store's bytecode
    project.pkgfs("unmount", project.site)
    assert _scripts(project) == {}  # the mount's scripts went with it

    result = project.pkgfs("materialize", project.venv)
    assert result.stdout.startswith(f"materialized 3 packages into {project.site} (")
    assert digest_tree(project.site) == served  # RECORDs, INSTALLER, bytecode, .pkgfs-data
    assert _scripts(project) == scripts
    assert os.path.ismount(project.site) is False
    assert (project.venv / "share" / "app" / "config.txt").read_text() == "shipped config\n"
    assert project.run(project.venv / "bin" / "app-cli") == "app-cli ran\n"
    assert project.run(project.venv / "bin" / "app-tool") == "tool ran\n"


def test_imports_pip_and_bytecode_used(project: Env) -> None:
    project.pkgfs("materialize", project.venv)
    site = project.site
    before = {p: p.stat().st_mtime_ns for p in site.rglob("*.pyc")}
    assert before, "the store's bytecode is written"
    ran = subprocess.run(
        [project.python, "-v", "-c", "import app, app.sub.mod, ns.a, ns.b; print(app.sub.mod.X)"],
        capture_output=True, text=True, check=True, cwd=project.project, env=project.env,
    )  # fmt: skip
    assert ran.stdout == "sub\n"
    loaded = {Path(p) for p in PYC_LOADED.findall(ran.stderr) if p.startswith(str(site))}
    for module in (
        "app/__pycache__/__init__",
        "app/sub/__pycache__/mod",
        "ns/a/__pycache__/__init__",
    ):
        assert site / f"{module}.cpython-311.pyc" in loaded, ran.stderr
    assert f"# wrote '{site}" not in ran.stderr  # nothing compiled again
    assert {p: p.stat().st_mtime_ns for p in site.rglob("*.pyc")} == before
    listed = {(p["name"], p["version"]) for p in json.loads(project.pip("list", "--format=json"))}
    assert listed == {("app", "1.0"), ("nsa", "1.0"), ("nsb", "1.0")}
    assert "No broken requirements found" in project.pip("check")
    installer = next(site.glob("app-1.0.dist-info")) / "INSTALLER"
    assert installer.read_text() == "pkgfs\n"


def test_recorded_as_an_environment(project: Env) -> None:
    project.pkgfs("materialize", project.venv, "--json")
    rows = json.loads(project.pkgfs("env", "list", "--json").stdout)
    assert [(r["mountpoint"], r["state"], r["materialized"]) for r in rows] == [
        (str(project.site), "materialized", "clone")
    ]
    assert project.pkgfs("env", "list").stdout.startswith(
        f"materialized {project.site}  3 packages"
    )
    gc = json.loads(project.pkgfs("store", "gc", "--dry-run", "--json").stdout)
    assert gc["wheels"] == []
    assert gc["views"] == 0
    # Nothing to mount again: mount --all leaves it alone.
    assert project.pkgfs("mount", "--all").returncode == 0
    assert not os.path.ismount(project.site)
    # The healthcheck knows it: healthy (real files, no daemon), by name or among all.
    (row,) = json.loads(project.pkgfs("status", project.venv, "--json").stdout)
    assert (row["mountpoint"], row["state"], row["lock_state"]) == (
        str(project.site),
        "materialized",
        "current",
    )
    assert project.pkgfs("status").stdout.startswith(f"materialized {project.site}  3 packages")
    (project.project / "pylock.toml").write_text(
        (project.project / "pylock.toml").read_text() + "\n# changed\n"
    )
    changed = project.pkgfs("status", "--json", check=False)
    assert changed.returncode == 1  # its lock is no longer what it was made from
    assert json.loads(changed.stdout)[0]["lock_state"] == "changed"


def test_status_says_a_materialized_venv_that_is_gone_is_orphaned(project: Env) -> None:
    """As for a mount: a venv deleted (or made anew) is no healthy environment."""
    project.pkgfs("materialize", project.venv)
    shutil.rmtree(project.venv)
    gone = project.pkgfs("status", "--json", check=False)
    assert gone.returncode == 1
    assert [(r["mountpoint"], r["state"]) for r in json.loads(gone.stdout)] == [
        (str(project.site), "orphaned")
    ]
    said = project.pkgfs("status", check=False)
    assert said.stdout.startswith(f"orphaned {project.site}  3 packages, real files")
    assert "pkgfs materialize it again, or pkgfs env rm it" in said.stderr


def test_again_with_a_changed_lock_replaces_the_tree(project: Env, tmp_path: Path) -> None:
    project.pkgfs("materialize", project.venv)
    edited = project.site / "app" / "__init__.py"
    edited.write_text("VALUE = 2\n")
    lock = project.project / "pylock.toml"
    text = lock.read_text()
    lock.write_text(text.split('[[packages]]\nname = "nsb"')[0])  # nsb left out
    result = project.pkgfs("materialize", project.venv)
    assert result.stdout.startswith("materialized 2 packages")
    assert not (project.site / "ns" / "b").exists()
    assert project.run(project.python, "-c", "import app; print(app.VALUE)") == "1\n"
    assert not [p for p in project.site.parent.iterdir() if p.name.startswith(".pkgfs-")]


def test_refuses_what_is_not_its_own_and_changes_nothing(project: Env) -> None:
    (project.site / "pip").mkdir()
    (project.site / "pip" / "__init__.py").write_text("")
    before = snapshot(project.venv)
    result = project.pkgfs("materialize", project.venv, check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("pkgfs: error:")]
    assert len(errors) == 1
    assert "not empty (pip), and not materialized by pkgfs" in errors[0]
    assert snapshot(project.venv) == before
    assert json.loads(project.pkgfs("env", "list", "--json").stdout) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the root case; a user's is in test_readonly")
def test_no_hardlinks_as_root(project: Env) -> None:
    # Root writes through mode 0444: a hardlinked file would let an edit change the store.
    result = project.pkgfs("materialize", project.venv, "--link-mode", "hardlink", check=False)
    assert result.returncode == 1
    assert "--link-mode hardlink as root" in result.stderr
    assert not any(project.site.iterdir())


@pytest.fixture
def xfs(tmp_path: Path) -> Iterator[Path]:
    """A loop-mounted XFS image with reflink, where clones share the store's blocks."""
    if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None:
        pytest.skip("needs root and mkfs.xfs (xfsprogs, which .ci/setup installs)")
    image = tmp_path / "xfs.img"
    with open(image, "wb") as f:
        f.truncate(320 * 1024 * 1024)  # XFS's smallest
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", image], check=True)
    where = tmp_path / "xfs"
    where.mkdir()
    subprocess.run(["mount", "-o", "loop", image, where], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", where], check=False)


def test_clones_where_the_filesystem_can(xfs: Path) -> None:
    env = make_project(xfs / "project", environ_for(xfs))
    result = env.pkgfs("materialize", env.venv, "--json")
    report = json.loads(result.stdout)
    assert report["reflinked"] > 0
    assert report["copied"] == 0  # every object cloned; RECORDs and INSTALLERs generated
    module = env.site / "app" / "__init__.py"
    module.write_text("VALUE = 3\n")  # copy-on-write: the store's object is untouched
    assert env.run(env.python, "-c", "import app; print(app.VALUE)") == "3\n"
    assert env.pkgfs("store", "verify").stdout.startswith("ok: ")
    copied = json.loads(env.pkgfs("materialize", env.venv, "--link-mode", "copy", "--json").stdout)
    assert copied["reflinked"] == 0
    assert copied["copied"] == report["reflinked"]


@needs_fuse
def test_a_mounts_overlay_is_said_not_carried_and_diff_says_there_is_none(project: Env) -> None:
    project.pkgfs("mount", project.site)
    (project.site / "app" / "local.py").write_text("EDITED = 1\n")  # a local edit
    project.pkgfs("unmount", project.site)
    result = project.pkgfs("materialize", project.venv)
    (warning,) = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warning.startswith(f"pkgfs: warning: {project.site}: the ")
    assert "are not in the materialized files" in warning
    assert not (project.site / "app" / "local.py").exists()
    diff = project.pkgfs("diff", project.venv, check=False)
    assert diff.returncode == 1
    assert diff.stderr == (
        f"pkgfs: error: {project.venv}: materialized as real files (pkgfs materialize): there"
        " is no overlay; its files are the environment\n"
    )
