"""Real mounts: a venv whose site-packages pkgfs mounts from a lock of test wheels."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkgfs.vfs.env.view import VIEW_MTIME
from tests.conftest import PKGFS
from tests.mountkit import (
    Env,
    digest_tree,
    environ_for,
    fails,
    force_unmount,
    make_project,
    needs_fuse,
)
from tests.wheelmaker import WheelMaker

pytestmark = needs_fuse


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    return environ_for(tmp_path)


@pytest.fixture
def project(tmp_path: Path, base_env: dict[str, str]) -> Iterator[Env]:
    env = make_project(tmp_path / "project", base_env)
    try:
        yield env
    finally:
        force_unmount(env.site)


@pytest.fixture
def mounted(project: Env) -> Env:
    result = project.pkgfs("mount", project.site)
    assert result.stdout.startswith(f"mounted 3 packages at {project.site}")
    assert result.stderr.splitlines()[0] == f"pkgfs: using {project.project / 'pylock.toml'}"
    return project


# -- the view -------------------------------------------------------------------------------


def test_imports_scripts_and_metadata(mounted: Env) -> None:
    out = mounted.run(
        mounted.python,
        "-c",
        "import app, app.sub.mod, ns.a, ns.b; print(app.VALUE, app.sub.mod.X, ns.a.A, ns.b.B)",
    )
    assert out == "1 sub a b\n"
    assert mounted.run(mounted.venv / "bin" / "app-cli") == "app-cli ran\n"
    assert mounted.run(mounted.venv / "bin" / "app-tool") == "tool ran\n"
    assert (mounted.venv / "bin" / "app-tool").read_text().startswith(f"#!{mounted.python}\n")
    names = mounted.run(
        mounted.python, "-c",
        "import importlib.metadata as m; print(sorted((d.name, d.version) for d in m.distributions()))",
    )  # fmt: skip
    assert names == "[('app', '1.0'), ('nsa', '1.0'), ('nsb', '1.0')]\n"
    installer = (mounted.site / "app-1.0.dist-info" / "INSTALLER").read_text()
    assert installer == "pkgfs\n"


def test_pip_sees_exactly_the_locked_distributions(mounted: Env) -> None:
    listed = json.loads(mounted.pip("list", "--format=json"))
    assert sorted((p["name"], p["version"]) for p in listed) == [
        ("app", "1.0"),
        ("nsa", "1.0"),
        ("nsb", "1.0"),
    ]
    assert "No broken requirements found." in mounted.pip("check")
    shown = mounted.pip("show", "-f", "app")
    assert "Location: " + str(mounted.site) in shown
    assert "  app/sub/mod.py" in shown
    assert "  ../../../bin/app-cli" in shown
    uv = Path(sys.executable).parent / "uv"
    listed_by_uv = json.loads(
        mounted.run(uv, "pip", "list", "--python", mounted.python, "--format", "json")
    )
    assert sorted((p["name"], p["version"]) for p in listed_by_uv) == [
        ("app", "1.0"),
        ("nsa", "1.0"),
        ("nsb", "1.0"),
    ]


def test_two_wheels_shipping_one_path_mount_as_pip_installs_them(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    # Same size, different bytes: a pyc of the wrong source would pass Python's check.
    extra: dict[str, dict[str, bytes | str]] = {
        "zeta": {"shared/__init__.py": "", "shared/util.py": "WHO = 'zeta'\n"},
        "alpha": {"shared/__init__.py": "", "shared/util.py": "WHO = 'alfa'\n"},
    }
    env = make_project(tmp_path / "project", base_env, extra=extra)
    try:
        mounted = env.pkgfs("mount", env.site)
        (warning,) = [line for line in mounted.stderr.splitlines() if "both ship" in line]
        assert "alpha-1.0-py3-none-any.whl" in warning
        assert "zeta-1.0-py3-none-any.whl" in warning
        assert "shared/util.py" in warning
        # The wheel whose name sorts last is the later install: its module and its bytecode.
        assert env.run(env.python, "-c", "import shared.util as u; print(u.WHO)") == "zeta\n"
        pyc = env.site / "shared" / "__pycache__" / f"util.{sys.implementation.cache_tag}.pyc"
        assert b"zeta" in pyc.read_bytes()
        assert "No broken requirements found." in env.pip("check")
        listed = json.loads(env.pip("list", "--format=json"))
        assert {"alpha", "zeta"} <= {p["name"] for p in listed}
    finally:
        force_unmount(env.site)


def _another_python() -> str | None:
    """An interpreter of another Python version than the suite's, if the machine has one."""
    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [f"python3.{minor}" for minor in range(8, 16)]
    candidates += sorted(str(p) for p in Path("/root/.pyenv/versions").glob("3.*/bin/python3"))
    for candidate in candidates:
        found = shutil.which(candidate)
        if found is None:
            continue
        version = subprocess.run(
            [found, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
            capture_output=True, text=True, check=False, timeout=30,
        ).stdout.strip()  # fmt: skip
        if version and version != mine:
            return found
    return None


def test_a_python_that_is_not_the_venvs_is_refused(project: Env) -> None:
    other = _another_python()
    if other is None:
        pytest.skip("needs a second Python version on this machine")
    refused = project.pkgfs("mount", project.site, "--python", other, check=False)
    assert refused.returncode != 0
    (line,) = refused.stderr.splitlines()
    assert "--python" in line
    assert str(project.venv) in line
    assert "-m venv" in line  # what to do
    assert not os.path.ismount(project.site)
    assert project.status() == []
    # The venv's own interpreter, named explicitly, is the venv's.
    project.pkgfs("mount", project.site, "--python", project.python)
    assert os.path.ismount(project.site)


def test_attributes_are_honest_and_stable(mounted: Env) -> None:
    path = mounted.site / "app" / "data.txt"
    info = path.stat()
    assert info.st_size == len("lower data\n")
    assert info.st_mtime == VIEW_MTIME
    assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())
    assert oct(info.st_mode & 0o777) == "0o644"
    assert os.statvfs(mounted.site).f_bsize > 0
    inode = info.st_ino
    mounted.pkgfs("unmount", mounted.site)
    mounted.pkgfs("mount", mounted.site)
    assert path.stat().st_ino == inode


# -- the overlay ----------------------------------------------------------------------------


def test_edits_land_in_the_overlay_and_never_in_the_store(mounted: Env, tmp_path: Path) -> None:
    store = Path(mounted.env["PKGFS_STORE"])
    objects_before = digest_tree(store / "objects-v1")
    site = mounted.site
    with open(site / "app" / "data.txt", "a") as f:
        f.write("edited\n")
    (site / "app" / "sub" / "mod.py").unlink()
    (site / "app" / "new.py").write_text("NEW = 1\n")
    (site / "app" / "made").mkdir()
    os.replace(site / "app" / "new.py", site / "app" / "__init__.py")  # rename over a lower file
    shutil.rmtree(site / "ns" / "b")
    (site / "ns" / "b").mkdir()  # a lower directory replaced: opaque
    (site / "ns" / "b" / "fresh.py").write_text("")

    assert (site / "app" / "data.txt").read_text() == "lower data\nedited\n"
    assert sorted(os.listdir(site / "ns" / "b")) == ["fresh.py"]
    assert mounted.run(mounted.python, "-c", "import app; print(app.NEW)") == "1\n"
    diff = json.loads(mounted.pkgfs("diff", site, "--json").stdout)
    assert {(d["path"], d["change"]) for d in diff} >= {
        ("app/data.txt", "modified"),
        ("app/sub/mod.py", "deleted"),
        ("app/made", "added"),
        ("app/__init__.py", "modified"),
        ("ns/b", "replaced"),
        ("ns/b/fresh.py", "added"),
    }
    assert mounted.status()[0]["changes"] == len(diff)
    # A name with a newline is one line of the text diff, quoted as git quotes it.
    (site / "two\nlines").write_text("")
    text = mounted.pkgfs("diff", site).stdout.splitlines()
    assert 'A "two\\nlines"' in text
    assert "M app/data.txt" in text
    (site / "two\nlines").unlink()
    assert mounted.pkgfs("store", "verify").returncode == 0
    assert digest_tree(store / "objects-v1") == objects_before

    # Another environment of the same lock sees pristine files.
    other = make_project(tmp_path / "other", mounted.env)
    try:
        other.pkgfs("mount", other.site)
        assert (other.site / "app" / "data.txt").read_text() == "lower data\n"
        assert (other.site / "app" / "sub" / "mod.py").exists()
    finally:
        force_unmount(other.site)


def test_reset_some_then_all(mounted: Env) -> None:
    site = mounted.site
    original = digest_tree(site)
    (site / "app" / "data.txt").write_text("changed\n")
    (site / "ns" / "a" / "__init__.py").unlink()
    (site / "extra.txt").write_text("x")

    (site / "app" / "sub" / "mod.py").write_text("X = 'changed'\n")
    mounted.pkgfs("reset", site, "app/sub")  # relative to the mountpoint
    assert (site / "app" / "sub" / "mod.py").read_text() == "X = 'sub'\n"
    assert (site / "app" / "data.txt").read_text() == "changed\n"
    mounted.pkgfs("reset", site, str(site / "app"))  # or absolute
    assert (site / "app" / "data.txt").read_text() == "lower data\n"
    assert not (site / "ns" / "a" / "__init__.py").exists()
    mounted.pkgfs("reset", site)
    assert digest_tree(site) == original
    assert mounted.pkgfs("diff", site).stdout == ""


def test_reset_of_a_path_with_no_change_is_refused_and_resets_nothing(mounted: Env) -> None:
    # A path relative to the current directory (the project), as a shell user types it,
    # or a typo, named no change: reset said "reset ..." and exited 0, having done nothing.
    site = mounted.site
    (site / "app" / "data.txt").write_text("changed\n")
    (site / "extra.txt").write_text("x")
    before = mounted.pkgfs("diff", site).stdout
    from_project = str(site.relative_to(mounted.project) / "extra.txt")
    for path in (from_project, "app/dta.txt"):
        refused = mounted.pkgfs("reset", site, "extra.txt", path, check=False)
        assert refused.returncode == 1
        (line,) = refused.stderr.splitlines()
        assert line == (
            f"pkgfs: error: {path}: no change there at {site}, nothing was reset (PATHs are"
            f" relative to the mountpoint; pkgfs diff {site} lists the changes)"
        )
        assert mounted.pkgfs("diff", site).stdout == before  # extra.txt was not reset
    mounted.pkgfs("reset", site, "extra.txt", "app")
    assert mounted.pkgfs("diff", site).stdout == ""


def test_reset_of_the_mountpoint_itself_resets_everything(mounted: Env) -> None:
    site = mounted.site
    original = digest_tree(site)
    for spelling in (".", str(site), ""):
        (site / "app" / "data.txt").write_text("changed\n")
        (site / "extra.txt").write_text("x")
        mounted.pkgfs("reset", site, spelling)
        assert mounted.pkgfs("diff", site).stdout == "", spelling
        assert digest_tree(site) == original


def test_python_writes_bytecode_into_the_overlay(project: Env) -> None:
    # Without shared bytecode, Python compiles and writes .pyc files as in any venv:
    # a temporary file, then os.replace, both through the overlay.
    project.pkgfs("mount", project.site, "--no-compile")
    project.run(project.python, "-c", "import app.sub.mod")
    cached = (
        project.site / "app" / "sub" / "__pycache__" / f"mod.{sys.implementation.cache_tag}.pyc"
    )
    assert cached.is_file()
    diff = project.pkgfs("diff", project.site).stdout.splitlines()
    assert f"A app/sub/__pycache__/mod.{sys.implementation.cache_tag}.pyc" in diff


def test_edits_survive_unmount_and_remount(mounted: Env) -> None:
    (mounted.site / "app" / "data.txt").write_text("kept\n")
    mounted.pkgfs("unmount", mounted.site)
    assert not (mounted.site / "app").exists()
    assert not (mounted.venv / "bin" / "app-cli").exists()  # scripts go with the mount
    mounted.pkgfs("mount", mounted.site)
    assert (mounted.site / "app" / "data.txt").read_text() == "kept\n"


def test_kill_9_then_recover(mounted: Env) -> None:
    with open(mounted.site / "app" / "data.txt", "w") as f:
        f.write("written before the kill\n")
    (row,) = mounted.status()
    os.kill(int(str(row["pid"])), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while mounted.status()[0]["state"] != "stale" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mounted.status()[0]["state"] == "stale"
    with pytest.raises(OSError, match="Transport endpoint is not connected"):
        os.listdir(mounted.site)

    recovered = mounted.pkgfs("mount", mounted.site)
    assert "cleared a stale mount" in recovered.stderr
    assert (mounted.site / "app" / "data.txt").read_text() == "written before the kill\n"
    assert mounted.status()[0]["state"] == "ok"

    os.kill(int(str(mounted.status()[0]["pid"])), signal.SIGKILL)
    time.sleep(0.1)
    assert "(it was stale)" in mounted.pkgfs("unmount", mounted.site).stdout
    assert mounted.status() == []


def test_data_files_are_linked_not_copied(mounted: Env) -> None:
    share = mounted.venv / "share"
    assert share.is_symlink()
    assert os.readlink(share) == str(mounted.site / ".pkgfs-data" / "share")
    config = share / "app" / "config.txt"
    assert config.read_text() == "shipped config\n"
    config.write_text("edited config\n")  # through the link: into the overlay
    assert (
        "M .pkgfs-data/share/app/config.txt"
        in mounted.pkgfs("diff", mounted.site).stdout.splitlines()
    )
    assert mounted.pkgfs("store", "verify").returncode == 0
    assert "  ../../../share/app/config.txt" in mounted.pip("show", "-f", "app")
    mounted.pkgfs("unmount", mounted.site)
    assert not share.is_symlink()
    assert not share.exists()


def test_several_processes_import_at_once(mounted: Env) -> None:
    code = (
        "import app, app.sub.mod, ns.a, ns.b, json; print(json.dumps([app.VALUE, app.sub.mod.X]))"
    )
    procs = [
        subprocess.Popen(
            [mounted.python, "-c", code], stdout=subprocess.PIPE, text=True, env=mounted.env
        )
        for _ in range(8)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8
    assert set(outputs) == {'[1, "sub"]\n'}


def test_pip_install_and_uninstall_stay_in_this_env(mounted: Env, tmp_path: Path) -> None:
    extra = WheelMaker(name="extra", files={"extra/__init__.py": "E = 1\n"}).build(tmp_path)
    mounted.pip("install", "--no-index", "--no-deps", str(extra))
    assert mounted.run(mounted.python, "-c", "import extra; print(extra.E)") == "1\n"
    mounted.pip("uninstall", "-y", "nsb")
    listed = {p["name"] for p in json.loads(mounted.pip("list", "--format=json"))}
    assert listed == {"app", "nsa", "extra"}
    diff = mounted.pkgfs("diff", mounted.site).stdout.splitlines()
    assert "A extra/__init__.py" in diff
    assert "D nsb-1.0.dist-info" in diff
    assert mounted.pkgfs("store", "verify").returncode == 0


def test_reset_puts_bin_back_as_the_lock_has_it(mounted: Env, tmp_path: Path) -> None:
    # bin/ is outside the mount: reset dropped the packages pip installed but left their
    # scripts (broken: "No module named ..."), and restored the packages pip uninstalled
    # without their scripts.
    tool = WheelMaker(
        name="tool",
        files={"tool.py": "def main():\n    print('tool ran')\n"},
        entry_points="[console_scripts]\ntool-cli = tool:main\n",
    ).build(tmp_path)
    mounted.pip("install", "--no-index", "--no-deps", str(tool))
    assert mounted.run(mounted.venv / "bin" / "tool-cli") == "tool ran\n"
    mounted.pip("uninstall", "-y", "app")
    assert not (mounted.venv / "bin" / "app-cli").exists()
    (mounted.venv / "bin" / "mine").write_text("#!/bin/sh\n")  # the user's own: stays

    mounted.pkgfs("reset", mounted.site)
    assert mounted.pkgfs("diff", mounted.site).stdout == ""
    assert not (mounted.venv / "bin" / "tool-cli").exists()
    assert mounted.run(mounted.venv / "bin" / "app-cli") == "app-cli ran\n"
    assert (mounted.venv / "bin" / "mine").exists()
    # And unmount still removes exactly the lock's scripts.
    mounted.pkgfs("unmount", mounted.site)
    assert not (mounted.venv / "bin" / "app-cli").exists()
    assert (mounted.venv / "bin" / "mine").exists()


def test_status_says_orphaned_when_the_venv_is_deleted_or_made_anew(mounted: Env) -> None:
    # rm -rf .venv while mounted (it fails on the mountpoint, having removed the rest),
    # then a new venv at the same path: status said "ok" of a mount serving no venv.
    shutil.rmtree(mounted.venv, ignore_errors=True)
    assert not (mounted.venv / "pyvenv.cfg").exists()

    def state() -> list[object]:
        status = mounted.pkgfs("status", "--json", check=False)
        assert status.returncode == 1
        return [r["state"] for r in json.loads(status.stdout)]

    assert state() == ["orphaned"]  # the venv gone
    venv.create(mounted.venv, with_pip=False)
    assert state() == ["orphaned"]  # a new venv at its path
    mounted.pkgfs("unmount", mounted.site)
    again = mounted.pkgfs("mount", mounted.site)
    assert "is a new venv" in again.stderr
    assert mounted.pkgfs("status").returncode == 0


def test_foreground_unmounts_on_sigterm(project: Env) -> None:
    with subprocess.Popen(
        [*PKGFS, "mount", "--foreground", str(project.site)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=project.env, cwd=project.project,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("mounted 3 packages")
        deadline = time.monotonic() + 10
        while not os.path.ismount(project.site) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (project.site / "app" / "__init__.py").read_text() == "VALUE = 1\n"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert not os.path.ismount(project.site)


# -- faults -----------------------------------------------------------------------------------


def test_missing_mountpoint(project: Env, tmp_path: Path) -> None:
    error = fails(project, "mount", tmp_path / "nowhere")
    assert error == f"pkgfs: error: {tmp_path / 'nowhere'}: no such directory"


def test_mountpoint_not_a_directory(project: Env, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    error = fails(project, "mount", tmp_path / "file", "--lock", project.project / "pylock.toml")
    assert error == f"pkgfs: error: {tmp_path / 'file'}: not a directory"


def test_mounting_again_with_the_same_lock_does_nothing(mounted: Env) -> None:
    # `uv lock && pkgfs mount .venv` in a script, with the lock unchanged: no error.
    again = mounted.pkgfs("mount", mounted.site)
    lock = mounted.project / "pylock.toml"
    assert again.stdout == f"{mounted.site}: already mounted, up to date with {lock}\n"
    assert mounted.run(mounted.python, "-c", "import app; print(app.VALUE)") == "1\n"


def test_no_lock(project: Env) -> None:
    (project.project / "pylock.toml").unlink()
    error = fails(project, "mount", project.site)
    assert (
        error
        == f"pkgfs: error: {project.project}: no pylock.toml, uv.lock or requirements.txt here: pass --lock FILE"
    )
    assert not os.path.ismount(project.site)


def test_offline_with_wheels_missing(project: Env) -> None:
    lock = project.project / "pylock.toml"
    lock.write_text(lock.read_text().replace('path = "wheels/', 'url = "http://127.0.0.1:9/'))
    error = fails(project, "mount", project.site, "--offline")
    assert "offline, and 3 wheels are not in the store" in error
    assert not os.path.ismount(project.site)


def test_a_file_where_another_wheel_has_a_directory_is_refused(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    # Two files at one path are both installed (the later wins); a file where another wheel
    # has a directory cannot be served at all.
    env = make_project(
        tmp_path / "conflict", base_env, extra={"rival": {"app/sub": "a file, not a package\n"}}
    )
    try:
        error = fails(env, "mount", env.site)
        assert error.startswith("pkgfs: error: path conflict: app/sub")
        assert "rival-1.0-py3-none-any.whl" in error
        assert not os.path.ismount(env.site)
    finally:
        force_unmount(env.site)


def test_unmount_when_not_mounted(project: Env) -> None:
    error = fails(project, "unmount", project.site)
    assert error == f"pkgfs: error: {project.site}: not mounted"
