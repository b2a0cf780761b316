#!/usr/bin/env python3
"""Benchmark: ``pkgfs sync`` from the lockfiles of real projects, against ``uv pip sync``.

Two workloads, a web stack and a scientific stack, are small pyproject.toml projects that
``uv lock`` pins (resolved as of ``EXCLUDE_NEWER``, so that re-locking gives the same lock)
and that ``uv export`` writes out again as pylock.toml and as a hashed requirements.txt.

First a correctness check: for the target interpreter, ``pkgfs lock show`` must select the
identical set of (name, version, wheel file, sha256) from all three formats. A mismatch is
reported with the differing wheels and the benchmark stops with exit status 1.

Then each round times, per workload and interleaved (pkgfs, uv, pkgfs, uv):

- cold: ``pkgfs sync --lock uv.lock`` into an empty store, and ``uv pip sync
  requirements.txt`` into a fresh venv with an empty ``UV_CACHE_DIR``. Both download every
  wheel from the package index, so network time dominates both and varies between runs.
- warm: the same again, into the same store (pkgfs must find every wheel present and
  download nothing) and into a second fresh venv with the now-warm uv cache.

The per-round ratio ``pkgfs_time / uv_time`` is reported for cold and for warm.

Usage: ``python bench/sync.py [--rounds N] [--quick] [--relock] [--out DIR] [--workdir DIR]``.
Results go to ``<out>/sync-<UTC timestamp>.json`` and a table is printed on stdout; progress
goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    from packaging.tags import parse_tag
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version
except ModuleNotFoundError:
    # A bare system python3 (via the shebang) lacks pkgfs's dependencies; say what to do.
    sys.exit("bench: error: 'packaging' is missing; run .venv/bin/python bench/sync.py")

# Run as a script (python bench/NAME.py), the repository root is not on sys.path: put it
# there, so the scripts and mypy import the shared module alike, as bench.common.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (
    MB,
    REPO,
    BenchError,
    Measurement,
    Tools,
    capture,
    find_tool,
    machine_info,
    measure_output,
    observe_link_mode,
    progress,
    site_packages,
    spread,
    store_stats,
    uv_env,
    write_report,
)


@dataclass(frozen=True)
class Workload:
    """A real project's direct dependencies; ``uv lock`` adds the rest."""

    name: str  # short, used for directories and JSON keys
    title: str
    dependencies: tuple[str, ...]

    def pyproject(self) -> str:
        """The project's pyproject.toml: no build system, so uv locks it as a virtual project."""
        deps = "".join(f'    "{d}",\n' for d in self.dependencies)
        return (
            f"# Written by bench/sync.py (WORKLOADS); edits here are overwritten.\n"
            f"[project]\n"
            f'name = "bench-sync-{self.name}"\n'
            f'version = "0"\n'
            f'requires-python = "{REQUIRES_PYTHON}"\n'
            f"dependencies = [\n{deps}]\n"
        )


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "web",
        "web stack",
        (
            "flask",
            "sqlalchemy",
            "alembic",
            "pydantic",
            "httpx",
            "requests",
            "rich",
            "fastapi",
            "uvicorn[standard]",
            "jinja2",
            "gunicorn",
        ),
    ),
    Workload(
        "sci",
        "scientific stack",
        (
            "numpy",
            "pandas",
            "scipy",
            "matplotlib",
            "scikit-learn",
            "pyarrow",
            "statsmodels",
            "sympy",
        ),
    ),
)
QUICK_WORKLOADS = ("web",)
# uv ignores releases uploaded after this instant, so a re-lock (--relock, or a change to
# WORKLOADS) resolves to the same versions on any machine. Move it on purpose: results are
# comparable only for the same wheels.
EXCLUDE_NEWER = "2026-11-01T00:00:00Z"
REQUIRES_PYTHON = ">=3.11"
DEFAULT_ROUNDS = 3
QUICK_ROUNDS = 1

UV_LOCK, PYLOCK, REQUIREMENTS = "uv.lock", "pylock.toml", "requirements.txt"
LOCK_FORMATS = (UV_LOCK, PYLOCK, REQUIREMENTS)
DEFAULT_PROJECTS = REPO / ".cache" / "bench-sync"
DEFAULT_OUT = REPO / "bench" / "results"
NETWORK_NOTE = (
    "cold runs download every wheel from the package index: network time dominates both"
    " contenders and varies from run to run; warm runs need no wheel download"
)
_SUMMARY = re.compile(r"^(\d+) wheels: (\d+) already in the store, (\d+) added", re.MULTILINE)

WheelKey = tuple[str, str, str, str]  # (name, version, wheel file name, sha256)


# --- projects and their locks --------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    """A workload's directory with its three lockfiles, all made from the same uv.lock."""

    workload: Workload
    directory: Path
    relocked: bool  # uv lock ran in this invocation
    # The lock's package index, passed to pkgfs for requirements.txt (which names none) and
    # to uv, so both read the index the lock came from. Never written to a file.
    index_url: str
    wheel_sizes: dict[str, int]  # sha256 -> bytes, for every wheel uv.lock lists

    def lock(self, fmt: str) -> Path:
        """The lockfile in format ``fmt`` (a member of LOCK_FORMATS)."""
        return self.directory / fmt


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` unless it already holds exactly that; True if it wrote."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.write_text(text)
    return True


def read_uv_lock(path: Path) -> tuple[str, dict[str, int]]:
    """The single registry index ``path`` (a uv.lock) names, and its wheels' sizes by sha256.

    Raises BenchError unless exactly one registry appears: the benchmark gives both
    contenders one index.
    """
    data = tomllib.loads(path.read_text())
    registries: set[str] = set()
    sizes: dict[str, int] = {}
    for package in data.get("package", []):
        registry = package.get("source", {}).get("registry")
        if registry is not None:
            registries.add(registry)
        for wheel in package.get("wheels", []):
            algorithm, _, digest = str(wheel.get("hash", "")).partition(":")
            if algorithm == "sha256" and isinstance(wheel.get("size"), int):
                sizes[digest] = wheel["size"]
    if len(registries) != 1:
        raise BenchError(f"{path}: expected one registry index, found {len(registries)}")
    return registries.pop(), sizes


def prepare(tools: Tools, workload: Workload, projects: Path, relock: bool) -> Project:
    """Write the workload's project, lock it if needed, and export the other two formats.

    The lock is made from scratch when there is none, when the pyproject.toml changed or
    with ``relock``; otherwise the cached uv.lock is reused as it is. Exports always run,
    from the lock alone (``--frozen``), so the three files always agree with uv.lock.
    """
    directory = projects / workload.name
    directory.mkdir(parents=True, exist_ok=True)
    changed = write_if_changed(directory / "pyproject.toml", workload.pyproject())
    uv_lock = directory / UV_LOCK
    # A private cache for locking and exporting only; the timed uv runs each get their own.
    env = uv_env(projects / "uv-cache")
    uv: list[str | Path] = [tools.uv, "--directory", directory]
    relocking = relock or changed or not uv_lock.exists()
    if relocking:
        progress(f"{workload.name}: uv lock (exclude-newer {EXCLUDE_NEWER}) in {directory}")
        uv_lock.unlink(missing_ok=True)  # from scratch: no preference for the old pins
        lock: list[str | Path] = ["lock", "--no-config", "--python", tools.python]
        capture([*uv, *lock, "--exclude-newer", EXCLUDE_NEWER], env=env)
    export = [*uv, "export", "--no-config", "--frozen", "--python", tools.python]
    capture([*export, "--format", "pylock.toml", "-o", directory / PYLOCK], env=env)
    requirements = ["--format", "requirements.txt", "--no-emit-project"]
    capture([*export, *requirements, "-o", directory / REQUIREMENTS], env=env)
    index_url, sizes = read_uv_lock(uv_lock)
    return Project(workload, directory, relocking, index_url, sizes)


def pkgfs_lock_args(tools: Tools, project: Project, fmt: str) -> list[str | Path]:
    """``--lock`` and friends for ``pkgfs sync``/``lock show`` on one of the lockfiles."""
    args: list[str | Path] = ["--lock", project.lock(fmt), "--python", tools.python]
    if fmt == REQUIREMENTS:
        # requirements.txt names wheels by hash only: pkgfs finds the files on the index.
        args += ["--index-url", project.index_url]
    return args


# --- the identical-wheel-set check ---------------------------------------------------------


@dataclass(frozen=True)
class FormatCheck:
    """What ``pkgfs lock show`` selected from each format, for one workload."""

    wheels: list[dict[str, Any]]  # uv.lock's rows, without URLs (they name the index host)
    counts: dict[str, int]  # format -> number of wheels selected
    differences: list[str]  # empty when all formats agree

    @property
    def identical(self) -> bool:
        """True when all three formats selected the same wheel set."""
        return not self.differences


def lock_show(tools: Tools, store: Path, project: Project, fmt: str) -> list[dict[str, Any]]:
    """``pkgfs lock show --json`` of one lockfile: one object per selected wheel."""
    argv = [tools.pkgfs, "--store", store, "lock", "show", *pkgfs_lock_args(tools, project, fmt)]
    rows: list[dict[str, Any]] = json.loads(capture([*argv, "--json"]))
    return rows


def wheel_key(row: Mapping[str, Any]) -> WheelKey:
    """The identity of a selected wheel, as the check compares it."""
    return (str(row["name"]), str(row["version"]), str(row["wheel"]), str(row["sha256"]))


def check_formats(tools: Tools, project: Project, workdir: Path) -> FormatCheck:
    """Compare the wheel sets pkgfs selects from uv.lock, pylock.toml and requirements.txt."""
    with tempfile.TemporaryDirectory(prefix="pkgfs-check-", dir=workdir) as tmp:
        store = Path(tmp) / "store"  # empty: lock show only reads the lockfiles
        rows = {fmt: lock_show(tools, store, project, fmt) for fmt in LOCK_FORMATS}
    keys = {fmt: {wheel_key(r) for r in fmt_rows} for fmt, fmt_rows in rows.items()}
    differences = []
    reference = keys[UV_LOCK]
    for fmt in (PYLOCK, REQUIREMENTS):
        differences += [
            f"{fmt} lacks {k}, which {UV_LOCK} has" for k in sorted(reference - keys[fmt])
        ]
        differences += [
            f"{fmt} adds {k}, which {UV_LOCK} lacks" for k in sorted(keys[fmt] - reference)
        ]
    for fmt, fmt_rows in rows.items():
        if len(fmt_rows) != len(keys[fmt]):
            differences.append(f"{fmt}: {len(fmt_rows)} rows but {len(keys[fmt])} distinct")
    wheels = [{k: v for k, v in r.items() if k not in ("url", "in_store")} for r in rows[UV_LOCK]]
    return FormatCheck(wheels, {fmt: len(r) for fmt, r in rows.items()}, differences)


# --- timed runs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncSummary:
    """The numbers in ``pkgfs sync``'s summary line."""

    total: int
    present: int
    added: int

    @classmethod
    def parse(cls, stdout: str) -> SyncSummary:
        """Read "N wheels: P already in the store, A added" from pkgfs sync's stdout."""
        match = _SUMMARY.search(stdout)
        if match is None:
            raise BenchError(f"pkgfs sync printed no summary line: {stdout.strip()!r}")
        return cls(*(int(g) for g in match.groups()))

    def line(self) -> str:
        """The summary as pkgfs prints it."""
        return f"{self.total} wheels: {self.present} already in the store, {self.added} added"


def pkgfs_sync(
    tools: Tools, project: Project, store: Path, fmt: str, *, expect_added: int, expect_total: int
) -> tuple[Measurement, SyncSummary]:
    """Time ``pkgfs sync`` of one lockfile into ``store``; check what it says it did.

    Raises BenchError when pkgfs fails, or when it added (downloaded) a different number of
    wheels than expected: ``expect_total`` on an empty store, 0 on one that has them all.
    """
    os.sync()  # pkgfs calls syncfs(2); it should not pay for the setup's dirty pages
    # --no-compile: uv pip sync compiles no bytecode by default either (bench/README.md);
    # the one-time compile is measured on its own.
    argv = [
        tools.pkgfs,
        "--store",
        store,
        "sync",
        "--no-compile",
        *pkgfs_lock_args(tools, project, fmt),
    ]
    result, stdout = measure_output(argv)
    summary = SyncSummary.parse(stdout)
    expected = SyncSummary(expect_total, expect_total - expect_added, expect_added)
    if summary != expected:
        raise BenchError(
            f"pkgfs sync --lock {fmt} ({project.workload.name}) said {summary.line()!r},"
            f" expected {expected.line()!r}"
        )
    return result, summary


def uv_sync(tools: Tools, project: Project, venv: Path, cache_dir: Path) -> Measurement:
    """Time ``uv pip sync requirements.txt`` into ``venv`` with the uv cache ``cache_dir``."""
    os.sync()
    argv: list[str | Path] = [tools.uv, "pip", "sync", "--no-config"]
    argv += ["--index-url", project.index_url, "--python", venv / "bin" / "python"]
    result, _ = measure_output([*argv, project.lock(REQUIREMENTS)], env=uv_env(cache_dir))
    return result


def new_venv(tools: Tools, path: Path) -> Path:
    """A fresh, empty venv at ``path`` (not timed); returns ``path``."""
    capture([tools.python, "-m", "venv", "--without-pip", path])
    return path


def disk_usage(*paths: Path) -> int:
    """``du -s`` of ``paths`` together, in bytes; one du run counts a hard-linked file once."""
    out = capture(["du", "-s", "-c", "--block-size=1", *paths])
    return int(out.splitlines()[-1].split()[0])  # the "total" line


def installed_wheels(venv: Path) -> dict[tuple[str, str], frozenset[str]]:
    """(name, version) -> the tags in WHEEL, for every distribution installed in ``venv``."""
    found: dict[tuple[str, str], frozenset[str]] = {}
    for dist_info in site_packages(venv).glob("*.dist-info"):
        name, _, version = dist_info.name.removesuffix(".dist-info").rpartition("-")
        lines = (dist_info / "WHEEL").read_text().splitlines()
        tags = {
            str(t) for line in lines if line.startswith("Tag:") for t in parse_tag(line[4:].strip())
        }
        found[(canonicalize_name(name), str(Version(version)))] = frozenset(tags)
    return found


def compare_with_uv(wheels: Iterable[Mapping[str, Any]], venv: Path) -> list[str]:
    """How the distributions uv installed differ from the wheels pkgfs synced; [] if none.

    A wheel counts as the same when name and version match and the tags in uv's WHEEL file
    overlap those of pkgfs's file name (the file name may list more aliases than WHEEL).
    """
    ours: dict[tuple[str, str], frozenset[str]] = {}
    for row in wheels:
        name, version, _, tags = parse_wheel_filename(str(row["wheel"]))
        ours[(str(name), str(version))] = frozenset(str(t) for t in tags)
    theirs = installed_wheels(venv)
    differences = [f"only pkgfs: {k[0]} {k[1]}" for k in sorted(ours.keys() - theirs.keys())]
    differences += [f"only uv: {k[0]} {k[1]}" for k in sorted(theirs.keys() - ours.keys())]
    differences += [
        f"other tags: {k[0]} {k[1]} (uv {sorted(theirs[k])})"
        for k in sorted(ours.keys() & theirs.keys())
        if ours[k].isdisjoint(theirs[k])
    ]
    return differences


# --- rounds --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """Both contenders' measurements for one phase of a round, and their time ratio."""

    pkgfs: Measurement
    uv: Measurement

    @property
    def ratio(self) -> float:
        """pkgfs seconds over uv seconds; below 1.0 means pkgfs was faster."""
        return self.pkgfs.seconds / self.uv.seconds


@dataclass(frozen=True)
class Round:
    """One workload's cold and warm measurements in one round."""

    index: int
    cold: Pair
    warm: Pair


@dataclass
class Facts:
    """What one workload's first round establishes; later rounds must agree with it."""

    stats: dict[str, int] | None = None
    disk: dict[str, int] = field(default_factory=dict)  # du -s bytes after the cold sync
    uv_layout: dict[str, Any] | None = None
    uv_differences: list[str] = field(default_factory=list)
    other_formats: dict[str, dict[str, Any]] = field(default_factory=dict)


def after_cold(tools: Tools, store: Path, uv_dir: Path, check: FormatCheck, facts: Facts) -> None:
    """Record, the first time, what the cold syncs produced; afterwards check it is stable.

    ``uv_dir`` holds uv's cache and the venv of its cold sync.
    """
    stats = store_stats(tools, store)
    if stats["wheels"] != len(check.wheels):
        raise BenchError(f"store holds {stats['wheels']} wheels, expected {len(check.wheels)}")
    if facts.stats is not None:
        if stats["logical_bytes"] != facts.stats["logical_bytes"]:
            raise BenchError("logical_bytes changed between rounds; the inputs are not stable")
        return
    # Verify once: proves the timed sync produced a sound store, without timing it.
    capture([tools.pkgfs, "--store", store, "store", "verify"])
    facts.stats = stats
    venv = uv_dir / "venv-cold"
    cache, packages = uv_dir / "uv-cache", site_packages(venv)
    facts.disk = {
        "pkgfs_store": disk_usage(store),
        "uv_cache": disk_usage(cache),
        "uv_venv_site_packages": disk_usage(packages),
        "uv_cache_and_site_packages": disk_usage(cache, packages),
    }
    facts.uv_layout = observe_link_mode(venv)
    facts.uv_differences = compare_with_uv(check.wheels, venv)


def other_formats(tools: Tools, project: Project, store: Path, total: int, facts: Facts) -> None:
    """Sync pylock.toml and requirements.txt into the full store: both must add nothing."""
    for fmt in (PYLOCK, REQUIREMENTS):
        result, summary = pkgfs_sync(tools, project, store, fmt, expect_added=0, expect_total=total)
        facts.other_formats[fmt] = {"seconds": result.seconds, "summary": summary.line()}


def run_round(
    tools: Tools, project: Project, check: FormatCheck, facts: Facts, *, index: int, workdir: Path
) -> Round:
    """One round for one workload: cold pkgfs, cold uv, warm pkgfs, warm uv."""
    total = len(check.wheels)
    with (
        tempfile.TemporaryDirectory(prefix="pkgfs-", dir=workdir) as pkgfs_tmp,
        # Venvs and cache share a directory, so uv's default hard links never cross
        # filesystems.
        tempfile.TemporaryDirectory(prefix="uv-", dir=workdir) as uv_tmp,
    ):
        store, uv_dir = Path(pkgfs_tmp) / "store", Path(uv_tmp)
        (uv_dir / "uv-cache").mkdir()
        cold_venv = new_venv(tools, uv_dir / "venv-cold")
        warm_venv = new_venv(tools, uv_dir / "venv-warm")
        pkgfs_cold, _ = pkgfs_sync(
            tools, project, store, UV_LOCK, expect_added=total, expect_total=total
        )
        uv_cold = uv_sync(tools, project, cold_venv, uv_dir / "uv-cache")
        after_cold(tools, store, uv_dir, check, facts)
        pkgfs_warm, _ = pkgfs_sync(
            tools, project, store, UV_LOCK, expect_added=0, expect_total=total
        )
        uv_warm = uv_sync(tools, project, warm_venv, uv_dir / "uv-cache")
        if not facts.other_formats:
            other_formats(tools, project, store, total, facts)
    return Round(index, Pair(pkgfs_cold, uv_cold), Pair(pkgfs_warm, uv_warm))


def run_rounds(
    tools: Tools,
    projects: Sequence[Project],
    checks: Mapping[str, FormatCheck],
    rounds: int,
    workdir: Path,
) -> tuple[dict[str, list[Round]], dict[str, Facts]]:
    """``rounds`` rounds; in each, every workload in turn, each on fresh targets."""
    results: dict[str, list[Round]] = {p.workload.name: [] for p in projects}
    facts = {p.workload.name: Facts() for p in projects}
    for i in range(1, rounds + 1):
        for project in projects:
            name = project.workload.name
            r = run_round(tools, project, checks[name], facts[name], index=i, workdir=workdir)
            results[name].append(r)
            progress(
                f"round {i}/{rounds} {name}: cold pkgfs {r.cold.pkgfs.seconds:.2f}s,"
                f" uv {r.cold.uv.seconds:.2f}s, ratio {r.cold.ratio:.2f};"
                f" warm pkgfs {r.warm.pkgfs.seconds:.2f}s, uv {r.warm.uv.seconds:.2f}s,"
                f" ratio {r.warm.ratio:.2f}"
            )
    return results, facts


# --- report --------------------------------------------------------------------------------


def summarize(rounds: Sequence[Round]) -> dict[str, Any]:
    """Per phase: each contender's time/RSS spreads and the spread of per-round ratios."""
    summary: dict[str, Any] = {}
    for phase in ("cold", "warm"):
        pairs: list[Pair] = [getattr(r, phase) for r in rounds]
        summary[phase] = {"ratio": spread([p.ratio for p in pairs])}
        for name in ("pkgfs", "uv"):
            runs: list[Measurement] = [getattr(p, name) for p in pairs]
            summary[phase][name] = {
                "seconds": spread([m.seconds for m in runs]),
                "max_rss_mib": spread([m.max_rss_kib / 1024 for m in runs]),
                "sync_after_seconds": spread([m.sync_after_seconds for m in runs]),
            }
    return summary


def _mb(n: int) -> str:
    return f"{n / MB:,.1f} MB"


def _header(report: Mapping[str, Any]) -> list[str]:
    cfg, machine = report["config"], report["machine"]
    layouts = {w["uv_link_mode"]["observed"] for w in report["workloads"].values()}
    return [
        f"pkgfs sync benchmark: {', '.join(report['workloads'])}; {cfg['rounds']} interleaved"
        f" rounds (cold pkgfs, cold uv, warm pkgfs, warm uv), {machine['usable_cpus']} CPUs,"
        f" {machine['uv_version']}",
        f"target interpreter: Python {machine['python']} ({machine['python_executable']});"
        f" locks: uv lock --exclude-newer {cfg['exclude_newer']}, cached in {cfg['projects']}",
        f"pkgfs: {cfg['pkgfs_command']}",
        f"uv:    {cfg['uv_command']}",
        f"targets: fresh dirs under {machine['workdir']} ({machine['workdir_filesystem']})",
        f"network: {cfg['network']}",
        f"uv link mode: {', '.join(sorted(layouts))} (uv's default: no UV_* settings, --no-config)",
    ]


def _table(summary: Mapping[str, Any]) -> list[str]:
    lines = [f"{'phase':<7}{'contender':<10}{'median s':>9}{'min s':>8}{'max s':>8}{'RSS MiB':>9}"]
    for phase in ("cold", "warm"):
        for name in ("pkgfs", "uv"):
            t = summary[phase][name]["seconds"]
            lines.append(
                f"{phase:<7}{name:<10}{t['median']:>9.2f}{t['min']:>8.2f}{t['max']:>8.2f}"
                f"{summary[phase][name]['max_rss_mib']['max']:>9.1f}"
            )
    return lines


def _ratios(result: Mapping[str, Any]) -> list[str]:
    lines = []
    for phase in ("cold", "warm"):
        r = result["summary"][phase]["ratio"]
        per_round = ", ".join(f"{x[phase]['ratio']:.2f}" for x in result["rounds"])
        lines.append(
            f"ratio pkgfs/uv, {phase}: median {r['median']:.2f}, min {r['min']:.2f},"
            f" max {r['max']:.2f}  (rounds: {per_round})"
        )
    return lines


def _context(result: Mapping[str, Any]) -> list[str]:
    stats, disk, other = result["store_stats"], result["disk_usage"], result["other_formats"]
    same = result["uv_differences"]
    agreed = "the same wheels" if not same else f"DIFFERENT wheels: {'; '.join(same)}"
    lines = [
        f"uv installed {agreed} (name, version, tags); wheel files: {_mb(result['wheel_bytes'])}",
        f"store after the cold sync: {stats['wheels']} wheels, {stats['objects']:,} objects,"
        f" logical {_mb(stats['logical_bytes'])}, stored {_mb(stats['stored_bytes'])};"
        f" du -s store {_mb(disk['pkgfs_store'])}",
        f"uv after the cold sync: du -s cache {_mb(disk['uv_cache'])}, du -s venv"
        f" site-packages alone {_mb(disk['uv_venv_site_packages'])} (its hard links counted),"
        f" both in one du {_mb(disk['uv_cache_and_site_packages'])}",
    ]
    for fmt, seen in other.items():
        lines.append(f"warm store, --lock {fmt}: {seen['seconds']:.2f}s, {seen['summary']!r}")
    return lines


def render(report: Mapping[str, Any]) -> str:
    """The human-readable summary for stdout: setup, then per workload checks and tables."""
    lines = _header(report)
    for result in report["workloads"].values():
        counts = ", ".join(f"{fmt} {n}" for fmt, n in result["format_check"]["counts"].items())
        lines += [
            "",
            f"== {result['title']} ({len(result['dependencies'])} direct dependencies):"
            f" {len(result['wheels'])} wheels",
            f"identical wheel sets from uv.lock, pylock.toml, requirements.txt: OK ({counts})",
            "",
            *_table(result["summary"]),
            "",
            *_ratios(result),
            *_context(result),
        ]
    return "\n".join(lines)


def build_report(
    args: argparse.Namespace,
    tools: Tools,
    projects: Sequence[Project],
    checks: Mapping[str, FormatCheck],
    *,
    rounds: Mapping[str, Sequence[Round]],
    facts: Mapping[str, Facts],
) -> dict[str, Any]:
    """Everything the JSON result file holds. It names no index host: no URLs go in."""
    workloads: dict[str, Any] = {}
    for project in projects:
        name = project.workload.name
        check, fact = checks[name], facts[name]
        if fact.stats is None or fact.uv_layout is None:
            raise BenchError("no round completed")
        workloads[name] = {
            "title": project.workload.title,
            "dependencies": list(project.workload.dependencies),
            "relocked": project.relocked,
            "format_check": {"counts": check.counts, "identical": check.identical},
            "wheels": check.wheels,
            "wheel_bytes": sum(project.wheel_sizes.get(w["sha256"], 0) for w in check.wheels),
            "uv_differences": fact.uv_differences,
            "uv_link_mode": {k: v for k, v in fact.uv_layout.items() if "bytes" not in k},
            "store_stats": fact.stats,
            "disk_usage": fact.disk,
            "other_formats": fact.other_formats,
            "rounds": [
                {
                    "round": r.index,
                    "cold": {**asdict(r.cold), "ratio": r.cold.ratio},
                    "warm": {**asdict(r.warm), "ratio": r.warm.ratio},
                }
                for r in rounds[name]
            ],
            "summary": summarize(rounds[name]),
        }
    return {
        "benchmark": "sync",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(tools, args.workdir),
        "config": {
            "rounds": args.rounds,
            "quick": args.quick,
            "order": "per round and workload: cold pkgfs, cold uv, warm pkgfs, warm uv",
            "exclude_newer": EXCLUDE_NEWER,
            "requires_python": REQUIRES_PYTHON,
            "projects": str(args.projects),
            "pkgfs_command": "pkgfs --store <dir> sync --no-compile --lock uv.lock --python <py>"
            " (cold: empty store; warm: the same store again)",
            "uv_command": "uv pip sync --no-config --index-url <the lock's index> --python"
            " <fresh venv> requirements.txt (UV_CACHE_DIR=<dir>, empty when cold)",
            "network": NETWORK_NOTE,
        },
        "workloads": workloads,
    }


# --- command line --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; ``workloads`` and ``rounds`` come out resolved for --quick."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick 1)")
    parser.add_argument("--quick", action="store_true", help="the web stack only, 1 round")
    parser.add_argument("--relock", action="store_true", help="lock again, from scratch")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument(
        "--projects", type=Path, default=DEFAULT_PROJECTS, help="workload projects and locks"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where fresh stores, venvs and uv caches are made (default: the temp dir)",
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.workloads = [w for w in WORKLOADS if not args.quick or w.name in QUICK_WORKLOADS]
    args.projects = args.projects.resolve()
    return args


def check_all(tools: Tools, projects: Sequence[Project], workdir: Path) -> dict[str, FormatCheck]:
    """The identical-wheel-set check for every workload; BenchError lists every mismatch."""
    checks, failures = {}, []
    for project in projects:
        name = project.workload.name
        check = check_formats(tools, project, workdir)
        checks[name] = check
        counts = ", ".join(f"{fmt} {n}" for fmt, n in check.counts.items())
        verdict = "identical" if check.identical else "DIFFERENT"
        progress(f"{name}: wheel sets {verdict} ({counts})")
        failures += [f"{name}: {d}" for d in check.differences]
    if failures:
        raise BenchError(
            "lock formats select DIFFERENT wheel sets for the same interpreter:\n  "
            + "\n  ".join(failures)
        )
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 1 when a step or the check failed (see stderr)."""
    args = parse_args(argv)
    try:
        tools = Tools(Path(sys.executable), find_tool("pkgfs"), find_tool("uv"))
        projects = [prepare(tools, w, args.projects, args.relock) for w in args.workloads]
        checks = check_all(tools, projects, args.workdir)
        names = ", ".join(p.workload.name for p in projects)
        progress(f"workloads {names}, {args.rounds} rounds, work in {args.workdir}")
        rounds, facts = run_rounds(tools, projects, checks, args.rounds, args.workdir)
        report = build_report(args, tools, projects, checks, rounds=rounds, facts=facts)
        path = write_report(report, args.out, "sync")
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    print(render(report))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
