"""pkgfs's own wheel: store/ and vfs/ install as pkgfs.store and pkgfs.vfs, and nothing else."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a copy, so the build leaves nothing in the checkout.
    source = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("store", "vfs"):
        shutil.copytree(
            REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(source),
        ],
        check=True,
    )
    (wheel,) = dist.glob("pkgfs-*.whl")
    return wheel


def test_every_module_is_in_the_wheel_under_pkgfs(built_wheel: Path) -> None:
    names = set(zipfile.ZipFile(built_wheel).namelist())
    for package in ("store", "vfs"):
        for module in (REPO / package).rglob("*.py"):
            assert f"pkgfs/{module.relative_to(REPO)}" in names
        assert f"pkgfs/{package}/py.typed" in names
    top_level = {name.split("/", 1)[0] for name in names}
    assert top_level == {
        "pkgfs",
        built_wheel.name.split("-")[0] + "-" + built_wheel.name.split("-")[1] + ".dist-info",
    }


def test_installed_wheel_has_no_top_level_store_or_vfs(built_wheel: Path, tmp_path: Path) -> None:
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", built_wheel], check=True
    )
    probe = (
        "import importlib.util as u;"
        "print(u.find_spec('store'), u.find_spec('vfs'),"
        " u.find_spec('pkgfs.store') is not None, u.find_spec('pkgfs.vfs') is not None)"
    )
    out = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    assert out.split() == ["None", "None", "True", "True"]
    assert (tmp_path / "venv" / "bin" / "pkgfs").exists()
