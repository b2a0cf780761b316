#!/usr/bin/env python3
"""The published benchmark report: BENCHMARKS.md and its plots, from one run's JSON files.

Each benchmark script (ingest, sync, mount, bytecode) writes one JSON file; this module
turns the files of one run directory into markdown text and, through bench.plots, PNG plots.
Every number in the text comes from those files: nothing here knows a result. The sections
are pure (dicts in, text out); ``generate`` and ``update_readme`` write files. Reading the
files and showing their numbers as text is bench.reportdata's part.

Usage: ``python -m bench.report RUNDIR [--md OUT.md] [--plots DIR]``. Without ``--md`` and
``--plots`` the location follows the run: a full run (all four benchmarks, none quick) is
published as the repository's BENCHMARKS.md and bench/plots/, and its headline goes into
README.md between the ``bench:headline`` markers; any other run keeps its report inside
RUNDIR.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# Run as a script (python bench/report.py), the repository root is not on sys.path: put it
# there, so the scripts and mypy import the shared modules alike, as bench.common.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import explain
from bench.common import REPO
from bench.plots import PLOTS, write_plots
from bench.reportdata import (
    BENCHMARKS,
    IMPORT_RATIOS,
    INODES,
    KIB,
    MARKDOWN_NAME,
    PKGFS,
    RANGE,
    Json,
    Outputs,
    Unit,
    cell,
    contenders,
    esc,
    growth_series,
    load_run,
    measure_keys,
    median,
    native,
    num,
    outputs_for,
    ratio_cell,
    ratio_keys,
    ratio_of,
    ratio_text,
    slope,
    span,
    stacks,
    stat,
    table,
    title_of,
    unit_of,
    when,
)

COPY = "uv-copy"
HEADLINE_START = "<!-- bench:headline:start -->"
HEADLINE_END = "<!-- bench:headline:end -->"
CREATION_LIMIT = 1.0  # pkgfs loses creation when its median ratio is above this
RUNTIME_LIMIT = 1.05  # and a runtime measure above this (the "within 5%")
CREATION = frozenset({"create", "remount"})


# --- sections --------------------------------------------------------------------------------


def not_run(title: str) -> list[str]:
    """The section of a benchmark that has no JSON file in the run."""
    return [f"## {title}", "", "Not run in this run.", ""]


def header(reports: Mapping[str, Json]) -> list[str]:
    """Title, how to regenerate, the date, and what kind of figures these are."""
    quick = [n for n, r in reports.items() if r.get("config", {}).get("quick")]
    missing = [n for n in BENCHMARKS if n not in reports]
    lines = [
        "# pkgfs benchmarks",
        "",
        "Made by `bench/run` (as root: all four benchmarks, then this page) from the JSON files"
        " of one run; `bench/run --quick` is a smoke test whose report stays in its run"
        " directory under bench/results/. `python -m bench.report RUNDIR` makes the page again"
        " from a run directory.",
        "",
        f"Run of {when(reports)}.",
        "",
        "Every comparison here is a ratio between contenders measured in the same run, round"
        " by round, on the same machine: the machines are shared and noisy, so absolute times"
        " only give the scale of those ratios and must not be compared across runs. A cell"
        f" reads median (min{RANGE}max) over the rounds; a ratio is the median"
        f" (min{RANGE}max) of the per-round ratios.",
    ]
    if quick:
        lines += ["", f"Quick runs (smoke tests, fewer rounds and inputs): {', '.join(quick)}."]
    if missing:
        lines += ["", f"Not run in this run: {', '.join(missing)}."]
    return [*lines, ""]


def headline(mount: Json | None) -> list[str]:
    """Per stack: creation ratio, per-env disk and inodes, and the import ratios."""
    lines = ["## Headline", ""]
    if mount is None:
        return [*lines, "The mount benchmark was not run in this run.", ""]
    base, names = native(mount), contenders(mount)
    disk_of = [c for c in (PKGFS, base, COPY) if c in names]
    lines += [
        f"Creating an environment: pkgfs mount against `{base}` (ratio of times), and the disk"
        " each new environment takes (statvfs: the work filesystem's drop in free blocks and"
        " inodes).",
        "",
    ]
    rows = []
    for w in stacks(mount):
        s = w["summary"]
        rows.append(
            [
                esc(w["name"]),
                f"{w['files']:,}",
                ratio_cell(ratio_of(s, PKGFS, "create"), bold=True),
                " · ".join(num(median(stat(s, c, "statvfs_bytes")), KIB) for c in disk_of),
                " · ".join(num(median(stat(s, c, "statvfs_inodes")), INODES) for c in disk_of),
            ]
        )
    who = " · ".join(disk_of)
    lines += table(
        ["stack", "files", f"create, pkgfs / {base}", f"disk KiB: {who}", f"inodes: {who}"], rows
    )
    lines += ["", f"Using it: pkgfs against `{base}`, ratio of import times.", ""]
    imports = [
        k for k in IMPORT_RATIOS if any(ratio_of(w["summary"], PKGFS, k) for w in stacks(mount))
    ]
    rows = [
        [esc(w["name"])]
        + [ratio_cell(ratio_of(w["summary"], PKGFS, k), bold=True) for k in imports]
        for w in stacks(mount)
    ]
    lines += table(["stack", *(f"{title_of(k)}, pkgfs / {base}" for k in imports)], rows)
    return [*lines, ""]


Loss = tuple[str, list[str]]  # (a key of explain.CAUSES, the row of the losses table)


def _mount_losses(mount: Json) -> list[Loss]:
    """Rows of (benchmark, where, measure, figure) where pkgfs does worse than native."""
    base, rows = native(mount), []
    for w in stacks(mount):
        s = w["summary"]
        ratios = (s.get(PKGFS) or {}).get("ratio") or {}
        for key in ratio_keys([s.get(PKGFS) or {}]):
            r = ratios[key]
            limit = CREATION_LIMIT if key in CREATION else RUNTIME_LIMIT
            if r["median"] > limit:
                figure = f"{ratio_cell(r, bold=True)}x {base}"
                rows.append((f"mount:{key}", ["mount", esc(w["name"]), title_of(key), figure]))
        # Disk has no per-round ratio in the JSON: compare the medians.
        for key in ("statvfs_bytes", "counted_bytes", "statvfs_inodes", "counted_inodes"):
            mine, theirs = median(stat(s, PKGFS, key)), median(stat(s, base, key))
            if mine is not None and theirs is not None and mine > theirs:
                unit = unit_of(key)
                figure = f"pkgfs {num(mine, unit)} {unit.label}, {base} {num(theirs, unit)}"
                rows.append(("mount:disk", ["mount", esc(w["name"]), title_of(key), figure]))
    return rows


def _view_writes(mount: Json) -> bool:
    """True when pkgfs's largest per-env disk figure is far above its median somewhere.

    That is the first environment of a lock writing the shared view (explain.SHARED_VIEW).
    """
    for w in stacks(mount):
        disk = stat(w["summary"], PKGFS, "statvfs_bytes")
        if disk is not None and disk["max"] > 4 * max(disk["median"], 1.0):
            return True
    return False


def _other_losses(reports: Mapping[str, Json]) -> list[Loss]:
    """Rows where pkgfs's median ratio to uv is above 1 in ingest, sync and bytecode."""
    rows = []
    ingest = reports.get("ingest")
    if ingest is not None and ingest["summary"]["ratio"]["median"] > 1.0:
        fs = ingest["machine"].get("workdir_filesystem")
        figure = f"{ratio_cell(ingest['summary']['ratio'], bold=True)}x uv"
        rows.append(
            ("ingest:time", ["ingest", f"on {esc(fs)}", "store add vs uv pip install", figure])
        )
    sync = reports.get("sync")
    for name, w in (sync or {}).get("workloads", {}).items():
        for phase in ("cold", "warm"):
            r = w["summary"][phase]["ratio"]
            if r["median"] > 1.0:
                figure = f"{ratio_cell(r, bold=True)}x uv pip sync"
                rows.append((f"sync:{phase}", ["sync", esc(name), f"{phase} sync", figure]))
    bytecode = reports.get("bytecode")
    for name, w in (bytecode or {}).get("workloads", {}).items():
        s = w["summary"]
        for phase in ("first", "warm"):
            for against, r in s.get(f"{phase}_ratio", {}).items():
                if r["median"] > 1.0:
                    figure = f"{ratio_cell(r, bold=True)}x {esc(against)}"
                    row = ["bytecode", esc(name), f"{phase} import", figure]
                    rows.append((f"bytecode:{phase}", row))
        once, per_env = median(s.get("compile_sync")), median(s.get("uv_compile"))
        if once is not None and per_env and once / per_env > 1.0:
            even = s.get("break_even_envs")
            after = "" if even is None else f"; break-even at {even:.1f} environments"
            figure = f"**{ratio_text(once / per_env)}**x one uv compile (medians){after}"
            row = ["bytecode", esc(name), "one-time compile vs one env's", figure]
            rows.append(("bytecode:compile", row))
    return rows


def _unmet_goals(reports: Mapping[str, Json]) -> list[str]:
    """Bullets for every goal a JSON file says is not met (mount, bytecode; ingest's limit)."""
    lines = []
    for name in ("mount", "bytecode"):
        for goal in (reports.get(name) or {}).get("goals", []):
            if not goal["met"]:
                lines.append(f"- {name}: **{esc(goal['goal'])}**: {esc(goal['detail'])}")
    ingest = reports.get("ingest")
    if ingest is not None:
        limit = ingest.get("goal", {}).get("ratio_at_most")
        r = ingest["summary"]["ratio"]["median"]
        if limit is not None and r > limit:
            lines.append(
                f"- ingest: **no slower than uv's unpacking** (median ratio at most {limit:g}):"
                f" {ratio_text(r)}"
            )
    return lines


def losses(reports: Mapping[str, Json]) -> list[str]:
    """Where pkgfs loses, derived from the data: ratios above the limits, goals not met."""
    lines = [
        "## Where pkgfs loses",
        "",
        f"Every pkgfs ratio in this run above {CREATION_LIMIT:g} for creating an environment,"
        f" above {RUNTIME_LIMIT:g} for using it, above 1 in the other benchmarks; per-env disk"
        " where pkgfs's median is above native's; and every goal not met. Derived from the"
        " JSON files, like everything on this page.",
        "",
    ]
    mount = reports.get("mount")
    found = (_mount_losses(mount) if mount is not None else []) + _other_losses(reports)
    rows = [row for _, row in found]
    if rows:
        lines += table(["benchmark", "where", "measure", f"pkgfs, median (min{RANGE}max)"], rows, 3)
    else:
        lines.append("No ratio above its limit in this run.")
    goals = _unmet_goals(reports)
    lines += ["", "Goals not met:", "", *(goals or ["- none"]), ""]
    keys = [key for key, _ in found]
    if mount is not None and _view_writes(mount):
        keys.append("mount:disk")
    why = explain.causes(keys)
    if why:
        lines += ["### Why", "", "What lies behind the losses above, as far as we know it:", ""]
        lines += [*why, ""]
    return lines


MACHINE_COLUMNS = (
    ("CPUs", lambda m: f"{m.get('usable_cpus')} of {m.get('nproc')} ({m.get('cpu_model')})"),
    ("memory", lambda m: m.get("mem_total")),
    ("kernel", lambda m: m.get("kernel")),
    ("Python", lambda m: m.get("python")),
    ("pkgfs", lambda m: m.get("pkgfs_version")),
    ("uv", lambda m: m.get("uv_version")),
    ("work filesystem", lambda m: m.get("workdir_filesystem")),
)


def _config_value(value: object) -> str | None:
    """A config value as text: scalars as they are, short string lists joined; else None."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        # Paths inside the repository read the same on every machine as relative ones.
        return esc(value.replace(f"{REPO}{os.sep}", ""))
    if isinstance(value, int | float):
        return esc(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value) and len(value) <= 30:
        return esc(", ".join(value))
    if isinstance(value, Mapping) and all(isinstance(v, str | int | float) for v in value.values()):
        return "; ".join(f"{esc(k)}: {_config_value(v)}" for k, v in value.items())
    return None


def method(reports: Mapping[str, Json]) -> list[str]:
    """The machines, and each benchmark's own description of its method (its config)."""
    lines = ["## Method", ""]
    if not reports:
        return [*lines, "No benchmark ran in this run.", ""]
    rows = []
    for name, r in reports.items():
        m = r.get("machine", {})
        rows.append([name, *(esc(get(m)) for _, get in MACHINE_COLUMNS)])
    lines += table(["benchmark", *(title for title, _ in MACHINE_COLUMNS)], rows, 8)
    lines += ["", "Each benchmark's settings, as its JSON file states them:", ""]
    for name in BENCHMARKS:
        if name not in reports:
            continue
        cfg = reports[name].get("config", {})
        lines.append(f"**{name}**")
        lines.append("")
        for key, value in cfg.items():
            if key == "contender_commands":
                continue  # its own table below
            text = _config_value(value)
            if text is not None:
                lines.append(f"- {esc(key.replace('_', ' '))}: {text}")
        commands = cfg.get("contender_commands")
        if isinstance(commands, Mapping):
            lines += [
                "",
                *table(
                    ["contender", "command"], ([esc(c), esc(v)] for c, v in commands.items()), 2
                ),
            ]
        if cfg.get("pkgfs_source_at_end", cfg.get("pkgfs_source")) != cfg.get("pkgfs_source"):
            lines.append(
                "- **pkgfs's source changed during the run**: rounds may have measured different"
                " code"
            )
        lines.append("")
    return lines


def stack_tables(mount: Json | None) -> list[str]:
    """Per stack: every measure per contender, then the ratios to native; then the goals."""
    lines = ["## Creating and using an environment (mount benchmark)", ""]
    if mount is None:
        return [*lines, "Not run in this run.", ""]
    base, names = native(mount), contenders(mount)
    lines += [
        f"Per stack, each contender's measures, median (min{RANGE}max) over"
        f" {mount['config'].get('rounds')} rounds; — where a contender was not measured. The"
        f" ratios are per round, against `{base}`.",
        "",
    ]
    for w in stacks(mount):
        s = w["summary"]
        imports = ", ".join(f"`{i}`" for i in w.get("imports", []))
        lines += [
            f"### {esc(w['name'])}: {esc(w.get('title', ''))}",
            "",
            f"{w.get('wheels', '?')} wheels, {w['files']:,} files; imports {imports}.",
            "",
        ]
        rows = []
        for key in measure_keys(s.get(c, {}) for c in names):
            unit = unit_of(key)
            rows.append(
                [f"{title_of(key)}, {unit.label}", *(cell(stat(s, c, key), unit) for c in names)]
            )
        lines += table([f"median (min{RANGE}max)", *names], rows)
        keys = ratio_keys(s.get(c, {}) for c in names)
        rows = [
            [
                title_of(k),
                *("baseline" if c == base else ratio_cell(ratio_of(s, c, k)) for c in names),
            ]
            for k in keys
        ]
        if rows:
            lines += ["", *table([f"ratio to {base}: median (min{RANGE}max)", *names], rows)]
        lines.append("")
    goals = mount.get("goals", [])
    if goals:
        rows = [
            [esc(g["goal"]), "met" if g["met"] else "**not met**", esc(g["detail"])] for g in goals
        ]
        lines += ["### Goals", "", *table(["goal", "result", "detail"], rows, 3), ""]
    return lines


GROWTH_KEYS = ("create", "statvfs_bytes", "statvfs_inodes")


def growth(mount: Json | None, plots: Sequence[tuple[str, str]]) -> list[str]:
    """Medians per stack by file count, least-squares slopes, and the plots."""
    lines = ["## Growth with the number of files", ""]
    if mount is None:
        return [*lines, "Not run in this run.", ""]
    names = contenders(mount)
    lines += [
        "Medians over the rounds per stack, computed from each stack's summary; the last row is"
        " the least-squares slope over the stacks, per 10,000 files. Disk and inodes are the"
        " statvfs figures.",
        "",
    ]
    for key in GROWTH_KEYS:
        unit = unit_of(key)
        rows = []
        for w in stacks(mount):
            row = [f"{esc(w['name'])} ({w['files']:,} files)"]
            rows.append(row + [num(median(stat(w["summary"], c, key)), unit) for c in names])
        slopes = []
        for c in names:
            points = growth_series(mount, c, key)
            per = slope([x for x, _ in points], [float(p["median"]) for _, p in points])
            if per is None:
                slopes.append("—")
            else:
                slopes.append(("+" if per >= 0 else "") + num(per * 10_000, unit))
        rows.append(["per 10,000 files", *slopes])
        lines += [f"{title_of(key)}, {unit.label}:", "", *table(["stack", *names], rows), ""]
    for alt, link in plots:
        lines += [f"![{alt}]({link})", ""]
    return lines


def ingest_section(ingest: Json | None) -> list[str]:
    """Filling a store against uv pip install of the same wheels."""
    title = "Filling a store (ingest benchmark)"
    if ingest is None:
        return not_run(title)
    s, nbytes, cfg = ingest["summary"], ingest["bytes"], ingest["config"]
    m = ingest["machine"]
    lines = [
        f"## {title}",
        "",
        f"{len(cfg.get('wheels', []))} wheels, {nbytes['files']:,} files,"
        f" {nbytes['logical_bytes'] / 1e6:,.1f} MB unpacked; {cfg['rounds']} rounds on"
        f" {esc(m.get('workdir_filesystem'))}.",
        "",
    ]
    rows = [
        [
            name,
            cell(s[name]["seconds"]),
            cell(s[name]["mb_per_s"], Unit("MB/s", 1.0, ",.0f")),
            cell(s[name]["max_rss_mib"], Unit("MiB", 1.0, ",.1f")),
        ]
        for name in ("pkgfs", "uv")
    ]
    lines += table(["contender", "time s", "MB/s", "peak RSS MiB"], rows)
    r = s["ratio"]
    lines += ["", f"pkgfs / uv time, per round: {ratio_cell(r, bold=True)}."]
    limit = ingest.get("goal", {}).get("ratio_at_most")
    if limit is not None:
        verdict = "met" if r["median"] <= limit else "**not met**"
        lines.append(f"Goal: no slower than uv's unpacking (median at most {limit:g}): {verdict}.")
    return [*lines, ""]


def sync_section(sync: Json | None) -> list[str]:
    """pkgfs sync from a lock against uv pip sync, cold (downloads) and warm."""
    title = "Syncing from a lock (sync benchmark)"
    if sync is None:
        return not_run(title)
    lines = [
        f"## {title}",
        "",
        f"{sync['config']['rounds']} rounds. Cold runs download every wheel (the network"
        " dominates); warm ones download nothing.",
        "",
    ]
    rows = []
    for name, w in sync["workloads"].items():
        s = w["summary"]
        rows.append(
            [
                esc(name),
                str(len(w.get("wheels", []))),
                f"{w.get('wheel_bytes', 0) / 1e6:,.1f}",
                f"{cell(s['cold']['pkgfs']['seconds'])} · {cell(s['cold']['uv']['seconds'])}",
                ratio_cell(s["cold"]["ratio"], bold=True),
                f"{cell(s['warm']['pkgfs']['seconds'])} · {cell(s['warm']['uv']['seconds'])}",
                ratio_cell(s["warm"]["ratio"], bold=True),
            ]
        )
    header_ = ["workload", "wheels", "wheel MB", "cold s: pkgfs · uv", "cold pkgfs / uv"]
    lines += table([*header_, "warm s: pkgfs · uv", "warm pkgfs / uv"], rows)
    same = all(w.get("format_check", {}).get("identical") for w in sync["workloads"].values())
    lines += [
        "",
        "uv.lock, pylock.toml and requirements.txt selected "
        + ("identical wheel sets." if same else "**different** wheel sets."),
    ]
    return [*lines, ""]


def bytecode_section(bytecode: Json | None) -> list[str]:
    """Shared bytecode compiled once per store against uv's compile per environment."""
    title = "Shared bytecode (bytecode benchmark)"
    if bytecode is None:
        return not_run(title)
    lines = [f"## {title}", "", f"{bytecode['config']['rounds']} rounds.", ""]
    rows = []
    againsts: list[str] = []
    for w in bytecode["workloads"].values():
        againsts += [a for a in w["summary"].get("first_ratio", {}) if a not in againsts]
    for name, w in bytecode["workloads"].items():
        s = w["summary"]
        modules = w["rounds"][0]["counts"].get("modules") if w.get("rounds") else None
        even = s.get("break_even_envs")
        rows.append(
            [
                esc(name),
                "—" if modules is None else f"{modules:,}",
                cell(s.get("compile_sync")),
                cell(s.get("uv_compile")),
                "never" if even is None else f"{even:.1f}",
                cell(s.get("mount")),
                *(
                    ratio_cell(s.get(f"{ph}_ratio", {}).get(a), bold=True)
                    for ph in ("first", "warm")
                    for a in againsts
                ),
            ]
        )
    head = ["workload", "modules", "pkgfs compile, once s", "uv compile, per env s"]
    head += ["break-even envs", "mount s"]
    head += [f"{ph} import pkgfs / {esc(a)}" for ph in ("first", "warm") for a in againsts]
    lines += table(head, rows)
    goals = bytecode.get("goals", [])
    if goals:
        lines += ["", "Goals:", ""]
        lines += [
            f"- {'met' if g['met'] else '**not met**'}: {esc(g['goal'])}: {esc(g['detail'])}"
            for g in goals
        ]
    return [*lines, ""]


def render(reports: Mapping[str, Json], plots: Sequence[tuple[str, str]] = ()) -> str:
    """The whole BENCHMARKS.md text; ``plots`` are (alt text, relative link) to embed."""
    mount = reports.get("mount")
    lines = [
        *header(reports),
        *headline(mount),
        *losses(reports),
        *method(reports),
        *stack_tables(mount),
        *growth(mount, plots),
        *ingest_section(reports.get("ingest")),
        *sync_section(reports.get("sync")),
        *bytecode_section(reports.get("bytecode")),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


# --- README headline -------------------------------------------------------------------------


def headline_block(reports: Mapping[str, Json], markdown_link: str) -> list[str]:
    """A few bullet lines of the run's ratios for README.md, with a link to the report."""
    lines: list[str] = []
    mount = reports.get("mount")
    if mount is not None:
        base, ws = native(mount), stacks(mount)
        files = f"{ws[0]['files']:,} to {ws[-1]['files']:,} files" if ws else "no stack"
        creates = [median(ratio_of(w["summary"], PKGFS, "create")) for w in ws]
        line = (
            f"- Creating an environment: a pkgfs mount takes {span(creates)}x the time of `{base}`"
        )
        rounds = [w.get("rounds") or [] for w in ws]
        if COPY in contenders(mount) and all(rounds):
            # Both ratios share the round's native time: their quotient is pkgfs / copy.
            against_copy = [
                statistics.median(
                    r["ratios"][PKGFS]["create"] / r["ratios"][COPY]["create"] for r in done
                )
                for done in rounds
            ]
            line += f" and {span(against_copy)}x that of `{COPY}`"
        lines.append(f"{line} (medians of per-round ratios, stacks of {files}).")
        for key, unit, what in (
            ("statvfs_bytes", KIB, "Disk per new environment, KiB"),
            ("statvfs_inodes", INODES, "Inodes per new environment"),
        ):
            parts = []
            for c in (PKGFS, base, COPY):
                if c in contenders(mount):
                    values = [median(stat(w["summary"], c, key)) for w in ws]
                    parts.append(f"{span(values, functools.partial(num, unit=unit))} ({c})")
            lines.append(f"- {what}: {', '.join(parts)}.")
        parts = []
        for key in IMPORT_RATIOS:
            values = [median(ratio_of(w["summary"], PKGFS, key)) for w in ws]
            if any(v is not None for v in values):
                parts.append(f"{title_of(key)} {span(values)}x")
        if parts:
            lines.append(f"- Imports through the mount, against `{base}`: {'; '.join(parts)}.")
    ingest = reports.get("ingest")
    if ingest is not None:
        lines.append(
            f"- Filling the store: {ratio_text(ingest['summary']['ratio']['median'])}x the time of"
            " `uv pip install` of the same wheels."
        )
    lines.append(
        f"- Run of {when(reports)}; every figure is a ratio measured in that run. Method, all"
        f" numbers, where pkgfs loses, and plots: [{MARKDOWN_NAME}]({markdown_link})."
    )
    return lines


def replace_headline(text: str, block: Sequence[str]) -> str | None:
    """``text`` with the lines between the headline markers replaced by ``block``.

    None when the markers are not both there, in order: then nothing is to be replaced.
    """
    lines = text.splitlines(keepends=True)
    stripped = [line.strip() for line in lines]
    if HEADLINE_START not in stripped or HEADLINE_END not in stripped:
        return None
    start = stripped.index(HEADLINE_START)
    end = stripped.index(HEADLINE_END, start + 1) if HEADLINE_END in stripped[start + 1 :] else -1
    if end < 0:
        return None
    new = [line + "\n" for line in block]
    return "".join(lines[: start + 1] + new + lines[end:])


def update_readme(readme: Path, block: Sequence[str]) -> bool:
    """Put ``block`` between README's headline markers; False (file untouched) without them."""
    text = readme.read_text(encoding="utf-8")
    new = replace_headline(text, block)
    if new is None:
        return False
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return True


# --- all of it -------------------------------------------------------------------------------


def _relative(path: Path, start: Path) -> str:
    """``path`` relative to the directory ``start``, with forward slashes, for a link."""
    return Path(os.path.relpath(path, start)).as_posix()


def generate(
    reports: Mapping[str, Json], outputs: Outputs, readme: Path | None = None
) -> list[str]:
    """Write the plots and the markdown where ``outputs`` says; update ``readme``'s headline
    when the report is the published one. Returns lines saying what was written."""
    done: list[str] = []
    links: list[tuple[str, str]] = []
    notes: list[str] = []
    mount = reports.get("mount")
    if mount is not None:
        paths, notes = write_plots(mount, outputs.plots)
        links = [(PLOTS[p.name], _relative(p, outputs.markdown.parent)) for p in paths]
        done.append(f"plots: {outputs.plots}")
    text = render(reports, links)
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    outputs.markdown.parent.mkdir(parents=True, exist_ok=True)
    outputs.markdown.write_text(text, encoding="utf-8")
    done.insert(0, f"report: {outputs.markdown}")
    if outputs.published and readme is not None and readme.is_file():
        block = headline_block(reports, _relative(outputs.markdown, readme.parent))
        if update_readme(readme, block):
            done.append(f"headline: {readme}")
        else:
            done.append(f"headline: {readme} has no {HEADLINE_START} ... {HEADLINE_END} markers")
    return done


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; --md and --plots come together or not at all."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("rundir", type=Path, help="a run directory holding the JSON files")
    parser.add_argument("--md", type=Path, help="the markdown file to write")
    parser.add_argument("--plots", type=Path, help="the directory for the PNG plots")
    args = parser.parse_args(argv)
    if (args.md is None) != (args.plots is None):
        parser.error("give both --md and --plots, or neither (then the run decides)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Make the report of one run directory; 1 when it holds no benchmark JSON."""
    args = parse_args(argv)
    reports = load_run(args.rundir)
    if not reports:
        print(f"bench: error: no benchmark JSON in {args.rundir}", file=sys.stderr)
        return 1
    if args.md is not None:
        outputs = Outputs(args.md, args.plots, published=False)
    else:
        outputs = outputs_for(reports, args.rundir)
    for line in generate(reports, outputs, readme=REPO / "README.md"):
        print(f"bench: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
