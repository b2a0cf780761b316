"""Shared bytecode: compiled once per interpreter into the store, served by every mount."""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pkgfs.store import Store
from pkgfs.store.bytecode import compile_wheels
from pkgfs.store.lock import probe_target
from pkgfs.vfs.env.view import VIEW_MTIME, Bytecode, compose_view, pyc_path
from tests.mountkit import Env, make_project
from tests.mountkit import force_unmount as _force_unmount
from tests.test_mount import base_env, mounted, project

__all__ = ["base_env", "mounted", "project"]  # fixtures used here, defined in test_mount

MAGIC = importlib.util.MAGIC_NUMBER.hex()
TAG = sys.implementation.cache_tag
MakeWheel = Callable[..., Path]
needs_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fusermount3",
)


def _ingest(store_dir: Path, *wheels: Path) -> tuple[Store, list[str]]:
    store = Store.open(store_dir)
    return store, [store.add(w).sha256 for w in wheels]


def test_modules_compile_once_with_a_header_for_the_view(
    store_dir: Path, make_wheel: MakeWheel
) -> None:
    source = "def f():\n    return 41 + 1\n"
    one = make_wheel(
        name="one", files={"one/__init__.py": source, "one/py2.py": "print 'python 2'\n"}
    )
    two = make_wheel(name="two", files={"two/__init__.py": source})
    store, shas = _ingest(store_dir, one, two)
    with store:
        report = compile_wheels(store, shas, Path(sys.executable), MAGIC)
        assert (report.wheels, report.modules, report.failed) == (2, 2, 1)
        assert (
            report.objects_added == 2
        )  # the same source in two wheels: the pycs differ only by name
        rows = store.index.bytecode(shas[0], MAGIC)
        assert [path for path, _, _ in rows] == ["one/__init__.py"]
        (_, digest, size) = rows[0]
        pyc = store.object_path(digest).read_bytes()
        assert len(pyc) == size
        # PEP 552 header: magic, flags 0 (timestamp-based), source mtime, source size.
        assert pyc[:4] == importlib.util.MAGIC_NUMBER
        assert int.from_bytes(pyc[4:8], "little") == 0
        assert int.from_bytes(pyc[8:12], "little") == VIEW_MTIME
        assert int.from_bytes(pyc[12:16], "little") == len(source)
        again = compile_wheels(store, shas, Path(sys.executable), MAGIC)
        assert (again.wheels, again.objects_added) == (0, 0)
        assert store.verify().ok


def test_view_serves_bytecode_at_the_pep_3147_place(store_dir: Path, make_wheel: MakeWheel) -> None:
    store, (sha,) = _ingest(
        store_dir, make_wheel(name="pkg", files={"pkg/__init__.py": "", "pkg/mod.py": "X = 1\n"})
    )
    with store:
        compile_wheels(store, [sha], Path(sys.executable), MAGIC)
        view = compose_view(store, [sha], sys.executable, "lib/site-packages", Bytecode(MAGIC, TAG))
        plain = compose_view(store, [sha], sys.executable, "lib/site-packages")
    assert pyc_path("pkg/mod.py", TAG) == f"pkg/__pycache__/mod.{TAG}.pyc"
    assert {
        f"pkg/__pycache__/mod.{TAG}.pyc",
        f"pkg/__pycache__/__init__.{TAG}.pyc",
    } <= view.files.keys()
    assert f"pkg/__pycache__/mod.{TAG}.pyc" not in plain.files
    record = next(f.data for p, f in view.files.items() if p.endswith("RECORD"))
    assert record is not None
    assert b"__pycache__" not in record  # like uv, the served bytecode is not part of RECORD


def test_a_missing_bytecode_object_fails_verify(store_dir: Path, make_wheel: MakeWheel) -> None:
    store, (sha,) = _ingest(store_dir, make_wheel(name="pkg", files={"pkg/__init__.py": "Y = 2\n"}))
    with store:
        compile_wheels(store, [sha], Path(sys.executable), MAGIC)
        ((_, digest, _),) = store.index.bytecode(sha, MAGIC)
        store.object_path(digest).unlink()
        report = store.verify()
    assert not report.ok
    assert f"object {digest}: missing, but the index lists it" in report.problems


def _other_magic_python() -> str | None:
    """An installed CPython whose bytecode differs from this one's, if the machine has one."""
    candidates = [shutil.which(f"python3.{minor}") for minor in range(9, 15)]
    candidates += glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3"))
    for candidate in filter(None, candidates):
        proc = subprocess.run(
            [candidate, "-c", "import importlib.util; print(importlib.util.MAGIC_NUMBER.hex())"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode == 0 and proc.stdout.strip() != MAGIC and sys.version_info >= (3, 9):
            return candidate
    return None


@pytest.mark.skipif(
    _other_magic_python() is None, reason="no second CPython version on this machine"
)
def test_two_interpreters_each_get_their_own(
    store_dir: Path, make_wheel: MakeWheel, tmp_path: Path
) -> None:
    other = probe_target(str(_other_magic_python()), {"XDG_CACHE_HOME": str(tmp_path)})
    store, (sha,) = _ingest(store_dir, make_wheel(name="pkg", files={"pkg/__init__.py": "Z = 3\n"}))
    with store:
        compile_wheels(store, [sha], Path(sys.executable), MAGIC)
        compile_wheels(store, [sha], other.python, other.magic)
        mine = store.index.bytecode(sha, MAGIC)
        theirs = store.index.bytecode(sha, other.magic)
        assert store.object_path(theirs[0][1]).read_bytes()[:4] == bytes.fromhex(other.magic)
    assert mine[0][1] != theirs[0][1]


# -- on a real mount -----------------------------------------------------------------------


def _loaded_from_bytecode(env: Env, module: str) -> list[str]:
    proc = subprocess.run(
        [env.python, "-v", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        env=env.env,
        check=True,
        cwd=env.project,
    )
    return [
        line for line in proc.stderr.splitlines() if str(env.site) in line and "matches" in line
    ]


@needs_fuse
def test_a_fresh_mount_imports_from_shared_bytecode_and_writes_nothing(mounted: Env) -> None:
    assert (mounted.site / "app" / "sub" / "__pycache__" / f"mod.{TAG}.pyc").is_file()
    matches = _loaded_from_bytecode(mounted, "app.sub.mod")
    assert any(f"app/sub/__pycache__/mod.{TAG}.pyc matches" in line for line in matches), matches
    assert mounted.pkgfs("diff", mounted.site).stdout == ""  # the import wrote no .pyc


@needs_fuse
def test_an_edited_source_wins_over_its_bytecode(mounted: Env) -> None:
    (mounted.site / "app" / "sub" / "mod.py").write_text("X = 'edited'\n")
    assert mounted.run(mounted.python, "-c", "import app.sub.mod as m; print(m.X)") == "edited\n"
    diff = mounted.pkgfs("diff", mounted.site).stdout.splitlines()
    assert f"M app/sub/__pycache__/mod.{TAG}.pyc" in diff  # Python rewrote it, in the overlay


@needs_fuse
def test_a_second_environment_adds_no_bytecode(mounted: Env, tmp_path: Path) -> None:
    store = Path(mounted.env["PKGFS_STORE"])
    objects = sum(1 for _ in (store / "objects-v1").rglob("*"))
    other = make_project(tmp_path / "second", mounted.env)
    try:
        result = other.pkgfs("mount", other.site)
        assert "compiled" not in result.stderr
        assert sum(1 for _ in (store / "objects-v1").rglob("*")) == objects
        assert (other.site / "app" / "__pycache__" / f"__init__.{TAG}.pyc").is_file()
    finally:
        _force_unmount(other.site)


@needs_fuse
def test_no_compile_serves_no_bytecode(project: Env) -> None:
    result = project.pkgfs("mount", project.site, "--no-compile")
    assert "compiled" not in result.stderr
    assert not (project.site / "app" / "__pycache__").exists()
    project.run(project.python, "-c", "import app")
    assert (
        f"A app/__pycache__/__init__.{TAG}.pyc"
        in project.pkgfs("diff", project.site).stdout.splitlines()
    )
