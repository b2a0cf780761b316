"""Groups and extras: uv sync's options (Selection), and PEP 751's selection of pylock.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from pkgfs.store.lock import LockError, Selection, read_lock
from tests.targets import cpython_linux


def _wheel(name: str) -> str:
    return (
        f'wheels = [{{ url = "https://files.example/{name}-1.0-py3-none-any.whl",'
        f' hashes = {{ sha256 = "{"0" * 64}" }} }}]'
    )


PYLOCK = f"""
lock-version = "1.0"
created-by = "pkgfs-tests"
requires-python = ">=3.9"
extras = ["cli"]
dependency-groups = ["dev", "docs"]
default-groups = ["dev"]

[[packages]]
name = "six"
version = "1.0"
{_wheel("six")}

[[packages]]
name = "click"
version = "1.0"
marker = "'cli' in extras"
{_wheel("click")}

[[packages]]
name = "pytest"
version = "1.0"
marker = "'dev' in dependency_groups"
{_wheel("pytest")}

[[packages]]
name = "sphinx"
version = "1.0"
marker = "'docs' in dependency_groups"
{_wheel("sphinx")}

[[packages]]
name = "app"
directory = {{ path = "src/../app", editable = true }}

[[packages]]
name = "vendored"
version = "1.0"
directory = {{ path = "vendored" }}
"""


def test_options_describe_one_canonical_line() -> None:
    assert Selection().describe() == ""
    one = Selection(groups=("Docs", "lint"), no_groups=("dev",), extras=("CLI",))
    assert one == Selection(groups=("lint", "docs"), no_groups=("dev",), extras=("cli",))
    assert one.describe() == "--group docs --group lint --no-group dev --extra cli"


def test_uv_rules_for_groups() -> None:
    defined = {"dev", "docs", "lint"}
    assert Selection().choose_groups("x", defined, ["dev"]) == {"dev"}
    assert Selection().choose_groups("x", defined, None) == defined  # default-groups = "all"
    assert Selection().choose_groups("x", {"docs"}, ["dev"]) == set()  # no dev group at all
    assert Selection(no_groups=("dev",)).choose_groups("x", defined, ["dev"]) == set()
    assert Selection(groups=("lint",)).choose_groups("x", defined, ["dev"]) == {"dev", "lint"}
    chosen = Selection(no_default_groups=True, groups=("lint",)).choose_groups(
        "x", defined, ["dev"]
    )
    assert chosen == {"lint"}
    assert Selection(all_groups=True, no_groups=("docs",)).choose_groups("x", defined, []) == {
        "dev",
        "lint",
    }
    assert Selection(only_groups=("docs",)).choose_groups("x", defined, ["dev"]) == {"docs"}
    with pytest.raises(LockError, match=r"^x: no dependency group nope in the lock"):
        Selection(only_groups=("nope",)).choose_groups("x", defined, ["dev"])


def _pylock(tmp_path: Path, selection: Selection) -> tuple[set[str], list[tuple[str, Path]]]:
    (tmp_path / "pylock.toml").write_text(PYLOCK)
    lock = read_lock(tmp_path / "pylock.toml", cpython_linux(), selection)
    return {p.name for p in lock.packages}, [(e.name, e.path) for e in lock.editables]


def test_pylock_selects_as_pep_751_says(tmp_path: Path) -> None:
    names, editables = _pylock(tmp_path, Selection())
    assert names == {"six", "pytest", "vendored"}  # default-groups, no extras
    # PEP 751: a directory with editable = true is an editable install; its path is
    # relative to the lock's directory.
    assert editables == [("app", tmp_path / "app")]
    assert _pylock(tmp_path, Selection(no_groups=("dev",)))[0] == {"six", "vendored"}
    assert _pylock(tmp_path, Selection(groups=("docs",), extras=("cli",)))[0] == {
        "six",
        "click",
        "pytest",
        "sphinx",
        "vendored",
    }
    assert _pylock(tmp_path, Selection(no_default_groups=True, all_extras=True))[0] == {
        "six",
        "click",
        "vendored",
    }
    with pytest.raises(LockError, match=r"pylock.toml: no extra gui in the lock \(it has: cli\)"):
        _pylock(tmp_path, Selection(extras=("gui",)))
    with pytest.raises(LockError, match=r"--only-group is for uv.lock"):
        _pylock(tmp_path, Selection(only_groups=("docs",)))


def test_requirements_have_no_groups(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("")
    with pytest.raises(LockError, match=r"requirements.txt: a requirements.txt has no groups"):
        read_lock(tmp_path / "requirements.txt", cpython_linux(), Selection(no_groups=("dev",)))
