"""Installing pkgfs from a checkout writes nothing into it (setup.py sends egg-info and build/
to a scratch directory), so a user can install from a checkout they cannot write."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_building_the_wheel_leaves_the_checkout_as_it_was(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "setup.py"):
        shutil.copy(REPO / name, source / name)
    for package in ("store", "vfs"):
        shutil.copytree(
            REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    before = _tree(source)
    environ = {**os.environ, "TMPDIR": str(tmp_path)}
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip_wheel, "-w", tmp_path / "dist", source], check=True, env=environ)
    assert len(list((tmp_path / "dist").glob("pkgfs-*.whl"))) == 1
    assert _tree(source) == before  # no pkgfs.egg-info, no build/
    # and the scratch directory is gone too
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("pkgfs-build-")]
