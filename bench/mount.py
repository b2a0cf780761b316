"""The benchmark: environments of one lock made by pkgfs and by uv, then used, side by side.

Per stack, after an untimed setup (lock, ``pkgfs sync`` into a store, a warm uv cache), each
round makes a fresh venv per contender (bench/contenders.py) and reads the creation's wall
time and the disk and inodes it took (bench/disk.py). Then hyperfine times each runtime
measure in the pkgfs venv and in the native one, both commands in one invocation, the first
of them alternating from round to round; a round keeps hyperfine's median per command, and
the summary is the median of the per-round ratios (``statistics``). The daemon's requests
per warm run come from ``pkgfs status --json`` around one more run.

``python -m bench.mount [--stacks web,sci] [--rounds N] [--runs N] [--quick] [--workdir DIR]``
writes ``bench/results/run-<UTC time>/mount.json`` and then the report (bench/report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import report
from bench.common import (
    REPO,
    STACKS,
    BenchError,
    Tools,
    capture,
    machine_info,
    progress,
)
from bench.contenders import (
    COMMANDS,
    CONTENDERS,
    NATIVE,
    PKGFS,
    Inputs,
    Mounts,
    create,
    new_venv,
    prepare,
    run_root,
    site_packages,
)
from bench.disk import Free, disk_delta, snapshot

DROP_CACHES = Path("/proc/sys/vm/drop_caches")
# What the runtime measures run, in the venv (its python) and on its site-packages.
METADATA_SCAN = "import importlib.metadata as m; [d.metadata['Name'] for d in m.distributions()]"
MEASURES = ("walk", "warm_import", "metadata", "cold_import")
TIMED = (PKGFS, NATIVE)  # the contenders whose venvs are used and timed
WARM = ("walk", "warm_import", "metadata")  # the ones whose daemon requests are counted


def measure_argv(measure: str, venv: Path, imports: Sequence[str]) -> list[str]:
    """The command a runtime measure times, as hyperfine (without a shell) runs it."""
    if measure == "walk":  # -printf's %s and %i make find lstat every entry
        return ["find", str(site_packages(venv)), "-printf", "%i %s\\n"]
    python = str(venv / "bin" / "python")
    if measure == "metadata":
        return [python, "-c", METADATA_SCAN]
    return [python, "-c", f"import {', '.join(imports)}"]


def hyperfine(
    tools: Tools, commands: Mapping[str, Sequence[str]], *, runs: int, cold: bool, env: Any
) -> dict[str, float]:
    """One hyperfine invocation timing ``commands`` (name -> argv) in their order: the
    median seconds of each. Cold: flush and drop the page, dentry and inode caches (FUSE's
    too) before every run, and no warm-up run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "hyperfine.json"
        argv: list[str | Path] = [tools.hyperfine, "--shell=none", "--style", "none"]
        argv += ["--runs", str(runs), "--export-json", out]
        if cold:
            argv += ["--prepare", f"sh -c 'sync; echo 3 > {DROP_CACHES}'"]
        else:
            argv += ["--warmup", "1"]
        for name, command in commands.items():
            argv += ["--command-name", name, shlex.join(command)]
        capture(argv, env=env)
        results = json.loads(out.read_text())["results"]
    return {name: float(r["median"]) for name, r in zip(commands, results, strict=True)}


def request_count(mounts: Mounts, mountpoint: Path) -> int | None:
    """The daemon's requests served so far, all handlers; None when status has no counts."""
    counts = mounts.status(mountpoint).get("requests")
    return sum(counts.values()) if isinstance(counts, dict) else None


def requests_per_run(mounts: Mounts, mountpoint: Path, argv: Sequence[str]) -> int | None:
    """How many requests the daemon served for one warm run of ``argv`` (after another)."""
    capture(argv, env=mounts.env)
    before = request_count(mounts, mountpoint)
    capture(argv, env=mounts.env)
    after = request_count(mounts, mountpoint)
    return None if before is None or after is None else after - before


def peak_rss_mib(pid: int) -> float | None:
    """A process's peak RSS (VmHWM), MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_round(
    tools: Tools, inputs: Inputs, index: int, mounts: Mounts, args: argparse.Namespace
) -> dict[str, Any]:
    """One round of one stack: create every contender's venv, then use pkgfs's and native's."""
    base = mounts.root / inputs.stack.name / f"round-{index}"
    order = CONTENDERS[index % len(CONTENDERS) :] + CONTENDERS[: index % len(CONTENDERS)]
    venvs: dict[str, Path] = {}
    created: dict[str, Any] = {}
    try:
        for contender in order:
            venv = new_venv(tools, base / contender)
            places = [*inputs.places(contender), ("venv", venv)]
            places += [("state", mounts.root / "xdg-state"), ("cache", mounts.root / "xdg-cache")]
            before = (Free.now(args.workdir), snapshot(places, frozenset()))
            seconds = create(contender, tools, inputs, venv, mounts)
            disk = disk_delta(before, (Free.now(args.workdir), snapshot(places, frozenset())))
            created[contender] = {"create": seconds, **vars(disk)}
            if contender in (PKGFS, NATIVE):
                venvs[contender] = venv
            else:
                shutil.rmtree(venv)  # only its disk is measured: give the space back
        mountpoint = site_packages(venvs[PKGFS])
        status = mounts.status(mountpoint)
        times: dict[str, dict[str, float]] = {}
        requests: dict[str, int | None] = {}
        for measure in MEASURES:  # the cold one last: it leaves the caches cold
            cold = measure == "cold_import"
            if cold and not os.access(DROP_CACHES, os.W_OK):
                continue
            names = [PKGFS, NATIVE] if index % 2 == 0 else [NATIVE, PKGFS]
            commands = {c: measure_argv(measure, venvs[c], inputs.stack.imports) for c in names}
            runs = args.cold_runs if cold else args.runs
            times[measure] = hyperfine(tools, commands, runs=runs, cold=cold, env=mounts.env)
            if measure in WARM:
                requests[measure] = requests_per_run(mounts, mountpoint, commands[PKGFS])
        rss = peak_rss_mib(int(status["pid"]))
    finally:
        if PKGFS in venvs:
            mounts.unmount(site_packages(venvs[PKGFS]))
        shutil.rmtree(base, ignore_errors=True)
    ratios = {m: t[PKGFS] / t[NATIVE] for m, t in times.items()}
    ratios["create"] = created[PKGFS]["create"] / created[NATIVE]["create"]
    return {
        "created": created,
        "times": times,
        "ratios": ratios,
        "requests": requests,
        "mode": status.get("mode"),
        "daemon_peak_rss_mib": rss,
    }


def spread(values: Sequence[float | None]) -> dict[str, float] | None:
    """Median, min and max of the values that are there; None when none is."""
    have = [v for v in values if v is not None]
    if not have:
        return None
    return {"median": statistics.median(have), "min": min(have), "max": max(have)}


def summarize(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per measure: each contender's median time over the rounds and the per-round ratios."""
    created = {
        c: {k: spread([r["created"][c][k] for r in rounds]) for k in report.CREATED_KEYS}
        for c in CONTENDERS
    }
    measures = sorted({m for r in rounds for m in r["times"]}, key=MEASURES.index)
    return {
        "created": created,
        "times": {
            m: {c: spread([r["times"][m][c] for r in rounds if m in r["times"]]) for c in TIMED}
            for m in measures
        },
        "ratios": {m: spread([r["ratios"].get(m) for r in rounds]) for m in ["create", *measures]},
        "requests": {m: spread([r["requests"][m] for r in rounds]) for m in WARM},
        "modes": sorted({str(r["mode"]) for r in rounds}),
        "daemon_peak_rss_mib": spread([r["daemon_peak_rss_mib"] for r in rounds]),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", default="web,sci", help=f"of {', '.join(STACKS)}")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    parser.add_argument("--runs", type=int, default=5, help="hyperfine runs per warm measure")
    parser.add_argument("--cold-runs", type=int, default=3, help="runs after dropping caches")
    parser.add_argument("--quick", action="store_true", help="smoke test: cli, 1 round, 2 runs")
    parser.add_argument("--relock", action="store_true", help="lock the stacks from scratch")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--projects", type=Path, default=REPO / ".cache" / "bench-projects")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.stacks, args.rounds, args.runs, args.cold_runs = "cli", 1, 2, 1
    args.stacks = args.stacks.split(",")
    unknown = [s for s in args.stacks if s not in STACKS]
    if unknown:
        parser.error(f"unknown stack(s) {', '.join(unknown)}; there are {', '.join(STACKS)}")
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks that unmount


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    tools = Tools.find()
    started = datetime.now(UTC)
    load_at_start = os.getloadavg()[0]
    result: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine_info(tools),
        "config": {"rounds": args.rounds, "runs": args.runs, "cold_runs": args.cold_runs},
        "commands": COMMANDS,
        "measures": {m: shlex.join(measure_argv(m, Path("VENV"), ("...",))) for m in MEASURES},
        "stacks": [],
    }
    try:
        with run_root(args.workdir, tools) as mounts:
            for name in args.stacks:
                inputs = prepare(tools, STACKS[name], args.projects, mounts.root, args.relock)
                rounds = []
                for index in range(args.rounds):
                    progress(f"{name}: round {index + 1} of {args.rounds}")
                    rounds.append(run_round(tools, inputs, index, mounts, args))
                result["stacks"].append(
                    {
                        "name": name,
                        "title": inputs.stack.title,
                        "imports": list(inputs.stack.imports),
                        "wheels": inputs.wheels,
                        "files": inputs.files,
                        "rounds": rounds,
                        "summary": summarize(rounds),
                    }
                )
                shutil.rmtree(mounts.root / name, ignore_errors=True)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    result["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["load"] = [load_at_start, os.getloadavg()[0]]
    rundir = args.out / f"run-{started:%Y%m%dT%H%M%SZ}"
    rundir.mkdir(parents=True, exist_ok=True)
    (rundir / "mount.json").write_text(json.dumps(result, indent=1) + "\n")
    progress(f"results in {rundir / 'mount.json'}")
    return report.main([str(rundir)])


if __name__ == "__main__":
    sys.exit(main())
