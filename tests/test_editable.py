"""Editable projects: a real uv workspace (a root package and two members), locked by the
real uv against a loopback index, mounted by pkgfs and compared with ``uv sync --frozen``.

Offline: the index serves test wheels and a setuptools wheel packed from the setuptools
that runs these tests (the build backend of every project here), and pip is pointed at a
dead address, so a build that did not use the lock's index fails instead of going out.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkgfs.store import Store
from pkgfs.store.fetch import BuildSources, editable_wheels
from pkgfs.store.lock import EditableProject
from pkgfs.store.lock.target import probe_target
from tests.indexserver import IndexServer
from tests.mountkit import Env, environ_for, fails, force_unmount, needs_fuse
from tests.wheelmaker import WheelMaker

BACKEND = '[build-system]\nrequires = ["setuptools>=70"]\nbuild-backend = "setuptools.build_meta"\n'

ROOT = f"""[project]
name = "root"
version = "0.1.0"
requires-python = ">=3.9"
dependencies = ["member-a", "six"]

[project.optional-dependencies]
cli = ["extrapkg"]

[project.scripts]
root-cli = "root:main"

[dependency-groups]
dev = ["devtool"]
lint = ["linttool"]

[tool.uv.workspace]
members = ["packages/*"]

[tool.uv.sources]
member-a = {{ workspace = true }}

{BACKEND}"""

MEMBER_A = f"""[project]
name = "member-a"
version = "0.2.0"
dependencies = ["member-b"]

[project.scripts]
member-a-cli = "member_a:main"

[tool.uv.sources]
member-b = {{ workspace = true }}

{BACKEND}"""

MEMBER_B = f'[project]\nname = "member-b"\nversion = "0.3.0"\ndependencies = ["six"]\n\n{BACKEND}'

SOURCES = {
    "pyproject.toml": ROOT,
    "src/root/__init__.py": "def main():\n    import member_a\n    print('root ran', member_a.VALUE)\n",
    "packages/member-a/pyproject.toml": MEMBER_A,
    "packages/member-a/src/member_a/__init__.py": "VALUE = 'a'\ndef main():\n    print('a ran')\n",
    "packages/member-b/pyproject.toml": MEMBER_B,
    "packages/member-b/src/member_b/__init__.py": "VALUE = 'b'\n",
}


def _setuptools_wheel(directory: Path) -> Path:
    """The installed setuptools packed back into a wheel, to serve as the build backend."""
    dist = importlib.metadata.distribution("setuptools")
    files: dict[str, bytes | str] = {}
    for file in dist.files or ():
        name = str(file)
        if "__pycache__" in name or ".dist-info/" in name or name.startswith(".."):
            continue
        files[name] = Path(str(file.locate())).read_bytes()
    return WheelMaker(
        name="setuptools",
        version=dist.version,
        files=files,
        metadata=dist.read_text("METADATA"),
        entry_points=dist.read_text("entry_points.txt"),
    ).build(directory)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexServer]:
    wheels = tmp_path_factory.mktemp("wheels")
    served = [_setuptools_wheel(wheels)]
    for name, version in (("six", "1.0"), ("devtool", "2.0"), ("extrapkg", "3.0")):
        files = {f"{name}.py": f"VERSION = {version!r}\n"}
        served.append(WheelMaker(name=name, version=version, files=files).build(wheels))
    served.append(
        WheelMaker(name="linttool", version="4.0", files={"linttool.py": ""}).build(wheels)
    )
    with IndexServer(served) as server:
        yield server


def _environ(tmp_path: Path, index: IndexServer) -> dict[str, str]:
    env = environ_for(tmp_path)
    for name in list(env):
        if name.startswith(("PIP_", "UV_")):
            del env[name]
    env |= {
        "PIP_CONFIG_FILE": os.devnull,  # the machine's pip settings play no part
        "PIP_INDEX_URL": "http://127.0.0.1:9/dead/",  # only the lock's index may be used
        "UV_INDEX_URL": index.simple_url,
        "UV_NO_CONFIG": "1",
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
        "UV_PYTHON": sys.executable,
        "UV_PYTHON_DOWNLOADS": "never",
    }
    return env


def _uv(env: dict[str, str], cwd: Path, *args: str) -> str:
    uv = Path(sys.executable).with_name("uv")
    proc = subprocess.run(
        [str(uv), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


@pytest.fixture
def workspace(tmp_path: Path, index: IndexServer) -> Iterator[Env]:
    """The workspace, locked by uv, with a venv without pip for pkgfs to mount."""
    project = tmp_path / "ws"
    for relative, text in SOURCES.items():
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        (project / relative).write_text(text)
    env = _environ(tmp_path, index)
    _uv(env, project, "lock")
    venv.create(project / ".venv", with_pip=False)
    made = Env(project, project / ".venv", env)
    try:
        yield made
    finally:
        force_unmount(made.site)


def _packages(python: Path, cwd: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json;"
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    out = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True, cwd=cwd
    )
    return dict(json.loads(out.stdout))


def _uv_sync(ws: Env, name: str, *options: str) -> dict[str, str]:
    """What real ``uv sync --frozen`` installs into a plain venv of the same project."""
    target = ws.project.parent / name
    _uv({**ws.env, "UV_PROJECT_ENVIRONMENT": str(target)}, ws.project, "sync", "--frozen", *options)
    return _packages(target / "bin" / "python", ws.project.parent)


def _direct_url(site: Path, dist: str) -> dict[str, object]:
    (info,) = site.glob(f"{dist}-*.dist-info")
    record = (info / "RECORD").read_text()
    assert f"{info.name}/direct_url.json," in record  # RECORD lists it, with its hash
    return dict(json.loads((info / "direct_url.json").read_text()))


@needs_fuse
def test_workspace_mounts_editable_like_uv_sync(workspace: Env) -> None:
    ws = workspace
    mounted = ws.pkgfs("mount", ws.site)
    built = [line for line in mounted.stderr.splitlines() if "editable from" in line]
    assert len(built) == 3, mounted.stderr  # root, member-a, member-b
    assert "not a wheel" not in mounted.stderr

    # The project's and a member's console scripts, in the venv's bin/.
    assert ws.run(ws.venv / "bin" / "root-cli") == "root ran a\n"
    assert ws.run(ws.venv / "bin" / "member-a-cli") == "a ran\n"
    assert ws.run(ws.python, "-c", "import root, member_a, member_b, six, devtool") == ""
    ws.pip("check")

    # The same distributions, at the same versions, as uv sync --frozen installs.
    packages = _packages(ws.python, ws.project)
    assert packages == _uv_sync(ws, "uv-env")
    assert packages == {
        "root": "0.1.0",
        "member-a": "0.2.0",
        "member-b": "0.3.0",
        "six": "1.0",
        "devtool": "2.0",
    }

    # PEP 610, as uv writes it; no copy of the source: the .pth names the directory.
    for dist, where in (
        ("root", ws.project),
        ("member_a", ws.project / "packages/member-a"),
        ("member_b", ws.project / "packages/member-b"),
    ):
        assert _direct_url(ws.site, dist) == {"url": where.as_uri(), "dir_info": {"editable": True}}
    assert not list(ws.site.glob("member_b/*"))

    # An edit to a member's source is seen at once, with no rebuild and no remount.
    source = ws.project / "packages/member-b/src/member_b/__init__.py"
    source.write_text("VALUE = 'edited'\n")
    assert ws.run(ws.python, "-c", "import member_b; print(member_b.VALUE)") == "edited\n"


@needs_fuse
def test_a_second_environment_builds_nothing_and_groups_select(
    workspace: Env, tmp_path: Path
) -> None:
    ws = workspace
    ws.pkgfs("mount", ws.site)
    store = Path(ws.env["PKGFS_STORE"])
    wheels_before = sorted(p.name for p in (store / "editables-v1").iterdir())
    with Store.open(store) as opened:
        stored = len(opened.wheels())

    # Another venv of the same lock, without the dev group and with an extra and a group.
    second = Env(ws.project, tmp_path / "second" / ".venv", ws.env)
    venv.create(second.venv, with_pip=False)
    try:
        options = ("--no-dev", "--extra", "cli", "--group", "lint")
        result = second.pkgfs("mount", second.site, "--lock", ws.project / "uv.lock", *options)
        assert "building" not in result.stderr
        assert "--group lint --no-group dev --extra cli" in result.stdout
        (status,) = second.status()
        assert status["selection"] == "--group lint --no-group dev --extra cli"
        with Store.open(store) as opened:
            assert len(opened.wheels()) == stored + 2  # extrapkg and linttool; no new build
        assert sorted(p.name for p in (store / "editables-v1").iterdir()) == wheels_before
        packages = _packages(second.python, tmp_path)
        assert packages == _uv_sync(ws, "uv-env-2", *options)
        assert "devtool" not in packages
        assert {"extrapkg", "linttool", "root"} <= set(packages)
        second.pip("check")
    finally:
        force_unmount(second.site)
    # The first environment still has the dev group: the selection is its own.
    assert "devtool" in _packages(ws.python, ws.project)


def test_lock_show_lists_the_editables_and_the_selection(workspace: Env) -> None:
    ws = workspace
    shown = ws.pkgfs("lock", "show", "--only-group", "lint").stdout
    assert "linttool" in shown
    assert "six" not in shown  # --only-group: the project and its dependencies left out
    assert "editable" not in shown
    rows = json.loads(ws.pkgfs("lock", "show", "--json", "--all-extras").stdout)
    editable = {r["name"]: r for r in rows if "editable" in r}
    assert set(editable) == {"root", "member-a", "member-b"}
    assert editable["root"]["editable"] == str(ws.project)
    assert not editable["root"]["in_store"]  # lock show builds nothing
    assert {r["name"] for r in rows} >= {"extrapkg", "devtool", "six"}
    error = fails(ws, "lock", "show", "--group", "nope")
    assert error.endswith("uv.lock: no dependency group nope in the lock (it has: dev, lint)")


def test_metadata_edits_rebuild_and_source_edits_do_not(workspace: Env, index: IndexServer) -> None:
    ws = workspace
    member = ws.project / "packages/member-a"
    project = EditableProject("member-a", "0.2.0", member)  # type: ignore[arg-type]
    sources = BuildSources([index.simple_url])
    builds: list[str] = []
    target = probe_target(ws.python, ws.env)
    with Store.open(ws.env["PKGFS_STORE"]) as store:
        (first,) = editable_wheels(store, [project], sources, target.tags, builds.append)
        (member / "src/member_a/__init__.py").write_text("VALUE = 'changed'\n")
        (again,) = editable_wheels(store, [project], sources, target.tags, builds.append)
        assert again == first
        assert len(builds) == 1
        # A new script in pyproject.toml: new metadata, so a new editable wheel.
        pyproject = member / "pyproject.toml"
        pyproject.write_text(
            pyproject.read_text().replace(
                'member-a-cli = "member_a:main"',
                'member-a-cli = "member_a:main"\nmember-a-new = "member_a:main"',
            )
        )
        (rebuilt,) = editable_wheels(store, [project], sources, target.tags, builds.append)
        assert len(builds) == 2
        assert rebuilt.wheel.sha256 != first.wheel.sha256
        names = {e.name for e in store.entry_points(rebuilt.wheel.sha256 or "")}
        assert names == {"member-a-cli", "member-a-new"}
        files = {f.path for f in store.files(rebuilt.wheel.sha256 or "")}
        assert "member_a-0.2.0.dist-info/direct_url.json" in files
        assert store.verify().problems == []


def test_a_virtual_project_is_not_installed(tmp_path: Path, index: IndexServer) -> None:
    project = tmp_path / "app"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "1.0"\nrequires-python = ">=3.9"\n'
        'dependencies = ["six"]\n\n[tool.uv]\npackage = false\n'
    )
    env = _environ(tmp_path, index)
    _uv(env, project, "lock")
    venv.create(project / ".venv", with_pip=False)
    app = Env(project, project / ".venv", env)
    assert 'source = { virtual = "." }' in (project / "uv.lock").read_text()
    result = app.pkgfs("sync")
    assert "1 wheels: 0 already in the store, 1 added" in result.stdout  # six alone
    assert "building" not in result.stderr
    assert "not a wheel" not in result.stderr  # silently, as uv sync


def test_a_project_that_cannot_be_built_is_one_line(workspace: Env) -> None:
    ws = workspace
    pyproject = ws.project / "packages/member-b/pyproject.toml"
    pyproject.write_text(MEMBER_B.replace("setuptools.build_meta", "no_such_backend"))
    store = Path(ws.env["PKGFS_STORE"])
    error = fails(ws, "mount", ws.site)
    assert error.startswith(f"pkgfs: error: {ws.project / 'packages/member-b'}: ")
    assert "no_such_backend" in error
    # Every wheel is built before any is ingested: the store is as it was.
    assert not (store / "editables-v1").exists()
    with Store.open(store) as opened:
        assert opened.wheels() == []


FAILING_BACKEND = """import sys


def get_requires_for_build_editable(config_settings=None):
    return []


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    print("reading the project")
    sys.stderr.write(
        "Error: failed to open file `README.md`: No such file or directory (os error 2)\\n\\n"
        "Stack backtrace:\\n   0: <unknown>\\n   1: main\\n"
    )
    sys.stderr.flush()
    sys.exit(2)
"""


def test_a_backend_that_exits_is_one_line_with_its_own_error(workspace: Env) -> None:
    # As uv_build does when the readme pyproject.toml names is missing: it prints its error
    # and a backtrace and exits. The line says what the backend said, not pypa/build's
    # "Backend subprocess exited when trying to invoke build_editable".
    ws = workspace
    member = ws.project / "packages/member-b"
    (member / "failing_backend.py").write_text(FAILING_BACKEND)
    (member / "pyproject.toml").write_text(
        MEMBER_B.replace(BACKEND, "")
        + '[build-system]\nrequires = []\nbuild-backend = "failing_backend"\nbackend-path = ["."]\n'
    )
    error = fails(ws, "mount", ws.site)
    assert error == (
        f"pkgfs: error: {member}: its build backend failed: Error: failed to open file"
        " `README.md`: No such file or directory (os error 2)"
    )


def test_a_build_requirement_no_index_has_is_one_line_saying_so(workspace: Env) -> None:
    ws = workspace
    pyproject = ws.project / "packages/member-b/pyproject.toml"
    pyproject.write_text(
        MEMBER_B.replace('requires = ["setuptools', 'requires = ["no-such-builder>=1", "setuptools')
    )
    error = fails(ws, "mount", ws.site)
    assert error.startswith(f"pkgfs: error: {ws.project / 'packages/member-b'}: ")
    assert "cannot install its build requirements" in error
    assert "No matching distribution found for no-such-builder>=1" in error


def test_pylock_and_requirements_editables_are_built_once(
    workspace: Env, index: IndexServer
) -> None:
    ws = workspace
    # uv's own export to PEP 751: the members as directories with editable = true.
    _uv(ws.env, ws.project, "export", "--frozen", "--format", "pylock.toml", "-o", "pylock.toml")
    synced = ws.pkgfs("sync", "--lock", ws.project / "pylock.toml")
    assert synced.stderr.count("editable from") == 3, synced.stderr
    six = next(w for w in (ws.project / "pylock.toml").read_text().splitlines() if "six-1.0" in w)
    digest = six.split('sha256 = "')[1][:64]
    # pip's -e PATH, relative to the file: the same project directory, remembered.
    (ws.project / "requirements.txt").write_text(
        f"--index-url {index.simple_url}\n-e ./packages/member-b\nsix==1.0 --hash=sha256:{digest}\n"
    )
    lock = ("--lock", ws.project / "requirements.txt")
    assert "editable from" not in ws.pkgfs("sync", *lock).stderr
    rows = json.loads(ws.pkgfs("lock", "show", "--json", *lock).stdout)
    (member,) = [r for r in rows if "editable" in r]
    assert member["in_store"]
    assert (member["name"], member["version"]) == ("member-b", "0.3.0")


@needs_fuse
def test_uv_sync_and_uv_run_in_the_mounted_venv_change_nothing(workspace: Env) -> None:
    """``uv run`` syncs the venv first: it must find the mounted editables fresh (uv keeps
    what a local project's install depended on in the dist-info's ``uv_cache.json``, and
    reinstalls one without it), so nothing lands in the overlay nor in ``bin/``."""
    ws = workspace
    ws.pkgfs("mount", ws.site)
    scripts = sorted(p.name for p in (ws.venv / "bin").iterdir())
    said = _uv(ws.env, ws.project, "sync", "--frozen")
    said += _uv(ws.env, ws.project, "run", "--frozen", "root-cli")
    assert ws.pkgfs("diff", ws.site).stdout == "", said
    assert sorted(p.name for p in (ws.venv / "bin").iterdir()) == scripts
