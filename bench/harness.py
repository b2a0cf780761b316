#!/usr/bin/env python3
"""Every benchmark in one command, then the report: ``bench/run`` runs this.

Usage: ``python -m bench.harness [--quick] [--rounds N] [--only ingest,sync,mount,bytecode]
[--workdir DIR] [--report-only RUNDIR]``.

It makes a run directory ``bench/results/run-<UTC timestamp>/`` and runs the selected
benchmark scripts there one after the other, in the order ingest, sync, mount, bytecode, each
as ``<this python> bench/<name>.py --out <run dir>`` plus whichever of ``--quick``,
``--rounds`` and ``--workdir`` were given and the script accepts. Their output streams
through as it comes. If one fails, the harness stops with a one-line error and exit status 1.
Then ``bench.report`` turns the run's JSON files into BENCHMARKS.md and plots: for a full run
(all four, not quick) the repository's own BENCHMARKS.md, bench/plots/ and README.md's
headline; for any other run a BENCHMARKS.md and plots/ inside the run directory, so that
trying the harness never overwrites the published report. ``--report-only RUNDIR`` makes the
report of an existing run directory again, by the same rule.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

# Run as a script (python bench/harness.py), the repository root is not on sys.path: put it
# there, so the scripts and mypy import the shared modules alike, as bench.common.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# bench.report imports matplotlib: a missing one fails here, before half an hour of runs.
from bench import report, reportdata
from bench.common import REPO, BenchError, capture

SCRIPTS = REPO / "bench"  # where <name>.py of each benchmark is
RESULTS = SCRIPTS / "results"
PASSED_ON = ("--quick", "--rounds", "--workdir")  # the harness options a script may take
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_child: subprocess.Popen[bytes] | None = None  # the benchmark running now, for SIGTERM


def accepted_options(script: Path) -> frozenset[str]:
    """The long options ``script --help`` lists; BenchError when --help itself fails."""
    return frozenset(_OPTION.findall(capture([sys.executable, script, "--help"])))


def command(
    name: str, rundir: Path, args: argparse.Namespace, scripts: Path = SCRIPTS
) -> list[str]:
    """The argv that runs ``scripts/<name>.py`` into ``rundir`` with the options it accepts."""
    script = scripts / f"{name}.py"
    accepted = accepted_options(script)
    argv = [sys.executable, str(script), "--out", str(rundir)]
    given = {
        "--quick": [] if args.quick else None,
        "--rounds": None if args.rounds is None else [str(args.rounds)],
        "--workdir": None if args.workdir is None else [str(args.workdir)],
    }
    for option in PASSED_ON:
        value = given[option]
        if value is None:
            continue
        if option in accepted:
            argv += [option, *value]
        else:
            print(f"bench: {name}.py takes no {option}; running it without", file=sys.stderr)
    return argv


def _forward_term(signum: int, frame: FrameType | None) -> None:
    # The benchmark cleans up (unmounts) on SIGTERM: pass it on, then unwind like Ctrl-C.
    if _child is not None and _child.poll() is None:
        _child.send_signal(signal.SIGTERM)
    raise KeyboardInterrupt(f"signal {signum}")


def run_one(argv: Sequence[str]) -> int:
    """Run one benchmark with its output streaming through; its exit status."""
    global _child  # noqa: PLW0603 - the SIGTERM handler needs the running child
    with subprocess.Popen(argv) as proc:
        _child = proc
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # The child got the terminal's SIGINT (or our SIGTERM) too; let it clean up.
            proc.wait()
            raise
        finally:
            _child = None


def _short(arg: str) -> str:
    """A path inside the repository as relative to it, for the progress line."""
    path = Path(arg)
    return str(path.relative_to(REPO)) if path.is_absolute() and path.is_relative_to(REPO) else arg


def run_all(
    names: Sequence[str], rundir: Path, args: argparse.Namespace, scripts: Path = SCRIPTS
) -> str | None:
    """Run the benchmarks in order; None when all succeeded, else a one-line error."""
    for i, name in enumerate(names, 1):
        argv = command(name, rundir, args, scripts)
        shown = " ".join(["python", *(_short(a) for a in argv[1:])])
        print(f"bench: [{i}/{len(names)}] {name}: {shown}", file=sys.stderr, flush=True)
        start = time.monotonic()
        status = run_one(argv)
        if status != 0:
            return f"{name} failed with exit status {status} (see above); the run so far: {rundir}"
        if not list(rundir.glob(f"{name}-*.json")):
            return f"{name} exited 0 but wrote no {name}-*.json into {rundir}"
        minutes = (time.monotonic() - start) / 60
        print(f"bench: {name} done in {minutes:.1f} min", file=sys.stderr, flush=True)
    return None


def make_report(rundir: Path) -> str | None:
    """Write the report of ``rundir`` where the location rule says; None, or an error line."""
    reports = reportdata.load_run(rundir)
    if not reports:
        return f"no benchmark JSON in {rundir}"
    outputs = reportdata.outputs_for(reports, rundir)
    for line in report.generate(reports, outputs, readme=REPO / "README.md"):
        print(f"bench: {line}", file=sys.stderr)
    if not outputs.published:
        missing = [n for n in reportdata.BENCHMARKS if n not in reports]
        quick = any(r.get("config", {}).get("quick") for r in reports.values())
        why = "quick run" if quick else "run"
        if missing:
            why += f" without {', '.join(missing)}"
        print(
            f"bench: a {why}: its report stays in {rundir};"
            f" the published {reportdata.MARKDOWN_NAME} is untouched",
            file=sys.stderr,
        )
    return None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; ``only`` comes out as benchmark names in running order."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="each benchmark's smoke test")
    parser.add_argument("--rounds", type=int, help="rounds for every benchmark (default: theirs)")
    parser.add_argument(
        "--only",
        default=",".join(reportdata.BENCHMARKS),
        help=f"comma-separated benchmarks to run (default: {','.join(reportdata.BENCHMARKS)})",
    )
    parser.add_argument("--workdir", type=Path, help="where the benchmarks make their targets")
    parser.add_argument(
        "--report-only",
        type=Path,
        metavar="RUNDIR",
        help="run nothing: make the report of an existing run directory again",
    )
    args = parser.parse_args(argv)
    wanted = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(wanted) - set(reportdata.BENCHMARKS))
    if unknown or not wanted:
        parser.error(f"--only takes some of {','.join(reportdata.BENCHMARKS)}, not {args.only!r}")
    args.only = [n for n in reportdata.BENCHMARKS if n in wanted]
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.report_only is not None:
        ran = args.quick or args.rounds is not None or args.workdir is not None
        if ran or len(args.only) != len(reportdata.BENCHMARKS):
            parser.error("--report-only runs nothing: it takes no other option")
        if not args.report_only.is_dir():
            parser.error(f"--report-only: {args.report_only} is not a directory")
    if args.workdir is not None:
        args.workdir = args.workdir.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks and make the report; 0 on success, 1 on the first failure."""
    args = parse_args(argv)
    if args.report_only is not None:
        rundir: Path = args.report_only.resolve()
    else:
        signal.signal(signal.SIGTERM, _forward_term)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        rundir = RESULTS / f"run-{stamp}"
        rundir.mkdir(parents=True)
        print(f"bench: run directory {rundir}", file=sys.stderr, flush=True)
        try:
            error = run_all(args.only, rundir, args)
        except BenchError as exc:
            error = str(exc).splitlines()[0]
        except KeyboardInterrupt:
            print(f"bench: error: interrupted; the run so far is in {rundir}", file=sys.stderr)
            return 130
        if error is not None:
            print(f"bench: error: {error}", file=sys.stderr)
            return 1
    error = make_report(rundir)
    if error is not None:
        print(f"bench: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
