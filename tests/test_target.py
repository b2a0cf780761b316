"""The target interpreter is asked for its own tags and markers, once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.tags import sys_tags

from pkgfs.store.lock import TargetError, default_python, probe_target


def test_probe_matches_packaging_in_process(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    target = probe_target(sys.executable, env)
    assert target.tags == tuple(sys_tags())
    assert dict(target.environment) == default_environment()


def test_answer_is_cached_and_invalidated_when_the_interpreter_changes(tmp_path: Path) -> None:
    # A venv with a copied interpreter, so touching it does not touch the real one.
    venv.create(tmp_path / "venv", symlinks=False, with_pip=False)
    python = tmp_path / "venv" / "bin" / "python"
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    cache = tmp_path / "cache" / "pkgfs" / "interpreters"

    first = probe_target(python, env)
    assert len(list(cache.iterdir())) == 1
    assert probe_target(python, env) == first
    assert len(list(cache.iterdir())) == 1  # answered from the cache
    os.utime(python, (1, 1))
    assert probe_target(python, env) == first
    assert len(list(cache.iterdir())) == 2  # asked again, cached under a new key


def test_venvs_of_one_base_share_one_probe(tmp_path: Path) -> None:
    # Symlinked venvs run their base's executable: its answer is theirs, asked once.
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    cache = tmp_path / "cache" / "pkgfs" / "interpreters"
    targets = []
    for name in ("one", "two"):
        venv.create(tmp_path / name, symlinks=True, with_pip=False)
        targets.append(probe_target(tmp_path / name / "bin" / "python", env))
    assert len(list(cache.iterdir())) == 1
    assert targets[0].python == tmp_path / "one" / "bin" / "python"  # each keeps its own path
    assert targets[1].python == tmp_path / "two" / "bin" / "python"
    assert targets[0].tags == targets[1].tags == tuple(sys_tags())


def _other_python() -> str | None:
    """Another interpreter than the one running the tests (Debian's, or another version)."""
    mine = os.path.realpath(sys.executable)
    for name in ("/usr/bin/python3", "python3.12", "python3.13", "python3.10"):
        found = shutil.which(name)
        if not found or os.path.realpath(found) == mine:
            continue
        if subprocess.run([found, "-c", "pass"], capture_output=True, check=False).returncode == 0:
            return found
    return None


@pytest.mark.skipif(_other_python() is None, reason="no second CPython on this machine")
def test_another_interpreter_answers_for_itself(tmp_path: Path) -> None:
    other = _other_python()
    assert other is not None
    version = subprocess.run(
        [other, "-c", "import platform; print(platform.python_version())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    target = probe_target(other, {"XDG_CACHE_HOME": str(tmp_path)})
    assert target.python_version == version
    minor = version.split(".")[1]
    assert str(target.best_tag).startswith(f"cp3{minor}-cp3{minor}-")


def test_missing_interpreter(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match=r"^/nonexistent/python: no such Python interpreter$"):
        probe_target("/nonexistent/python", {"XDG_CACHE_HOME": str(tmp_path)})


def test_interpreter_too_old_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/sh\necho 'Python 3.8 is older than 3.9, the oldest that pkgfs targets' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    with pytest.raises(TargetError) as info:
        probe_target(fake, {"XDG_CACHE_HOME": str(tmp_path)})
    assert (
        str(info.value)
        == f"{fake}: cannot ask it for its tags: Python 3.8 is older than 3.9, the oldest that pkgfs targets"
    )


def test_default_python(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / ".venv" / "bin").mkdir(parents=True)
    assert default_python(project, {}) == Path(sys.executable)
    python = project / ".venv" / "bin" / "python"
    python.write_text("")
    python.chmod(0o755)
    assert default_python(project, {}) == python
    active = tmp_path / "active"
    (active / "bin").mkdir(parents=True)
    (active / "bin" / "python").write_text("")
    (active / "bin" / "python").chmod(0o755)
    assert default_python(project, {"VIRTUAL_ENV": str(active)}) == active / "bin" / "python"
