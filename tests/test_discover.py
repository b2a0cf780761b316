"""Which lockfile a project directory means."""

from __future__ import annotations

from pathlib import Path

import pytest

from pkgfs.store.lock import LockError, discover_lock, lock_kind


def test_order_is_pylock_then_uv_then_requirements(tmp_path: Path) -> None:
    for name in ("requirements.txt", "uv.lock", "pylock.toml"):
        (tmp_path / name).write_text("")
        assert discover_lock(tmp_path) == tmp_path / name


def test_a_single_named_pylock_stands_in(tmp_path: Path) -> None:
    (tmp_path / "uv.lock").write_text("")
    (tmp_path / "pylock.dev.toml").write_text("")
    assert discover_lock(tmp_path) == tmp_path / "pylock.dev.toml"


def test_several_named_pylocks_are_ambiguous(tmp_path: Path) -> None:
    (tmp_path / "pylock.a.toml").write_text("")
    (tmp_path / "pylock.b.toml").write_text("")
    with pytest.raises(LockError, match=r"several lockfiles \(pylock.a.toml, pylock.b.toml\)"):
        discover_lock(tmp_path)


def test_nothing_to_discover(tmp_path: Path) -> None:
    with pytest.raises(LockError) as info:
        discover_lock(tmp_path)
    assert (
        str(info.value)
        == f"{tmp_path}: no pylock.toml, uv.lock or requirements.txt here: pass --lock FILE"
    )


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("pylock.toml", "pylock.toml"),
        ("pylock.web.toml", "pylock.toml"),
        ("uv.lock", "uv.lock"),
        ("requirements.txt", "requirements.txt"),
        ("requirements-dev.txt", "requirements.txt"),
        ("locked.txt", "requirements.txt"),
    ],
)
def test_lock_kind(name: str, kind: str) -> None:
    assert lock_kind(Path(name)) == kind


def test_not_a_lockfile() -> None:
    with pytest.raises(LockError, match="not a lockfile pkgfs reads"):
        lock_kind(Path("Pipfile.lock"))
