"""``pkgfs store verify`` finds every kind of damage, and only damage."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from pkgfs.store import Store
from pkgfs.vfs.env.saved import load_or_compose
from tests.conftest import RunPkgfs

MakeWheel = Callable[..., Path]


def _objects(store_dir: Path) -> list[Path]:
    return sorted(p for p in (store_dir / "objects-v1").rglob("*") if p.is_file())


def _core_object(store_dir: Path) -> Path:
    """The object holding demo/core.py of the default test wheel."""
    content = b"def main() -> int:\n    return 0\n"
    (path,) = [p for p in _objects(store_dir) if p.read_bytes() == content]
    return path


def test_clean_store_verifies(pkgfs: RunPkgfs, make_wheel: MakeWheel) -> None:
    assert pkgfs("store", "add", make_wheel()).code == 0
    result = pkgfs("store", "verify")
    assert result.code == 0
    assert result.out == "ok: 4 objects, 1 wheels checked\n"


def test_corrupted_object_is_reported(
    pkgfs: RunPkgfs, make_wheel: MakeWheel, store_dir: Path
) -> None:
    assert pkgfs("store", "add", make_wheel()).code == 0
    victim = _core_object(store_dir)
    os.chmod(victim, 0o644)
    victim.write_bytes(b"def main() -> int:\n    return 1\n")  # same size, other bytes
    os.chmod(victim, 0o444)
    digest = victim.parent.name + victim.name

    result = pkgfs("store", "verify")

    assert result.code == 1
    assert f"object {digest}: content hashes to " in result.out
    assert result.out.splitlines()[-1] == "1 problems: 4 objects, 1 wheels checked"


def test_truncated_and_writable_objects_are_reported(
    pkgfs: RunPkgfs, make_wheel: MakeWheel, store_dir: Path
) -> None:
    assert pkgfs("store", "add", make_wheel()).code == 0
    victim = _core_object(store_dir)
    os.chmod(victim, 0o644)
    victim.write_bytes(b"def")
    digest = victim.parent.name + victim.name

    out = pkgfs("store", "verify").out

    assert f"object {digest}: 3 bytes, the index says 32" in out
    assert f"object {digest}: writable (mode 644)" in out


def test_missing_object_is_reported_with_the_files_that_need_it(
    pkgfs: RunPkgfs, make_wheel: MakeWheel, store_dir: Path
) -> None:
    assert pkgfs("store", "add", make_wheel()).code == 0
    victim = _core_object(store_dir)
    victim.unlink()
    digest = victim.parent.name + victim.name

    result = pkgfs("store", "verify")

    assert result.code == 1
    assert f"object {digest}: missing, but the index lists it" in result.out


def test_stray_file_in_objects_is_reported(
    pkgfs: RunPkgfs, make_wheel: MakeWheel, store_dir: Path
) -> None:
    assert pkgfs("store", "add", make_wheel()).code == 0
    (store_dir / "objects-v1" / "ab").mkdir(exist_ok=True)
    (store_dir / "objects-v1" / "ab" / "not-a-digest").write_text("x")
    result = pkgfs("store", "verify")
    assert result.code == 1
    assert "not-a-digest: not an object" in result.out


def test_unreferenced_objects_and_staging_are_notes_not_problems(
    pkgfs: RunPkgfs, make_wheel: MakeWheel, store_dir: Path
) -> None:
    """What a kill -9 between publishing objects and committing leaves behind."""
    assert pkgfs("store", "add", make_wheel()).code == 0
    orphan = b"left by an interrupted ingest\n"
    digest = hashlib.sha256(orphan).hexdigest()
    path = store_dir / "objects-v1" / digest[:2] / digest[2:]
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(orphan)
    os.chmod(path, 0o444)
    (store_dir / "tmp" / "ingest-dead").mkdir()

    result = pkgfs("store", "verify")

    assert result.code == 0
    assert "note: 1 objects no wheel refers to" in result.out
    assert "note: 1 staging directories of interrupted ingests" in result.out
    assert result.out.endswith("ok: 5 objects, 1 wheels checked\n")


def _edit_index(store_dir: Path, sql: str) -> None:
    """What someone with write access to the store could do to it."""
    with contextlib.closing(sqlite3.connect(store_dir / "index-v1.sqlite")) as db, db:
        assert db.execute(sql).rowcount == 1


UNSAFE_ROWS = {
    "file path": (
        "UPDATE files SET path = '../../evil' WHERE path = 'demo/core.py'",
        "demo-1.0-py3-none-any.whl: index row: unsafe path purelib/'../../evil'",
    ),
    "absolute file path": (
        "UPDATE files SET path = '/etc/evil' WHERE path = 'demo/core.py'",
        "unsafe path purelib/'/etc/evil'",
    ),
    "script in a subdirectory": (
        "UPDATE files SET path = 'sub/tool' WHERE scheme = 'scripts'",
        "unsafe path scripts/'sub/tool'",
    ),
    "entry point name": (
        "UPDATE entry_points SET name = '../../evil'",
        "entry point '../../evil' is not a plain file name",
    ),
    ".dist-info name": (
        "UPDATE wheels SET dist_info = '../demo-1.0.dist-info'",
        ".dist-info name '../demo-1.0.dist-info' is unsafe",
    ),
}


@pytest.mark.parametrize("row", UNSAFE_ROWS)
def test_index_rows_naming_unsafe_paths_are_reported(
    row: str, pkgfs: RunPkgfs, make_wheel: MakeWheel, store_dir: Path
) -> None:
    wheel = make_wheel(
        files={"demo/core.py": "X = 1\n", "demo-1.0.data/scripts/tool": "#!python\n"},
        entry_points="[console_scripts]\ndemo = demo.core:main\n",
    )
    assert pkgfs("store", "add", wheel).code == 0
    assert pkgfs("store", "verify").code == 0
    sql, expected = UNSAFE_ROWS[row]
    _edit_index(store_dir, sql)

    result = pkgfs("store", "verify")

    assert result.code == 1
    assert expected in result.out
    assert result.out.splitlines()[-1] == "1 problems: 5 objects, 1 wheels checked"


def test_a_damaged_saved_view_is_reported(
    pkgfs: RunPkgfs, make_wheel: MakeWheel, store_dir: Path
) -> None:
    with Store.open(store_dir) as store:
        sha256 = store.add(make_wheel()).sha256
        load_or_compose(store, [sha256], "/venv/bin/python", "lib/python3.11/site-packages")
    assert pkgfs("store", "verify").code == 0
    (saved,) = (store_dir / "views-v2").iterdir()
    saved.write_bytes(saved.read_bytes()[:-1])

    result = pkgfs("store", "verify")

    assert result.code == 1
    assert f"{saved}: saved view does not match its checksum (damaged;" in result.out
    (store_dir / "views-v2" / "stray").symlink_to(saved)
    assert f"{store_dir / 'views-v2' / 'stray'}: not a saved view" in pkgfs("store", "verify").out
