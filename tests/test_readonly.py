"""A store that many read and only its owner writes: a read-only bind mount of it, root's
store used by a throwaway user, and readers beside a writer holding the store's lock.

Every command that only reads works there and writes nothing into the store (compared byte
for byte, modes included); one that would need a writer says so in one line.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import snapshot
from tests.mountkit import Env, digest_tree, environ_for, force_unmount, make_project, needs_fuse
from tests.wheelmaker import WheelMaker

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts and users: needs root")

READ_ONLY = "is read-only: run `pkgfs sync` where it is writable"


def _error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("pkgfs: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture
def synced(tmp_path: Path) -> Iterator[Env]:
    """A project synced into a writable store (wheels, bytecode, the saved view)."""
    env = make_project(tmp_path / "project", environ_for(tmp_path))
    env.pkgfs("sync")
    try:
        yield env
    finally:
        force_unmount(env.site)


@pytest.fixture
def read_only(synced: Env, tmp_path: Path) -> Iterator[tuple[Env, Path]]:
    """The project with PKGFS_STORE pointing at a read-only bind mount of its store."""
    store = Path(synced.env["PKGFS_STORE"])
    ro = tmp_path / "ro-store"
    ro.mkdir()
    subprocess.run(["mount", "--bind", store, ro], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", ro], check=True)
        synced.env["PKGFS_STORE"] = str(ro)
        yield synced, store
    finally:
        force_unmount(synced.site)
        subprocess.run(["umount", "-l", ro], check=False)


@needs_fuse
def test_readers_work_on_a_read_only_mount_and_write_nothing(
    read_only: tuple[Env, Path],
) -> None:
    env, store = read_only
    # sync closed the index cleanly: no -wal, so readers open it immutable.
    assert not (store / "index-v1.sqlite-wal").exists()
    before = snapshot(store)
    assert "app" in env.pkgfs("store", "ls").stdout
    assert "wheels:        3" in env.pkgfs("store", "stats").stdout
    assert env.pkgfs("store", "verify").stdout.startswith("ok: ")
    assert env.pkgfs("lock", "show").stdout.count("stored ") == 3
    assert env.pkgfs("sync", "--offline").stdout.startswith("3 wheels: 3 already in the store")
    mounted = env.pkgfs("mount", env.site, "--offline")
    assert mounted.stdout.startswith(f"mounted 3 packages at {env.site}"), mounted.stderr
    assert env.run(env.python, "-c", "import app, ns.a; print(app.VALUE)") == "1\n"
    (env.site / "app" / "new.py").write_text("")  # into the overlay, never the store
    assert env.pkgfs("status").stdout.startswith(f"ok     {env.site}")
    assert "app/new.py" in env.pkgfs("diff", env.site).stdout
    assert env.pkgfs("env", "list").stdout.startswith(f"ok           {env.site}")
    env.pkgfs("unmount", env.site)
    assert snapshot(store) == before


@needs_fuse
def test_a_missing_piece_is_one_line_naming_it(read_only: tuple[Env, Path]) -> None:
    env, store = read_only
    before = snapshot(store)
    # A wheel the store lacks.
    extra = WheelMaker(name="extra", files={"extra/__init__.py": ""}).build(env.project / "wheels")
    lock = env.project / "pylock.toml"
    synced_lock = lock.read_text()
    digest = hashlib.sha256(extra.read_bytes()).hexdigest()
    lock.write_text(
        synced_lock + '[[packages]]\nname = "extra"\nversion = "1.0"\nwheels = [{ path ='
        f' "wheels/{extra.name}", hashes = {{ sha256 = "{digest}" }} }}]\n'
    )
    for args in (["sync"], ["mount", env.site], ["materialize", env.venv]):
        error = _error(env.pkgfs(*args, check=False))
        assert f"the store at {env.env['PKGFS_STORE']} {READ_ONLY}" in error
        assert "it lacks 1 wheels of the lock: extra-1.0-py3-none-any.whl" in error
    error = _error(env.pkgfs("store", "add", extra, check=False))
    assert "is read-only: run `pkgfs store add` where it is writable" in error
    error = _error(env.pkgfs("store", "gc", check=False))
    assert "is read-only: run `pkgfs store gc` where it is writable" in error
    dry = env.pkgfs("store", "gc", "--dry-run", "--json")  # only reads: it answers
    assert json.loads(dry.stdout)["dry_run"] is True
    # Bytecode for an interpreter the store has none for: synced with --no-compile.
    lock.write_text(synced_lock)
    shutil.rmtree(env.venv)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", env.venv], check=True)
    error = _error(env.pkgfs("mount", env.site, "--no-compile", "--json", check=False))
    assert READ_ONLY in error
    assert "saved view" in error
    # The saved view, gone (as a gc of another user would leave it).
    view_files = list((store / "views-v2").iterdir())
    for path in view_files:
        path.unlink()
    after_gc = snapshot(store)
    error = _error(env.pkgfs("mount", env.site, check=False))
    assert READ_ONLY in error
    assert "it lacks the saved view of these 3 wheels" in error
    assert snapshot(store) == after_gc
    assert {k: v for k, v in before.items() if not k.startswith("views-v2/")} == after_gc


def test_readers_never_wait_for_the_lock(read_only: tuple[Env, Path]) -> None:
    env, store = read_only
    ro_store = env.env["PKGFS_STORE"]
    before = snapshot(store)
    fd = os.open(store / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as pkgfs store gc holds it
        for args in (["store", "ls"], ["store", "verify"], ["lock", "show"], ["env", "list"]):
            for where in (ro_store, str(store)):  # the read-only mount and the store itself
                proc = subprocess.run(
                    [sys.executable, "-m", "pkgfs.vfs", "--store", where, *args],
                    capture_output=True, text=True, check=False, env=env.env,
                    cwd=env.project, timeout=120,
                )  # fmt: skip
                assert proc.returncode == 0, (args, proc.stderr)
                assert "waiting" not in proc.stderr
        assert snapshot(store) == before  # not even SQLite's -wal and -shm files
        # Materialize reads only, from the read-only mount, with gc holding the lock.
        result = env.pkgfs("materialize", env.venv)
        assert result.stdout.startswith("materialized 3 packages")
    finally:
        os.close(fd)
    # A writer at work (its -wal and -shm exist, its last commit only in the -wal): readers
    # read through SQLite's locks (mode=ro; on the read-only mount, the -shm read as it is),
    # see that commit, and are not held by the writer's open transaction.
    writer = sqlite3.connect(store / "index-v1.sqlite", isolation_level=None)
    try:
        writer.execute(
            "INSERT INTO wheels (sha256, filename, name, version, tags, root_is_purelib,"
            " dist_info, wheel_size, added) VALUES ('0', 'zz-1.0-py3-none-any.whl', 'zz',"
            " '1.0', 'py3-none-any', 1, 'zz-1.0.dist-info', 0, 0)"
        )
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM entry_points")  # never committed: no reader sees it
        assert (store / "index-v1.sqlite-wal").stat().st_size > 0
        for where in (ro_store, str(store)):
            proc = subprocess.run(
                [sys.executable, "-m", "pkgfs.vfs", "--store", where, "store", "ls", "--json"],
                capture_output=True, text=True, check=False, env=env.env, timeout=120,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            assert [w["name"] for w in json.loads(proc.stdout)] == ["app", "nsa", "nsb", "zz"]
        writer.execute("ROLLBACK")
        writer.execute("DELETE FROM wheels WHERE sha256 = '0'")
    finally:
        writer.close()


def test_files_are_readable_by_all_under_a_restrictive_umask(tmp_path: Path) -> None:
    env = make_project(tmp_path / "project", environ_for(tmp_path))
    subprocess.run(
        ["sh", "-c", 'umask 077 && exec "$@"', "sh", sys.executable, "-m", "pkgfs.vfs", "sync"],
        check=True, env=env.env, cwd=env.project, capture_output=True,
    )  # fmt: skip
    store = Path(env.env["PKGFS_STORE"])
    modes = {
        str(p.relative_to(store)): p.stat().st_mode & 0o777 for p in [store, *store.rglob("*")]
    }
    assert any(name.startswith("views-v2/") for name in modes)
    for name, mode in modes.items():
        if name == "tmp" or name.startswith("tmp/"):
            continue  # staging: nobody else needs it
        assert mode & 0o444 == 0o444, (name, oct(mode))
        if (store / name).is_dir():
            assert mode == 0o755, (name, oct(mode))
        elif name.startswith(("objects-v1/", "views-v2/")):
            assert mode == 0o444, (name, oct(mode))


# -- root's store, used by a user that is not root --------------------------------------------

USER = "pkgfs-test"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Path]:
    """A directory the throwaway user may enter (pytest's own are 0700, under root's)."""
    root = Path(tempfile.mkdtemp(prefix="pkgfs-readonly-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def tools(world: Path) -> Path:
    """A venv runnable by the throwaway user, with pkgfs (the checkout's site-packages)."""
    from tests.test_nonroot import SYSTEM_PYTHON, system_python_matches  # noqa: PLC0415

    if not system_python_matches() or shutil.which("runuser") is None:
        pytest.skip(f"needs runuser and {SYSTEM_PYTHON} of Python {sys.version_info[:2]}")
    if subprocess.run(["id", USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True,
        )
    tools = world / "tools"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", tools], check=True)
    checkout_site = next(p for p in sys.path if p.endswith("site-packages"))
    (tools / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages" /
     "checkout.pth").write_text(f"import site; site.addsitedir({checkout_site!r})\n")  # fmt: skip
    return tools / "bin" / "python"


def _as_user(
    tools: Path, home: Path, store: Path, cwd: Path, *args: str | Path
) -> subprocess.CompletedProcess[str]:
    environ = [
        f"HOME={home}", "PATH=/usr/bin:/bin", f"PKGFS_STORE={store}",
        f"XDG_STATE_HOME={home / 'state'}", f"XDG_CACHE_HOME={home / 'cache'}",
    ]  # fmt: skip
    return subprocess.run(
        ["runuser", "-u", USER, "--", "env", "-i", *environ, *map(str, args)],
        capture_output=True, text=True, check=False, cwd=cwd,
    )  # fmt: skip


_DIGESTS = """
import hashlib, json, os, sys
root = sys.argv[1]
found = {}
for dirpath, _dirs, files in os.walk(root):
    for name in files:
        path = os.path.join(dirpath, name)
        with open(path, "rb") as f:
            found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
print(json.dumps(found))
"""


def _digests_as_user(tools: Path, home: Path, store: Path, root: Path) -> dict[str, str]:
    """tests.mountkit.digest_tree, run as the user."""
    ran = _as_user(tools, home, store, home, tools, "-c", _DIGESTS, root)
    assert ran.returncode == 0, ran.stderr
    found: dict[str, str] = json.loads(ran.stdout)
    return found


@pytest.fixture
def shared(world: Path, tools: Path) -> Iterator[tuple[Env, Path, Path]]:
    """Root's store, synced under umask 077, and a project the user owns: (env, store,
    the user's home)."""
    root = world
    home = root / "home"
    home.mkdir()
    env = make_project(home / "project", environ_for(root / "root-side"))
    store = root / "store"
    env.env["PKGFS_STORE"] = str(store)
    shutil.rmtree(env.venv)
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", env.venv], check=True)
    subprocess.run(
        ["sh", "-c", 'umask 077 && exec "$@"', "sh", sys.executable, "-m", "pkgfs.vfs", "sync"],
        check=True, env=env.env, cwd=env.project, capture_output=True,
    )  # fmt: skip
    subprocess.run(["chown", "-R", USER, home], check=True)
    mode = os.stat("/dev/fuse").st_mode & 0o777 if os.path.exists("/dev/fuse") else None
    try:
        yield env, store, home
    finally:
        if mode is not None:
            os.chmod("/dev/fuse", mode)
        force_unmount(env.site)


@needs_fuse
def test_a_user_reads_and_mounts_roots_store(shared: tuple[Env, Path, Path], tools: Path) -> None:
    env, store, home = shared
    before = snapshot(store)

    def pkgfs(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return _as_user(tools, home, store, env.project, tools, "-m", "pkgfs.vfs", *args)

    assert pkgfs("store", "ls").returncode == 0
    assert pkgfs("store", "verify").stdout.startswith("ok: ")
    assert pkgfs("lock", "show").stdout.count("stored ") == 3
    os.chmod("/dev/fuse", 0o666)  # noqa: S103 (as Debian ships it)
    mounted = pkgfs("mount", env.site)
    assert mounted.stdout.startswith(f"mounted 3 packages at {env.site}"), mounted.stderr
    served = _digests_as_user(tools, home, store, env.site)  # root may not enter it
    assert "app/__init__.py" in served
    ran = _as_user(
        tools, home, store, env.project, env.python, "-c", "import app; print(app.VALUE)"
    )
    assert ran.stdout == "1\n", ran.stderr
    assert pkgfs("status").stdout.startswith(f"ok     {env.site}")
    assert pkgfs("unmount", env.site).returncode == 0
    # A sync that would add something: one line, nothing written.
    extra = WheelMaker(name="extra", files={"extra/__init__.py": ""}).build(home)
    added = pkgfs("store", "add", extra)
    assert added.returncode == 1
    assert "Traceback" not in added.stderr
    # Where FUSE cannot be opened, mount names materialize, which works from root's store.
    os.chmod("/dev/fuse", 0o600)
    error = _error(pkgfs("mount", env.site))
    assert "pkgfs materialize VENV writes the environment as real files" in error
    done = pkgfs("materialize", env.venv)
    assert done.stdout.startswith(f"materialized 3 packages into {env.site}"), done.stderr
    assert digest_tree(env.site) == served
    ran = _as_user(
        tools, home, store, env.project, env.python, "-c", "import app; print(app.VALUE)"
    )
    assert ran.stdout == "1\n", ran.stderr
    # A materialize that fails half-way leaves the venv as it was.
    venv_before = snapshot(env.venv)
    error = _error(pkgfs("materialize", env.venv, "--link-mode", "hardlink"))
    assert "fs.protected_hardlinks" in error  # the objects are root's
    assert snapshot(env.venv) == venv_before
    assert "materialized" in pkgfs("env", "list").stdout
    assert snapshot(store) == before
    # A store an earlier pkgfs made under umask 077: one line saying why and what to do.
    (store / "objects-v1").chmod(0o700)
    error = _error(pkgfs("store", "ls"))
    assert f"{store}/objects-v1 is not readable by you (mode drwx------" in error
    assert f"chmod -R a+rX {store}" in error


def test_a_user_hardlinks_from_their_own_store(shared: tuple[Env, Path, Path], tools: Path) -> None:
    env, _roots, home = shared
    own = home / "store"
    subprocess.run(["chown", USER, home], check=True)

    def pkgfs(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return _as_user(tools, home, own, env.project, tools, "-m", "pkgfs.vfs", *args)

    synced = pkgfs("sync")
    assert synced.returncode == 0, synced.stderr
    done = pkgfs("materialize", env.venv, "--link-mode", "hardlink", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["hardlinked"] > 0
    assert report["link_mode"] == "hardlink"
    module = env.site / "app" / "sub" / "mod.py"
    assert module.stat().st_nlink >= 2
    assert module.stat().st_mode & 0o777 == 0o444
    # An edit fails rather than change the store.
    edit = _as_user(tools, home, own, env.project, "sh", "-c", f"echo X = 1 > {module}")
    assert edit.returncode != 0
    assert "Permission denied" in edit.stderr
    ran = _as_user(tools, home, own, env.project, env.python, "-v", "-c", "import app.sub.mod")
    assert ran.returncode == 0, ran.stderr
    assert f"# code object from '{env.site}/app/sub/__pycache__/mod.cpython-311.pyc'" in ran.stderr
    assert f"# wrote '{env.site}" not in ran.stderr
    verify = pkgfs("store", "verify")
    assert verify.stdout.startswith("ok: "), verify.stdout
