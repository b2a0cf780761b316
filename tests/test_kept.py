"""Locks kept read by the mount server (pkgfs.store.lock.kept): an answer is reused only
while every file it was read from is unchanged, and a requirements.txt is never kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from pkgfs.store.lock import Selection, read_lock
from pkgfs.store.lock import kept as kept_module
from pkgfs.store.lock.kept import forget_locks_but, read_lock_kept, remember
from tests.targets import cpython_linux
from tests.test_uvlock import LOCK as UV_LOCK

PYLOCK = """lock-version = "1.0"
created-by = "pkgfs-tests"
requires-python = ">=3.9"

[[packages]]
name = "six"
version = "{version}"
wheels = [{{ url = "https://files.example/six-{version}-py3-none-any.whl", hashes = {{ sha256 = "{digest}" }} }}]
"""


@pytest.fixture
def keeping(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process keeps locks (as the server does), for the test only."""
    monkeypatch.setattr(kept_module, "_kept", {})


def _versions(lock: Path) -> list[str]:
    return [p.version for p in read_lock_kept(lock, cpython_linux()).packages]


def test_a_kept_lock_is_answered_until_it_changes(tmp_path: Path, keeping: None) -> None:
    lock = tmp_path / "pylock.toml"
    lock.write_text(PYLOCK.format(version="1.0", digest="a" * 64))
    target = cpython_linux()
    key = remember(lock, target)
    assert key is not None
    first = read_lock_kept(lock, target)
    assert first is read_lock_kept(lock, target)  # the kept answer itself: nothing read
    assert first.packages == read_lock(lock, target).packages
    lock.write_text(PYLOCK.format(version="2.0", digest="b" * 64))
    assert _versions(lock) == ["2.0"]  # changed: read again, not the kept answer
    lock.write_text(PYLOCK.format(version="1.0", digest="a" * 64))
    assert read_lock_kept(lock, target) is first  # the same content again: kept
    # Named relatively, it is the same lock, and the answer names it as the caller did.
    relative = Path(lock.name)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        assert read_lock_kept(relative, target).path == relative
    forget_locks_but([])
    assert read_lock_kept(lock, target) is not first


def test_a_uv_lock_is_kept_with_its_project(tmp_path: Path, keeping: None) -> None:
    (tmp_path / "uv.lock").write_text(UV_LOCK)
    target = cpython_linux()
    lock = tmp_path / "uv.lock"
    assert remember(lock, target) is not None
    kept = read_lock_kept(lock, target)
    assert read_lock_kept(lock, target) is kept
    assert "pytest" in {p.name for p in kept.packages}  # the dev group, uv's default
    # tool.uv.default-groups lives in pyproject.toml: a change there is a change of the lock.
    (tmp_path / "pyproject.toml").write_text('[tool.uv]\ndefault-groups = ["docs"]\n')
    names = {p.name for p in read_lock_kept(lock, target).packages}
    assert "sphinx" in names
    assert "pytest" not in names
    # Another selection is another answer.
    assert remember(lock, target, Selection(no_groups=("docs",))) is not None
    chosen = read_lock_kept(lock, target, Selection(no_groups=("docs",)))
    assert "sphinx" not in {p.name for p in chosen.packages}


def test_requirements_and_processes_that_keep_nothing_read_each_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "pylock.toml"
    lock.write_text(PYLOCK.format(version="1.0", digest="a" * 64))
    target = cpython_linux()
    assert remember(lock, target) is None  # not the server: nothing kept
    assert read_lock_kept(lock, target) is not read_lock_kept(lock, target)
    monkeypatch.setattr(kept_module, "_kept", {})
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"six==1.0 --hash=sha256:{'a' * 64}\n")
    assert remember(requirements, target) is None  # pip expands ${VARS} in it: never kept
    assert read_lock_kept(requirements, target) is not read_lock_kept(requirements, target)


@pytest.mark.parametrize(
    "selection",
    [
        Selection(),
        Selection(groups=("docs", "lint"), no_groups=("dev",), extras=("cli",)),
        Selection(only_groups=("docs",)),
        Selection(no_default_groups=True, all_groups=True, all_extras=True),
    ],
)
def test_a_selection_is_read_back_from_its_description(selection: Selection) -> None:
    assert Selection.parse(selection.describe()) == selection


@pytest.mark.parametrize("described", ["--group", "--extra --all-extras", "--frozen", "dev"])
def test_a_description_that_describe_never_writes_is_refused(described: str) -> None:
    with pytest.raises(ValueError, match=r"selection|without a name"):
        Selection.parse(described)
