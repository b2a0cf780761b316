"""Environments follow their lock (issue 13, cases 1 and 2): a mounted environment whose
uv.lock changed switches live on ``pkgfs mount``, its overlay reconciled; ``pkgfs rollback``
switches back; a switch loses no import of a process running meanwhile, and a switch killed
half way leaves one view served. Real uv locks of real wheels, real mounts, real pip and uv
changing the overlay."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkgfs.vfs.env.state import MountRecord, mount_dir
from pkgfs.vfs.fuse.wire import ask
from tests.conftest import PKGFS
from tests.mountkit import Env, environ_for, force_unmount, needs_fuse
from tests.wheelmaker import WheelMaker

pytestmark = needs_fuse

UV = Path(sys.executable).with_name("uv")
VIEW = (
    "import importlib.metadata as m, importlib.util as u, alpha;"
    " print(alpha.V, m.version('alpha'), u.find_spec('gamma') is not None)"
)


def _wheel(directory: Path, name: str, version: str, **files: str) -> None:
    scripts = f"[console_scripts]\n{name}-cli = {name}:main\n"
    body = {f"{name}/__init__.py": f"V = {version!r}\ndef main() -> None:\n    print(V)\n"}
    body |= {f"{name}/{module}.py": text for module, text in files.items()}
    WheelMaker(name=name, version=version, files=body, entry_points=scripts).build(directory)


class Project(Env):
    """A uv project (no package of its own) locked by a real ``uv lock`` against a
    find-links directory of test wheels, and its venv."""

    wheels: Path

    def lock(self, *dependencies: str, more: str = "") -> None:
        """Write pyproject.toml (``more`` appended: dependency groups) and lock it."""
        (self.project / "pyproject.toml").write_text(
            '[project]\nname = "proj"\nversion = "0.1"\nrequires-python = ">=3.9"\n'
            f"dependencies = {json.dumps(list(dependencies))}\n[tool.uv]\npackage = false\n" + more
        )
        subprocess.run(
            [UV, "lock", "--offline", "--no-index", "--find-links", self.wheels,
             "--python", sys.executable],
            cwd=self.project, env=self.env, capture_output=True, check=True,
        )  # fmt: skip

    def imports(self) -> str:
        return self.run(self.python, "-c", VIEW).strip()


@pytest.fixture
def uvproject(tmp_path: Path) -> Iterator[Project]:
    env = environ_for(tmp_path)
    env |= {"UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_NO_CONFIG": "1"}
    env["PIP_CONFIG_FILE"] = os.devnull
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "alpha", "1.0", same="S = 1\n")
    _wheel(wheels, "alpha", "1.5", same="S = 1\n")
    _wheel(wheels, "beta", "1.0")
    _wheel(wheels, "gamma", "1.0")
    _wheel(wheels, "delta", "1.0")
    _wheel(wheels, "delta", "1.1")
    pip_only = tmp_path / "pip-only"  # what a user pip-installs, never locked
    pip_only.mkdir()
    _wheel(pip_only, "alpha", "2.0", same="S = 1\n", extra="E = 2\n")
    root = tmp_path / "project"
    root.mkdir()
    venv.create(root / ".venv", with_pip=False)
    project = Project(root, root / ".venv", env)
    project.wheels = wheels
    try:
        yield project
    finally:
        force_unmount(project.site)


# -- case 1: uv lock adds a package ---------------------------------------------------------


def test_uv_lock_adds_a_package_and_the_mounted_env_follows(uvproject: Project) -> None:
    p = uvproject
    p.lock("alpha==1.0", "beta")
    p.pkgfs("mount", p.site)
    assert p.imports() == "1.0 1.0 False"
    p.lock("alpha==1.0", "beta", "gamma")
    unhealthy = p.pkgfs("status", check=False)  # the lock changed: exit 1, and what to do
    assert unhealthy.returncode == 1
    assert f"pkgfs mount {p.site} switches it (live)" in unhealthy.stderr
    synced = p.pkgfs("sync")  # gets the wheels, and says the one command that switches
    assert f"pkgfs mount {p.site} switches it" in synced.stderr

    switched = p.pkgfs("mount", p.site)
    assert switched.stdout == (
        f"switched {p.site} to the new uv.lock: +1 -0 ~0 packages (+gamma 1.0)\n"
    )
    assert p.imports() == "1.0 1.0 True"
    assert p.run(p.venv / "bin" / "gamma-cli") == "1.0\n"  # the venv's scripts follow
    status = p.pkgfs("status", "--json")  # exit 0: healthy
    (row,) = json.loads(status.stdout)
    assert (row["state"], row["lock_state"], row["packages"]) == ("ok", "current", 3)
    assert row["rollback"] == 2
    assert "already mounted, up to date" in p.pkgfs("mount", p.site).stdout  # nothing new


def test_other_groups_asked_of_a_mounted_env_switch_it(uvproject: Project) -> None:
    p = uvproject
    p.lock("alpha==1.0", more='[dependency-groups]\ndocs = ["gamma"]\n')
    p.pkgfs("mount", p.site)
    assert p.imports() == "1.0 1.0 False"
    docs = p.pkgfs("mount", p.site, "--group", "docs")
    assert docs.stdout == f"switched {p.site} to --group docs: +1 -0 ~0 packages (+gamma 1.0)\n"
    assert p.imports() == "1.0 1.0 True"
    (row,) = json.loads(p.pkgfs("status", "--json").stdout)
    assert (row["selection"], row["packages"], row["lock_state"]) == ("--group docs", 2, "current")
    plain = p.pkgfs("mount", p.site)
    assert plain.stdout.startswith(f"switched {p.site} to the default groups: +0 -1 ~0")
    assert p.imports() == "1.0 1.0 False"


# -- case 2: pip and uv changed the overlay, then the lock changed ---------------------------


@pytest.mark.parametrize("how", ["switch", "remount", "keep-overlay"])
def test_packages_pip_and_uv_changed_give_way_to_the_new_lock(
    uvproject: Project, tmp_path: Path, how: str
) -> None:
    p = uvproject
    p.lock("alpha==1.0", "beta", "gamma", "delta==1.0")
    p.pkgfs("mount", p.site)
    p.pip("install", "--no-index", "--find-links", str(tmp_path / "pip-only"), "-U", "alpha==2.0")
    subprocess.run(
        [UV, "pip", "uninstall", "--python", p.python, "beta"],
        env=p.env, capture_output=True, check=True,
    )  # fmt: skip
    (p.site / "gamma" / "__init__.py").write_text("V = 'my gamma'\n")  # unchanged by the lock
    (p.site / "delta" / "__init__.py").write_text("V = 'my delta'\n")  # changed by the lock
    assert p.imports() == "2.0 2.0 True"
    shadows = p.pkgfs("diff", p.site).stderr.splitlines()  # what shadows the lock, at any time
    assert shadows == [
        "pkgfs: alpha 2.0 is installed in the overlay, over the locked alpha 1.0",
        "pkgfs: beta is uninstalled in the overlay (the locked beta 1.0)",
    ]
    p.lock("alpha==1.5", "beta", "gamma", "delta==1.1")

    if how == "remount":
        p.pkgfs("unmount", p.site)
    extra = ["--keep-overlay"] if how == "keep-overlay" else []
    result = p.pkgfs("mount", p.site, *extra)

    head = f"pkgfs: {p.site}: "
    note_of = {line[len(head) :] for line in result.stderr.splitlines() if line.startswith(head)}
    aside = [n for n in note_of if n.startswith("your edit of delta/__init__.py is set aside")]
    assert len(aside) == 1, result.stderr
    kept_edit = Path(aside[0].split(" set aside in ")[1].split(": ")[0])
    assert kept_edit.read_text() == "V = 'my delta'\n"
    assert p.run(p.python, "-c", "import delta, gamma; print(delta.V, gamma.V)") == "1.1 my gamma\n"
    if how == "keep-overlay":
        warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
        assert len(warnings) == 2, result.stderr  # alpha 2.0 kept, beta still uninstalled
        assert (
            "alpha 2.0 (installed in the overlay) is KEPT over the locked alpha 1.5"
            in (warnings[0])
        )
        assert p.imports() == "2.0 2.0 True"
        return
    assert "alpha 2.0 (installed in the overlay) is dropped from the overlay: the lock pins" \
        " alpha 1.5" in note_of, result.stderr  # fmt: skip
    assert "beta (uninstalled in the overlay) is back: the lock pins beta 1.0" in note_of
    assert p.imports() == "1.5 1.5 True"  # the locked version imports, and says so
    assert p.run(p.python, "-c", "import beta; print(beta.V)") == "1.0\n"
    extra_gone = p.run(
        p.python, "-c", "import importlib.util as u; print(u.find_spec('alpha.extra'))"
    )
    assert extra_gone == "None\n"
    # What shadows the lock now: only the edit carried over (and the bytecode Python wrote
    # for it when the test imported it).
    assert p.pkgfs("diff", p.site).stdout.splitlines() == [
        "M gamma/__init__.py",
        f"M gamma/__pycache__/__init__.{sys.implementation.cache_tag}.pyc",
    ]
    assert p.pkgfs("status", check=False).returncode == 0


# -- rollback -------------------------------------------------------------------------------


def test_rollback_returns_to_the_previous_environment_and_back(uvproject: Project) -> None:
    p = uvproject
    p.lock("alpha==1.0", "beta")
    p.pkgfs("mount", p.site)
    nothing = p.pkgfs("rollback", p.site, check=False)
    assert nothing.returncode == 1
    assert "nothing to roll back to" in nothing.stderr
    init, same = p.site / "alpha" / "__init__.py", p.site / "alpha" / "same.py"
    # Read now, so the kernel has the pages, the attributes and the listing cached.
    assert init.read_text().startswith("V = '1.0'")
    assert "gamma" not in os.listdir(p.site)
    numbers = (init.stat().st_ino, same.stat().st_ino)
    p.lock("alpha==1.5", "beta", "gamma")
    p.pkgfs("mount", p.site)
    assert p.imports() == "1.5 1.5 True"
    # Nothing stale: the new bytes, the new listing; a changed file has a new inode number,
    # an unchanged one keeps its own.
    assert init.read_text().startswith("V = '1.5'")
    assert "gamma" in os.listdir(p.site)
    assert init.stat().st_ino != numbers[0]
    assert same.stat().st_ino == numbers[1]

    back = p.pkgfs("rollback", p.site)
    assert back.stdout == (
        f"rolled {p.site} back to its previous environment: +0 -1 ~1 packages"
        " (-gamma 1.0, alpha 1.5 -> 1.0)\n"
    )
    assert p.imports() == "1.0 1.0 False"
    assert not (p.venv / "bin" / "gamma-cli").exists()
    status = p.pkgfs("status", "--json")  # deliberate: healthy, and says so
    (row,) = json.loads(status.stdout)
    assert (row["lock_state"], row["packages"], row["rollback"]) == ("rolled-back", 2, 3)
    (listed,) = json.loads(p.pkgfs("env", "list", "--json").stdout)
    assert listed["lock_state"] == "rolled-back"
    assert listed["previous"]["packages"] == 3

    forward = p.pkgfs("rollback", p.site)  # the one it left is the previous now
    assert "+1 -0 ~1 packages" in forward.stdout
    assert p.imports() == "1.5 1.5 True"
    (row,) = json.loads(p.pkgfs("status", "--json").stdout)
    assert row["lock_state"] == "current"
    p.pkgfs("rollback", p.site)
    p.pkgfs("mount", p.site)  # follows the lock again
    assert p.imports() == "1.5 1.5 True"

    p.pkgfs("unmount", p.site)
    unmounted = p.pkgfs("rollback", p.site, check=False)
    assert unmounted.returncode == 1
    assert "not mounted" in unmounted.stderr


# -- running processes ----------------------------------------------------------------------

LOOP = """
import importlib, json, os, sys
import alpha, alpha.same
held = open(alpha.__file__)  # open before any switch: keeps reading the bytes it opened
stop, ready = sys.argv[1], sys.argv[2]
runs = failures = 0
seen = set()
while not os.path.exists(stop):
    try:
        importlib.invalidate_caches()
        importlib.reload(alpha)
        importlib.reload(alpha.same)
        with open(alpha.__file__) as f:
            assert f.read().startswith("V = "), "a torn read"
        seen.add(alpha.V)
        runs += 1
        if runs == 1:
            open(ready, "w").close()
    except Exception as exc:
        failures += 1
        print(repr(exc), file=sys.stderr)
held.seek(0)
print(json.dumps({"runs": runs, "failures": failures, "seen": sorted(seen),
                  "held": held.read().splitlines()[0]}))
"""


@pytest.mark.parametrize("mode", ["no-open", "open"])
def test_a_switch_under_a_running_import_loop_loses_nothing(
    uvproject: Project, tmp_path: Path, mode: str
) -> None:
    p = uvproject
    if mode == "open":  # the kernel's other mode: OPEN round trips, handles (stock pyfuse3)
        p.env["PKGFS_FUSE_MODE"] = "open"
    p.lock("alpha==1.0", "beta")
    p.pkgfs("mount", p.site)
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    loop = subprocess.Popen(
        [p.python, "-c", LOOP, stop, ready], cwd=p.project, env=p.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        while not ready.exists():
            assert loop.poll() is None, loop.communicate()
            time.sleep(0.05)
        p.lock("alpha==1.5", "beta", "gamma")
        p.pkgfs("mount", p.site)
        p.pkgfs("rollback", p.site)
        p.pkgfs("rollback", p.site)
    finally:
        stop.touch()
        out, err = loop.communicate(timeout=60)
    result = json.loads(out)
    assert result["failures"] == 0, err
    assert result["runs"] > 0
    assert "1.5" in result["seen"]  # the loop saw the new view, without restarting
    assert result["held"] == "V = '1.0'"  # the file it held open: the bytes it opened
    assert p.imports() == "1.5 1.5 True"


def test_a_killed_switch_leaves_one_view_served(uvproject: Project) -> None:
    p = uvproject
    p.lock("alpha==1.5", "beta", "gamma")
    new = (p.project / "uv.lock").read_bytes()
    p.lock("alpha==1.0", "beta")
    old = (p.project / "uv.lock").read_bytes()
    p.pkgfs("mount", p.site)
    p.pkgfs("sync", "--lock", p.project / "uv.lock")
    (p.project / "uv.lock").write_bytes(new)
    p.pkgfs("sync")  # every wheel is in the store: the switches below only switch
    views = {"1.0 1.0 False", "1.5 1.5 True"}
    for delay in (0.0, 0.1, 0.3, 0.6, 1.0, 1.5):  # wherever the kill lands
        lock = new if p.imports().startswith("1.0") else old
        (p.project / "uv.lock").write_bytes(lock)
        command = subprocess.Popen(
            [*PKGFS, "mount", p.site], cwd=p.project, env=p.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(delay)
        command.send_signal(signal.SIGKILL)
        command.wait()
        assert p.imports() in views  # one view or the other, never a mix
        p.pkgfs("mount", p.site, check=False)  # finishes it (or says it is done)
        (row,) = json.loads(p.pkgfs("status", "--json").stdout)
        assert (row["state"], row["lock_state"]) == ("ok", "current")
        assert p.imports() == ("1.5 1.5 True" if lock == new else "1.0 1.0 False")
        assert (p.venv / "bin" / "gamma-cli").exists() == (lock == new)  # and its scripts
        assert (p.venv / "bin" / "alpha-cli").exists()
    p.pkgfs("unmount", p.site)
    # Every script a killed command wrote was recorded first: unmount removes them all.
    assert [name for name in os.listdir(p.venv / "bin") if name.endswith("-cli")] == []


# -- the store: rm, and gc's roots ----------------------------------------------------------


# The command killed at one exact instant: after the daemon switched, before the scripts.
KILLED_AFTER_SWITCH = """
import os, sys
from pkgfs.vfs.cli import main, switch
asked = switch._ask_switch
def ask_then_die(*args, **kwargs):
    asked(*args, **kwargs)
    os.kill(os.getpid(), 9)
switch._ask_switch = ask_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_a_switch_killed_before_its_scripts_leaves_the_next_mount_to_write_them(
    uvproject: Project,
) -> None:
    p = uvproject
    p.lock("alpha==1.0", "beta")
    p.pkgfs("mount", p.site)
    p.lock("alpha==1.5", "beta", "gamma")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_SWITCH, "mount", p.site],
        cwd=p.project, env=p.env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert p.imports() == "1.5 1.5 True"  # the daemon switched
    assert not (p.venv / "bin" / "gamma-cli").exists()  # the command died before the scripts
    again = p.pkgfs("mount", p.site)
    assert "wrote the scripts" in again.stdout
    assert (p.venv / "bin" / "gamma-cli").exists()
    p.pkgfs("unmount", p.site)
    assert [name for name in os.listdir(p.venv / "bin") if name.endswith("-cli")] == []


def test_store_rm_refuses_what_an_environment_uses_and_gc_keeps_the_rollback(
    uvproject: Project,
) -> None:
    p = uvproject
    p.lock("alpha==1.0", "beta")
    p.pkgfs("mount", p.site)
    p.lock("alpha==1.5", "beta")
    p.pkgfs("mount", p.site)
    p.pkgfs("store", "add", p.wheels / "delta-1.0-py3-none-any.whl")

    dry = json.loads(p.pkgfs("store", "gc", "--dry-run", "--json").stdout)
    assert dry["wheels"] == ["delta-1.0-py3-none-any.whl"]  # alpha 1.0: the rollback's

    refused = p.pkgfs("store", "rm", "alpha-1.0-py3-none-any.whl", check=False)
    assert refused.returncode == 1
    (line,) = refused.stderr.splitlines()
    assert line == (
        f"pkgfs: error: alpha-1.0-py3-none-any.whl: the environment at {p.site} can roll back"
        " to it: nothing removed (pkgfs env rm that environment, or --force)"
    )
    used = p.pkgfs("store", "rm", "alpha-1.5-py3-none-any.whl", check=False)
    assert "uses it: nothing removed" in used.stderr
    # The same store named through a symlink is the same store.
    link = p.project.parent / "store-link"
    link.symlink_to(p.env["PKGFS_STORE"])
    through = p.pkgfs("--store", link, "store", "rm", "alpha-1.5-py3-none-any.whl", check=False)
    assert "uses it: nothing removed" in through.stderr
    unknown = p.pkgfs("store", "rm", "nothing-1.0-py3-none-any.whl", check=False)
    assert unknown.returncode == 1
    assert "no stored wheel" in unknown.stderr

    stored = {
        w["filename"]: w["sha256"] for w in json.loads(p.pkgfs("store", "ls", "--json").stdout)
    }
    removed = p.pkgfs("store", "rm", stored["delta-1.0-py3-none-any.whl"])  # by sha256
    assert removed.stdout.splitlines()[0] == "removed delta-1.0-py3-none-any.whl"
    assert removed.stdout.splitlines()[1].startswith("removed 1 wheels, ")
    forced = p.pkgfs("store", "rm", "--force", "alpha-1.0-py3-none-any.whl")
    assert "removed alpha-1.0-py3-none-any.whl" in forced.stdout
    listed = {w["filename"] for w in json.loads(p.pkgfs("store", "ls", "--json").stdout)}
    assert listed == {"alpha-1.5-py3-none-any.whl", "beta-1.0-py3-none-any.whl"}
    verify = p.pkgfs("store", "verify")
    assert verify.stdout.splitlines()[-1].startswith("ok: ")
    assert p.imports() == "1.5 1.5 False"  # the environment's own wheels are untouched


def test_a_switch_asked_without_a_next_config_changes_nothing(uvproject: Project) -> None:
    p = uvproject
    p.lock("alpha==1.0", "beta")
    p.pkgfs("mount", p.site)
    state = mount_dir(p.site, p.env)
    config = (state / "config.json").read_bytes()
    record = MountRecord.load(state)
    reply = ask(record.socket.replace("@", "\0", 1), {"op": "switch"})
    assert reply["ok"] is False
    assert "next.json" in str(reply["error"])
    assert (state / "config.json").read_bytes() == config
    assert not (state / "previous.json").exists()
    assert p.imports() == "1.0 1.0 False"
