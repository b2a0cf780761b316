"""The report's PNG plots of the mount benchmark, drawn with matplotlib.

``write_plots`` draws, from the mount JSON, how creation time, per-env disk and inodes, and
the import ratios to native grow with the number of files; bench.report embeds them in
BENCHMARKS.md with the alt texts of ``PLOTS``. The JSON is read through bench.reportdata.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

# Before anything draws: no display on the machines that run the benchmarks.
matplotlib.use("Agg")
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator

from bench.reportdata import (
    IMPORT_RATIOS,
    PKGFS,
    RANGE,
    Json,
    contenders,
    growth_series,
    native,
    ratio_of,
    stacks,
    title_of,
    unit_of,
)

PLOT_SIZE = (8.0, 5.0)  # inches
PLOT_DPI = 110
MARKERS = "osD^vPX*"


# --- plots -----------------------------------------------------------------------------------

PLOTS = {
    "creation.png": "creation time against the number of files",
    "disk.png": "per-env disk against the number of files",
    "inodes.png": "per-env inodes against the number of files",
    "imports.png": "import ratios to native against the number of files",
}


def _errorbar(
    ax: Axes, points: Sequence[tuple[float, Json]], scale: float, i: int, label: str, *, log_y: bool
) -> bool:
    """One contender's medians with min-max bars; on a log y, values <= 0 are left out.

    Returns whether some point or bar had to be left out.
    """
    xs, ys, lo, hi, dropped = [], [], [], [], False
    for x, p in points:
        med, mn, mx = (float(p[k]) / scale for k in ("median", "min", "max"))
        if log_y and med <= 0:
            dropped = True
            continue
        if log_y and mn <= 0:
            dropped, mn = True, med  # a bar to zero cannot be drawn on a log scale
        xs.append(x)
        ys.append(med)
        lo.append(max(med - mn, 0.0))
        hi.append(max(mx - med, 0.0))
    if xs:
        ax.errorbar(
            xs,
            ys,
            yerr=[lo, hi],
            # Colors and markers follow the contender's place in the JSON's list, so that a
            # contender looks the same in every plot, also where native has no points.
            color=f"C{i % 10}",
            marker=MARKERS[i % len(MARKERS)],
            capsize=4,
            linewidth=2.2 if label == PKGFS else 1.4,
            label=label,
        )
    return dropped


def _files_axis(ax: Axes, mount: Json) -> None:
    """A log x axis of file counts, ticked at each stack with its name."""
    ax.set_xscale("log")
    ws = stacks(mount)
    ax.set_xticks([float(w["files"]) for w in ws])
    ax.set_xticklabels([f"{w['name']}\n{w['files']:,}" for w in ws])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("files in the environment (log scale)")
    ax.grid(True, which="major", alpha=0.35)


def _thousands(value: float, _pos: int) -> str:
    """A tick label with thousands separators, decimals only below 10."""
    return f"{value:,.0f}" if abs(value) >= 10 or value == 0 else f"{value:g}"


def _figure(size: tuple[float, float] = PLOT_SIZE) -> Figure:
    """A new figure, outside pyplot's global state, so nothing needs closing."""
    return Figure(figsize=size, dpi=PLOT_DPI)


def _growth_plot(
    mount: Json, key: str, title: str, ylabel: str, *, log_y: bool
) -> tuple[Figure, bool]:
    """One measure of every contender against the number of files."""
    fig = _figure()
    ax = fig.add_subplot()
    unit, dropped = unit_of(key), False
    for i, c in enumerate(contenders(mount)):
        points = growth_series(mount, c, key)
        dropped |= _errorbar(ax, points, unit.scale, i, c, log_y=log_y)
    _files_axis(ax, mount)
    if log_y:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
        ax.grid(True, which="minor", axis="y", alpha=0.15)
    else:
        ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small", ncols=2)
    fig.tight_layout()
    return fig, dropped


def _imports_plot(mount: Json) -> Figure:
    """Per import measure, a panel of each contender's ratio to native against files."""
    base = native(mount)
    keys = [
        k
        for k in IMPORT_RATIOS
        if any(ratio_of(w["summary"], c, k) for w in stacks(mount) for c in contenders(mount))
    ]
    keys = keys or ["first_import"]
    fig = _figure((4.2 * len(keys), PLOT_SIZE[1]))
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys, strict=True):
        for i, c in enumerate(contenders(mount)):
            points = [
                (float(w["files"]), r)
                for w in stacks(mount)
                if (r := ratio_of(w["summary"], c, key))
            ]
            _errorbar(ax, points, 1.0, i, c, log_y=False)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label=f"{base} = 1")
        _files_axis(ax, mount)
        ax.set_title(title_of(key))
        ax.set_ylabel(f"time / {base} time")
    # One legend for all panels, below them, where it hides no point.
    legend: dict[str, Artist] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    columns = min(len(legend), 5)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncols=columns)
    fig.suptitle(f"Import time as a ratio to {base}, per round (median, min{RANGE}max)")
    rows = -(-len(legend) // columns)
    fig.tight_layout(rect=(0.0, 0.04 + 0.05 * rows, 1.0, 1.0))
    return fig


def write_plots(mount: Json, directory: Path) -> tuple[list[Path], list[str]]:
    """Write the four PNG plots of the mount benchmark into ``directory``.

    Returns the files and notes for the text (points a log scale could not show).
    """
    directory.mkdir(parents=True, exist_ok=True)
    base = native(mount)
    notes: list[str] = []
    creation, _ = _growth_plot(
        mount,
        "create",
        f"Creating an environment (median, min{RANGE}max; {base} is native)",
        "creation time, s (log scale)",
        log_y=True,
    )
    disk, dropped_disk = _growth_plot(
        mount,
        "statvfs_bytes",
        f"Disk per new environment (statvfs; median, min{RANGE}max)",
        "per-env disk, KiB (log scale)",
        log_y=True,
    )
    inodes, dropped_inodes = _growth_plot(
        mount,
        "statvfs_inodes",
        f"Inodes per new environment (statvfs; median, min{RANGE}max)",
        "per-env inodes (log scale)",
        log_y=True,
    )
    if dropped_disk or dropped_inodes:
        notes.append(
            "Some disk or inode figures were zero or negative (another writer on the"
            " filesystem): a log scale cannot show them, so those points or bars are left out."
        )
    figures = {"creation.png": creation, "disk.png": disk, "inodes.png": inodes}
    figures["imports.png"] = _imports_plot(mount)
    paths = []
    for name, fig in figures.items():
        path = directory / name
        fig.savefig(path, dpi=PLOT_DPI)
        paths.append(path)
    return paths, notes
