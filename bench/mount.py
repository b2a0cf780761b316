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
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    mounted_under,
    observe_link_mode,
    progress,
    site_packages,
    spread,
    store_stats,
    write_report,
)
from bench.sync import DEFAULT_PROJECTS as SYNC_PROJECTS
from bench.sync import (
    EXCLUDE_NEWER,
    REQUIREMENTS,
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

PKGFS, HARDLINK, COPY = "pkgfs", "uv-hardlink", "uv-copy"
CONTENDERS = (PKGFS, HARDLINK, COPY)
NATIVE = HARDLINK  # creation and runtime ratios are taken against this one
RUNTIME = ("first_import", "warm_import", "pyc_import", "walk", "walk_per_entry", "pip_list")
MEASURE_TITLES = {
    "create": "create s",
    "first_import": "first import s",
    "warm_import": "warm import from source s",
    "walk": "walk+lstat s",
    "walk_per_entry": "walk+lstat per entry",
    "pip_list": "pip list s",
    "pyc_import": "warm import from .pyc s",
}
_GROWTH_ROWS: tuple[tuple[str, str, str, float], ...] = (
    ("create", "create s", ".2f", 1.0),
    ("statvfs_bytes", "disk KiB, statvfs", ",.0f", 1024.0),
    ("counted_bytes", "disk KiB, counted", ",.0f", 1024.0),
    ("statvfs_inodes", "inodes, statvfs", ",.0f", 1.0),
    ("counted_inodes", "inodes, counted", ",.0f", 1.0),
)
MIB = 1 << 20
GOAL_DISK_BYTES = MIB
GOAL_IMPORT_RATIO = 1.05
GOAL_FLAT_GROWTH = 1.2  # "flat": the largest stack's mount at most 1.2x the smallest's
GOAL_INODE_SPREAD = 2  # "no per-file inode": new inodes outside bin/ equal at every size, +-2

DEFAULT_PROJECTS = REPO / ".cache" / "bench-mount"
DEFAULT_OUT = REPO / "bench" / "results"
BYTECODE_NOTE = (
    "every child runs with PYTHONDONTWRITEBYTECODE=1 except the one import that writes"
    " bytecode. first import: as created (pkgfs serves the store's shared .pyc; the uv venvs"
    " have none, uv's default, so they compile). warm import from source: every module"
    " below site-packages is compiled from its source (the child makes cache_from_source"
    " refuse those paths), for every contender; the standard library keeps its .pyc. warm"
    " import from .pyc: after one import without PYTHONDONTWRITEBYTECODE (it writes the"
    " venv's __pycache__ for uv; for pkgfs only what the store lacks, into the overlay)"
)
PAGE_CACHE_NOTE = (
    "warm: the store and the uv cache were filled just before the rounds and are read by"
    " every round; the page cache is never dropped; os.sync() runs before and after each"
    " creation"
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


# --- preparation: locks, warm store and warm uv cache -------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A stack, locked, with its warm pkgfs store and warm uv cache under the run's root."""

    stack: Stack
    project: Project
    store: Path
    uv_cache: Path
    stats: dict[str, int]  # pkgfs store stats of the store holding this lock alone
    dists: frozenset[tuple[str, str]]  # (canonical name, version) the lock selects

    @property
    def name(self) -> str:
        """The workload's short name."""
        return self.stack.workload.name

    @property
    def files(self) -> int:
        """Files the lock's wheels hold, as the store counts them."""
        return self.stats["files"]


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


def child_env(root: Path, *, write_bytecode: bool = False) -> dict[str, str]:
    """The environment of every child: ours without PYTHON*, UV_*, PIP_* and VIRTUAL_ENV.

    XDG state and cache point into ``root`` (pkgfs keeps mount state and interpreter probes
    there), MPLCONFIGDIR too, and PYTHONDONTWRITEBYTECODE=1 unless ``write_bytecode``.
    """
    drop = ("PYTHON", "UV_", "PIP_", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["XDG_STATE_HOME"] = str(root / "xdg-state")
    env["XDG_CACHE_HOME"] = str(root / "xdg-cache")
    env["MPLCONFIGDIR"] = str(root / "mplconfig")
    if not write_bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def lock_dists(tools: Tools, store: Path, project: Project) -> frozenset[tuple[str, str]]:
    """(canonical name, version) of every wheel ``pkgfs lock show`` selects from uv.lock."""
    argv: list[str | Path] = [tools.pkgfs, "--store", store, "lock", "show"]
    argv += ["--lock", project.lock(UV_LOCK), "--python", tools.python, "--json"]
    rows: list[dict[str, Any]] = json.loads(capture(argv))
    return frozenset((str(canonicalize_name(r["name"])), str(Version(r["version"]))) for r in rows)


def prepare_stack(tools: Tools, stack: Stack, args: argparse.Namespace, root: Path) -> Prepared:
    """Lock (if needed), then fill a store and a uv cache for the stack; nothing is timed."""
    projects = SYNC_PROJECTS if stack.reused else args.projects
    project = prepare(tools, stack.workload, projects, args.relock)
    name = stack.workload.name
    base = root / name
    store, uv_cache = base / "store", base / "uv-cache"
    uv_cache.mkdir(parents=True)
    env = child_env(root)
    progress(f"{name}: pkgfs sync into a new store (untimed)")
    sync: list[str | Path] = [
        tools.pkgfs,
        "--store",
        store,
        "sync",
        "--lock",
        project.lock(UV_LOCK),
    ]
    capture([*sync, "--python", tools.python], env=env)
    progress(f"{name}: uv pip sync to fill a new uv cache (untimed)")
    venv = new_venv(tools, base / "venv-warmup")
    uv_pip_sync(tools, project, venv, uv_cache, env, link_mode="hardlink", offline=False)
    shutil.rmtree(venv)
    stats = store_stats(tools, store)
    dists = lock_dists(tools, store, project)
    if stats["wheels"] != len(dists):
        raise BenchError(f"{name}: store holds {stats['wheels']} wheels, lock has {len(dists)}")
    progress(f"{name}: {stats['wheels']} wheels, {stats['files']:,} files")
    return Prepared(stack, project, store, uv_cache, stats, dists)


def uv_pip_sync(
    tools: Tools,
    project: Project,
    venv: Path,
    cache: Path,
    env: Mapping[str, str],
    *,
    link_mode: str,
    offline: bool,
) -> Measurement:
    """``uv pip sync requirements.txt`` into ``venv``; timed (the caller may ignore it)."""
    argv: list[str | Path] = [tools.uv, "pip", "sync", "--no-config", "--link-mode", link_mode]
    argv += ["--index-url", project.index_url, "--python", venv / "bin" / "python"]
    argv += ["--offline"] if offline else []
    result, _ = measure_output(
        [*argv, project.lock(REQUIREMENTS)], env={**env, "UV_CACHE_DIR": str(cache)}
    )
    return result


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

    def mount(self, prepared: Prepared, venv: Path) -> Measurement:
        """Time ``pkgfs mount`` of the stack's uv.lock at ``venv``'s site-packages."""
        mountpoint = site_packages(venv)
        self.active.add(mountpoint)  # before the command: a half-made mount is ours too
        argv: list[str | Path] = [self.tools.pkgfs, "--store", prepared.store, "mount"]
        argv += [mountpoint, "--lock", prepared.project.lock(UV_LOCK), "--offline"]
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


# --- disk: filesystem free counts, and what was allocated where ----------------------------


@dataclass(frozen=True)
class Free:
    """The work filesystem's free blocks (as bytes) and free inodes, after os.sync()."""

    bytes: int
    inodes: int

    @classmethod
    def now(cls, path: Path) -> Free:
        """Flush, then read statvfs(2) of ``path``'s filesystem."""
        os.sync()
        st = os.statvfs(path)
        return cls(st.f_bfree * st.f_frsize, st.f_ffree)


@dataclass(frozen=True)
class Node:
    """One inode seen under a snapshot's roots: where, its allocated bytes."""

    place: str
    allocated: int


Snapshot = dict[tuple[int, int], Node]


def snapshot(roots: Iterable[tuple[str, Path]], exclude: frozenset[Path]) -> Snapshot:
    """Every inode under ``roots`` (labelled places), hard links once, by (dev, ino).

    Other filesystems (a mount below a root) and ``exclude`` are skipped.
    """
    seen: Snapshot = {}
    for place, top in roots:
        if not top.exists():
            continue
        device = top.lstat().st_dev
        stack = [str(top)]
        while stack:
            path = stack.pop()
            st = os.lstat(path)
            if st.st_dev != device or Path(path) in exclude:
                continue
            seen.setdefault((st.st_dev, st.st_ino), Node(place, st.st_blocks * 512))
            if os.path.isdir(path) and not os.path.islink(path):
                stack += [entry.path for entry in os.scandir(path)]
    return seen


@dataclass(frozen=True)
class Disk:
    """What creating one environment took on disk.

    statvfs: the filesystem's drop in free blocks and inodes (everything, other writers too).
    counted: allocated bytes and inodes under the venv and the contender's store, cache and
    state, after minus before; ``new_inodes`` and ``new_bytes`` say where the new ones are.
    """

    statvfs_bytes: int
    statvfs_inodes: int
    counted_bytes: int
    counted_inodes: int
    new_inodes: dict[str, int]
    new_bytes: dict[str, int]  # allocated bytes of the new inodes, by place


def disk_delta(before: tuple[Free, Snapshot], after: tuple[Free, Snapshot]) -> Disk:
    """The Disk between two (free counts, snapshot) readings."""
    (free0, snap0), (free1, snap1) = before, after
    places: dict[str, int] = {}
    allocated: dict[str, int] = {}
    for key, node in snap1.items():
        if key not in snap0:
            places[node.place] = places.get(node.place, 0) + 1
            allocated[node.place] = allocated.get(node.place, 0) + node.allocated
    return Disk(
        statvfs_bytes=free0.bytes - free1.bytes,
        statvfs_inodes=free0.inodes - free1.inodes,
        counted_bytes=sum(n.allocated for n in snap1.values())
        - sum(n.allocated for n in snap0.values()),
        counted_inodes=len(snap1) - len(snap0),
        new_inodes=dict(sorted(places.items())),
        new_bytes=dict(sorted(allocated.items())),
    )


# --- one environment: create it, measure it, remove it ------------------------------------


@dataclass
class Run:
    """One contender's environment in one round. Lists hold REPEATS warm runs."""

    create: Measurement
    disk: Disk
    first_import: float
    warm_import: list[float]
    walk: list[float]  # seconds of os.walk + lstat inside the child
    walk_entries: int
    pip_list: list[float]
    pip_list_differences: list[str]
    pyc_write: float  # the import that may write __pycache__
    pyc_import: list[float]
    used_statvfs_bytes: int = 0  # the filesystem's drop from before creation to after pyc_write
    used_statvfs_inodes: int = 0
    remount: float | None = None  # pkgfs: the same venv mounted again (its view is saved)
    daemon_max_rss_kib: int | None = None  # pkgfs: the daemon's VmHWM at the end

    def value(self, measure_name: str) -> float:
        """A measure as one number for this round: the median of repeated runs."""
        if measure_name == "create":
            return self.create.seconds
        if measure_name == "walk_per_entry":
            return statistics.median(self.walk) / self.walk_entries
        raw: float | list[float] = getattr(self, measure_name)
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
        places = [
            ("venv/bin", self.venv / "bin"),
            ("venv", self.venv),
            ("xdg-state", self.root / "xdg-state"),
            ("xdg-cache", self.root / "xdg-cache"),
        ]
        if self.contender == PKGFS:
            places.append(("store", self.prepared.store))
        else:
            places.append(("uv-cache", self.prepared.uv_cache))
        return places


def timed(argv: Sequence[str | Path], env: Mapping[str, str]) -> float:
    """Wall seconds of one child; BenchError with the command if it fails."""
    try:
        return measure(argv, env=env).seconds
    except BenchError as exc:
        raise BenchError(f"{' '.join(map(str, argv))}\n{exc}") from None


def walk(tools: Tools, venv: Path, env: Mapping[str, str]) -> tuple[int, float]:
    """os.walk + lstat of the venv's site-packages in a child: (entries, its seconds)."""
    out = capture([tools.python, "-c", WALK_SCRIPT, site_packages(venv)], env=env)
    entries, seconds = out.split()
    return int(entries), float(seconds)


def pip_list(
    tools: Tools, venv: Path, env: Mapping[str, str], dists: frozenset[tuple[str, str]]
) -> tuple[float, list[str]]:
    """Time ``pip --python <venv> list``; also how its distributions differ from the lock."""
    argv: list[str | Path] = [tools.python, "-m", "pip", "--python", venv / "bin" / "python"]
    argv += ["--isolated", "--disable-pip-version-check", "list", "--format=json"]
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


def create(env: Env, tools: Tools, mounts: Mounts) -> Measurement:
    """The timed step: mount, or uv pip sync with the contender's link mode."""
    prepared = env.prepared
    if env.contender == PKGFS:
        return mounts.mount(prepared, env.venv)
    link_mode = "hardlink" if env.contender == HARDLINK else "copy"
    os.sync()
    return uv_pip_sync(
        tools,
        prepared.project,
        env.venv,
        prepared.uv_cache,
        child_env(env.root),
        link_mode=link_mode,
        offline=True,
    )


def use(env: Env, tools: Tools) -> dict[str, Any]:
    """The runtime measures of a created environment, in a fixed order."""
    quiet = child_env(env.root)
    python = env.venv / "bin" / "python"
    code = "import " + ", ".join(env.prepared.stack.imports)
    imports: list[str | Path] = [python, "-c", code]
    found: dict[str, Any] = {"first_import": timed(imports, quiet)}
    from_source: list[str | Path] = [python, "-c", SOURCE_ONLY + code, site_packages(env.venv)]
    found["warm_import"] = [timed(from_source, quiet) for _ in range(REPEATS)]
    walks = [walk(tools, env.venv, quiet) for _ in range(REPEATS)]
    found["walk"] = [seconds for _, seconds in walks]
    found["walk_entries"] = walks[0][0]
    listed = [pip_list(tools, env.venv, quiet, env.prepared.dists) for _ in range(REPEATS)]
    found["pip_list"] = [seconds for seconds, _ in listed]
    found["pip_list_differences"] = listed[0][1]
    found["pyc_write"] = timed(imports, child_env(env.root, write_bytecode=True))
    used = Free.now(env.root)
    found["used_statvfs_bytes"], found["used_statvfs_inodes"] = used.bytes, used.inodes
    found["pyc_import"] = [timed(imports, quiet) for _ in range(REPEATS)]
    return found


def one_env(
    env: Env, tools: Tools, mounts: Mounts, observe: bool
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
        made = create(env, tools, mounts)
        free1 = Free.now(env.root)
        disk = disk_delta((free0, snap0), (free1, snapshot(env.places(), exclude)))
        pid = mounts.daemon_pid(mountpoint) if env.contender == PKGFS else None
        run = Run(made, disk, **use(env, tools))
        # use() left the free counts after the writing import; make them a drop since free0.
        run.used_statvfs_bytes = free0.bytes - run.used_statvfs_bytes
        run.used_statvfs_inodes = free0.inodes - run.used_statvfs_inodes
        layout = observe_link_mode(env.venv) if observe else None
        if pid is not None:
            run.daemon_max_rss_kib = max_rss_kib(pid)
            mounts.unmount(mountpoint)
            run.remount = mounts.mount(env.prepared, env.venv).seconds
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

    def ratio(self, contender: str, measure_name: str) -> float:
        """``contender``'s value over the native (uv hardlink) one, this round."""
        return self.runs[contender].value(measure_name) / self.runs[NATIVE].value(measure_name)


@dataclass
class Facts:
    """What the first round establishes per stack, and anything odd seen in any round."""

    layouts: dict[str, dict[str, Any]] = field(default_factory=dict)  # uv contenders
    walk_entries: dict[str, int] = field(default_factory=dict)
    pip_list_differences: dict[str, list[str]] = field(default_factory=dict)


def run_round(
    tools: Tools, prepared: Prepared, mounts: Mounts, facts: Facts, *, index: int, root: Path
) -> Round:
    """One round for one stack: pkgfs, uv hardlink, uv copy, each on a fresh venv."""
    runs: dict[str, Run] = {}
    for contender in CONTENDERS:
        venv = root / prepared.name / f"venv-{contender}-{index}"
        observe = contender != PKGFS and contender not in facts.layouts
        run, layout = one_env(Env(prepared, contender, venv, root), tools, mounts, observe)
        if layout is not None:
            facts.layouts[contender] = layout
        runs[contender] = run
        facts.walk_entries.setdefault(contender, run.walk_entries)
        if run.pip_list_differences:
            facts.pip_list_differences[f"{contender} round {index}"] = run.pip_list_differences
    return Round(index, runs)


def describe(name: str, r: Round) -> str:
    """A progress line for one stack's round."""
    parts = []
    for contender, run in r.runs.items():
        parts.append(
            f"{contender} create {run.create.seconds:.2f}s"
            f" disk {run.disk.statvfs_bytes / 1024:,.0f} KiB/{run.disk.statvfs_inodes:,} inodes"
            f" import {statistics.median(run.warm_import):.2f}s"
            f" walk {statistics.median(run.walk):.2f}s"
        )
    return f"round {r.index} {name}: " + "; ".join(parts)


def run_rounds(
    tools: Tools, stacks: Sequence[Prepared], mounts: Mounts, rounds: int, root: Path
) -> tuple[dict[str, list[Round]], dict[str, Facts]]:
    """``rounds`` rounds; in each, every stack in turn, each contender in turn."""
    results: dict[str, list[Round]] = {p.name: [] for p in stacks}
    facts = {p.name: Facts() for p in stacks}
    for i in range(1, rounds + 1):
        for prepared in stacks:
            r = run_round(tools, prepared, mounts, facts[prepared.name], index=i, root=root)
            results[prepared.name].append(r)
            progress(describe(prepared.name, r) + f" ({i}/{rounds})")
    return results, facts


# --- report --------------------------------------------------------------------------------


def summarize(rounds: Sequence[Round]) -> dict[str, Any]:
    """Per contender, each measure's spread over rounds; per-round ratios against native."""
    summary: dict[str, Any] = {}
    for contender in CONTENDERS:
        runs = [r.runs[contender] for r in rounds]
        entry: dict[str, Any] = {
            m: spread([run.value(m) for run in runs]) for m in ("create", *RUNTIME)
        }
        entry["create_max_rss_mib"] = spread([run.create.max_rss_kib / 1024 for run in runs])
        entry["pyc_write"] = spread([run.pyc_write for run in runs])
        for key in ("used_statvfs_bytes", "used_statvfs_inodes"):
            entry[key] = spread([float(getattr(run, key)) for run in runs])
        for key in ("statvfs_bytes", "statvfs_inodes", "counted_bytes", "counted_inodes"):
            entry[key] = spread([float(getattr(run.disk, key)) for run in runs])
        if contender == PKGFS:
            entry["remount"] = spread([run.remount or 0.0 for run in runs])
            entry["daemon_max_rss_mib"] = spread(
                [(run.daemon_max_rss_kib or 0) / 1024 for run in runs]
            )
        if contender != NATIVE:
            entry["ratio"] = {
                m: spread([r.ratio(contender, m) for r in rounds]) for m in ("create", *RUNTIME)
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
            "files": prepared.files,
            "store_stats": {k: v for k, v in prepared.stats.items() if k != "store"},
            "uv_link_mode": {
                c: {k: v for k, v in lay.items() if "bytes" not in k}
                for c, lay in fact.layouts.items()
            },
            "walk_entries": fact.walk_entries,
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
            "order": "per round and stack: pkgfs, uv hardlink, uv copy; per environment:"
            " create, first import, warm imports from source, walks, pip lists, the import"
            " that writes bytecode, warm imports from bytecode",
            "exclude_newer": EXCLUDE_NEWER,
            "projects": {"own": str(args.projects), "reused": str(SYNC_PROJECTS)},
            "venv_command": "python -m venv --without-pip <venv> (untimed, every contender)",
            "pkgfs_command": "pkgfs --store <warm store> mount <venv>/lib/pythonX.Y/site-packages"
            " --lock uv.lock --offline",
            "uv_command": "uv pip sync --no-config --link-mode {hardlink,copy} --index-url <the"
            " lock's index> --python <venv> --offline requirements.txt (UV_CACHE_DIR=<warm>)",
            "workdir_mount_source": mount_source(args.workdir),
            "pkgfs_source": args.pkgfs_source,
            "pkgfs_source_at_end": pkgfs_source(),
            "native": NATIVE,
            "bytecode": BYTECODE_NOTE,
            "page_cache": PAGE_CACHE_NOTE,
            "disk": "statvfs: drop of f_bfree*f_frsize and f_ffree on the work filesystem"
            " (other writers on it count too); counted: allocated blocks and inodes under the"
            " venv, XDG state/cache dirs, and the pkgfs store or the uv cache, after - before",
        },
        "workloads": workloads,
        "growth": growth(workloads),
        "goals": goals(workloads),
    }


def _cell(s: Mapping[str, float], fmt: str, scale: float = 1.0) -> str:
    med, lo, hi = (format(s[k] / scale, fmt) for k in ("median", "min", "max"))
    return f"{med} ({lo}-{hi})"


_ROWS: tuple[tuple[str, str, str, float], ...] = (
    ("create", "create s", ".2f", 1.0),
    ("statvfs_bytes", "disk KiB, statvfs", ",.0f", 1024.0),
    ("statvfs_inodes", "inodes, statvfs", ",.0f", 1.0),
    ("counted_bytes", "disk KiB, counted", ",.0f", 1024.0),
    ("counted_inodes", "inodes, counted", ",.0f", 1.0),
    ("first_import", "first import s", ".2f", 1.0),
    ("warm_import", "warm import, source s", ".2f", 1.0),
    ("walk", "walk+lstat s", ".3f", 1.0),
    ("walk_per_entry", "walk+lstat us/entry", ".2f", 1e-6),
    ("pip_list", "pip list s", ".2f", 1.0),
    ("pyc_write", "import writing .pyc s", ".2f", 1.0),
    ("used_statvfs_bytes", "disk KiB after it", ",.0f", 1024.0),
    ("used_statvfs_inodes", "inodes after it", ",.0f", 1.0),
    ("pyc_import", "warm import, .pyc s", ".2f", 1.0),
)


def _table(summary: Mapping[str, Any]) -> list[str]:
    width = 28
    lines = [f"{'median (min-max)':<24}" + "".join(f"{c:>{width}}" for c in CONTENDERS)]
    for key, title, fmt, scale in _ROWS:
        cells = "".join(f"{_cell(summary[c][key], fmt, scale):>{width}}" for c in CONTENDERS)
        lines.append(f"{title:<24}{cells}")
    pkgfs = summary[PKGFS]
    lines.append(
        f"{'pkgfs remount s':<24}{_cell(pkgfs['remount'], '.2f'):>{width}}"
        "   (the same venv again: interpreter probe and view already saved)"
    )
    lines.append(
        f"{'pkgfs daemon RSS MiB':<24}{_cell(pkgfs['daemon_max_rss_mib'], '.1f'):>{width}}"
    )
    return lines


def _ratios(result: Mapping[str, Any]) -> list[str]:
    lines = []
    for contender in (PKGFS, COPY):
        for m in ("create", *RUNTIME):
            r = result["summary"][contender]["ratio"][m]
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
    width = 14
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
        f"pkgfs:  {cfg['pkgfs_command']} (source {cfg['pkgfs_source']})",
        f"uv:     {cfg['uv_command']}",
        f"work:   fresh dirs under {machine['workdir']} ({machine['workdir_filesystem']} on"
        f" {cfg['workdir_mount_source']})",
        f"bytecode: {cfg['bytecode']}",
        f"page cache: {cfg['page_cache']}",
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
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where stores, uv caches and venvs are made (default: the temp dir)",
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.stacks = [s for s in STACKS if not args.quick or s.workload.name in QUICK_STACKS]
    args.projects = args.projects.resolve()
    args.workdir = args.workdir.resolve()
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
            rounds, facts = run_rounds(tools, stacks, mounts, args.rounds, root)
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
