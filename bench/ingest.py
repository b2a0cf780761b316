#!/usr/bin/env python3
"""Benchmark: ingest a scientific-stack wheelhouse into an empty pkgfs store, against uv.

Each round times two contenders on the same pinned wheel files, each on fresh, empty targets:

- pkgfs: ``pkgfs --store <new dir> store add <wheels>``;
- uv:    ``uv pip install --no-deps --python <new venv> <wheels>`` with ``UV_CACHE_DIR`` set to
  a new, empty directory and uv's default link mode.

Rounds are interleaved (pkgfs, uv, pkgfs, uv, ...) so that drift in the machine's state hits
both alike. Throughput is the unpacked size of the wheels (``logical_bytes`` of
``pkgfs store stats``) divided by wall time; the same byte count serves both contenders, so
their MB/s compare exactly as their times do. The goal is ``pkgfs_time / uv_time <= 1.0``.

Usage: ``python bench/ingest.py [--rounds N] [--quick] [--out DIR]``. Results go to
``<out>/ingest-<UTC timestamp>.json`` and a table is printed on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    from packaging.tags import Tag, sys_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version
except ModuleNotFoundError:
    # A bare system python3 (via the shebang) lacks pkgfs's dependencies; say what to do.
    sys.exit("bench: error: 'packaging' is missing; run .venv/bin/python bench/ingest.py")

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
    measure,
    observe_link_mode,
    progress,
    spread,
    store_stats,
    uv_env,
    write_report,
)

# Pinned so that runs months apart measure the same bytes. Every pin has a cp311
# manylinux_x86_64 wheel (or a pure-Python one); the scientific stack plus its runtime deps.
FULL_PINS: tuple[str, ...] = (
    "numpy==2.2.6",
    "pandas==2.2.3",
    "scipy==1.15.3",
    "scikit-learn==1.6.1",
    "matplotlib==3.10.3",
    "pyarrow==20.0.0",
    "pillow==11.2.1",
    "fonttools==4.58.4",
    "contourpy==1.3.2",
    "kiwisolver==1.4.8",
    "pyparsing==3.2.3",
    "cycler==0.12.1",
    "packaging==25.0",
    "python-dateutil==2.9.0.post0",
    "pytz==2025.2",
    "tzdata==2025.2",
    "six==1.17.0",
    "threadpoolctl==3.6.0",
    "joblib==1.5.1",
)
# A smoke test: a compiled extension, a many-file package and a pure-Python one (~26 MB).
QUICK_PINS: tuple[str, ...] = ("fonttools==4.58.4", "kiwisolver==1.4.8", "pyparsing==3.2.3")
QUICK_ROUNDS = 2
DEFAULT_ROUNDS = 5
GOAL_RATIO = 1.0

DEFAULT_CACHE = REPO / ".cache" / "bench-wheels"
DEFAULT_OUT = REPO / "bench" / "results"
PAGE_CACHE_NOTE = (
    "warm: before every timed run all wheel files are read once and os.sync() has flushed"
    " earlier rounds' writes; the page cache is never dropped"
)
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Round:
    """Both contenders' measurements for one round, and their time ratio."""

    index: int
    pkgfs: Measurement
    uv: Measurement

    @property
    def ratio(self) -> float:
        """pkgfs seconds over uv seconds; below 1.0 means pkgfs was faster."""
        return self.pkgfs.seconds / self.uv.seconds


# --- inputs --------------------------------------------------------------------------------


def _split_pin(pin: str) -> tuple[str, Version]:
    name, _, version = pin.partition("==")
    return str(canonicalize_name(name)), Version(version)


def find_cached_wheel(pin: str, cache: Path, supported: frozenset[Tag]) -> Path | None:
    """A wheel in ``cache`` for ``pin`` ("name==version") installable here, or None."""
    want_name, want_version = _split_pin(pin)
    for path in sorted(cache.glob("*.whl")):
        try:
            name, version, _, tags = parse_wheel_filename(path.name)
        except ValueError:
            continue  # not a wheel name pip would write; ignore it
        if name == want_name and version == want_version and not supported.isdisjoint(tags):
            return path
    return None


def ensure_wheels(pins: Sequence[str], cache: Path) -> list[Path]:
    """Return one wheel file per pin, in pin order, downloading only the ones not in ``cache``.

    Downloads use ``python -m pip download --only-binary=:all: --no-deps`` for this
    interpreter's tags. Raises BenchError if a pin still has no usable wheel afterwards.
    """
    cache.mkdir(parents=True, exist_ok=True)
    supported = frozenset(sys_tags())
    missing = [p for p in pins if find_cached_wheel(p, cache, supported) is None]
    if missing:
        progress(f"downloading {len(missing)} wheels into {cache}")
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        capture([*pip, "download", "--only-binary=:all:", "--no-deps", "--dest", cache, *missing])
    wheels = []
    for pin in pins:
        found = find_cached_wheel(pin, cache, supported)
        if found is None:
            raise BenchError(f"no wheel for {pin} compatible with this interpreter in {cache}")
        wheels.append(found)
    return wheels


def warm(paths: Iterable[Path]) -> None:
    """Read every file once so that both contenders start from the same warm page cache."""
    for path in paths:
        with open(path, "rb") as f:
            while f.read(_READ_CHUNK):
                pass


def settle(paths: Iterable[Path]) -> None:
    """Flush pending writes, then warm ``paths``.

    Why sync: pkgfs calls syncfs(2) per wheel, which would otherwise also pay for the dirty
    pages the previous contender left behind.
    """
    os.sync()
    warm(paths)


# --- timed runs ----------------------------------------------------------------------------


def run_pkgfs(tools: Tools, wheels: Sequence[Path], store: Path) -> Measurement:
    """Time ``pkgfs store add`` of all ``wheels`` into the (new) store directory ``store``."""
    return measure([tools.pkgfs, "--store", store, "store", "add", *wheels])


def run_uv(tools: Tools, wheels: Sequence[Path], venv: Path, cache_dir: Path) -> Measurement:
    """Time ``uv pip install --no-deps`` of all ``wheels`` into the (fresh) ``venv``."""
    argv: list[str | Path] = [tools.uv, "pip", "install", "--no-deps", "--no-config", "--python"]
    return measure([*argv, venv / "bin" / "python", *wheels], env=uv_env(cache_dir))


# --- rounds --------------------------------------------------------------------------------


@dataclass
class Checks:
    """Facts established in the first round and held constant by the later ones."""

    stats: dict[str, int] | None = None
    uv_layout: dict[str, Any] | None = None


def pkgfs_round(tools: Tools, wheels: Sequence[Path], workdir: Path, checks: Checks) -> Measurement:
    """One pkgfs run on an empty store; checks its stats and, the first time, verifies it."""
    with tempfile.TemporaryDirectory(prefix="pkgfs-", dir=workdir) as tmp:
        store = Path(tmp) / "store"
        settle(wheels)
        result = run_pkgfs(tools, wheels, store)
        stats = store_stats(tools, store)
        if stats["wheels"] != len(wheels):
            raise BenchError(f"store holds {stats['wheels']} wheels, expected {len(wheels)}")
        if checks.stats is None:
            # Verify once: proves the timed ingest produced a sound store, without timing it.
            capture([tools.pkgfs, "--store", store, "store", "verify"])
            checks.stats = stats
        elif stats["logical_bytes"] != checks.stats["logical_bytes"]:
            raise BenchError("logical_bytes changed between rounds; the inputs are not stable")
    return result


def uv_round(tools: Tools, wheels: Sequence[Path], workdir: Path, checks: Checks) -> Measurement:
    """One uv run into a fresh venv with an empty cache on the same filesystem."""
    # Venv and cache share a directory, so uv's default hard links never cross filesystems.
    with tempfile.TemporaryDirectory(prefix="uv-", dir=workdir) as tmp:
        venv, cache_dir = Path(tmp) / "venv", Path(tmp) / "uv-cache"
        capture([tools.python, "-m", "venv", "--without-pip", venv])
        cache_dir.mkdir()
        settle(wheels)
        result = run_uv(tools, wheels, venv, cache_dir)
        if checks.uv_layout is None:
            checks.uv_layout = observe_link_mode(venv)
    return result


def run_rounds(
    tools: Tools, wheels: Sequence[Path], rounds: int, workdir: Path
) -> tuple[list[Round], Checks]:
    """Run ``rounds`` interleaved rounds (pkgfs first, then uv), each on fresh targets."""
    checks, results = Checks(), []
    for i in range(1, rounds + 1):
        p = pkgfs_round(tools, wheels, workdir, checks)
        u = uv_round(tools, wheels, workdir, checks)
        results.append(Round(i, p, u))
        progress(
            f"round {i}/{rounds}: pkgfs {p.seconds:.2f}s, uv {u.seconds:.2f}s,"
            f" ratio {p.seconds / u.seconds:.2f}"
        )
    return results, checks


# --- report --------------------------------------------------------------------------------


def summarize(rounds: Sequence[Round], logical_bytes: int) -> dict[str, Any]:
    """Per-contender time/throughput/RSS spreads and the spread of per-round ratios."""
    summary: dict[str, Any] = {}
    for name in ("pkgfs", "uv"):
        runs = [getattr(r, name) for r in rounds]
        seconds = spread([m.seconds for m in runs])
        summary[name] = {
            "seconds": seconds,
            "mb_per_s": spread([logical_bytes / MB / m.seconds for m in runs]),
            "max_rss_mib": spread([m.max_rss_kib / 1024 for m in runs]),
            "sync_after_seconds": spread([m.sync_after_seconds for m in runs]),
        }
    summary["ratio"] = spread([r.ratio for r in rounds])
    return summary


def _header(report: Mapping[str, Any]) -> list[str]:
    cfg, nbytes, machine = report["config"], report["bytes"], report["machine"]
    logical = nbytes["logical_bytes"]
    uv_extra = nbytes["uv_site_packages_bytes"] - logical
    return [
        f"pkgfs ingest benchmark: {len(cfg['wheels'])} wheels, {cfg['rounds']} interleaved rounds"
        f" (pkgfs then uv), {machine['usable_cpus']} CPUs, {machine['uv_version']}",
        f"unpacked bytes: {logical:,} ({logical / MB:.1f} MB, {nbytes['files']:,} files)"
        " = pkgfs logical_bytes; the same count is used for both contenders",
        f"  (uv's site-packages ends up {uv_extra:+,} bytes off that: its INSTALLER, RECORD, ...)",
        f"targets: fresh dirs under {machine['workdir']} ({machine['workdir_filesystem']})",
        f"page cache: {cfg['page_cache']}",
        f"uv link mode: {cfg['uv_link_mode']['observed']} (uv's default: no UV_* settings,"
        " --no-config)",
    ]


def _table(summary: Mapping[str, Any]) -> list[str]:
    lines = [
        f"{'contender':<10}{'median s':>9}{'min s':>8}{'max s':>8}"
        f"{'MB/s med':>10}{'MB/s min':>10}{'MB/s max':>10}{'peak RSS MiB':>14}"
    ]
    for name in ("pkgfs", "uv"):
        t, mbs = summary[name]["seconds"], summary[name]["mb_per_s"]
        lines.append(
            f"{name:<10}{t['median']:>9.2f}{t['min']:>8.2f}{t['max']:>8.2f}"
            f"{mbs['median']:>10.1f}{mbs['min']:>10.1f}{mbs['max']:>10.1f}"
            f"{summary[name]['max_rss_mib']['max']:>14.1f}"
        )
    return lines


def _verdict(report: Mapping[str, Any]) -> list[str]:
    summary = report["summary"]
    r = summary["ratio"]
    met = "MET" if r["median"] <= GOAL_RATIO else "NOT MET"
    per_round = ", ".join(f"{x:.2f}" for x in report["ratios"])
    return [
        f"ratio pkgfs_time/uv_time per round: median {r['median']:.2f}, min {r['min']:.2f},"
        f" max {r['max']:.2f}  (rounds: {per_round})",
        f"goal: ingest no slower than uv's unpacking (median ratio <= {GOAL_RATIO:.1f}): {met}",
        "os.sync() right after each run (not timed): median pkgfs"
        f" {summary['pkgfs']['sync_after_seconds']['median']:.2f}s,"
        f" uv {summary['uv']['sync_after_seconds']['median']:.2f}s"
        " (pkgfs's time includes a syncfs(2) per wheel; uv does not sync)",
    ]


def render(report: Mapping[str, Any]) -> str:
    """The human-readable summary for stdout: setup, the table, ratios and the goal."""
    return "\n".join([*_header(report), "", *_table(report["summary"]), "", *_verdict(report)])


def build_report(
    args: argparse.Namespace,
    tools: Tools,
    wheels: Sequence[Path],
    rounds: Sequence[Round],
    checks: Checks,
) -> dict[str, Any]:
    """Everything the JSON result file holds."""
    if checks.stats is None or checks.uv_layout is None:
        raise BenchError("no round completed")
    logical = checks.stats["logical_bytes"]
    return {
        "benchmark": "ingest",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(tools, args.workdir),
        "config": {
            "rounds": len(rounds),
            "quick": args.quick,
            "order": "interleaved, pkgfs then uv in each round",
            "page_cache": PAGE_CACHE_NOTE,
            "pins": list(args.pins),
            "wheels": [{"file": w.name, "bytes": w.stat().st_size} for w in wheels],
            "pkgfs_command": "pkgfs --store <empty dir> store add <wheels>",
            "uv_command": "uv pip install --no-deps --no-config --python <fresh venv> <wheels>"
            " (UV_CACHE_DIR=<empty dir>)",
            "uv_link_mode": {k: v for k, v in checks.uv_layout.items() if "bytes" not in k},
        },
        "bytes": {
            "logical_bytes": logical,
            "files": checks.stats["files"],
            "pkgfs_stats": checks.stats,
            "wheel_bytes": sum(w.stat().st_size for w in wheels),
            "uv_site_packages_bytes": checks.uv_layout["site_packages_bytes"],
        },
        "rounds": [
            {"round": r.index, "pkgfs": asdict(r.pkgfs), "uv": asdict(r.uv)} for r in rounds
        ],
        "ratios": [r.ratio for r in rounds],
        "summary": summarize(rounds, logical),
        "goal": {"ratio_at_most": GOAL_RATIO},
    }


# --- command line --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; ``pins`` and ``rounds`` come out resolved for --quick."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5; --quick 2)")
    parser.add_argument("--quick", action="store_true", help="3 small packages, 2 rounds")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument("--wheels", type=Path, default=DEFAULT_CACHE, help="wheel cache")
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
    args.pins = QUICK_PINS if args.quick else FULL_PINS
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 1 when a step failed (the reason is on stderr)."""
    args = parse_args(argv)
    try:
        tools = Tools(Path(sys.executable), find_tool("pkgfs"), find_tool("uv"))
        wheels = ensure_wheels(args.pins, args.wheels)
        progress(f"{len(wheels)} wheels, {args.rounds} rounds, work in {args.workdir}")
        rounds, checks = run_rounds(tools, wheels, args.rounds, args.workdir)
        report = build_report(args, tools, wheels, rounds, checks)
        path = write_report(report, args.out, "ingest")
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    print(render(report))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
