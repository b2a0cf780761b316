"""BENCHMARKS.md (and README.md's headline) from one run's mount.json; nothing here knows a result.

``python -m bench.report RUNDIR``: a full run (not ``--quick``) is published as the
repository's BENCHMARKS.md and its headline goes into README.md between the
``bench:headline`` markers; a quick run's page stays in RUNDIR.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.common import REPO

Json = Mapping[str, Any]
RANGE = "\u2013"  # the en dash of "median (min-max)"
PKGFS, NATIVE, COPY = "pkgfs", "native", "uv-copy"
CREATED_KEYS = ("create", "statvfs_bytes", "statvfs_inodes", "counted_bytes", "counted_inodes")
# Issue 11's goals: pkgfs / native, median of the per-round ratios, at most this.
GOALS = {"walk": 1.2, "warm_import": 1.05, "metadata": 1.1, "cold_import": 1.15}
TITLES = {
    "create": "create",
    "walk": "`find` + lstat walk",
    "warm_import": "warm import",
    "metadata": "`importlib.metadata` scan",
    "cold_import": "first import after dropping caches",
}
# Why pkgfs loses a measure, as far as we know it: shown next to each loss.
WHY = {
    "create": "the `pkgfs` command starts, forks the daemon, which loads the lock's composed"
    " view and mounts; a fixed cost that a few thousand hard links (and uv's bytecode"
    " compile, here part of native's time) may or may not exceed",
    "walk": "every lookup, getattr and readdir the kernel cannot answer from its caches is a"
    " round trip to the daemon; a walk is nothing but those",
    "warm_import": "each module's lookups and its `.pyc`'s open, read and release go through"
    " FUSE where native reads ext4 from the page cache",
    "metadata": "reading every distribution's METADATA is opens and reads through FUSE",
    "cold_import": "after the drop the kernel has forgotten the mount's dentries, inodes and"
    " pages too: every lookup goes to the daemon, and the daemon reads the store's objects"
    " from disk one request at a time",
}
VERDICT = {True: "met", False: "**not met**", None: "not measured"}
EARLIER = Path(__file__).with_name("earlier.md")
# Kept too: the figures of docker/bench.sh, which bench/run does not run (it needs dockerd).
CONTAINERS = Path(__file__).with_name("containers.md")
MARKDOWN = REPO / "BENCHMARKS.md"
HEADLINE_START = "<!-- bench:headline:start -->"
HEADLINE_END = "<!-- bench:headline:end -->"
SWEEP_START, SWEEP_END = "<!-- bench:sweep:start -->", "<!-- bench:sweep:end -->"


def ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def cell(s: Json | None, fmt: str = ".3f", scale: float = 1.0) -> str:
    """``median (min-max)``, or the median alone when the three agree; "n/a" when absent."""
    if s is None:
        return "n/a"
    med, low, high = (format(s[k] * scale, fmt) for k in ("median", "min", "max"))
    return med if low == med == high else f"{med} ({low}{RANGE}{high})"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], text: int = 1) -> list[str]:
    """A markdown table, the first ``text`` columns left-aligned and the others right."""
    align = [":---"] * text + ["---:"] * (len(header) - text)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def median(s: Json | None) -> float | None:
    return None if s is None else float(s["median"])


def goal_rows(stacks: Sequence[Json]) -> list[tuple[str, str, float, float | None, bool]]:
    """(stack, measure, goal, median ratio, met) for every goal and stack; a measure the run
    could not take (no drop_caches) has no ratio and is not met."""
    rows = []
    for st in stacks:
        for measure, goal in GOALS.items():
            value = median(st["summary"]["ratios"].get(measure))
            rows.append((st["name"], measure, goal, value, value is not None and value <= goal))
    return rows


def requests_cell(st: Json, measure: str) -> str:
    s = st["summary"]["requests"].get(measure)
    return "n/a" if s is None else cell(s, ",.0f")


def when(run: Json) -> str:
    """``2026-12-05 17:04 to 17:24 UTC`` from the run's ISO times."""
    start, end = run["started"][:16].replace("T", " "), run["finished"][:16].replace("T", " ")
    return f"{start} to {end[11:] if end[:10] == start[:10] else end} UTC"


def header(run: Json) -> list[str]:
    m = run["machine"]
    modes = sorted({mode for st in run["stacks"] for mode in st["summary"]["modes"]})
    cfg = run["config"]
    load = run.get("load", [float("nan"), float("nan")])
    return [
        "# pkgfs benchmarks",
        "",
        "Made by `bench/run` (as root) from one run's `mount.json`; `python -m bench.report"
        " RUNDIR` makes this page again. Method and the reasons behind it: "
        "[bench/README.md](bench/README.md).",
        "",
        f"Run of {when(run)}, pkgfs at {m['pkgfs_commit']}, the mount"
        f" in {' and '.join(f'`{x}`' for x in modes)} mode. Machine: {m['cpus']} CPUs"
        f" ({m['cpu_model']}), {m['mem_total']} memory, Linux {m['kernel']}, Python"
        f" {m['python']}, {m['uv']}, {m['hyperfine']}.",
        "",
        f"**The machine was not reserved for the run**: other sessions ran on the same"
        f" {m['cpus']} CPUs (1-minute load average {load[0]:.2f} at the start,"
        f" {load[1]:.2f} at the end). Absolute times are therefore noisy and only give the"
        " scale. Every comparison is a ratio of two contenders measured in the same round, by one"
        " hyperfine invocation, and a figure reads median (min" + RANGE + "max) of the"
        f" per-round ratios over {cfg['rounds']} rounds ({cfg['runs']} timed runs per warm"
        f" measure and contender per round, after one warm-up; {cfg['cold_runs']} after"
        " dropping caches).",
        "",
        f"`native` is `{run['commands'][NATIVE]}`; `pkgfs` is `{run['commands'][PKGFS]}`.",
        "",
    ]


def goals_section(stacks: Sequence[Json]) -> list[str]:
    rows = [
        [st, TITLES[m], f"{goal:.2f}", f"**{ratio(v)}**", VERDICT[ok if v is not None else None]]
        for st, m, goal, v, ok in goal_rows(stacks)
    ]
    lines = ["## Goals: pkgfs against a native venv", ""]
    head = ["stack", "measure", "goal, at most", "pkgfs / native", "result"]
    lines += table(head, rows, text=2)
    lines += ["Requests the daemon served per warm run, median (min" + RANGE + "max):", ""]
    req = [
        [st["name"], *(requests_cell(st, m) for m in ("warm_import", "walk", "metadata"))]
        for st in stacks
    ]
    lines += table(["stack", "warm import", "walk", "`importlib.metadata` scan"], req)
    return lines


def losses(stacks: Sequence[Json]) -> list[str]:
    """Every pkgfs ratio above its goal (above 1 for creating), plainly, and why."""
    lines = ["## Where pkgfs still loses", ""]
    found = False
    for st in stacks:
        for measure, s in st["summary"]["ratios"].items():
            limit = GOALS.get(measure, 1.0)
            value = median(s)
            if value is not None and value > limit:
                found = True
                lines.append(
                    f"- **{st['name']}, {TITLES[measure]}: {value:.2f}x native**"
                    f" ({cell(s, '.2f')}; {'goal' if measure in GOALS else 'even'} is"
                    f" {limit:.2f}). Why: {WHY[measure]}."
                )
    for st in stacks:
        rss = st["summary"]["daemon_peak_rss_mib"]
        if rss is not None:
            found = True
            lines.append(
                f"- **{st['name']}, memory: a daemon of {cell(rss, '.1f')} MiB peak RSS per"
                " mounted environment**, where a native venv needs no process at all."
            )
    if not found:
        lines.append("- Nowhere in this run's measures.")
    lines += [
        "- Not re-run here (the figures of 2026-11-22 kept at the end of this page): filling a"
        " store took 1.66x `uv pip install` of the same wheels; a cold `pkgfs sync` took 2.1"
        " to 3.4x `uv pip sync` (network-bound); the one-time compile of every module took"
        " 1.9x one uv environment's compile.",
        "",
    ]
    return lines


def creation_section(stacks: Sequence[Json]) -> list[str]:
    lines = [
        "## Creating an environment",
        "",
        "Wall time of the one command that makes a fresh venv usable, and what it took on the"
        " work filesystem (its own ext4 image): statvfs is the drop in free blocks and inodes;"
        " counted walks the venv, the XDG state and cache and the contender's store or uv"
        " cache, each inode once. Native's time includes uv compiling every module"
        " (`--compile-bytecode`); pkgfs compiled them once per store, in the untimed"
        " `pkgfs sync`: the ratio compares making an environment that has bytecode, not"
        " linking files. The first pkgfs environment of a lock also writes the lock's"
        " composed view into the store, which every later one shares: the top of pkgfs's"
        " disk range.",
        "",
    ]
    for st in stacks:
        s = st["summary"]
        title = f"{st['title']}, {st['wheels']} wheels, {st['files']:,} files"
        lines += [f"### {st['name']}: {title}", ""]
        rows = []
        for c in (PKGFS, NATIVE, COPY):
            created = s["created"][c]
            rows.append(
                [
                    c,
                    cell(created["create"]),
                    f"**{cell(s['ratios']['create'], '.2f')}**" if c == PKGFS else "",
                    cell(created["statvfs_bytes"], ",.0f", 1 / 1024),
                    cell(created["counted_bytes"], ",.0f", 1 / 1024),
                    cell(created["statvfs_inodes"], ",.0f"),
                ]
            )
        head = ["contender", "create, s", "/ native", "disk KiB", "counted KiB", "inodes"]
        lines += table(head, rows)
    return lines


def times_section(run: Json) -> list[str]:
    lines = ["## Using it: times", "", "Commands, run by hyperfine without a shell:", ""]
    lines += [f"- {TITLES[m]}: `{cmd}`" for m, cmd in run["measures"].items()]
    lines.append("")
    for st in run["stacks"]:
        s = st["summary"]
        lines += [f"### {st['name']}: imports {', '.join(f'`{i}`' for i in st['imports'])}", ""]
        rows = [
            [TITLES[m], cell(t[PKGFS]), cell(t[NATIVE]), f"**{cell(s['ratios'][m], '.2f')}**"]
            for m, t in s["times"].items()
        ]
        lines += table(["seconds", "pkgfs", "native", "pkgfs / native"], rows)
        lines += [f"The daemon's peak RSS: {cell(s['daemon_peak_rss_mib'], '.1f')} MiB.", ""]
    return lines


def render(run: Json, earlier: str = "", containers: str = "") -> str:
    stacks = run["stacks"]
    lines = header(run) + goals_section(stacks) + losses(stacks)
    lines += creation_section(stacks) + times_section(run)
    if earlier:
        lines += ["## Not re-run: ingest, sync and bytecode (figures of 2026-11-22)", "", earlier]
    if containers:
        lines += ["## Containers: `docker/bench.sh` (not run by bench/run)", "", containers]
    return "\n".join(lines).rstrip() + "\n"


def headline_block(run: Json) -> list[str]:
    """A few bullet lines for README.md, with a link to the report."""
    stacks = run["stacks"]
    bullets = []
    for st in stacks:
        r = st["summary"]["ratios"]
        parts = [f"{TITLES[m]} {ratio(median(r.get(m)))}x" for m in ("create", *GOALS)]
        req = st["summary"]["requests"].get("warm_import")
        per = "n/a" if req is None else f"{median(req):,.0f}"
        parts.append(f"{per} daemon requests per warm import")
        bullets.append(
            f"- {st['name']} ({st['files']:,} files), pkgfs / native: {'; '.join(parts)}."
        )
    disk = ", ".join(
        f"{st['name']} {cell(st['summary']['created'][c]['statvfs_bytes'], ',.0f', 1 / 1024)}"
        for st in stacks
        for c in (PKGFS,)
    )
    met = sum(ok for *_, ok in goal_rows(stacks))
    return [
        *bullets,
        f"- Disk per new pkgfs environment, KiB: {disk}.",
        f"- Issue 11's runtime goals met: {met} of {len(goal_rows(stacks))}.",
        f"- Run of {when(run)} on a shared 2-CPU machine; native is uv's hardlinked venv"
        " with bytecode. Where pkgfs still loses: [BENCHMARKS.md](BENCHMARKS.md).",
    ]


def replace_headline(text: str, block: Sequence[str]) -> str | None:
    """``text`` with the lines between the headline markers replaced; None without them."""
    start, end = text.find(HEADLINE_START), text.find(HEADLINE_END)
    if start < 0 or end < start:
        return None
    head = text[: start + len(HEADLINE_START)]
    return head + "\n" + "".join(line + "\n" for line in block) + text[end:]


def keep_sweep(old: str, new: str) -> str:
    """``new`` with the section ``python -m bench.sweep`` wrote into ``old`` (between the
    ``bench:sweep`` markers, and the notes after it up to the next ``## ``), put before the
    figures that were not re-run: the two benchmarks publish to one page."""
    start = old.find(SWEEP_START)
    if start < 0:
        return new
    end = old.find("\n## ", old.find(SWEEP_END, start))
    block = old[start : end if end >= 0 else len(old)].rstrip("\n") + "\n\n"
    at = new.find("## Not re-run")
    return new + "\n" + block if at < 0 else new[:at] + block + new[at:]


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        print("usage: python -m bench.report RUNDIR", file=sys.stderr)
        return 2
    rundir = Path(args[0])
    run = json.loads((rundir / "mount.json").read_text())
    earlier = EARLIER.read_text() if EARLIER.exists() else ""
    containers = CONTAINERS.read_text() if CONTAINERS.exists() else ""
    out = rundir / "BENCHMARKS.md" if run["quick"] else MARKDOWN
    text = render(run, earlier, containers)
    if out == MARKDOWN and MARKDOWN.exists():
        text = keep_sweep(MARKDOWN.read_text(), text)
    out.write_text(text)
    print(f"bench: wrote {out}", file=sys.stderr)
    if not run["quick"]:
        readme = REPO / "README.md"
        new = replace_headline(readme.read_text(), headline_block(run))
        if new is not None:
            readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
