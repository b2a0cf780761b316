#!/usr/bin/env python3
"""Benchmark: bytecode compiled once per store and interpreter, against uv's per-env compile.

The workloads are bench/sync.py's web and scientific stacks, locked in ``.cache/bench-sync/``
(made there as sync.py makes them when missing). Untimed setup per workload: ``pkgfs sync
--no-compile`` fills a base store; one ``uv pip sync`` fills a uv cache, and the stack's
imports are checked in that venv. Then each round, per workload, on fresh targets:

1. one-time compile: a fresh store (an untimed ``cp -a`` of the base: wheels, no bytecode);
   ``pkgfs sync`` timed (it compiles), then again (nothing to compile). Per environment:
   ``uv pip sync --offline --link-mode=hardlink`` into a fresh venv from the warm cache, with
   and without ``--compile-bytecode``: the difference is uv's compile cost per environment.
2. imports of the stack's main packages: a fresh venv with ``pkgfs mount`` of that store
   (shared .pyc), the uv venv with bytecode, the uv venv without; the first import after
   creation, then WARM_RUNS more (a round keeps their median), interleaved; ratios per round.
3. correctness: ``pkgfs diff`` of the mount is empty after those imports, which ran with
   PYTHONDONTWRITEBYTECODE unset: no .pyc went to the overlay. Exit status 1 otherwise.

Usage: ``python bench/bytecode.py [--rounds N] [--quick] [--out DIR] [--workdir DIR]``.
Results: ``<out>/bytecode-<UTC timestamp>.json``, a table on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

# Run as a script (python bench/NAME.py), the repository root is not on sys.path: put it
# there, so the scripts and mypy import the shared modules alike, as bench.common and
# bench.sync.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import contenders
from bench.common import (
    BenchError,
    Tools,
    capture,
    find_tool,
    machine_info,
    mounted_under,
    progress,
    site_packages,
    spread,
    store_stats,
    write_report,
)
from bench.sync import DEFAULT_OUT, REQUIREMENTS, UV_LOCK, WORKLOADS, Project, new_venv, prepare
from bench.sync import DEFAULT_PROJECTS as SYNC_PROJECTS

IMPORTS = {
    "web": ("flask", "requests", "rich.console", "pydantic", "sqlalchemy", "httpx"),
    "sci": ("numpy", "pandas", "scipy.stats", "sklearn", "matplotlib.pyplot"),
}
QUICK_WORKLOADS = ("web",)
DEFAULT_ROUNDS, QUICK_ROUNDS = 3, 1
WARM_RUNS = 3
K_ENVS = (1, 5, 20)
GOAL_FIRST_IMPORT = 1.10
PKGFS, WITH, WITHOUT = "pkgfs", "native-pyc", "native-nopyc"
CONTENDERS = (PKGFS, WITH, WITHOUT)
# python -v says where each module's code came from: its .pyc, or its source compiled.
_CODE_FROM = re.compile(r"^# code object from '(.+)'$", re.MULTILINE)
_COMPILED = re.compile(r"compiled (\d+) modules for (\S+) in ([\d.]+) s \((\d+) did not compile")
BYTECODE_NOTE = (
    "PYTHONDONTWRITEBYTECODE (set on this machine) is controlled per child: unset for the"
    " pkgfs and uv commands (pkgfs compiles with python -I, which ignores it), unset for the"
    f" imports in the {PKGFS} and {WITH} venvs (anything missing may be written: pip's"
    f" default), =1 for the {WITHOUT} venv so that it stays without bytecode"
)
TMP = Path(tempfile.gettempdir())  # the default --workdir
COMMANDS = {
    "pkgfs_sync": "pkgfs --store <fresh cp -a of a store filled by sync --no-compile> sync"
    " --lock uv.lock --python <py>",
    "pkgfs_mount": "pkgfs --store <that store> mount <fresh venv>/lib/python3.X/site-packages"
    " --lock uv.lock --offline",
    "uv": "uv pip sync --no-config --link-mode=hardlink --offline [--compile-bytecode]"
    " --index-url <the lock's index> --python <fresh venv> requirements.txt"
    " (UV_CACHE_DIR=<warm>)",
    "venvs": "python -m venv --without-pip (untimed, every contender)",
    "page_cache": "warm, never dropped; os.sync() before every timed command",
}


def child_env(root: Path, *, dont_write_bytecode: bool) -> dict[str, str]:
    """bench/contenders.py's child environment, with matplotlib's Agg backend."""
    env = contenders.child_env(root, write_bytecode=not dont_write_bytecode)
    return {**env, "MPLBACKEND": "Agg"}


@dataclass(frozen=True)
class Ran:
    """One timed child: wall seconds from spawn to exit, and its stderr."""

    seconds: float
    stderr: str


def run(argv: Sequence[str | Path], env: Mapping[str, str]) -> Ran:
    """Run and time ``argv``; BenchError with the command and its stderr when it fails.

    Output goes to files, not pipes: ``pkgfs mount`` leaves a daemon that inherits them.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.run([str(a) for a in argv], stdout=out, stderr=err, env=env, check=False)
        seconds = time.perf_counter() - start
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(map(str, argv))}\nexited {proc.returncode}: {stderr}")
    return Ran(seconds, stderr)


def count_pyc(venv: Path) -> int:
    """The .pyc files under the venv's site-packages."""
    return sum(1 for _ in site_packages(venv).rglob("*.pyc"))


# --- mounts: made, undone, never left behind -----------------------------------------------


def unmount(tools: Tools, mountpoint: Path, env: Mapping[str, str]) -> None:
    """``pkgfs unmount``, else ``--lazy``, else ``fusermount3 -u -z``; BenchError if all fail."""
    errors = []
    attempts: list[list[str | Path]] = [
        [tools.pkgfs, "unmount", mountpoint],
        [tools.pkgfs, "unmount", "--lazy", mountpoint],
        ["fusermount3", "-u", "-z", mountpoint],
    ]
    for argv in attempts:
        if Path(os.path.realpath(mountpoint)) not in mounted_under(mountpoint):
            return
        try:
            capture(argv, env=env)
        except BenchError as exc:
            errors.append(f"{' '.join(map(str, argv))}: {exc}")
    if mounted_under(mountpoint):
        raise BenchError(f"cannot unmount {mountpoint}:\n  " + "\n  ".join(errors))


@contextlib.contextmanager
def run_root(workdir: Path, tools: Tools) -> Iterator[Path]:
    """A new directory for the whole run; whatever is mounted below it is undone at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="pkgfs-bench-bytecode-", dir=workdir)).resolve()
    try:
        yield root
    finally:
        for mountpoint in mounted_under(root):
            try:
                unmount(tools, mountpoint, child_env(root, dont_write_bytecode=False))
            except BenchError as exc:
                progress(f"error: {exc}")
        left = mounted_under(root)
        if left:  # never delete through a mount
            progress(f"error: still mounted, {root} is kept: {', '.join(map(str, left))}")
        else:
            shutil.rmtree(root, ignore_errors=True)


# --- setup and rounds ----------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A locked workload with its base store (wheels, no bytecode) and warm uv cache."""

    name: str
    project: Project
    imports: tuple[str, ...]
    base_store: Path
    uv_cache: Path
    wheels: int
    code: str  # the import statement every contender runs


def uv_install(
    tools: Tools, p: Prepared, venv: Path, root: Path, *, offline: bool = True, pyc: bool = False
) -> Ran:
    """``uv pip sync`` of requirements.txt into ``venv``: hard links from the uv cache."""
    argv: list[str | Path] = [tools.uv, "pip", "sync", "--no-config", "--link-mode=hardlink"]
    argv += ["--index-url", p.project.index_url, "--python", venv / "bin" / "python"]
    argv += (["--offline"] if offline else []) + (["--compile-bytecode"] if pyc else [])
    env = {**child_env(root, dont_write_bytecode=False), "UV_CACHE_DIR": str(p.uv_cache)}
    os.sync()
    return run([*argv, p.project.lock(REQUIREMENTS)], env)


def pkgfs_sync(tools: Tools, store: Path, project: Project, root: Path, *extra: str) -> Ran:
    """``pkgfs sync`` of uv.lock into ``store`` for the interpreter the venvs get."""
    argv: list[str | Path] = [tools.pkgfs, "--store", store, "sync", *extra]
    os.sync()
    env = child_env(root, dont_write_bytecode=False)
    return run([*argv, "--lock", project.lock(UV_LOCK), "--python", tools.python], env)


def prepare_workload(tools: Tools, name: str, root: Path) -> Prepared:
    """Lock if needed (as sync.py does), fill a base store without bytecode and a uv cache."""
    workload = next(w for w in WORKLOADS if w.name == name)
    project = prepare(tools, workload, SYNC_PROJECTS, relock=False)
    store, cache = root / name / "base-store", root / name / "uv-cache"
    cache.mkdir(parents=True)
    progress(f"{name}: pkgfs sync --no-compile into a base store (untimed)")
    pkgfs_sync(tools, store, project, root, "--no-compile")
    wheels, code = store_stats(tools, store)["wheels"], "import " + ", ".join(IMPORTS[name])
    p = Prepared(name, project, IMPORTS[name], store, cache, wheels, code)
    progress(f"{name}: uv pip sync to fill a uv cache, and a check that the stack imports")
    venv = new_venv(tools, root / name / "venv-warmup")
    uv_install(tools, p, venv, root, offline=False)
    # This also builds matplotlib's font cache in MPLCONFIGDIR: no timed import pays for it.
    run([venv / "bin" / "python", "-c", p.code], child_env(root, dont_write_bytecode=True))
    shutil.rmtree(venv)
    return p


@dataclass
class Round:
    """One workload's measurements in one round."""

    index: int
    # compile_sync, resync, uv_with, uv_without, mount; pkgfs_says: the compile time it printed
    seconds: dict[str, float]
    # modules (compiled), not_compiled; pyc_with, pyc_without, pyc_with_after (its imports)
    counts: dict[str, int]
    compiled_again: list[str] = field(default_factory=list)  # by resync or mount: none wanted
    first: dict[str, float] = field(default_factory=dict)
    warm: dict[str, list[float]] = field(default_factory=dict)
    overlay: list[str] = field(default_factory=list)  # pkgfs diff after the imports: empty
    # python -v, once after the warm runs: modules of site-packages that came from source
    from_source: dict[str, list[str]] = field(default_factory=dict)

    @property
    def uv_compile(self) -> float:
        """uv's compile cost for one environment: with minus without, this round."""
        return self.seconds["uv_with"] - self.seconds["uv_without"]

    def value(self, phase: str, contender: str) -> float:
        """First import seconds, or the median of the warm runs."""
        if phase == "first":
            return self.first[contender]
        return statistics.median(self.warm[contender])

    def ratio(self, phase: str, against: str) -> float:
        """pkgfs over ``against``, for this round."""
        return self.value(phase, PKGFS) / self.value(phase, against)

    def ratios(self) -> dict[str, float]:
        """Every ratio of this round, keyed "ratio_<phase>_<against>"."""
        pairs = [(ph, a) for ph in ("first", "warm") for a in (WITH, WITHOUT)]
        return {f"ratio_{ph}_{a}": self.ratio(ph, a) for ph, a in pairs}


def overlay(tools: Tools, mountpoint: Path, env: Mapping[str, str], when: str) -> list[str]:
    """``pkgfs diff --json``: what the mount's overlay holds, one line per path."""
    rows = json.loads(capture([tools.pkgfs, "diff", "--json", mountpoint], env))
    return [f"{when}: {row['change']} {row['path']}" for row in rows]


def run_round(tools: Tools, p: Prepared, *, index: int, root: Path) -> Round:
    """One round for one workload; every target is new, and unmounted and removed at the end."""
    rdir = root / p.name / f"round-{index}"
    store, mountpoint = rdir / "store", site_packages(rdir / f"venv-{PKGFS}")
    envs = {c: child_env(root, dont_write_bytecode=c == WITHOUT) for c in CONTENDERS}
    rdir.mkdir()
    try:
        capture(["cp", "-a", p.base_store, store])
        t = {"compile_sync": pkgfs_sync(tools, store, p.project, root)}
        found = _COMPILED.search(t["compile_sync"].stderr)
        if found is None or int(found[1]) == 0:
            raise BenchError(f"pkgfs sync into {store} compiled nothing: {t['compile_sync']}")
        t["resync"] = pkgfs_sync(tools, store, p.project, root)
        venvs = {c: new_venv(tools, rdir / f"venv-{c}") for c in CONTENDERS}
        t["uv_with"] = uv_install(tools, p, venvs[WITH], root, pyc=True)
        t["uv_without"] = uv_install(tools, p, venvs[WITHOUT], root)
        mount: list[str | Path] = [tools.pkgfs, "--store", store, "mount", mountpoint]
        os.sync()
        t["mount"] = run([*mount, "--lock", p.project.lock(UV_LOCK), "--offline"], envs[PKGFS])
        r = Round(index, {k: v.seconds for k, v in t.items()}, {})
        r.seconds["pkgfs_says"] = float(found[3])
        r.counts = {"modules": int(found[1]), "not_compiled": int(found[4])}
        r.counts["pyc_with"] = count_pyc(venvs[WITH])
        r.counts["pyc_without"] = count_pyc(venvs[WITHOUT])
        for what in ("resync", "mount"):
            lines = t[what].stderr.splitlines()
            r.compiled_again += [f"{what}: {line}" for line in lines if _COMPILED.search(line)]

        def imports(c: str) -> float:
            return run([venvs[c] / "bin" / "python", "-c", p.code], envs[c]).seconds

        r.first = {c: imports(c) for c in CONTENDERS}
        r.overlay = overlay(tools, mountpoint, envs[PKGFS], "after the first import")
        r.warm = {c: [] for c in CONTENDERS}
        for _ in range(WARM_RUNS):
            for c in CONTENDERS:
                r.warm[c].append(imports(c))
        for c in (PKGFS, WITH):
            err = run([venvs[c] / "bin" / "python", "-v", "-c", p.code], envs[c]).stderr
            below = str(site_packages(venvs[c])) + os.sep
            r.from_source[c] = [
                m for m in _CODE_FROM.findall(err) if m.startswith(below) and m.endswith(".py")
            ]
        r.overlay += overlay(tools, mountpoint, envs[PKGFS], "after the warm imports")
        r.counts["pyc_with_after"] = count_pyc(venvs[WITH])
    finally:
        unmount(tools, mountpoint, envs[PKGFS])
        shutil.rmtree(rdir, ignore_errors=True)
    return r


# --- report --------------------------------------------------------------------------------


def summarize(rounds: Sequence[Round]) -> dict[str, Any]:
    """Spreads over rounds of every figure and of the per-round ratios; uv after K envs."""
    s: dict[str, Any] = {k: spread([r.seconds[k] for r in rounds]) for k in rounds[0].seconds}
    s["uv_compile"] = spread([r.uv_compile for r in rounds])
    for ph in ("first", "warm"):
        s[ph] = {c: spread([r.value(ph, c) for r in rounds]) for c in CONTENDERS}
        s[f"{ph}_ratio"] = {a: spread([r.ratio(ph, a) for r in rounds]) for a in (WITH, WITHOUT)}
    once, per_env = s["compile_sync"]["median"], s["uv_compile"]["median"]
    s["after_k_envs"] = {str(k): {"pkgfs": once, "uv": k * per_env} for k in K_ENVS}
    s["break_even_envs"] = once / per_env if per_env > 0 else None
    return s


def goals(workloads: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's goal, in its two parts, judged on the medians over rounds."""
    ratios = {n: w["summary"]["first_ratio"][WITH]["median"] for n, w in workloads.items()}
    bad = [
        f"{n} round {r['index']}: {line}"
        for n, w in workloads.items()
        for r in w["rounds"]
        for line in r["compiled_again"] + r["overlay"] + r["from_source"][PKGFS]
    ]
    clean = (
        "neither the second sync nor any mount compiled; no .pyc went to an overlay; python -v"
        " through the mount loaded every module of site-packages from the shared .pyc"
    )
    within = f"within {GOAL_FIRST_IMPORT - 1:.0%} of a native venv with bytecode"
    return [
        {
            "goal": f"first import in a fresh environment {within}",
            "met": all(v <= GOAL_FIRST_IMPORT for v in ratios.values()),
            "detail": f"pkgfs/{WITH}, median of per-round ratios: "
            + ", ".join(f"{n} {v:.3f}" for n, v in ratios.items()),
        },
        {
            "goal": "no per-environment compile cost at all",
            "met": not bad,
            "detail": "; ".join(bad[:10]) if bad else clean,
        },
    ]


def build_report(
    args: argparse.Namespace,
    tools: Tools,
    prepared: Sequence[Prepared],
    rounds: Mapping[str, Sequence[Round]],
) -> dict[str, Any]:
    """Everything the JSON file holds; no URL goes in."""
    workloads: dict[str, Any] = {}
    for p in prepared:
        done = rounds[p.name]
        workloads[p.name] = {
            "title": p.project.workload.title,
            "wheels": p.wheels,
            "imports": list(p.imports),
            "project": str(p.project.directory),
            "rounds": [{**asdict(r), "uv_compile": r.uv_compile, **r.ratios()} for r in done],
            "summary": summarize(done),
        }
    order = (
        "per round and workload: cp -a of the base store (untimed), pkgfs sync (compiles),"
        " pkgfs sync again, uv --compile-bytecode, uv without, pkgfs mount; first imports"
        f" {', '.join(CONTENDERS)}; then {WARM_RUNS} times that order again"
    )
    config = {"rounds": args.rounds, "quick": args.quick, "warm_runs": WARM_RUNS, "order": order}
    config["load"] = f"1-min load average {args.load:.2f} at the start, {os.getloadavg()[0]:.2f}"
    config["load"] += " at the end (other processes on the machine skew every time)"
    return {
        "benchmark": "bytecode",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(tools, args.workdir),
        "config": {**config, **COMMANDS, "bytecode": BYTECODE_NOTE},
        "workloads": workloads,
        "goals": goals(workloads),
    }


def _c(s: Mapping[str, float], fmt: str = ".2f") -> str:
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"


def _row(label: str, cell: str, note: str = "") -> str:
    return f"  {label:<52}{cell:>20}{'   ' + note if note else ''}"


def _workload_lines(w: Mapping[str, Any]) -> list[str]:
    s, c0 = w["summary"], w["rounds"][0]["counts"]
    even = s["break_even_envs"]
    lines = [
        f"{'one-time compile (fresh store: wheels, no bytecode)':<54}{'median (min-max) s':>20}",
        _row(
            f"pkgfs sync, compiles {c0['modules']:,} modules ({c0['not_compiled']} skipped)",
            _c(s["compile_sync"]),
            f"pkgfs says {_c(s['pkgfs_says'], '.1f')} s",
        ),
        _row("pkgfs sync again, nothing to compile", _c(s["resync"])),
        "per environment (fresh venv; uv: warm cache, hardlink, offline)",
        _row(f"uv pip sync --compile-bytecode ({c0['pyc_with']:,} .pyc)", _c(s["uv_with"])),
        _row(f"uv pip sync ({c0['pyc_without']} .pyc)", _c(s["uv_without"])),
        _row("uv's compile cost: with - without, per round", _c(s["uv_compile"])),
        _row("pkgfs mount (serves the store's shared .pyc)", _c(s["mount"])),
        "compile seconds after K environments (medians): pkgfs compiles once per store and"
        " interpreter; uv compiles again for every environment: K x its compile cost",
        _row("", "".join(f"{'K=' + str(k):>7}" for k in K_ENVS)),
        *(
            _row(who, "".join(f"{s['after_k_envs'][str(k)][who]:>7.1f}" for k in K_ENVS))
            for who in ("pkgfs", "uv")
        ),
        _row("break-even", "never" if even is None else f"{even:.1f} environments"),
        "",
        f"{'imports, s':<16}{'first':>22}{f'warm (median of {WARM_RUNS})':>26}",
        *(
            f"  {c:<14}{_c(s['first'][c], '.3f'):>22}{_c(s['warm'][c], '.3f'):>26}"
            for c in CONTENDERS
        ),
    ]
    for a in (WITH, WITHOUT):
        for ph in ("first", "warm"):
            per_round = ", ".join(f"{r[f'ratio_{ph}_{a}']:.2f}" for r in w["rounds"])
            lines.append(
                f"ratio pkgfs/{a}, {ph}: {_c(s[f'{ph}_ratio'][a], '.3f')}  (rounds: {per_round})"
            )
    bad = [r["index"] for r in w["rounds"] if r["overlay"]]
    return [
        *lines,
        "pkgfs diff after the imports: "
        + ("empty in every round: OK" if not bad else f"NOT EMPTY in rounds {bad}"),
        f"{WITH} venv: {c0['pyc_with']:,} .pyc after install, {c0['pyc_with_after']:,} after"
        " its imports",
        "modules of site-packages compiled from source (python -v, after the warm runs): "
        + ", ".join(
            f"{c} {max(len(r['from_source'][c]) for r in w['rounds'])}" for c in (PKGFS, WITH)
        ),
    ]


def render(report: Mapping[str, Any]) -> str:
    """The table for stdout."""
    cfg, m = report["config"], report["machine"]
    lines = [
        f"pkgfs shared-bytecode benchmark: {', '.join(report['workloads'])}; {cfg['rounds']}"
        f" interleaved rounds, {m['usable_cpus']} CPUs, Python {m['python']}, {m['uv_version']},"
        f" pkgfs {m['pkgfs_version']}, work in {m['workdir']} ({m['workdir_filesystem']})",
        *(f"{k + ':':<13}{cfg[k]}" for k in (*COMMANDS, "bytecode", "load")),
    ]
    for name, w in report["workloads"].items():
        imports = ", ".join(w["imports"])
        lines += ["", f"== {w['title']} ({name}): {w['wheels']} wheels; import {imports}", ""]
        lines += _workload_lines(w)
    lines += ["", "== goal (from the issue)"]
    lines += [
        f"{'MET' if g['met'] else 'NOT MET':<8} {g['goal']}: {g['detail']}" for g in report["goals"]
    ]
    return "\n".join(lines)


# --- command line --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; ``workloads`` and ``rounds`` come out resolved for --quick."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick 1)")
    parser.add_argument("--quick", action="store_true", help="the web stack only, 1 round")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument("--workdir", type=Path, default=TMP, help="where targets are made")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.workloads = [n for n in IMPORTS if not args.quick or n in QUICK_WORKLOADS]
    args.workdir, args.load = args.workdir.resolve(), os.getloadavg()[0]
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so every finally block unmounts and cleans up.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 1 when a step failed or an overlay was not empty."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    rounds: dict[str, list[Round]] = {n: [] for n in args.workloads}
    try:
        tools = Tools(Path(sys.executable), find_tool("pkgfs"), find_tool("uv"))
        with run_root(args.workdir, tools) as root:
            prepared = [prepare_workload(tools, n, root) for n in args.workloads]
            progress(f"workloads {', '.join(args.workloads)}, {args.rounds} rounds, in {root}")
            for i in range(1, args.rounds + 1):
                for p in prepared:
                    r = run_round(tools, p, index=i, root=root)
                    rounds[p.name].append(r)
                    firsts = ", ".join(f"{c} {r.first[c]:.3f}s" for c in CONTENDERS)
                    progress(
                        f"round {i}/{args.rounds} {p.name}: compile sync"
                        f" {r.seconds['compile_sync']:.2f}s, uv +{r.uv_compile:.2f}s per env;"
                        f" first import {firsts}; overlay entries {len(r.overlay)}"
                    )
            report = build_report(args, tools, prepared, rounds)
        path = write_report(report, args.out, "bytecode")
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    print(render(report))
    print(f"\nresults: {path}")
    if any(r.overlay or r.from_source[PKGFS] for done in rounds.values() for r in done):
        print("bench: error: the mount compiled or wrote bytecode (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
