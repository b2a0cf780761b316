"""``pkgfs store verify`` finds every kind of damage, and only damage."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

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
