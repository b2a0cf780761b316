"""Bytecode read ahead: the first lookup in a lower __pycache__ reads its neighbours ahead.

Real mounts over a real store; the page cache is dropped and then asked (``fincore``, from
util-linux) which store objects it holds. A mount with ``PKGFS_PREFETCH=0`` is the control:
without read ahead, the neighbours stay on disk.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mountkit import Env, environ_for, force_unmount, make_project, needs_fuse

pytestmark = [
    needs_fuse,
    pytest.mark.skipif(os.geteuid() != 0, reason="dropping the page cache needs root"),
    pytest.mark.skipif(shutil.which("fincore") is None, reason="needs fincore (util-linux)"),
]

MODULES = 12
TAG = sys.implementation.cache_tag


def _resident(paths: list[Path]) -> list[int]:
    """Bytes of each file in the page cache."""
    out = subprocess.run(
        ["fincore", "--json", "--bytes", "--output", "RES", *map(str, paths)],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return [int(row["res"]) for row in json.loads(out)["fincore"]]


def _drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _mounted(tmp_path: Path, prefetch: bool) -> tuple[Env, list[Path]]:
    env = environ_for(tmp_path)
    if not prefetch:
        env["PKGFS_PREFETCH"] = "0"
    # Modules big enough (~40 KiB of bytecode each) that a read of one is not a read of all.
    files: dict[str, bytes | str] = {
        f"many/m{i}.py": "".join(f"V{i}_{j} = {'x' * 200!r}\n" for j in range(150))
        for i in range(MODULES)
    }
    files["many/__init__.py"] = ""
    project = make_project(tmp_path / "project", env, extra={"many": files})
    project.pkgfs("mount", project.site)
    cache = project.site / "many" / "__pycache__"
    pycs = sorted(cache.glob(f"m*.{TAG}.pyc"))
    assert len(pycs) == MODULES, "the mount serves shared bytecode"
    store = Path(env["PKGFS_STORE"]) / "objects-v1"
    objects = []
    for pyc in pycs:
        digest = hashlib.sha256(pyc.read_bytes()).hexdigest()
        objects.append(store / digest[:2] / digest[2:])
    assert all(o.is_file() for o in objects)
    return project, objects


@pytest.mark.parametrize("prefetch", [True, False], ids=["read-ahead", "control"])
def test_first_pyc_read_brings_its_neighbours_into_the_page_cache(
    tmp_path: Path, prefetch: bool
) -> None:
    project, objects = _mounted(tmp_path, prefetch)
    try:
        # The kernel must forget the mount's inodes too, so the next open is a LOOKUP.
        _drop_caches()
        assert sum(_resident(objects)) == 0
        pyc = project.site / "many" / "__pycache__" / f"m0.{TAG}.pyc"
        assert pyc.read_bytes()[:4] == importlib.util.MAGIC_NUMBER
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            others = _resident(objects[1:])
            if all(others) or not prefetch:
                break
            time.sleep(0.05)
        if prefetch:
            assert all(others), f"neighbours not read ahead: {others}"
        else:
            time.sleep(0.5)
            assert sum(_resident(objects[1:])) == 0, "nothing reads ahead without prefetch"
    finally:
        force_unmount(project.site)
