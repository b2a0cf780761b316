"""Creation time and memory by size: pkgfs through a warm mount server against uv's hardlinks.

For each size (files in the lock: about 700, 5,000, 20,000 and 60,000 by default) a lock of
:data:`WHEELS` synthetic wheels of N / WHEELS files each (small modules in packages of 50,
written as tests/wheelmaker.py writes wheels), made once in the work directory. Untimed
setup per size: ``pkgfs sync`` fills a store (and compiles its bytecode), one ``uv pip
sync`` fills a uv cache, and one ``pkgfs mount`` starts the server and saves the view.

Then, round by round, for every size, each contender makes a fresh ``python -m venv
--without-pip`` venv (untimed) and is timed (``time.perf_counter`` around the one command)
making it usable, the two in alternating order from round to round:

- ``pkgfs``: ``pkgfs mount SITE --lock pylock.toml --offline``, the console script, a thin
  client of the warm server, installed as the README installs it (``python3 -m venv DIR &&
  DIR/bin/pip install`` of this checkout's wheel and its dependencies' wheels, built by
  ``docker/wheels.sh``): the checkout's editable install adds setuptools' import hook to
  every start of Python (about 18 ms here), which no user's install has (``--editable``
  times the checkout's own ``pkgfs`` instead);
- ``uv``: ``uv pip sync --offline --no-index --find-links WHEELS --link-mode hardlink``
  from the warm cache, without bytecode (pkgfs's comes from the store: compiled in setup).

The figures: per size the median (min-max) of the per-round ratios pkgfs / uv, and the
flatness, pkgfs's median time at the largest size over its median at the smallest.

Memory: per size, after the rounds, every pkgfs mount is undone; then :data:`MOUNTS` envs of
the same lock are mounted one after the other, each walked once (``find -printf '%s'``:
every lookup and getattr) and measured, from ``/proc/PID/smaps_rollup``: the PSS of each
mount's daemon, and the growth of the total PSS of the server and all daemons that each
mount beyond the first brings (what one more environment of a lock already mounted costs
the machine).

``python -m bench.sweep [--sizes 700,5000,20000,60000] [--rounds N] [--workdir DIR]``
writes ``bench/results/sweep-<UTC time>/sweep.json`` and ``sweep.md``, and the section of
BENCHMARKS.md between the ``bench:sweep`` markers.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import venv
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import REPO, BenchError, Tools, capture, child_env, machine_info, progress
from tests.wheelmaker import WheelMaker

WHEELS = 20  # wheels per lock, at every size: only the files per wheel grow
PER_PACKAGE = 50  # modules per package directory
MOUNTS = 5  # environments of one lock mounted for the memory figures
GOALS = {"ratio": 0.5, "flat": 1.2, "pss_mib": 15.0}
SWEEP_START, SWEEP_END = "<!-- bench:sweep:start -->", "<!-- bench:sweep:end -->"
RANGE = "\u2013"


def make_lock(directory: Path, files: int) -> int:
    """WHEELS wheels of ``files`` files in all, in ``directory/wheels``, and the two locks:
    pylock.toml for pkgfs, a hashed requirements.txt for uv. The files actually made."""
    wheels = directory / "wheels"
    if (directory / "pylock.toml").exists():
        return int((directory / "files").read_text())
    wheels.mkdir(parents=True)
    per_wheel = max(1, files // WHEELS - 2)  # METADATA, WHEEL, RECORD are files too
    pylock = ['lock-version = "1.0"', 'created-by = "pkgfs-bench"', ""]
    requirements, made = [], 0
    for w in range(WHEELS):
        name = f"sweep{w:02d}"
        members: dict[str, bytes | str] = {f"{name}/__init__.py": "VALUE = 1\n"}
        for i in range(per_wheel - 1):
            members[f"{name}/p{i // PER_PACKAGE}/m{i}.py"] = f"X = {i}\n\ndef f():\n    return X\n"
        for package in range((per_wheel - 1 + PER_PACKAGE - 1) // PER_PACKAGE):
            members[f"{name}/p{package}/__init__.py"] = ""
        path = WheelMaker(name=name, files=members).build(wheels)
        made += len(members) + 3
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        pylock += [
            "[[packages]]",
            f'name = "{name}"',
            'version = "1.0"',
            f'wheels = [{{ path = "wheels/{path.name}", hashes = {{ sha256 = "{digest}" }} }}]',
            "",
        ]
        requirements.append(f"{name}==1.0 --hash=sha256:{digest}")
    (directory / "requirements.txt").write_text("\n".join(requirements) + "\n")
    (directory / "pylock.toml").write_text("\n".join(pylock))
    (directory / "files").write_text(str(made))
    return made


class Sweep:
    """The commands of one run, in ``root``."""

    def __init__(self, tools: Tools, root: Path) -> None:
        self.tools, self.root = tools, root
        self.env = child_env(root)
        self.env["UV_CACHE_DIR"] = str(root / "uv-cache")
        self.store = root / "store"
        self.count = 0

    def venv(self, size: Path) -> Path:
        self.count += 1
        path = self.root / "venvs" / f"{size.name}-{self.count}"
        venv.create(path, with_pip=False, symlinks=True)  # as `python -m venv` on Linux
        return path

    def site(self, path: Path) -> Path:
        return next((path / "lib").glob("python3.*")) / "site-packages"

    def pkgfs(self, *args: str | Path) -> str:
        return capture([self.tools.pkgfs, "--store", self.store, *args], env=self.env)

    def mount(self, size: Path, path: Path) -> float:
        lock = size / "pylock.toml"
        argv: list[str | Path] = ["mount", self.site(path), "--lock", lock, "--offline"]
        start = time.perf_counter()
        self.pkgfs(*argv)
        return time.perf_counter() - start

    def uv(self, size: Path, path: Path) -> float:
        argv: list[str | Path] = [self.tools.uv, "pip", "sync", "--no-config", "--offline"]
        argv += ["--no-index", "--find-links", size / "wheels", "--link-mode", "hardlink"]
        argv += ["--python", path / "bin" / "python", size / "requirements.txt"]
        start = time.perf_counter()
        capture(argv, env=self.env)
        return time.perf_counter() - start

    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.pkgfs("status", "--json"))
        return rows

    def server_pid(self) -> int | None:
        """The server's pid; None without one (PKGFS_SERVER=0: each mount's own process)."""
        proc = subprocess.run(
            [self.tools.pkgfs, "server", "status"],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
        )
        return int(proc.stdout.split()[3]) if proc.returncode == 0 else None

    def unmount_all(self) -> None:
        for row in self.rows():
            self.pkgfs("unmount", row["mountpoint"])


def pss_kib(pid: int) -> int:
    """The proportional set size of ``pid``, KiB, from /proc/PID/smaps_rollup."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise BenchError(f"no Pss in /proc/{pid}/smaps_rollup")


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def memory(sweep: Sweep, size: Path) -> dict[str, Any]:
    """Mount MOUNTS environments of the lock one after the other; measure each right after
    its mount, then after walking it."""
    sweep.unmount_all()
    server = sweep.server_pid()
    daemons: list[int] = []
    walked: list[int] = []  # the total after each mount was walked
    extra: dict[str, list[int]] = {"mounted": [], "walked": []}
    own: dict[str, list[int]] = {"mounted": [], "walked": []}

    def total() -> int:
        return (pss_kib(server) if server else 0) + sum(pss_kib(d) for d in daemons)

    for _ in range(MOUNTS):
        path = sweep.venv(size)
        sweep.mount(size, path)
        row = next(r for r in sweep.rows() if r["mountpoint"] == str(sweep.site(path)))
        daemons.append(int(row["pid"]))
        time.sleep(0.5)  # the server keeps the view after the command: let it finish
        mounted = total()
        own["mounted"].append(pss_kib(daemons[-1]))
        capture(["find", sweep.site(path), "-printf", "%s\n"])
        walked.append(total())
        own["walked"].append(pss_kib(daemons[-1]))
        if len(walked) > 1:
            extra["mounted"].append(mounted - walked[-2])
            extra["walked"].append(walked[-1] - walked[-2])
    sweep.unmount_all()
    return {
        "server_kib": pss_kib(server) if server else 0,
        "totals_kib": walked,
        "extra_kib": {k: summary(v) for k, v in extra.items()},
        "daemon_kib": {k: summary(v[1:]) for k, v in own.items()},
    }


def installed(tools: Tools, root: Path) -> Tools:
    """``tools`` with the ``pkgfs`` of a fresh install of this checkout in ``root``, as the
    README installs it: a venv, and pip installing the wheels ``docker/wheels.sh`` builds
    (pkgfs from the checkout, pyfuse3 with our patches, the other dependencies cached)."""
    wheels, target = root / "wheels", root / "pkgfs-install"
    progress("installing pkgfs from this checkout's wheels (as a user installs it)")
    capture(["bash", REPO / "docker" / "wheels.sh", wheels])
    shutil.rmtree(target, ignore_errors=True)
    venv.create(target, with_pip=True, symlinks=True)
    pip: list[str | Path] = [target / "bin" / "python", "-m", "pip"]
    pip += ["--disable-pip-version-check", "-q"]
    capture([*pip, "install", "--no-index", "--find-links", wheels, "pkgfs"])
    return dataclasses.replace(tools, pkgfs=target / "bin" / "pkgfs")


def run(args: argparse.Namespace) -> dict[str, Any]:
    tools = Tools.find()
    root = args.workdir.absolute()
    if not args.editable:
        tools = installed(tools, root)
    inputs = root / "locks"
    sweep = Sweep(tools, root / f"run-{os.getpid()}")
    try:
        return _run(args, tools, inputs, sweep)
    finally:
        with contextlib.suppress(BenchError):
            sweep.unmount_all()
        with contextlib.suppress(BenchError):
            capture([tools.pkgfs, "server", "stop"], env=sweep.env)


def _run(args: argparse.Namespace, tools: Tools, inputs: Path, sweep: Sweep) -> dict[str, Any]:
    sizes: dict[int, dict[str, Any]] = {}
    for files in args.sizes:
        directory = inputs / str(files)
        made = make_lock(directory, files)
        progress(f"{made} files: setup (store, uv cache, first mount)")
        first = sweep.venv(directory)
        sweep.pkgfs("sync", "--lock", directory / "pylock.toml", "--python", first / "bin/python")
        sweep.uv(directory, sweep.venv(directory))
        sweep.mount(directory, first)
        sizes[files] = {"files": made, "pkgfs": [], "uv": [], "dir": directory}
    for round_ in range(args.rounds):
        for files, size in sizes.items():
            progress(f"round {round_ + 1}/{args.rounds}: {size['files']} files")
            order = ("pkgfs", "uv") if (round_ + len(size["pkgfs"])) % 2 == 0 else ("uv", "pkgfs")
            for contender in order:
                path = sweep.venv(size["dir"])
                make = sweep.mount if contender == "pkgfs" else sweep.uv
                size[contender].append(make(size["dir"], path))
            del files
    results = []
    for size in sizes.values():
        progress(f"{size['files']} files: memory")
        ratios = [p / u for p, u in zip(size["pkgfs"], size["uv"], strict=True)]
        results.append(
            {
                "files": size["files"],
                "pkgfs": summary(size["pkgfs"]),
                "uv": summary(size["uv"]),
                "ratio": summary(ratios),
                "memory": memory(sweep, size["dir"]),
            }
        )
    return {
        "machine": machine_info(tools),
        "rounds": args.rounds,
        "installed": not args.editable,
        "wheels": WHEELS,
        "load": [os.getloadavg()[0]],
        "sizes": results,
    }


def render(data: dict[str, Any]) -> list[str]:
    """The BENCHMARKS.md section: creation by size, flatness, memory per extra mount."""
    sizes = data["sizes"]

    def cell(s: dict[str, float], fmt: str = ".3f", scale: float = 1.0) -> str:
        med, low, high = (format(s[k] * scale, fmt) for k in ("median", "min", "max"))
        return med if med == low == high else f"{med} ({low}{RANGE}{high})"

    machine = data["machine"]
    how = (
        "installed from this checkout's wheels into a venv of its own, as the README installs it"
        if data.get("installed")
        else "the checkout's editable install"
    )
    lines = [
        "## Creation and memory by size: pkgfs through its server, against uv's hardlinks",
        "",
        f"Run of {data['when']}, pkgfs at {machine['pkgfs_commit']}, {machine['cpus']} CPUs"
        f" shared with other sessions (1-minute load average {data['load'][0]:.2f} at the"
        f" start, {data['load'][-1]:.2f} at the end), {machine['uv']}; made by"
        " `python -m bench.sweep` (method: its docstring and [bench/README.md](bench/README.md))."
        f" Each lock: {data['wheels']} synthetic wheels of small modules; a figure reads median"
        f" ({RANGE.join(('min', 'max'))}) over {data['rounds']} rounds, the contenders"
        " alternating, each into a fresh `python -m venv` venv. `pkgfs` is `pkgfs mount SITE"
        f" --lock pylock.toml --offline` (the console script, {how}, a client of the warm"
        " server); `uv` is `uv pip sync --offline --link-mode hardlink` from a warm cache,"
        " without bytecode.",
        "",
        "| files | pkgfs, s | uv hardlink, s | pkgfs / uv | goal | PSS per extra mount, MiB |"
        " the same after a `find` walk | daemon's own PSS, MiB; walked |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in sizes:
        met = "met" if s["ratio"]["median"] <= GOALS["ratio"] else "**not met**"
        mem = s["memory"]
        lines.append(
            f"| {s['files']:,} | {cell(s['pkgfs'])} | {cell(s['uv'])}"
            f" | **{cell(s['ratio'], '.2f')}**"
            f" | <= {GOALS['ratio']} {met} | {cell(mem['extra_kib']['mounted'], '.1f', 1 / 1024)}"
            f" | {cell(mem['extra_kib']['walked'], '.1f', 1 / 1024)}"
            f" | {cell(mem['daemon_kib']['mounted'], '.1f', 1 / 1024)};"
            f" {cell(mem['daemon_kib']['walked'], '.1f', 1 / 1024)} |"
        )
    flat = sizes[-1]["pkgfs"]["median"] / sizes[0]["pkgfs"]["median"]
    uv_flat = sizes[-1]["uv"]["median"] / sizes[0]["uv"]["median"]
    worst = max(s["memory"]["extra_kib"]["mounted"]["median"] for s in sizes) / 1024
    walked = max(s["memory"]["extra_kib"]["walked"]["median"] for s in sizes) / 1024
    servers = ", ".join(f"{s['memory']['server_kib'] / 1024:.1f}" for s in sizes)
    lines += [
        "",
        f"- Flatness, pkgfs's creation at {sizes[-1]['files']:,} files over"
        f" {sizes[0]['files']:,}: **{flat:.2f}x** (goal <= {GOALS['flat']}:"
        f" {'met' if flat <= GOALS['flat'] else '**not met**'}); uv's: {uv_flat:.1f}x.",
        f"- Memory: each extra mount of a lock already mounted adds at most **{worst:.1f} MiB**"
        f" of PSS to the machine (goal <= {GOALS['pss_mib']:.0f} MiB:"
        f" {'met' if worst <= GOALS['pss_mib'] else '**not met**'}), and at most"
        f" {walked:.1f} MiB once a `find` walk made it look up every file: the growth of the"
        " summed PSS of the server and every daemon (smaps_rollup) that each mount beyond the"
        f" first brings. The server itself: {servers} MiB at each size, holding the views of"
        " the mounted locks.",
    ]
    return lines


def publish(lines: Sequence[str]) -> None:
    path = REPO / "BENCHMARKS.md"
    text = path.read_text()
    block = "\n".join([SWEEP_START, *lines, SWEEP_END])
    if SWEEP_START in text:
        head, rest = text.split(SWEEP_START, 1)
        text = head + block + rest.split(SWEEP_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__)
    parser.add_argument(
        "--sizes", default="700,5000,20000,60000", type=lambda v: [int(x) for x in v.split(",")]
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=REPO / ".cache" / "bench-sweep")
    parser.add_argument("--no-publish", action="store_true", help="leave BENCHMARKS.md as it is")
    parser.add_argument(
        "--editable", action="store_true", help="time the checkout's editable pkgfs, not an install"
    )
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    try:
        return _measure_and_report(args, started)
    finally:  # the run's store, uv cache and venvs, after the report (the locks are kept)
        shutil.rmtree(args.workdir.absolute() / f"run-{os.getpid()}", ignore_errors=True)


def _measure_and_report(args: argparse.Namespace, started: datetime) -> int:
    load = os.getloadavg()[0]
    try:
        data = run(args)
    except (BenchError, subprocess.CalledProcessError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    data["load"] = [load, os.getloadavg()[0]]
    data["when"] = f"{started:%Y-%m-%d %H:%M} to {datetime.now(UTC):%H:%M} UTC"
    out = REPO / "bench" / "results" / f"sweep-{started:%Y%m%dT%H%M%SZ}"
    out.mkdir(parents=True)
    (out / "sweep.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = render(data)
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not args.no_publish:
        publish(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
