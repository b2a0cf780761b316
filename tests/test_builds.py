"""Locks whose packages are not wheels: an sdist-only package in a real `pip lock`
pylock.toml, and a git source, a directory and a find-links sdist in a real `uv lock`.
pkgfs builds each once with pypa/build, mounts it, and a second environment builds nothing.
Everything is offline: the projects use an in-tree backend (tests/sdistmaker.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from pkgfs.store import Store
from pkgfs.store.build import recall
from pkgfs.store.lock import LockedWheel, WheelLink
from pkgfs.store.lock.model import BuildSource
from tests.conftest import PKGFS, snapshot
from tests.indexserver import IndexServer
from tests.mountkit import Env, environ_for, fails, force_unmount, needs_fuse
from tests.sdistmaker import (
    BUILD_LOG_ENV,
    builds_logged,
    make_backend_wheel,
    make_sdist,
    make_tree,
)
from tests.targets import cpython_linux
from tests.wheelmaker import WheelMaker

UV = Path(sys.executable).with_name("uv")
LIST_DISTS = (
    "import importlib.metadata as m;"
    " print(sorted((d.metadata['Name'], d.version) for d in m.distributions()))"
)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=repo, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def _env(project: Path, base: dict[str, str]) -> Env:
    venv.create(project / ".venv", with_pip=False)
    return Env(project, project / ".venv", base)


def _dists(env: Env, python: Path | None = None) -> str:
    return env.run(python or env.python, "-c", LIST_DISTS)


def _direct_url(env: Env, python: Path, name: str) -> object:
    code = f"import importlib.metadata as m; print(m.distribution({name!r}).read_text('direct_url.json'))"
    text = env.run(python, "-c", code).strip()
    return None if text == "None" else json.loads(text)


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    env = environ_for(tmp_path)
    env[BUILD_LOG_ENV] = str(tmp_path / "builds.log")
    env["PIP_CONFIG_FILE"] = os.devnull  # only the test's index, never the machine's
    env["UV_CACHE_DIR"] = str(tmp_path / "uv-cache")
    env["UV_NO_CONFIG"] = "1"
    return env


@pytest.fixture
def docopt_sdist(tmp_path: Path) -> Path:
    tree = make_tree(
        tmp_path / "src" / "docopt",
        "docopt",
        "0.6.2",
        {"docopt.py": "def main() -> None:\n    print('docopt ran')\n"},
        scripts={"docopt-hello": "docopt:main"},
    )
    return make_sdist(tree, tmp_path / "dist")


@pytest.fixture
def index(docopt_sdist: Path) -> Iterator[IndexServer]:
    with IndexServer([docopt_sdist]) as server:
        yield server


@pytest.fixture
def piplock(tmp_path: Path, base_env: dict[str, str], index: IndexServer) -> Path:
    """A real `pip lock` pylock.toml of the sdist-only docopt, served by ``index``."""
    lockdir = tmp_path / "locked"
    lockdir.mkdir()
    subprocess.run(
        [sys.executable, "-m", "pip", "lock", "--index-url", index.simple_url, "docopt",
         "-o", lockdir / "pylock.toml"],
        env=base_env, capture_output=True, check=True,
    )  # fmt: skip
    return lockdir / "pylock.toml"


def _project_with(lock: Path, root: Path, base: dict[str, str]) -> Env:
    root.mkdir(parents=True)
    (root / lock.name).write_text(lock.read_text())
    for name in ("pyproject.toml",):
        if (lock.parent / name).exists():
            (root / name).write_text((lock.parent / name).read_text())
    return _env(root, base)


@needs_fuse
def test_pip_lock_with_an_sdist_only_package(
    tmp_path: Path, base_env: dict[str, str], piplock: Path, index: IndexServer
) -> None:
    log = tmp_path / "builds.log"
    assert "[packages.sdist]" in piplock.read_text()  # pip locked the sdist: no wheel exists
    locked = len(builds_logged(log))  # pip lock may build to read the metadata
    first = _project_with(piplock, tmp_path / "one", base_env)
    try:
        result = first.pkgfs("mount", first.site)
        assert "pkgfs: building docopt 0.6.2 from sdist" in result.stderr.splitlines()
        assert len(builds_logged(log)) == locked + 1
        assert first.run(first.venv / "bin" / "docopt-hello") == "docopt ran\n"
        assert first.pip("check").startswith("No broken requirements")
        assert _direct_url(first, first.python, "docopt") is None  # from an index, as pip
        # The same package set as pip installing from the same index.
        native = tmp_path / "native"
        venv.create(native, with_pip=False)
        first.run(
            sys.executable, "-m", "pip", "--python", native / "bin" / "python", "install",
            "--index-url", index.simple_url, "docopt",
        )  # fmt: skip
        assert _dists(first) == _dists(first, native / "bin" / "python")
    finally:
        force_unmount(first.site)
    builds = len(builds_logged(log))  # pip install built it too
    second = _project_with(piplock, tmp_path / "two", base_env)
    try:
        result = second.pkgfs("mount", second.site)
        assert "building" not in result.stderr
        assert len(builds_logged(log)) == builds  # remembered: built once
        assert second.run(second.venv / "bin" / "docopt-hello") == "docopt ran\n"
    finally:
        force_unmount(second.site)
    assert first.pkgfs("store", "verify").returncode == 0


def test_build_requirements_come_from_the_index(tmp_path: Path, base_env: dict[str, str]) -> None:
    """A project whose backend is a package on the index: pkgfs installs it into the build's
    venv from the index it is given (pip lock found it there too)."""
    tree = make_tree(
        tmp_path / "src" / "needsbe", "needsbe", "3.0", {"needsbe.py": "N = 3\n"},
        backend="tinybackend",
    )  # fmt: skip
    sdist = make_sdist(tree, tmp_path / "dist")
    backend = make_backend_wheel("tinybackend", "needsbe", "3.0", tmp_path / "dist")
    lockdir = tmp_path / "locked"
    lockdir.mkdir()
    with IndexServer([sdist, backend]) as index:
        subprocess.run(
            [sys.executable, "-m", "pip", "lock", "--index-url", index.simple_url, "needsbe",
             "-o", lockdir / "pylock.toml"],
            env=base_env, capture_output=True, check=True,
        )  # fmt: skip
        env = _project_with(lockdir / "pylock.toml", tmp_path / "one", base_env)
        index.requests.clear()  # pip lock's own
        result = env.pkgfs("sync", "--index-url", index.simple_url)
        assert "pkgfs: building needsbe 3.0 from sdist" in result.stderr.splitlines()
        assert "/simple/tinybackend/" in index.requests  # asked for by the build
    with Store.open(tmp_path / "store") as store:
        assert [w.filename for w in store.wheels()] == ["needsbe-3.0-py3-none-any.whl"]


def _refused_sync(env: Env, *args: str) -> str:
    """A sync that must fail in one line, leaving the store exactly as it was."""
    store = Path(env.env["PKGFS_STORE"])
    env.pkgfs("store", "stats")
    before = snapshot(store)
    error = fails(env, "sync", *args)
    assert snapshot(store) == before
    return error


def test_an_sdist_that_is_not_the_locked_one_is_refused(
    tmp_path: Path, base_env: dict[str, str], piplock: Path
) -> None:
    real = piplock.read_text()
    digest = real.split('sha256 = "')[1].split('"')[0]
    piplock.write_text(real.replace(digest, "0" * 64))
    env = _project_with(piplock, tmp_path / "one", base_env)
    error = _refused_sync(env)
    assert error.startswith("pkgfs: error: docopt 0.6.2: http://127.0.0.1:")
    assert f"has sha256 {digest[:16]}..., the lock says 0000000000000000...: refusing" in error
    assert not builds_logged(tmp_path / "builds.log")[1:]


def test_offline_builds_only_what_is_here(
    tmp_path: Path, base_env: dict[str, str], piplock: Path
) -> None:
    env = _project_with(piplock, tmp_path / "one", base_env)
    error = _refused_sync(env, "--offline")
    assert error == (
        "pkgfs: error: docopt 0.6.2: offline, and its wheel is to be built from sdist, which"
        " only the network can bring"
    )
    env.pkgfs("sync")
    assert "building" not in env.pkgfs("sync", "--offline").stderr  # remembered


def test_a_failed_build_names_the_package_and_keeps_its_log(
    tmp_path: Path, base_env: dict[str, str], piplock: Path
) -> None:
    env = _project_with(piplock, tmp_path / "one", {**base_env, "SDISTMAKER_FAIL": "docopt"})
    error = fails(env, "sync")
    assert error.startswith(
        "pkgfs: error: docopt 0.6.2: building a wheel from sdist failed: the build backend"
        " failed (CalledProcessError); the build's output is in "
    )
    log = Path(error.rsplit(" ", 1)[-1])
    assert log.parent == tmp_path / "store" / "tmp"
    assert "sdistmaker: told to fail building docopt" in log.read_text()
    assert "Traceback" in log.read_text()
    assert "Traceback" not in fails(env, "sync")
    verbose = env.pkgfs("sync", "-v", check=False)  # -v: the backend's whole output too
    assert verbose.returncode == 1
    assert "RuntimeError: sdistmaker: told to fail building docopt" in verbose.stderr
    assert json.loads(env.pkgfs("store", "ls", "--json").stdout) == []
    assert env.pkgfs("store", "verify").returncode == 0


def test_a_build_killed_midway_leaves_only_tmp_leftovers(
    tmp_path: Path, base_env: dict[str, str], piplock: Path
) -> None:
    hold = tmp_path / "hold"
    hold.mkdir()
    env = _project_with(piplock, tmp_path / "one", {**base_env, "SDISTMAKER_HOLD": str(hold)})
    sync = subprocess.Popen(
        [*PKGFS, "sync"], cwd=env.project, env=env.env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(600):  # the backend is running once it says so
            if (hold / "started").exists() or sync.poll() is not None:
                break
            time.sleep(0.1)
        assert (hold / "started").exists()
    finally:
        os.killpg(sync.pid, signal.SIGKILL)
        sync.wait()
    with Store.open(tmp_path / "store") as store:
        assert store.wheels() == []
        assert store.index.builds() == []
        report = store.verify()
        assert report.ok
        assert report.leftovers  # the build's staging and log, in tmp/
    (hold / "go").touch()
    assert env.pkgfs("sync").returncode == 0  # and the next sync builds it
    with Store.open(tmp_path / "store") as store:
        ((_, sha256),) = store.index.builds()
        assert [w.name for w in store.wheels()] == ["docopt"]
        assert store.wheels()[0].sha256 == sha256


# -- uv.lock: git, directory and find-links sdist --------------------------------------------


@pytest.fixture
def uvproject(tmp_path: Path, base_env: dict[str, str], docopt_sdist: Path) -> tuple[Path, str]:
    """A project locked by a real `uv lock`: gitdep from a local git repository (it needs
    docopt, an sdist in find-links), dirdep from a directory and pathdep from the path of
    its sdist. (root, gitdep's commit)"""
    repo = make_tree(
        tmp_path / "repos" / "gitdep", "gitdep", "1.0",
        {"gitdep/__init__.py": "import docopt\nG = 'from git'\n"}, requires=["docopt"],
    )  # fmt: skip
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "gitdep 1.0")
    commit = _git(repo, "rev-parse", "HEAD")
    make_tree(tmp_path / "repos" / "dirdep", "dirdep", "2.0", {"dirdep.py": "D = 'from a dir'\n"})
    pathdep = make_sdist(
        make_tree(tmp_path / "repos" / "pathdep", "pathdep", "1.5", {"pathdep.py": "P = 'path'\n"}),
        tmp_path / "sdists",
    )
    root = tmp_path / "locked-uv"
    root.mkdir()
    (root / "pyproject.toml").write_text(
        '[project]\nname = "proj"\nversion = "0.1"\nrequires-python = ">=3.11"\n'
        f'dependencies = ["gitdep @ git+{repo.as_uri()}", "dirdep @ {(repo.parent / "dirdep").as_uri()}",'
        f' "pathdep @ {pathdep.as_uri()}"]\n'
    )
    subprocess.run(
        [UV, "lock", "--offline", "--no-index", "--find-links", docopt_sdist.parent,
         "--python", sys.executable],
        cwd=root, env=base_env, capture_output=True, check=True,
    )  # fmt: skip
    return root, commit


@needs_fuse
def test_uv_lock_with_a_git_source(
    tmp_path: Path, base_env: dict[str, str], uvproject: tuple[Path, str]
) -> None:
    root, commit = uvproject
    sdist = tmp_path / "sdists" / "pathdep-1.5.tar.gz"
    log = tmp_path / "builds.log"
    lock = (root / "uv.lock").read_text()
    assert f"#{commit}" in lock
    locked = len(builds_logged(log))
    first = _project_with(root / "uv.lock", tmp_path / "one", base_env)
    shown = first.pkgfs("lock", "show").stdout.splitlines()
    assert [line.split()[:2] for line in shown[:-1]] == [
        ["build", "dirdep"], ["build", "docopt"], ["build", "gitdep"], ["build", "pathdep"]
    ]  # fmt: skip
    try:
        result = first.pkgfs("mount", first.site)
        building = sorted(line for line in result.stderr.splitlines() if "building" in line)
        repos = tmp_path / "repos"
        assert building == [
            f"pkgfs: building dirdep 2.0 from directory {(repos / 'dirdep').as_uri()}",
            "pkgfs: building docopt 0.6.2 from sdist",
            f"pkgfs: building gitdep 1.0 from git {(repos / 'gitdep').as_uri()}@{commit[:12]}",
            f"pkgfs: building pathdep 1.5 from archive {sdist.as_uri()}",
        ]
        assert len(builds_logged(log)) == locked + 4
        code = "import gitdep, dirdep, pathdep; print(gitdep.G, dirdep.D, pathdep.P)"
        assert first.run(first.python, "-c", code) == "from git from a dir path\n"
        assert first.pip("check").startswith("No broken requirements")
        # What uv sync --frozen installs from the same lock: the same packages, and the
        # same PEP 610 records.
        native = tmp_path / "native"
        subprocess.run(
            [UV, "sync", "--frozen", "--offline", "--python", sys.executable],
            cwd=root, env={**base_env, "UV_PROJECT_ENVIRONMENT": str(native)},
            capture_output=True, check=True,
        )  # fmt: skip
        python = native / "bin" / "python"
        assert _dists(first) == _dists(first, python)
        for name in ("gitdep", "dirdep", "docopt"):
            assert _direct_url(first, first.python, name) == _direct_url(first, python, name)
        assert _direct_url(first, first.python, "gitdep") == {
            "url": (repos / "gitdep").as_uri(),
            "vcs_info": {"vcs": "git", "commit_id": commit},
        }
        # An archive: uv records no hash for a local path, pip does; pkgfs gives the lock's.
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        assert _direct_url(first, python, "pathdep") == {"url": sdist.as_uri(), "archive_info": {}}
        assert _direct_url(first, first.python, "pathdep") == {
            "url": sdist.as_uri(),
            "archive_info": {"hash": f"sha256={digest}", "hashes": {"sha256": digest}},
        }
    finally:
        force_unmount(first.site)
    builds = len(builds_logged(log))
    second = _project_with(root / "uv.lock", tmp_path / "two", base_env)
    rows = json.loads(second.pkgfs("lock", "show", "--json").stdout)
    assert [(r["name"], r["wheel"], r["in_store"]) for r in rows] == [
        ("dirdep", "dirdep-2.0-py3-none-any.whl", True),
        ("docopt", "docopt-0.6.2-py3-none-any.whl", True),
        ("gitdep", "gitdep-1.0-py3-none-any.whl", True),
        ("pathdep", "pathdep-1.5-py3-none-any.whl", True),
    ]
    try:
        assert "building" not in second.pkgfs("mount", second.site).stderr
        assert len(builds_logged(log)) == builds
        assert second.run(second.python, "-c", "import gitdep; print(gitdep.G)") == "from git\n"
    finally:
        force_unmount(second.site)
    assert first.pkgfs("store", "verify").returncode == 0


def test_a_commit_the_repository_lacks_is_refused(
    tmp_path: Path, base_env: dict[str, str], uvproject: tuple[Path, str]
) -> None:
    root, commit = uvproject
    env = _project_with(root / "uv.lock", tmp_path / "one", base_env)
    lock = env.project / "uv.lock"
    lock.write_text(lock.read_text().replace(commit, "1" * 40))
    error = _refused_sync(env)
    gitdep = (tmp_path / "repos" / "gitdep").as_uri()
    assert error == (
        f"pkgfs: error: gitdep 1.0: git {gitdep} has no commit {'1' * 40}: the lock does not match"
    )


def test_a_schema_2_store_reads_and_upgrades(tmp_path: Path) -> None:
    """Schema 3 only adds the builds table: a schema-2 index opens read-only with no builds,
    and opening it for writing adds the table."""
    root = tmp_path / "store"
    Store.open(root).close()
    db = sqlite3.connect(root / "index-v1.sqlite")
    db.executescript("DROP TABLE builds; PRAGMA user_version = 2;")
    db.close()
    with Store.open_read_only(root) as store:
        assert store.index.builds() == []
        assert store.verify().ok
    with Store.open(root) as store:
        store.index.add_build("sdist:" + "a" * 64, "b" * 64)
        assert store.index.built_from("sdist:" + "a" * 64) == ["b" * 64]
        # A build whose wheel is not in the store is what verify exists to tell.
        assert store.verify().problems == [
            f"build of sdist:{'a' * 64}: its wheel {'b' * 64} is not in the index"
        ]


def test_a_wheel_built_for_one_interpreter_is_recalled_only_for_it(tmp_path: Path) -> None:
    wheel = WheelMaker(name="native", tag="cp311-cp311-linux_x86_64").build(tmp_path)
    source = BuildSource("git", "file:///native", commit="c" * 40)
    locked = LockedWheel(
        canonicalize_name("native"), "1.0", WheelLink("native-1.0 (git)", None, None),
        frozenset(), source,
    )  # fmt: skip
    with Store.open(tmp_path / "store") as store:
        sha256 = store.add(wheel).sha256
        store.index.add_build(f"git:file:///native@{'c' * 40}", sha256)
        recalled = recall(store, locked, cpython_linux(11))
        assert recalled is not None
        assert (recalled.filename, recalled.hashes) == (wheel.name, frozenset({sha256}))
        assert recall(store, locked, cpython_linux(12)) is None  # cp312 builds its own
