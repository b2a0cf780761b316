#!/usr/bin/env python3
"""Benchmark: creating and using an environment, a pkgfs mount against uv's installs.

Four real projects of growing size, each locked with ``uv lock`` (as ``bench/sync.py`` does;
its web and scientific stacks are reused as they are): a small CLI stack, the web stack, the
scientific stack and a stack of 50,000+ files. Before the rounds, untimed, each lock is
synced into a pkgfs store (``pkgfs sync``) and installed once with ``uv pip sync`` to fill
a uv cache: both contenders start warm.

Each round then creates, per stack and interleaved, a fresh environment with each contender,
from the same lock and in this order:

- pkgfs: ``pkgfs mount <venv>/lib/python3.X/site-packages --lock uv.lock --offline``;
- uv hardlink: ``uv pip sync --offline --link-mode=hardlink requirements.txt``;
- uv copy: the same with ``--link-mode=copy``.

The venv itself (``python -m venv --without-pip``) is made untimed for every contender; only
the install or mount step is timed. Measured per environment: that step's wall time; the
disk bytes and inodes it took (the filesystem's free counts before and after, with
``os.sync()``; and, as a cross-check free of other writers, the allocated blocks and inodes
counted under the venv and the contender's store, cache and state); the first import of the
stack's main packages after creation; warm imports compiled from source by every contender
(no bytecode read or written); an ``os.walk`` + ``lstat`` of the whole site-packages;
``pip list``; then one import that may write bytecode, the disk taken by then, and warm
imports that read bytecode (pkgfs's shared ``.pyc`` from the store, the venv's own
``__pycache__`` for uv). Runtime figures are compared with the uv hardlink venv ("native"),
creation with uv hardlink too, each as a per-round ratio.

Usage: ``python bench/mount.py [--rounds N] [--quick] [--relock] [--out DIR] [--workdir DIR]
[--projects DIR]``. Results go to ``<out>/mount-<UTC timestamp>.json`` and a table is printed
on stdout; progress goes to stderr. Every mount is undone and every directory removed at the
end, also after an error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

try:
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ModuleNotFoundError:
    # A bare system python3 (via the shebang) lacks pkgfs's dependencies; say what to do.
    sys.exit("bench: error: 'packaging' is missing; run .venv/bin/python bench/mount.py")

# Run as a script (python bench/NAME.py), the repository root is not on sys.path: put it
# there, so the scripts and mypy import the shared modules alike, as bench.common and
# bench.sync.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (
    REPO,
    BenchError,
    Measurement,
    Tools,
    capture,
    find_tool,
    machine_info,
    measure,
    measure_output,
    observe_link_mode,
    progress,
    site_packages,
    spread,
    store_stats,
    write_report,
)
from bench.contenders import (
    COMMANDS,
    CONTENDERS,
    FIRST_IMPORT_ONLY,
    FULL_RUNTIME,
    NATIVE,
    PKGFS,
    Inputs,
    Mounts,
    child_env,
    create,
    fill_wheelhouse,
    pip_argv,
    run_root,
    uv_pip_sync,
)
from bench.disk import Disk, Free, disk_delta, snapshot
from bench.sync import DEFAULT_PROJECTS as SYNC_PROJECTS
from bench.sync import (
    EXCLUDE_NEWER,
    REQUIRES_PYTHON,
    UV_LOCK,
    Project,
    Workload,
    new_venv,
    prepare,
)
from bench.sync import WORKLOADS as SYNC_WORKLOADS


@dataclass(frozen=True)
class MountWorkload(Workload):
    """A workload of this benchmark's own; its project says so and is named bench-mount-*."""

    def pyproject(self) -> str:
        """The project's pyproject.toml: no build system, so uv locks it as a virtual project."""
        deps = "".join(f'    "{d}",\n' for d in self.dependencies)
        return (
            f"# Written by bench/mount.py (STACKS); edits here are overwritten.\n"
            f"[project]\n"
            f'name = "bench-mount-{self.name}"\n'
            f'version = "0"\n'
            f'requires-python = "{REQUIRES_PYTHON}"\n'
            f"dependencies = [\n{deps}]\n"
        )


@dataclass(frozen=True)
class Stack:
    """A workload, the modules that stand for "using it", and where its project lives."""

    workload: Workload
    imports: tuple[str, ...]  # imported together in one ``python -c``
    reused: bool  # bench/sync.py's workload and project (.cache/bench-sync), not our own


_SYNC = {w.name: w for w in SYNC_WORKLOADS}
STACKS: tuple[Stack, ...] = (
    Stack(
        MountWorkload("cli", "small CLI stack", ("click", "rich", "httpx")),
        ("click", "rich.console", "httpx"),
        reused=False,
    ),
    Stack(
        _SYNC["web"],
        (
            "flask",
            "sqlalchemy",
            "alembic",
            "pydantic",
            "httpx",
            "requests",
            "rich.console",
            "fastapi",
            "uvicorn",
            "jinja2",
        ),
        reused=True,
    ),
    Stack(
        _SYNC["sci"],
        (
            "numpy",
            "pandas",
            "scipy.stats",
            "matplotlib",
            "sklearn.linear_model",
            "pyarrow",
            "statsmodels.api",
            "sympy",
        ),
        reused=True,
    ),
    Stack(
        # Chosen for the number of files: ansible ships its collections (~21,000 files),
        # plotly 5 a module per validator (~15,000), and the older Azure SDKs a copy of the
        # models per API version; botocore, sympy and jupyterlab add a few thousand each.
        MountWorkload(
            "many",
            "many-file stack",
            (
                "boto3",
                "sympy",
                "jupyterlab",
                "plotly<6",
                "azure-mgmt-network<20",
                "azure-mgmt-compute<30",
                "azure-mgmt-resource<22",
                "azure-mgmt-storage<20",
                "ansible",
            ),
        ),
        (
            "boto3",
            "botocore.session",
            "sympy",
            "jupyterlab",
            "plotly.graph_objects",
            "azure.mgmt.network",
            "azure.mgmt.compute",
            "ansible.cli",
        ),
        reused=False,
    ),
)
QUICK_STACKS = ("cli", "web")
DEFAULT_ROUNDS = 3
QUICK_ROUNDS = 1
REPEATS = 2  # warm runs per measure, environment and round; a round keeps their median

RUNTIME = (
    "first_import",
    "warm_import",
    "pyc_import",
    "walk",
    "walk_per_entry",
    "pip_list",
    "metadata_scan",
    "so_read_first",
    "so_read",
    "cold_import",
    "cold_so_read",
)
MEASURE_TITLES = {
    "create": "create s",
    "first_import": "first import s",
    "warm_import": "warm import from source s",
    "walk": "walk+lstat s",
    "walk_per_entry": "walk+lstat per entry",
    "pip_list": "pip list s",
    "pyc_import": "warm import from .pyc s",
    "metadata_scan": "importlib.metadata scan s",
    "so_read_first": "largest .so, first read s",
    "so_read": "largest .so, warm read s",
    "cold_import": "import after dropping caches s",
    "cold_so_read": "largest .so read after dropping caches s",
}
Row = tuple[str, str, str, float]  # (measure, title, format, scale)
_CREATE_ROW: Row = ("create", "create s", ".2f", 1.0)
_DISK_ROWS: tuple[Row, ...] = (
    ("statvfs_bytes", "disk KiB, statvfs", ",.0f", 1024.0),
    ("counted_bytes", "disk KiB, counted", ",.0f", 1024.0),
    ("statvfs_inodes", "inodes, statvfs", ",.0f", 1.0),
    ("counted_inodes", "inodes, counted", ",.0f", 1.0),
)
_GROWTH_ROWS: tuple[Row, ...] = (_CREATE_ROW, *_DISK_ROWS)
MIB = 1 << 20
GOAL_DISK_BYTES = MIB
GOAL_IMPORT_RATIO = 1.05
GOAL_FLAT_GROWTH = 1.2  # "flat": the largest stack's mount at most 1.2x the smallest's
GOAL_INODE_SPREAD = 2  # "no per-file inode": new inodes outside bin/ equal at every size, +-2

DEFAULT_PROJECTS = REPO / ".cache" / "bench-mount"
DEFAULT_WHEELHOUSE = REPO / ".cache" / "bench-wheelhouse"
DEFAULT_OUT = REPO / "bench" / "results"
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
BYTECODE_NOTE = (
    "every child runs with PYTHONDONTWRITEBYTECODE=1 except the one import that writes"
    " bytecode. first import: as created (pkgfs serves the store's shared .pyc; uv-compile"
    " and pip wrote the venv's __pycache__ while creating it; the other uv venvs have none,"
    " uv's default, so they compile). warm import from source: every module below"
    " site-packages is compiled from its source (the child makes cache_from_source refuse"
    " those paths), for every contender; the standard library keeps its .pyc. warm import"
    " from .pyc: after one import without PYTHONDONTWRITEBYTECODE (it writes the venv's"
    " __pycache__ for uv; for pkgfs only what the store lacks, into the overlay)"
)
PAGE_CACHE_NOTE = (
    "warm: the store, the uv cache and the wheelhouse were filled just before the rounds and"
    " are read by every round; os.sync() runs before and after each creation. The cold"
    " figures alone follow a drop of the kernel's page, dentry and inode caches (writing 3"
    " to /proc/sys/vm/drop_caches) after os.sync(), when the machine allows it"
)
RUNTIME_NOTE = (
    "pkgfs, uv-hardlink and uv-copy get every runtime measure; uv-compile and pip, whose"
    " venvs ship bytecode, get the first import; uv sync's venvs hold the same files as"
    " uv pip sync's, so they are measured for creation and disk only"
)
# Prepended to the imports of "warm import from source": no module below sys.argv[1] (the
# site-packages) gets a bytecode path, so each is compiled from its source, while the
# standard library keeps its .pyc. SourceLoader.get_code looks cache_from_source up in this
# module at every call; NotImplementedError is its documented "no bytecode" answer.
SOURCE_ONLY = (
    "import sys\n"
    "import importlib._bootstrap_external as _external\n"
    "def _no_bytecode(path, debug_override=None, *, optimization=None,\n"
    "                 _real=_external.cache_from_source, _root=sys.argv[1] + '/'):\n"
    "    if path.startswith(_root):\n"
    "        raise NotImplementedError\n"
    "    return _real(path, debug_override, optimization=optimization)\n"
    "_external.cache_from_source = _no_bytecode\n"
)
WALK_SCRIPT = (
    "import os, sys, time\n"
    "start = time.perf_counter()\n"
    "n = 0\n"
    "for root, dirs, files in os.walk(sys.argv[1]):\n"
    "    for name in dirs + files:\n"
    "        os.lstat(os.path.join(root, name))\n"
    "        n += 1\n"
    "print(n, time.perf_counter() - start)\n"
)
# What an IDE, pip or a plugin loader does at start: every distribution's name, version,
# RECORD and entry points, then the entry points of all of them.
METADATA_SCRIPT = (
    "import time\n"
    "start = time.perf_counter()\n"
    "import importlib.metadata as md\n"
    "n = 0\n"
    "for d in md.distributions():\n"
    "    d.metadata['Name'], d.version, d.files, d.entry_points\n"
    "    n += 1\n"
    "md.entry_points()\n"
    "print(n, time.perf_counter() - start)\n"
)
READ_SCRIPT = (
    "import sys, time\n"
    "start = time.perf_counter()\n"
    "n = 0\n"
    "with open(sys.argv[1], 'rb', buffering=0) as f:\n"
    "    while chunk := f.read(1 << 20):\n"
    "        n += len(chunk)\n"
    "print(n, time.perf_counter() - start)\n"
)


# --- preparation: locks, warm store and warm uv cache -------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A stack, locked, with its warm inputs (store, uv cache, wheelhouse) for every contender."""

    stack: Stack
    inputs: Inputs
    stats: dict[str, int]  # pkgfs store stats of the store holding this lock alone
    dists: frozenset[tuple[str, str]]  # (canonical name, version) the lock selects
    largest_so: str  # the largest shared library, relative to site-packages
    largest_so_bytes: int

    @property
    def name(self) -> str:
        """The workload's short name."""
        return self.stack.workload.name

    @property
    def files(self) -> int:
        """Files the lock's wheels hold, as the store counts them."""
        return self.stats["files"]

    @property
    def project(self) -> Project:
        """The stack's project and lockfiles."""
        return self.inputs.project


def mount_source(path: Path) -> str | None:
    """The device or source of the mount holding ``path`` (a loop device, say), if known."""
    resolved, best, source = path.resolve(), -1, None
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            mount_point = Path(fields[1].encode().decode("unicode_escape"))
            if resolved.is_relative_to(mount_point) and len(mount_point.parts) > best:
                best, source = len(mount_point.parts), fields[0]
    return source


def pkgfs_source() -> str | None:
    """The repository's commit, with "+changes" when store/ or vfs/ differ from it.

    pkgfs is installed editable from this work tree: this says which code was measured.
    """
    try:
        head = capture(["git", "-C", REPO, "rev-parse", "HEAD"]).strip()
        dirty = capture(["git", "-C", REPO, "status", "--porcelain", "--", "store", "vfs"])
    except (BenchError, OSError):
        return None
    return head + ("+changes" if dirty.strip() else "")


def can_drop_caches() -> bool:
    """True when this process may write /proc/sys/vm/drop_caches (root, not read-only)."""
    return os.access(DROP_CACHES, os.W_OK)


def drop_caches() -> None:
    """Flush, then drop the page cache, dentries and inodes (every filesystem, FUSE too)."""
    os.sync()
    DROP_CACHES.write_text("3\n")


def lock_dists(tools: Tools, store: Path, project: Project) -> frozenset[tuple[str, str]]:
    """(canonical name, version) of every wheel ``pkgfs lock show`` selects from uv.lock."""
    argv: list[str | Path] = [tools.pkgfs, "--store", store, "lock", "show"]
    argv += ["--lock", project.lock(UV_LOCK), "--python", tools.python, "--json"]
    rows: list[dict[str, Any]] = json.loads(capture(argv))
    return frozenset((str(canonicalize_name(r["name"])), str(Version(r["version"]))) for r in rows)


def largest_shared_library(venv: Path) -> tuple[str, int]:
    """The largest ``*.so`` below the venv's site-packages: (relative path, bytes).

    A pure-Python stack has none; then its largest file of any kind stands in.
    """
    top = site_packages(venv)
    files = [p for p in top.rglob("*") if p.is_file() and not p.is_symlink()]
    libraries = [p for p in files if ".so" in p.suffixes]
    sizes = [(p.stat().st_size, p) for p in libraries or files]
    if not sizes:
        raise BenchError(f"no file below {top}")
    size, path = max(sizes)
    return str(path.relative_to(top)), size


def prepare_stack(tools: Tools, stack: Stack, args: argparse.Namespace, root: Path) -> Prepared:
    """Lock (if needed), then fill a store, a uv cache and a wheelhouse; nothing is timed."""
    projects = SYNC_PROJECTS if stack.reused else args.projects
    project = prepare(tools, stack.workload, projects, args.relock)
    name = stack.workload.name
    base = root / name
    inputs = Inputs(project, base / "store", base / "uv-cache", args.wheelhouse / name)
    inputs.uv_cache.mkdir(parents=True)
    env = child_env(root)
    progress(f"{name}: pkgfs sync into a new store (untimed)")
    sync: list[str | Path] = [tools.pkgfs, "--store", inputs.store, "sync"]
    sync += ["--lock", project.lock(UV_LOCK), "--python", tools.python]
    capture(sync, env=env)
    progress(f"{name}: uv pip sync to fill a new uv cache (untimed)")
    venv = new_venv(tools, base / "venv-warmup")
    uv_pip_sync(tools, inputs, venv, env, link_mode="hardlink", offline=False)
    so, so_bytes = largest_shared_library(venv)
    shutil.rmtree(venv)
    progress(f"{name}: pip download into {inputs.wheelhouse} (untimed; present wheels are kept)")
    fill_wheelhouse(tools, inputs, env)
    stats = store_stats(tools, inputs.store)
    dists = lock_dists(tools, inputs.store, project)
    if stats["wheels"] != len(dists):
        raise BenchError(f"{name}: store holds {stats['wheels']} wheels, lock has {len(dists)}")
    progress(f"{name}: {stats['wheels']} wheels, {stats['files']:,} files")
    return Prepared(stack, inputs, stats, dists, so, so_bytes)


# --- one environment: create it, measure it, remove it ------------------------------------


@dataclass
class Run:
    """One contender's environment in one round. Lists hold REPEATS warm runs.

    A runtime figure the contender does not get (see RUNTIME_NOTE) stays None.
    """

    create: Measurement
    disk: Disk
    first_import: float | None = None
    warm_import: list[float] | None = None
    walk: list[float] | None = None  # seconds of os.walk + lstat inside the child
    walk_entries: int | None = None
    pip_list: list[float] | None = None
    pip_list_differences: list[str] = field(default_factory=list)
    metadata_scan: list[float] | None = None  # seconds inside the child
    metadata_dists: int | None = None
    so_read_first: float | None = None  # seconds inside the child
    so_read: list[float] | None = None
    pyc_write: float | None = None  # the import that may write __pycache__
    pyc_import: list[float] | None = None
    cold_import: float | None = None
    cold_so_read: float | None = None
    used_statvfs_bytes: int | None = None  # the filesystem's drop from before creation to
    used_statvfs_inodes: int | None = None  # after pyc_write
    remount: float | None = None  # pkgfs: the same venv mounted again (its view is saved)
    daemon_max_rss_kib: int | None = None  # pkgfs: the daemon's VmHWM at the end

    def value(self, measure_name: str) -> float | None:
        """A measure as one number for this round (the median of repeats), or None."""
        if measure_name == "create":
            return self.create.seconds
        if measure_name == "walk_per_entry":
            if self.walk is None or not self.walk_entries:
                return None
            return statistics.median(self.walk) / self.walk_entries
        raw: float | list[float] | None = getattr(self, measure_name)
        return statistics.median(raw) if isinstance(raw, list) else raw


@dataclass(frozen=True)
class Env:
    """Where one contender's environment of one round lives."""

    prepared: Prepared
    contender: str
    venv: Path
    root: Path

    def places(self) -> list[tuple[str, Path]]:
        """The directories whose allocation the counted disk figure covers."""
        return [
            ("venv/bin", self.venv / "bin"),
            ("venv", self.venv),
            ("xdg-state", self.root / "xdg-state"),
            ("xdg-cache", self.root / "xdg-cache"),
            *self.prepared.inputs.places(self.contender),
        ]


def timed(argv: Sequence[str | Path], env: Mapping[str, str]) -> float:
    """Wall seconds of one child; BenchError with the command if it fails."""
    try:
        return measure(argv, env=env).seconds
    except BenchError as exc:
        raise BenchError(f"{' '.join(map(str, argv))}\n{exc}") from None


def in_child(venv: Path, script: str, arg: str | Path, env: Mapping[str, str]) -> tuple[int, float]:
    """Run ``script`` with the venv's python; it prints (count, its own seconds)."""
    out = capture([venv / "bin" / "python", "-c", script, arg], env=env)
    count, seconds = out.split()
    return int(count), float(seconds)


def pip_list(
    tools: Tools, venv: Path, env: Mapping[str, str], dists: frozenset[tuple[str, str]]
) -> tuple[float, list[str]]:
    """Time ``pip --python <venv> list``; also how its distributions differ from the lock."""
    argv = [*pip_argv(tools, venv), "list", "--format=json"]
    result, out = measure_output(argv, env=env)
    seen = {
        (str(canonicalize_name(r["name"])), str(Version(r["version"]))) for r in json.loads(out)
    }
    differences = [f"missing {n} {v}" for n, v in sorted(dists - seen)]
    differences += [f"extra {n} {v}" for n, v in sorted(seen - dists)]
    return result.seconds, differences


def max_rss_kib(pid: int) -> int | None:
    """VmHWM (peak RSS) of a live process, in KiB; None if unreadable."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def use(env: Env, tools: Tools, *, cold: bool) -> dict[str, Any]:
    """The runtime measures of a created environment that its contender gets, in order."""
    quiet = child_env(env.root)
    python = env.venv / "bin" / "python"
    code = "import " + ", ".join(env.prepared.stack.imports)
    imports: list[str | Path] = [python, "-c", code]
    if env.contender not in FULL_RUNTIME | FIRST_IMPORT_ONLY:
        return {}
    found: dict[str, Any] = {"first_import": timed(imports, quiet)}
    if env.contender in FIRST_IMPORT_ONLY:
        return found
    so = site_packages(env.venv) / env.prepared.largest_so
    found["so_read_first"] = in_child(env.venv, READ_SCRIPT, so, quiet)[1]
    from_source: list[str | Path] = [python, "-c", SOURCE_ONLY + code, site_packages(env.venv)]
    found["warm_import"] = [timed(from_source, quiet) for _ in range(REPEATS)]
    walks = [
        in_child(env.venv, WALK_SCRIPT, site_packages(env.venv), quiet) for _ in range(REPEATS)
    ]
    found["walk"] = [seconds for _, seconds in walks]
    found["walk_entries"] = walks[0][0]
    listed = [pip_list(tools, env.venv, quiet, env.prepared.dists) for _ in range(REPEATS)]
    found["pip_list"] = [seconds for seconds, _ in listed]
    found["pip_list_differences"] = listed[0][1]
    scans = [in_child(env.venv, METADATA_SCRIPT, "", quiet) for _ in range(REPEATS)]
    found["metadata_scan"] = [seconds for _, seconds in scans]
    found["metadata_dists"] = scans[0][0]
    found["so_read"] = [in_child(env.venv, READ_SCRIPT, so, quiet)[1] for _ in range(REPEATS)]
    found["pyc_write"] = timed(imports, child_env(env.root, write_bytecode=True))
    used = Free.now(env.root)
    found["used_statvfs_bytes"], found["used_statvfs_inodes"] = used.bytes, used.inodes
    found["pyc_import"] = [timed(imports, quiet) for _ in range(REPEATS)]
    if cold:
        drop_caches()
        found["cold_import"] = timed(imports, quiet)
        drop_caches()
        found["cold_so_read"] = in_child(env.venv, READ_SCRIPT, so, quiet)[1]
    return found


def one_env(
    env: Env, tools: Tools, mounts: Mounts, *, observe: bool, cold: bool
) -> tuple[Run, dict[str, Any] | None]:
    """Create one environment, measure it, and remove it again (also on errors).

    With ``observe``, also report how uv placed the files (untimed, after the measures).
    """
    mountpoint = site_packages(env.venv)
    exclude = frozenset({mountpoint}) if env.contender == PKGFS else frozenset()
    new_venv(tools, env.venv)
    try:
        # The free counts are read right around the step, the slower walks outside that
        # window, so that other writers on the filesystem have less time to show up.
        snap0 = snapshot(env.places(), exclude)
        free0 = Free.now(env.root)
        made = create(
            env.contender, tools, env.prepared.inputs, env.venv, root=env.root, mounts=mounts
        )
        free1 = Free.now(env.root)
        disk = disk_delta((free0, snap0), (free1, snapshot(env.places(), exclude)))
        pid = mounts.daemon_pid(mountpoint) if env.contender == PKGFS else None
        run = Run(made, disk, **use(env, tools, cold=cold))
        # use() left the free counts after the writing import; make them a drop since free0.
        if run.used_statvfs_bytes is not None and run.used_statvfs_inodes is not None:
            run.used_statvfs_bytes = free0.bytes - run.used_statvfs_bytes
            run.used_statvfs_inodes = free0.inodes - run.used_statvfs_inodes
        layout = observe_link_mode(env.venv) if observe else None
        if pid is not None:
            run.daemon_max_rss_kib = max_rss_kib(pid)
            mounts.unmount(mountpoint)
            run.remount = mounts.mount(env.prepared.inputs, env.venv).seconds
    finally:
        if env.contender == PKGFS:
            mounts.unmount(mountpoint)
            shutil.rmtree(env.root / "xdg-state", ignore_errors=True)
        shutil.rmtree(env.venv, ignore_errors=True)
    return run, layout


# --- rounds --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    """One stack's environments in one round, one per contender."""

    index: int
    runs: dict[str, Run]

    def ratio(self, contender: str, measure_name: str) -> float | None:
        """``contender``'s value over the native (uv hardlink) one, this round, if both exist."""
        mine = self.runs[contender].value(measure_name)
        native = self.runs[NATIVE].value(measure_name)
        return None if mine is None or not native else mine / native


@dataclass
class Facts:
    """What the first round establishes per stack, and anything odd seen in any round."""

    layouts: dict[str, dict[str, Any]] = field(default_factory=dict)  # all but pkgfs
    walk_entries: dict[str, int] = field(default_factory=dict)
    metadata_dists: dict[str, int] = field(default_factory=dict)
    pip_list_differences: dict[str, list[str]] = field(default_factory=dict)


def run_round(
    tools: Tools,
    prepared: Prepared,
    mounts: Mounts,
    facts: Facts,
    *,
    index: int,
    root: Path,
    cold: bool,
) -> Round:
    """One round for one stack: every contender in CONTENDERS' order, each on a fresh venv."""
    runs: dict[str, Run] = {}
    for contender in CONTENDERS:
        venv = root / prepared.name / f"venv-{contender}-{index}"
        observe = contender != PKGFS and contender not in facts.layouts
        env = Env(prepared, contender, venv, root)
        run, layout = one_env(env, tools, mounts, observe=observe, cold=cold)
        if layout is not None:
            facts.layouts[contender] = layout
        runs[contender] = run
        if run.walk_entries is not None:
            facts.walk_entries.setdefault(contender, run.walk_entries)
        if run.metadata_dists is not None:
            facts.metadata_dists.setdefault(contender, run.metadata_dists)
        if run.pip_list_differences:
            facts.pip_list_differences[f"{contender} round {index}"] = run.pip_list_differences
    return Round(index, runs)


def describe(name: str, r: Round) -> str:
    """A progress line for one stack's round."""
    parts = []
    for contender, run in r.runs.items():
        part = (
            f"{contender} create {run.create.seconds:.2f}s"
            f" disk {run.disk.statvfs_bytes / 1024:,.0f} KiB/{run.disk.statvfs_inodes:,} inodes"
        )
        if run.first_import is not None:
            part += f" first import {run.first_import:.2f}s"
        parts.append(part)
    return f"round {r.index} {name}: " + "; ".join(parts)


def run_rounds(
    tools: Tools,
    stacks: Sequence[Prepared],
    mounts: Mounts,
    rounds: int,
    root: Path,
    *,
    cold: bool,
) -> tuple[dict[str, list[Round]], dict[str, Facts]]:
    """``rounds`` rounds; in each, every stack in turn, each contender in turn."""
    results: dict[str, list[Round]] = {p.name: [] for p in stacks}
    facts = {p.name: Facts() for p in stacks}
    for i in range(1, rounds + 1):
        for prepared in stacks:
            r = run_round(
                tools, prepared, mounts, facts[prepared.name], index=i, root=root, cold=cold
            )
            results[prepared.name].append(r)
            progress(describe(prepared.name, r) + f" ({i}/{rounds})")
    return results, facts


# --- report --------------------------------------------------------------------------------


def spread_or_none(values: Sequence[float | None]) -> dict[str, float] | None:
    """``spread`` of ``values``; None unless every round has one (a contender not measured)."""
    present = [v for v in values if v is not None]
    return spread(present) if present and len(present) == len(values) else None


def summarize(rounds: Sequence[Round]) -> dict[str, Any]:
    """Per contender, each measure's spread over rounds; per-round ratios against native.

    A measure a contender did not get is None, for its value and its ratio alike.
    """
    summary: dict[str, Any] = {}
    for contender in CONTENDERS:
        runs = [r.runs[contender] for r in rounds]
        entry: dict[str, Any] = {
            m: spread_or_none([run.value(m) for run in runs]) for m in ("create", *RUNTIME)
        }
        entry["create_max_rss_mib"] = spread([run.create.max_rss_kib / 1024 for run in runs])
        for key in ("pyc_write", "used_statvfs_bytes", "used_statvfs_inodes"):
            entry[key] = spread_or_none([getattr(run, key) for run in runs])
        for key in ("statvfs_bytes", "statvfs_inodes", "counted_bytes", "counted_inodes"):
            entry[key] = spread([float(getattr(run.disk, key)) for run in runs])
        if contender == PKGFS:
            entry["remount"] = spread_or_none([run.remount for run in runs])
            entry["daemon_max_rss_mib"] = spread_or_none(
                [None if k is None else k / 1024 for k in (run.daemon_max_rss_kib for run in runs)]
            )
        if contender != NATIVE:
            entry["ratio"] = {
                m: spread_or_none([r.ratio(contender, m) for r in rounds])
                for m in ("create", *RUNTIME)
            }
        summary[contender] = entry
    return summary


def fit(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """The least-squares slope of ys over xs; None with fewer than two distinct xs."""
    if len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    num = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return num / sum((x - mx) ** 2 for x in xs)


def growth(workloads: Mapping[str, Any]) -> dict[str, Any]:
    """How creation time and per-env disk change with the number of files, per contender."""
    ordered = sorted(workloads.values(), key=lambda w: w["files"])
    files = [float(w["files"]) for w in ordered]
    result: dict[str, Any] = {"stacks": [w["name"] for w in ordered], "files": files}
    for contender in CONTENDERS:
        per: dict[str, Any] = {}
        for key, *_ in _GROWTH_ROWS:
            medians = [w["summary"][contender][key]["median"] for w in ordered]
            slope = fit(files, medians)
            per[key] = {
                "medians": medians,
                "per_10k_files": None if slope is None else slope * 10_000,
            }
        result[contender] = per
    return result


def goals(workloads: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals, each judged on the medians over rounds: MET or NOT MET."""
    ordered = sorted(workloads.values(), key=lambda w: w["files"])
    pkgfs = [w["summary"][PKGFS] for w in ordered]
    first, last = pkgfs[0]["create"]["median"], pkgfs[-1]["create"]["median"]
    flat = last / first
    remounts = (pkgfs[0]["remount"]["median"], pkgfs[-1]["remount"]["median"])
    ratios = {w["name"]: w["summary"][PKGFS]["ratio"]["create"]["median"] for w in ordered}
    disk = {
        w["name"]: max(s["statvfs_bytes"]["median"], s["counted_bytes"]["median"])
        for w, s in zip(ordered, pkgfs, strict=True)
    }
    inodes = {w["name"]: w["pkgfs_new_inodes_outside_bin"] for w in ordered}
    statvfs_inodes = {
        w["name"]: s["statvfs_inodes"]["median"] for w, s in zip(ordered, pkgfs, strict=True)
    }
    imports = {w["name"]: w["summary"][PKGFS]["ratio"]["warm_import"]["median"] for w in ordered}
    pyc = {w["name"]: w["summary"][PKGFS]["ratio"]["pyc_import"]["median"] for w in ordered}

    def listed(values: Mapping[str, float], fmt: str) -> str:
        return ", ".join(f"{k} {format(v, fmt)}" for k, v in values.items())

    return [
        {
            "goal": "mount time flat in the number of files",
            "met": flat <= GOAL_FLAT_GROWTH,
            "detail": f"median mount {first:.2f} s at {ordered[0]['files']:,} files,"
            f" {last:.2f} s at {ordered[-1]['files']:,} files: x{flat:.2f}"
            f" (flat: at most x{GOAL_FLAT_GROWTH}); a remount of the same venv, view saved:"
            f" {remounts[0]:.2f} s and {remounts[1]:.2f} s",
        },
        {
            "goal": "mount below uv's hardlink install at every size",
            "met": all(r < 1.0 for r in ratios.values()),
            "detail": f"pkgfs/uv-hardlink, median of per-round ratios: {listed(ratios, '.2f')}",
        },
        {
            "goal": "per-env disk under 1 MiB",
            "met": all(b < GOAL_DISK_BYTES for b in disk.values()),
            "detail": "larger of statvfs and counted bytes, median: "
            + ", ".join(f"{k} {v / 1024:,.0f} KiB" for k, v in disk.items()),
        },
        {
            "goal": "no per-file inode",
            "met": max(inodes.values()) - min(inodes.values()) <= GOAL_INODE_SPREAD,
            "detail": f"new inodes outside the venv's bin/, median: {listed(inodes, ',.0f')}"
            f" (the same at every size, +-{GOAL_INODE_SPREAD}); all new inodes, statvfs:"
            f" {listed(statvfs_inodes, ',.0f')}",
        },
        {
            "goal": "warm imports within 5% of native, from source",
            "met": all(r <= GOAL_IMPORT_RATIO for r in imports.values()),
            "detail": "no .pyc read below site-packages by anyone; pkgfs/uv-hardlink, median of"
            f" per-round ratios: {listed(imports, '.3f')}",
        },
        {
            "goal": "warm imports within 5% of native, from bytecode",
            "met": all(r <= GOAL_IMPORT_RATIO for r in pyc.values()),
            "detail": "pkgfs's shared .pyc against the venv's own __pycache__; pkgfs/uv-hardlink,"
            f" median of per-round ratios: {listed(pyc, '.3f')}",
        },
    ]


def build_report(
    args: argparse.Namespace,
    tools: Tools,
    stacks: Sequence[Prepared],
    rounds: Mapping[str, Sequence[Round]],
    facts: Mapping[str, Facts],
) -> dict[str, Any]:
    """Everything the JSON result file holds. It names no index host: no URLs go in."""
    workloads: dict[str, Any] = {}
    for prepared in stacks:
        name, fact = prepared.name, facts[prepared.name]
        done = rounds[name]
        if not done:
            raise BenchError("no round completed")
        outside_bin = [
            sum(v for k, v in r.runs[PKGFS].disk.new_inodes.items() if k != "venv/bin")
            for r in done
        ]
        workloads[name] = {
            "name": name,
            "title": prepared.stack.workload.title,
            "dependencies": list(prepared.stack.workload.dependencies),
            "imports": list(prepared.stack.imports),
            "project": str(prepared.project.directory),
            "relocked": prepared.project.relocked,
            "wheels": prepared.stats["wheels"],
            "largest_so": {"path": prepared.largest_so, "bytes": prepared.largest_so_bytes},
            "files": prepared.files,
            "store_stats": {k: v for k, v in prepared.stats.items() if k != "store"},
            "uv_link_mode": {
                c: {k: v for k, v in lay.items() if "bytes" not in k}
                for c, lay in fact.layouts.items()
            },
            "walk_entries": fact.walk_entries,
            "metadata_dists": fact.metadata_dists,
            "pip_list_differences": fact.pip_list_differences,
            "pkgfs_new_inodes_outside_bin": statistics.median(outside_bin),
            "rounds": [
                {
                    "round": r.index,
                    **{c: asdict(run) for c, run in r.runs.items()},
                    "ratios": {
                        c: {m: r.ratio(c, m) for m in ("create", *RUNTIME)}
                        for c in CONTENDERS
                        if c != NATIVE
                    },
                }
                for r in done
            ],
            "summary": summarize(done),
        }
    return {
        "benchmark": "mount",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(tools, args.workdir),
        "config": {
            "rounds": args.rounds,
            "quick": args.quick,
            "repeats": REPEATS,
            "order": "per round and stack, each contender in turn: "
            + ", ".join(CONTENDERS)
            + "; per environment: create, first import, first read of the largest .so, warm"
            " imports from source, walks, pip lists, importlib.metadata scans, warm reads of the"
            " .so, the import that writes bytecode, warm imports from bytecode, then (when"
            " caches can be dropped) an import and a .so read after dropping them",
            "exclude_newer": EXCLUDE_NEWER,
            "projects": {"own": str(args.projects), "reused": str(SYNC_PROJECTS)},
            "wheelhouse": str(args.wheelhouse),
            "venv_command": "python -m venv --without-pip <venv> (untimed, every contender)",
            "contenders": list(CONTENDERS),
            "contender_commands": dict(COMMANDS),
            "runtime_measured": RUNTIME_NOTE,
            "cold_cache": args.cold,
            "workdir_mount_source": mount_source(args.workdir),
            "pkgfs_source": args.pkgfs_source,
            "pkgfs_source_at_end": pkgfs_source(),
            "native": NATIVE,
            "bytecode": BYTECODE_NOTE,
            "page_cache": PAGE_CACHE_NOTE,
            "disk": "statvfs: drop of f_bfree*f_frsize and f_ffree on the work filesystem"
            " (other writers on it count too); counted: allocated blocks and inodes under the"
            " venv, XDG state/cache dirs, and the pkgfs store, the uv cache or pip's wheelhouse,"
            " after - before",
        },
        "workloads": workloads,
        "growth": growth(workloads),
        "goals": goals(workloads),
    }


def _median(s: Mapping[str, float] | None, fmt: str, scale: float = 1.0) -> str:
    return "-" if s is None else format(s["median"] / scale, fmt)


_ROWS: tuple[Row, ...] = (
    _CREATE_ROW,
    *(_DISK_ROWS[i] for i in (0, 2, 1, 3)),  # statvfs bytes and inodes, then counted
    ("first_import", "first import s", ".2f", 1.0),
    ("so_read_first", ".so first read s", ".3f", 1.0),
    ("warm_import", "warm import, source s", ".2f", 1.0),
    ("walk", "walk+lstat s", ".3f", 1.0),
    ("walk_per_entry", "walk+lstat us/entry", ".2f", 1e-6),
    ("pip_list", "pip list s", ".2f", 1.0),
    ("metadata_scan", "metadata scan s", ".3f", 1.0),
    ("so_read", ".so warm read s", ".3f", 1.0),
    ("pyc_write", "import writing .pyc s", ".2f", 1.0),
    ("used_statvfs_bytes", "disk KiB after it", ",.0f", 1024.0),
    ("used_statvfs_inodes", "inodes after it", ",.0f", 1.0),
    ("pyc_import", "warm import, .pyc s", ".2f", 1.0),
    ("cold_import", "import, caches dropped s", ".2f", 1.0),
    ("cold_so_read", ".so read, dropped s", ".3f", 1.0),
)


def _table(summary: Mapping[str, Any]) -> list[str]:
    width = 17
    lines = [f"{'median of rounds':<25}" + "".join(f"{c:>{width}}" for c in CONTENDERS)]
    for key, title, fmt, scale in _ROWS:
        cells = "".join(f"{_median(summary[c][key], fmt, scale):>{width}}" for c in CONTENDERS)
        lines.append(f"{title:<25}{cells}")
    pkgfs = summary[PKGFS]
    lines.append(
        f"{'pkgfs remount s':<25}{_median(pkgfs['remount'], '.2f'):>{width}}"
        "   (the same venv again: interpreter probe and view already saved)"
    )
    lines.append(
        f"{'pkgfs daemon RSS MiB':<25}{_median(pkgfs['daemon_max_rss_mib'], '.1f'):>{width}}"
    )
    return lines


def _ratios(result: Mapping[str, Any]) -> list[str]:
    lines = []
    for contender in CONTENDERS:
        if contender == NATIVE:
            continue
        for m in ("create", *RUNTIME):
            r = result["summary"][contender]["ratio"][m]
            if r is None:
                continue
            per_round = ", ".join(f"{x['ratios'][contender][m]:.2f}" for x in result["rounds"])
            lines.append(
                f"{contender}/{NATIVE} {MEASURE_TITLES[m].removesuffix(' s')}:"
                f" median {r['median']:.2f}, min {r['min']:.2f}, max {r['max']:.2f}"
                f"  (rounds: {per_round})"
            )
    return lines


def _context(result: Mapping[str, Any]) -> list[str]:
    stats = result["store_stats"]
    layouts = "; ".join(
        f"{c}: {lay['observed']} ({lay['files_with_nlink_gt_1']:,} of"
        f" {lay['site_packages_files']:,} files with nlink > 1)"
        for c, lay in result["uv_link_mode"].items()
    )
    entries = ", ".join(f"{c} {n:,}" for c, n in result["walk_entries"].items())
    odd = result["pip_list_differences"]
    listed = "the lock's distributions for every contender" if not odd else f"DIFFERENT: {odd}"
    disk = result["rounds"][0][PKGFS]["disk"]
    new = ", ".join(
        f"{place} {n:,} ({disk['new_bytes'][place] / 1024:,.0f} KiB)"
        for place, n in disk["new_inodes"].items()
    )
    return [
        f"store: {stats['wheels']} wheels, {stats['files']:,} files, logical"
        f" {stats['logical_bytes'] / 1e6:,.1f} MB",
        f"uv link mode observed: {layouts}",
        f"entries walked: {entries}; pip list: {listed}",
        f"pkgfs's new inodes by place, round 1: {new}",
    ]


def _growth(report: Mapping[str, Any]) -> list[str]:
    g = report["growth"]
    width = 17
    lines = [
        "== growth with the number of files (medians over rounds; per environment)",
        f"{'stack':<6}{'files':>8}  {'':<18}" + "".join(f"{c:>{width}}" for c in CONTENDERS),
    ]
    for i, (name, files) in enumerate(zip(g["stacks"], g["files"], strict=True)):
        for j, (key, title, fmt, scale) in enumerate(_GROWTH_ROWS):
            head = f"{name:<6}{files:>8,.0f}" if j == 0 else " " * 14
            cells = "".join(
                f"{format(g[c][key]['medians'][i] / scale, fmt):>{width}}" for c in CONTENDERS
            )
            lines.append(f"{head}  {title:<18}{cells}")
    lines.append("least-squares slope over the stacks, per 10,000 files:")
    for key, title, fmt, scale in _GROWTH_ROWS:
        slopes = []
        for c in CONTENDERS:
            per = g[c][key]["per_10k_files"]
            slopes.append(f"{c} {'n/a' if per is None else format(per / scale, '+' + fmt)}")
        lines.append(f"  {title:<18}{', '.join(slopes)}")
    return lines


def render(report: Mapping[str, Any]) -> str:
    """The human-readable summary for stdout: setup, tables per stack, growth, goals."""
    cfg, machine = report["config"], report["machine"]
    lines = [
        f"pkgfs mount benchmark: {', '.join(report['workloads'])}; {cfg['rounds']} interleaved"
        f" rounds ({', '.join(CONTENDERS)}), {REPEATS} warm runs each,"
        f" {machine['usable_cpus']} CPUs, {machine['uv_version']}, pkgfs"
        f" {machine['pkgfs_version']}",
        f"Python {machine['python']} ({machine['python_executable']}); locks: uv lock"
        f" --exclude-newer {cfg['exclude_newer']}",
        f"venvs:  {cfg['venv_command']}",
        *(f"{c}: {cmd}" for c, cmd in cfg["contender_commands"].items()),
        f"pkgfs source: {cfg['pkgfs_source']}",
        f"runtime figures: {cfg['runtime_measured']}",
        f"work:   fresh dirs under {machine['workdir']} ({machine['workdir_filesystem']} on"
        f" {cfg['workdir_mount_source']})",
        f"bytecode: {cfg['bytecode']}",
        f"page cache: {cfg['page_cache']}"
        + ("" if cfg["cold_cache"] else " (NOT allowed here: no cold figures)"),
        f"disk: {cfg['disk']}",
        f"ratios: per round, against {NATIVE} (creation and runtime alike)",
    ]
    if cfg["pkgfs_source_at_end"] != cfg["pkgfs_source"]:
        lines.append(
            f"WARNING: pkgfs's source changed during the run (now {cfg['pkgfs_source_at_end']}):"
            " rounds may have measured different code"
        )
    for result in report["workloads"].values():
        lines += [
            "",
            f"== {result['title']} ({result['name']}): {result['wheels']} wheels,"
            f" {result['files']:,} files; imports {', '.join(result['imports'])}",
            "",
            *_table(result["summary"]),
            "",
            *_ratios(result),
            *_context(result),
        ]
    lines += ["", *_growth(report), "", "== goals (from the issue)"]
    for goal in report["goals"]:
        verdict = "MET" if goal["met"] else "NOT MET"
        lines.append(f"{verdict:<8} {goal['goal']}: {goal['detail']}")
    return "\n".join(lines)


# --- command line --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; ``stacks`` and ``rounds`` come out resolved for --quick."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick 1)")
    parser.add_argument(
        "--quick", action="store_true", help="the small CLI and web stacks only, 1 round"
    )
    parser.add_argument("--relock", action="store_true", help="lock again, from scratch")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument(
        "--projects",
        type=Path,
        default=DEFAULT_PROJECTS,
        help="this benchmark's own projects and locks (web and sci: bench/sync.py's)",
    )
    parser.add_argument(
        "--wheelhouse",
        type=Path,
        default=DEFAULT_WHEELHOUSE,
        help="pip's wheel files, one directory per stack (kept between runs)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where stores, uv caches and venvs are made (default: the temp dir)",
    )
    parser.add_argument(
        "--no-cold", action="store_true", help="skip the figures after dropping caches"
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.stacks = [s for s in STACKS if not args.quick or s.workload.name in QUICK_STACKS]
    args.projects = args.projects.resolve()
    args.workdir = args.workdir.resolve()
    args.wheelhouse = args.wheelhouse.resolve()
    args.cold = not args.no_cold and can_drop_caches()
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so every finally block unmounts and cleans up.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 1 when a step failed (see stderr)."""
    args = parse_args(argv)
    args.pkgfs_source = pkgfs_source()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        tools = Tools(Path(sys.executable), find_tool("pkgfs"), find_tool("uv"))
        with run_root(args.workdir, tools) as (root, mounts):
            stacks = [prepare_stack(tools, s, args, root) for s in args.stacks]
            names = ", ".join(p.name for p in stacks)
            progress(f"stacks {names}, {args.rounds} rounds, work in {root}")
            rounds, facts = run_rounds(tools, stacks, mounts, args.rounds, root, cold=args.cold)
            report = build_report(args, tools, stacks, rounds, facts)
        path = write_report(report, args.out, "mount")
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    print(render(report))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
