"""How each contender makes an environment of one lock, and the mounts this run made.

Every contender starts warm from the same lock, into a fresh ``python -m venv --without-pip``
venv made untimed:

- ``pkgfs``: ``pkgfs mount`` of the venv's site-packages from uv.lock, on a store that
  ``pkgfs sync`` filled (and compiled the shared bytecode into) before the rounds;
- ``native``: ``uv pip sync --link-mode hardlink --compile-bytecode`` from a uv cache one
  earlier install filled: the venv every runtime ratio is taken against;
- ``uv-copy``: the same with ``--link-mode copy``: a venv that shares nothing, for the disk
  figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    REQUIREMENTS,
    UV_LOCK,
    BenchError,
    Stack,
    Tools,
    capture,
    child_env,
    lock,
    mounted_under,
    progress,
)

PKGFS, NATIVE, COPY = "pkgfs", "native", "uv-copy"
CONTENDERS = (PKGFS, NATIVE, COPY)
COMMANDS = {
    PKGFS: "pkgfs --store <warm store> mount <venv>/lib/pythonX.Y/site-packages --lock uv.lock"
    " --offline",
    NATIVE: "uv pip sync --no-config --offline --link-mode hardlink --compile-bytecode"
    " --python <venv> requirements.txt (UV_CACHE_DIR=<warm cache>)",
    COPY: "the same with --link-mode copy",
}


@dataclass(frozen=True)
class Inputs:
    """What every contender of one stack starts from: the lock and the warm store and cache."""

    stack: Stack
    project: Path  # holds uv.lock and requirements.txt
    index_url: str  # the one index the lock names; never written to a result
    store: Path
    uv_cache: Path
    wheels: int
    files: int

    def places(self, contender: str) -> list[tuple[str, Path]]:
        """The contender's shared directory, whose allocation the counted disk figure adds."""
        return [("store", self.store)] if contender == PKGFS else [("uv-cache", self.uv_cache)]


def site_packages(venv: Path) -> Path:
    """The site-packages of ``venv``, a venv of this interpreter (as every one here is)."""
    return venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def new_venv(tools: Tools, path: Path) -> Path:
    """A fresh venv without pip at ``path`` (untimed)."""
    capture([tools.python, "-m", "venv", "--without-pip", path])
    return path


def uv_pip_sync(
    tools: Tools, inputs: Inputs, venv: Path, root: Path, *, copy: bool, offline: bool = True
) -> None:
    """``uv pip sync requirements.txt`` into ``venv`` from the uv cache, with bytecode."""
    argv: list[str | Path] = [tools.uv, "pip", "sync", "--no-config", "--compile-bytecode"]
    argv += ["--link-mode", "copy" if copy else "hardlink", "--index-url", inputs.index_url]
    argv += ["--python", venv / "bin" / "python", inputs.project / REQUIREMENTS]
    env = {**child_env(root), "UV_CACHE_DIR": str(inputs.uv_cache)}
    capture([*argv, "--offline"] if offline else argv, env=env)


def prepare(tools: Tools, stack: Stack, projects: Path, root: Path, relock: bool) -> Inputs:
    """Lock (if needed), then fill a store and a uv cache for ``stack``; nothing is timed."""
    project, index_url = lock(tools, stack, projects, relock)
    base = root / stack.name
    base.mkdir(parents=True)
    store, uv_cache = base / "store", base / "uv-cache"
    progress(f"{stack.name}: pkgfs sync into a new store (it compiles the bytecode; untimed)")
    sync: list[str | Path] = [tools.pkgfs, "--store", store, "sync", "--python", tools.python]
    capture([*sync, "--lock", project / UV_LOCK], env=child_env(root))
    stats = json.loads(capture([tools.pkgfs, "--store", store, "store", "stats", "--json"]))
    inputs = Inputs(stack, project, index_url, store, uv_cache, stats["wheels"], stats["files"])
    progress(f"{stack.name}: uv pip sync to fill a new uv cache (untimed)")
    venv = new_venv(tools, base / "warmup")
    uv_pip_sync(tools, inputs, venv, root, copy=False, offline=False)
    shutil.rmtree(venv)
    progress(f"{stack.name}: {inputs.wheels} wheels, {inputs.files:,} files")
    return inputs


class Mounts:
    """The mounts this run made; ``close`` undoes every one still there, whatever happened."""

    def __init__(self, tools: Tools, root: Path) -> None:
        self.tools, self.root = tools, root
        self.env = child_env(root)
        self.active: set[Path] = set()

    def mount(self, inputs: Inputs, venv: Path) -> None:
        """``pkgfs mount`` of the stack's uv.lock at ``venv``'s site-packages."""
        mountpoint = site_packages(venv)
        self.active.add(mountpoint)  # before the command: a half-made mount is ours too
        argv: list[str | Path] = [self.tools.pkgfs, "--store", inputs.store, "mount"]
        capture([*argv, mountpoint, "--lock", inputs.project / UV_LOCK, "--offline"], self.env)

    def status(self, mountpoint: Path) -> dict[str, Any]:
        """The mount's row of ``pkgfs status --json`` (pid, mode, requests when it has them)."""
        rows = json.loads(capture([self.tools.pkgfs, "status", "--json"], env=self.env))
        for row in rows:
            if row.get("mountpoint") == str(mountpoint):
                if row.get("state") != "ok":
                    raise BenchError(f"pkgfs status says {mountpoint} is {row.get('state')}")
                return dict(row)
        raise BenchError(f"pkgfs status --json does not list {mountpoint}")

    def unmount(self, mountpoint: Path) -> None:
        """``pkgfs unmount``; failing that ``--lazy``; failing that ``fusermount3 -u -z``."""
        errors = []
        attempts: list[list[str | Path]] = [
            [self.tools.pkgfs, "unmount", mountpoint],
            [self.tools.pkgfs, "unmount", "--lazy", mountpoint],
            ["fusermount3", "-u", "-z", mountpoint],
        ]
        for argv in attempts:
            if mountpoint not in mounted_under(mountpoint):
                break
            try:
                capture(argv, env=self.env)
            except BenchError as exc:
                errors.append(str(exc))
        if mountpoint in mounted_under(mountpoint):
            raise BenchError(f"cannot unmount {mountpoint}:\n  " + "\n  ".join(errors))
        self.active.discard(mountpoint)

    def close(self) -> None:
        """Unmount whatever is still mounted, ours or anything else under the run's root."""
        strays = {p for p in mounted_under(self.root) if p != self.root}
        for mountpoint in sorted(self.active | strays, key=lambda p: -len(p.parts)):
            try:
                self.unmount(mountpoint)
            except BenchError as exc:
                progress(f"error: {exc}")
        try:  # the mount server the run's pkgfs commands started (its mounts are gone)
            capture([self.tools.pkgfs, "server", "stop"], env=self.env)
        except BenchError as exc:
            progress(f"error: {exc}")


@contextlib.contextmanager
def run_root(workdir: Path, tools: Tools) -> Iterator[Mounts]:
    """A new directory under ``workdir`` for the whole run, and its mounts; both undone."""
    workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="pkgfs-bench-", dir=workdir)).resolve()
    mounts = Mounts(tools, root)
    try:
        yield mounts
    finally:
        mounts.close()
        left = [str(p) for p in mounted_under(root) if p != root]
        if left:  # never delete through a mount: say so and leave the directory
            progress(f"error: still mounted, {root} is kept: {', '.join(left)}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def create(contender: str, tools: Tools, inputs: Inputs, venv: Path, mounts: Mounts) -> float:
    """Make ``venv`` usable the contender's way; the wall time of that one command."""
    os.sync()
    start = time.perf_counter()
    if contender == PKGFS:
        mounts.mount(inputs, venv)
    else:
        uv_pip_sync(tools, inputs, venv, mounts.root, copy=contender == COPY)
    return time.perf_counter() - start
