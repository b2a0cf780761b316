"""What the benchmark report is made of: one run's JSON files, read, and their numbers as text.

The reading of a run directory and the rule for where its report goes (``load_run``,
``is_full``, ``Outputs``, ``outputs_for``); numbers, ratios and spreads as markdown text
(``Unit``, ``num``, ``cell``, ``ratio_cell``, ``table``, ...); and the shape of the mount
benchmark's JSON (``contenders``, ``native``, ``stacks``, ``measure_keys``, ``stat``,
``ratio_of``, ``median``, ...). bench.plots and bench.report build on it; it imports neither,
and nothing here draws or writes a file.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import REPO

BENCHMARKS = ("ingest", "sync", "mount", "bytecode")  # also the order the harness runs them
PKGFS = "pkgfs"
OLD_CONTENDERS = ("pkgfs", "uv-hardlink", "uv-copy")  # mount JSON without config.contenders
OLD_NATIVE = "uv-hardlink"
MARKDOWN_NAME = "BENCHMARKS.md"
PUBLISHED_PLOTS = Path("bench") / "plots"
# Row titles of the mount measures, in the order the per-stack tables show them. Keys not
# listed here are shown too, after these, under their own name.
MEASURES: dict[str, str] = {
    "create": "create",
    "remount": "remount (pkgfs: the same venv, view saved)",
    "statvfs_bytes": "per-env disk, statvfs",
    "counted_bytes": "per-env disk, counted",
    "statvfs_inodes": "per-env inodes, statvfs",
    "counted_inodes": "per-env inodes, counted",
    "first_import": "first import",
    "warm_import": "warm import from source",
    "pyc_write": "import that may write .pyc",
    "used_statvfs_bytes": "disk used by then, statvfs",
    "used_statvfs_inodes": "inodes used by then, statvfs",
    "pyc_import": "warm import from .pyc",
    "walk": "walk + lstat",
    "walk_per_entry": "walk + lstat per entry",
    "pip_list": "pip list",
    "metadata_scan": "importlib.metadata scan",
    "so_read_first": "largest .so, first read",
    "so_read": "largest .so, warm read",
    "cold_import": "import after dropping caches",
    "cold_first_import": "first import after dropping caches",
    "cold_so_read": "largest .so read after dropping caches",
    "create_max_rss_mib": "create: peak RSS",
    "daemon_max_rss_mib": "pkgfs daemon peak RSS",
}
IMPORT_RATIOS = ("first_import", "warm_import", "pyc_import")  # imports.png's panels
RANGE = "\u2013"  # the en dash between a range's ends, as in "median (min\u2013max)"

Json = Mapping[str, Any]


# --- loading and where the report goes -----------------------------------------------------


def load_run(rundir: Path) -> dict[str, dict[str, Any]]:
    """The newest ``<benchmark>-<timestamp>.json`` per benchmark in ``rundir``, by name.

    Benchmarks without a file are absent from the result.
    """
    found: dict[str, dict[str, Any]] = {}
    for name in BENCHMARKS:
        # The timestamps in the names sort as they happened; the newest wins.
        paths = sorted(rundir.glob(f"{name}-*.json"))
        if paths:
            found[name] = json.loads(paths[-1].read_text())
    return found


def is_full(reports: Mapping[str, Json]) -> bool:
    """True when every benchmark ran and none with ``--quick``: a run worth publishing."""
    if set(reports) != set(BENCHMARKS):
        return False
    return not any(r.get("config", {}).get("quick") for r in reports.values())


@dataclass(frozen=True)
class Outputs:
    """Where one report goes."""

    markdown: Path
    plots: Path
    published: bool  # the repository's own report: README's headline follows it


def outputs_for(reports: Mapping[str, Json], rundir: Path, repo: Path = REPO) -> Outputs:
    """The location rule: a full run is published in ``repo``, any other stays in ``rundir``.

    Trying the harness (``--quick``, ``--only``) thereby never overwrites the published report.
    """
    if is_full(reports):
        return Outputs(repo / MARKDOWN_NAME, repo / PUBLISHED_PLOTS, published=True)
    return Outputs(rundir / MARKDOWN_NAME, rundir / "plots", published=False)


# --- numbers as text -------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """How a measure is shown: its unit's label, the raw value's divisor, a number format."""

    label: str
    scale: float
    fmt: str | None  # None: digits chosen by magnitude (seconds)


SECONDS = Unit("s", 1.0, None)
KIB = Unit("KiB", 1024.0, ",.0f")
INODES = Unit("inodes", 1.0, ",.0f")


def unit_of(key: str) -> Unit:
    """The unit of a mount measure, from its key: bytes as KiB, inodes as counts, else s."""
    if key == "walk_per_entry":
        return Unit("µs", 1e-6, ".1f")
    if key.endswith("_bytes"):
        return KIB
    if key.endswith("_inodes"):
        return INODES
    if key.endswith("_mib"):
        return Unit("MiB", 1.0, ",.1f")
    return SECONDS


def _digits(value: float, unit: Unit) -> str:
    """The format for ``value``; seconds get three decimals below one second, else two."""
    if unit.fmt is not None:
        return unit.fmt
    return ".3f" if abs(value) < 1.0 else ",.2f"


def num(value: float | None, unit: Unit = SECONDS) -> str:
    """One value in ``unit`` ("—" for a value that was not measured)."""
    if value is None:
        return "—"
    scaled = value / unit.scale
    return format(scaled, _digits(scaled, unit))


def ratio_text(value: float | None) -> str:
    """A ratio: two decimals, or two significant digits when it is far below one."""
    if value is None:
        return "—"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:.2f}" if abs(value) >= 0.095 else f"{value:.2g}"


def is_spread(value: object) -> bool:
    """True for a ``{"median", "min", "max"}`` dict of numbers, as common.spread writes."""
    if not isinstance(value, Mapping):
        return False
    return all(isinstance(value.get(k), int | float) for k in ("median", "min", "max"))


def cell(value: object, unit: Unit = SECONDS) -> str:
    """A spread as "median (min-max)" in ``unit``; "—" when it was not measured."""
    if not is_spread(value):
        return "—"
    assert isinstance(value, Mapping)
    scaled = {k: value[k] / unit.scale for k in ("median", "min", "max")}
    fmt = _digits(scaled["median"], unit)
    if scaled["min"] == scaled["max"]:
        return format(scaled["median"], fmt)
    lo, hi = format(scaled["min"], fmt), format(scaled["max"], fmt)
    return f"{format(scaled['median'], fmt)} ({lo}{RANGE}{hi})"


def ratio_cell(value: object, *, bold: bool = False) -> str:
    """A spread of ratios as "median (min-max)", the median optionally in bold."""
    if not is_spread(value):
        return "—"
    assert isinstance(value, Mapping)
    med = ratio_text(value["median"])
    med = f"**{med}**" if bold else med
    if value["min"] == value["max"]:
        return med
    return f"{med} ({ratio_text(value['min'])}{RANGE}{ratio_text(value['max'])})"


def span(values: Iterable[float | None], show: Callable[[float], str] = ratio_text) -> str:
    """The range of some values as "a-b" (or "a" when they agree); "—" when there are none."""
    known = [v for v in values if v is not None]
    if not known:
        return "—"
    lo, hi = show(min(known)), show(max(known))
    return lo if lo == hi else f"{lo}{RANGE}{hi}"


def esc(text: object) -> str:
    """Text from a JSON file made safe for markdown: no HTML tags, emphasis or table breaks."""
    out = str(text)
    for char in "\\`*_[]|":
        out = out.replace(char, "\\" + char)
    return out.replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def table(header: Sequence[str], rows: Iterable[Sequence[str]], text: int = 1) -> list[str]:
    """A markdown table: its first ``text`` columns left-aligned, the numbers right-aligned."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join([":---"] * text + ["---:"] * (len(header) - text)) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """The least-squares slope of ys over xs; None with fewer than two distinct xs."""
    if len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    num_ = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return num_ / sum((x - mx) ** 2 for x in xs)


def when(reports: Mapping[str, Json]) -> str:
    """The run's date: from its first benchmark's timestamp to its last one's, in UTC."""
    stamps = sorted(
        datetime.fromisoformat(r["timestamp"]) for r in reports.values() if r.get("timestamp")
    )
    if not stamps:
        return "unknown"
    first, last = stamps[0], stamps[-1]
    text = first.strftime("%Y-%m-%d %H:%M")
    if last.date() != first.date():
        return f"{text} to {last.strftime('%Y-%m-%d %H:%M')} UTC"
    return text + (f" to {last.strftime('%H:%M')}" if last != first else "") + " UTC"


# --- the mount benchmark's shape -------------------------------------------------------------


def contenders(mount: Json) -> list[str]:
    """The mount JSON's contenders, in its order, limited to those its summaries hold."""
    listed = list(mount.get("config", {}).get("contenders") or OLD_CONTENDERS)
    present: list[str] = []
    for w in mount["workloads"].values():
        present += [c for c in w["summary"] if c not in present]
    return [c for c in listed if c in present] + [c for c in present if c not in listed]


def native(mount: Json) -> str:
    """The contender the mount benchmark's ratios are taken against."""
    return str(mount.get("config", {}).get("native") or OLD_NATIVE)


def stacks(mount: Json) -> list[Json]:
    """The mount workloads, smallest first (by the store's file count)."""
    return sorted(mount["workloads"].values(), key=lambda w: w["files"])


def measure_keys(summaries: Iterable[Json]) -> list[str]:
    """Every measure some contender has as a spread: the known ones in order, then the rest."""
    seen: list[str] = []
    for summary in summaries:
        for key, value in summary.items():
            if key not in seen and is_spread(value):
                seen.append(key)
    known = [k for k in MEASURES if k in seen]
    return known + sorted(k for k in seen if k not in MEASURES)


def ratio_keys(summaries: Iterable[Json]) -> list[str]:
    """Every measure with a ratio to native in some contender's summary, in table order."""
    seen: set[str] = set()
    for summary in summaries:
        ratios = summary.get("ratio") or {}
        seen.update(k for k, v in ratios.items() if is_spread(v))
    return [k for k in MEASURES if k in seen] + sorted(seen - set(MEASURES))


def title_of(key: str) -> str:
    """A measure's row title."""
    return MEASURES.get(key, key.replace("_", " "))


def stat(summary: Json, contender: str, key: str) -> Json | None:
    """``summary[contender][key]`` when it is a spread, else None (absent or not measured)."""
    value = (summary.get(contender) or {}).get(key)
    return value if is_spread(value) else None


def ratio_of(summary: Json, contender: str, key: str) -> Json | None:
    """``summary[contender]["ratio"][key]`` when it is a spread, else None."""
    value = ((summary.get(contender) or {}).get("ratio") or {}).get(key)
    return value if is_spread(value) else None


def median(value: Json | None) -> float | None:
    """The median of a spread, None for none."""
    return None if value is None else float(value["median"])


def growth_series(mount: Json, contender: str, key: str) -> list[tuple[float, Json]]:
    """(files, spread) of one contender's measure for every stack that has it, by files."""
    return [
        (float(w["files"]), spread)
        for w in stacks(mount)
        if (spread := stat(w["summary"], contender, key)) is not None
    ]
