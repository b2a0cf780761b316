"""The ways bench/mount.py creates an environment from one lock, and the mounts it makes.

Every contender starts warm and from the same lock, into a fresh ``python -m venv
--without-pip`` venv that is made untimed:

- ``pkgfs``: ``pkgfs mount`` of the venv's site-packages from uv.lock, on a store that
  already holds every wheel (``pkgfs sync`` ran before the rounds);
- ``uv-hardlink`` and ``uv-copy``: ``uv pip sync requirements.txt`` with that link mode and a
  uv cache that one earlier install filled; ``uv-hardlink`` is the "native" venv the runtime
  figures are compared with;
- ``uv-sync-hardlink`` and ``uv-sync-copy``: ``uv sync --frozen`` of the project itself
  (``UV_PROJECT_ENVIRONMENT`` names the venv), the command a uv project runs;
- ``uv-compile``: ``uv pip sync --compile-bytecode`` (hardlink), uv's way to ship bytecode;
- ``pip``: ``pip install --require-hashes`` from a local wheelhouse that ``pip download``
  filled (pip keeps no unpacked cache, so local wheels are its warm start). pip compiles
  bytecode by default, and this keeps pip's default.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    BenchError,
    Measurement,
    Tools,
    capture,
    measure,
    measure_output,
    mounted_under,
    progress,
    site_packages,
)
from bench.sync import REQUIREMENTS, UV_LOCK, Project

PKGFS, HARDLINK, COPY = "pkgfs", "uv-hardlink", "uv-copy"
SYNC_HARDLINK, SYNC_COPY = "uv-sync-hardlink", "uv-sync-copy"
COMPILE, PIP = "uv-compile", "pip"
CONTENDERS = (PKGFS, HARDLINK, COPY, SYNC_HARDLINK, SYNC_COPY, COMPILE, PIP)
NATIVE = HARDLINK  # creation and runtime ratios are taken against this one
# Which runtime figures each contender gets. uv sync lays out the same files as uv pip sync
# with the same link mode, so its venvs are measured for creation and disk only; the two that
# ship bytecode differ from native in their first import, so that one is measured too.
FULL_RUNTIME = frozenset({PKGFS, HARDLINK, COPY})
FIRST_IMPORT_ONLY = frozenset({COMPILE, PIP})
LINK_MODES = {
    HARDLINK: "hardlink",
    COPY: "copy",
    SYNC_HARDLINK: "hardlink",
    SYNC_COPY: "copy",
    COMPILE: "hardlink",
}
COMMANDS = {
    PKGFS: "pkgfs --store <warm store> mount <venv>/lib/pythonX.Y/site-packages --lock uv.lock"
    " --offline",
    HARDLINK: "uv pip sync --no-config --link-mode hardlink --index-url <the lock's index>"
    " --python <venv> --offline requirements.txt (UV_CACHE_DIR=<warm>)",
    COPY: "the same with --link-mode copy",
    SYNC_HARDLINK: "uv sync --frozen --no-config --offline --link-mode hardlink --project"
    " <project> --python <venv> (UV_PROJECT_ENVIRONMENT=<venv>, UV_CACHE_DIR=<warm>)",
    SYNC_COPY: "the same with --link-mode copy",
    COMPILE: "uv pip sync ... --link-mode hardlink --compile-bytecode (UV_CACHE_DIR=<warm>)",
    PIP: "pip --python <venv> install --isolated --no-index --find-links <wheelhouse> --no-deps"
    " --require-hashes -r requirements.txt (pip's default: it compiles bytecode)",
}


@dataclass(frozen=True)
class Inputs:
    """What every contender of one stack starts from: the lock and the warm caches."""

    project: Project
    store: Path  # a pkgfs store holding every wheel of the lock
    uv_cache: Path  # a uv cache that installed the lock once
    wheelhouse: Path  # the lock's wheel files, for pip

    def places(self, contender: str) -> list[tuple[str, Path]]:
        """The contender's own shared directories, whose allocation the disk figure counts."""
        if contender == PKGFS:
            return [("store", self.store)]
        if contender == PIP:
            return [("wheelhouse", self.wheelhouse)]
        return [("uv-cache", self.uv_cache)]


def child_env(root: Path, *, write_bytecode: bool = False) -> dict[str, str]:
    """The environment of every child: ours without PYTHON*, UV_*, PIP_* and VIRTUAL_ENV.

    XDG state and cache point into ``root`` (pkgfs keeps mount state and interpreter probes
    there), MPLCONFIGDIR and pip's cache too, and PYTHONDONTWRITEBYTECODE=1 unless
    ``write_bytecode``.
    """
    drop = ("PYTHON", "UV_", "PIP_", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["XDG_STATE_HOME"] = str(root / "xdg-state")
    env["XDG_CACHE_HOME"] = str(root / "xdg-cache")
    env["MPLCONFIGDIR"] = str(root / "mplconfig")
    if not write_bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def uv_pip_sync(
    tools: Tools,
    inputs: Inputs,
    venv: Path,
    env: Mapping[str, str],
    *,
    link_mode: str,
    offline: bool,
    compile_bytecode: bool = False,
) -> Measurement:
    """``uv pip sync requirements.txt`` into ``venv``; timed (the caller may ignore it)."""
    project = inputs.project
    argv: list[str | Path] = [tools.uv, "pip", "sync", "--no-config", "--link-mode", link_mode]
    argv += ["--index-url", project.index_url, "--python", venv / "bin" / "python"]
    argv += ["--offline"] if offline else []
    argv += ["--compile-bytecode"] if compile_bytecode else []
    result, _ = measure_output(
        [*argv, project.lock(REQUIREMENTS)], env={**env, "UV_CACHE_DIR": str(inputs.uv_cache)}
    )
    return result


def uv_sync_frozen(
    tools: Tools, inputs: Inputs, venv: Path, env: Mapping[str, str], *, link_mode: str
) -> Measurement:
    """``uv sync --frozen`` of the stack's project into ``venv``, from the warm uv cache."""
    argv: list[str | Path] = [tools.uv, "sync", "--frozen", "--no-config", "--offline"]
    argv += ["--link-mode", link_mode, "--project", inputs.project.directory]
    argv += ["--python", venv / "bin" / "python"]
    child = {**env, "UV_CACHE_DIR": str(inputs.uv_cache), "UV_PROJECT_ENVIRONMENT": str(venv)}
    return measure(argv, env=child)


def pip_argv(tools: Tools, venv: Path) -> list[str | Path]:
    """pip run by the harness's interpreter, acting on ``venv`` (which has no pip)."""
    argv: list[str | Path] = [tools.python, "-m", "pip", "--python", venv / "bin" / "python"]
    return [*argv, "--isolated", "--disable-pip-version-check"]


def pip_install(tools: Tools, inputs: Inputs, venv: Path, env: Mapping[str, str]) -> Measurement:
    """``pip install --require-hashes`` of requirements.txt from the local wheelhouse."""
    argv = [*pip_argv(tools, venv), "install", "--quiet", "--no-index", "--no-deps"]
    argv += ["--find-links", inputs.wheelhouse, "--require-hashes"]
    return measure([*argv, "-r", inputs.project.lock(REQUIREMENTS)], env=env)


def fill_wheelhouse(tools: Tools, inputs: Inputs, env: Mapping[str, str]) -> None:
    """``pip download`` every wheel of requirements.txt (hash-checked) not yet there."""
    inputs.wheelhouse.mkdir(parents=True, exist_ok=True)
    argv: list[str | Path] = [tools.python, "-m", "pip", "--isolated"]
    argv += ["--disable-pip-version-check", "download", "--quiet", "--no-deps"]
    argv += ["--only-binary", ":all:", "--require-hashes", "--dest", inputs.wheelhouse]
    argv += ["--index-url", inputs.project.index_url, "-r", inputs.project.lock(REQUIREMENTS)]
    capture(argv, env=env)


# --- mounts: made, undone, and never left behind -------------------------------------------


def is_mounted(path: Path) -> bool:
    """True when ``path`` is a mount point now."""
    return Path(os.path.realpath(path)) in mounted_under(path)


class Mounts:
    """The mounts this run made. ``close`` undoes every one still there, whatever happened."""

    def __init__(self, tools: Tools, root: Path) -> None:
        self.tools, self.root = tools, root
        self.env = child_env(root)
        self.active: set[Path] = set()

    def mount(self, inputs: Inputs, venv: Path) -> Measurement:
        """Time ``pkgfs mount`` of the stack's uv.lock at ``venv``'s site-packages."""
        mountpoint = site_packages(venv)
        self.active.add(mountpoint)  # before the command: a half-made mount is ours too
        argv: list[str | Path] = [self.tools.pkgfs, "--store", inputs.store, "mount"]
        argv += [mountpoint, "--lock", inputs.project.lock(UV_LOCK), "--offline"]
        os.sync()
        try:
            return measure(argv, env=self.env)
        except BenchError as exc:
            raise BenchError(f"{' '.join(map(str, argv))}\n{exc}") from None

    def daemon_pid(self, mountpoint: Path) -> int | None:
        """The pid of the daemon serving ``mountpoint``, from ``pkgfs status --json``."""
        rows = json.loads(capture([self.tools.pkgfs, "status", "--json"], env=self.env))
        for row in rows:
            if row.get("mountpoint") == str(mountpoint):
                if row.get("state") != "ok":
                    raise BenchError(f"pkgfs status says {mountpoint} is {row.get('state')}")
                return int(row["pid"])
        raise BenchError(f"pkgfs status --json does not list {mountpoint}")

    def unmount(self, mountpoint: Path) -> None:
        """``pkgfs unmount``; failing that ``--lazy``; failing that ``fusermount3 -u -z``."""
        attempts: list[list[str | Path]] = [
            [self.tools.pkgfs, "unmount", mountpoint],
            [self.tools.pkgfs, "unmount", "--lazy", mountpoint],
            ["fusermount3", "-u", "-z", mountpoint],
        ]
        errors = []
        for argv in attempts:
            if not is_mounted(mountpoint):
                break
            try:
                capture(argv, env=self.env)
            except BenchError as exc:
                errors.append(f"{' '.join(map(str, argv))}: {exc}")
        if is_mounted(mountpoint):
            raise BenchError(f"cannot unmount {mountpoint}:\n  " + "\n  ".join(errors))
        self.active.discard(mountpoint)
        if errors:
            progress(f"unmounted {mountpoint} only after: {'; '.join(errors)}")

    def close(self) -> None:
        """Unmount whatever is still mounted, ours or anything else under the run's root."""
        root = Path(os.path.realpath(self.root))
        strays = {p for p in mounted_under(root) if p != root}
        for mountpoint in sorted(self.active | strays, key=lambda p: -len(p.parts)):
            try:
                self.unmount(mountpoint)
            except BenchError as exc:
                progress(f"error: {exc}")


@contextlib.contextmanager
def run_root(workdir: Path, tools: Tools) -> Iterator[tuple[Path, Mounts]]:
    """A new directory under ``workdir`` for the whole run, and its mounts; both undone."""
    workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="pkgfs-bench-mount-", dir=workdir)).resolve()
    mounts = Mounts(tools, root)
    try:
        yield root, mounts
    finally:
        mounts.close()
        left = [str(p) for p in mounted_under(root) if p != root]
        if left:  # never delete through a mount: say so and leave the directory
            progress(f"error: still mounted, {root} is kept: {', '.join(left)}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def create(
    contender: str, tools: Tools, inputs: Inputs, venv: Path, *, root: Path, mounts: Mounts
) -> Measurement:
    """The timed step of ``contender``: one command that makes ``venv`` usable."""
    if contender == PKGFS:
        return mounts.mount(inputs, venv)
    env = child_env(root)
    os.sync()
    if contender in (HARDLINK, COPY, COMPILE):
        return uv_pip_sync(
            tools,
            inputs,
            venv,
            env,
            link_mode=LINK_MODES[contender],
            offline=True,
            compile_bytecode=contender == COMPILE,
        )
    if contender in (SYNC_HARDLINK, SYNC_COPY):
        return uv_sync_frozen(tools, inputs, venv, env, link_mode=LINK_MODES[contender])
    if contender == PIP:
        return pip_install(tools, inputs, venv, env)
    raise BenchError(f"unknown contender {contender!r}")
