"""bench/report.py and bench/harness.py on small JSON results shaped like the real ones."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import explain, harness, report, reportdata
from bench.plots import write_plots

REPO = Path(__file__).resolve().parent.parent
R = reportdata.RANGE  # the en dash of "median (min-max)"
PNG = b"\x89PNG\r\n\x1a\n"
MACHINE = {
    "nproc": 2,
    "usable_cpus": 2,
    "cpu_model": "Test CPU",
    "mem_total": "1000 kB",
    "kernel": "6.0-test",
    "python": "3.11.7",
    "python_executable": "/venv/bin/python",
    "pkgfs_version": "0.1.0",
    "uv_version": "uv 0.13.9",
    "workdir": "/bench",
    "workdir_filesystem": "ext4",
}


def spread(median: float, low: float | None = None, high: float | None = None) -> dict[str, float]:
    return {
        "median": median,
        "min": median if low is None else low,
        "max": median if high is None else high,
    }


def contender(create: float, disk: float, inodes: float, **more: Any) -> dict[str, Any]:
    """One contender's summary of one stack, as bench/mount.py's summarize() writes it."""
    entry: dict[str, Any] = {
        "create": spread(create, create * 0.9, create * 1.2),
        "statvfs_bytes": spread(disk, disk, disk * 3),
        "counted_bytes": spread(disk),
        "statvfs_inodes": spread(inodes),
        "counted_inodes": spread(inodes),
        "first_import": spread(0.3, 0.25, 0.35),
        "warm_import": spread(0.4),
        "pyc_import": spread(0.2),
    }
    entry.update(more)
    return entry


def ratios(**values: float | None) -> dict[str, Any]:
    return {k: None if v is None else spread(v, v * 0.9, v * 1.1) for k, v in values.items()}


def mount_stack(name: str, files: int, scale: float) -> dict[str, Any]:
    """One stack of a mount report: pkgfs slower to create (3.0), faster first import (0.6),
    warm imports from source within 5% (1.02), from .pyc not (1.2); pip with null measures."""
    return {
        "name": name,
        "title": f"{name} stack",
        "imports": ["click"],
        "wheels": 12,
        "files": files,
        "summary": {
            "pkgfs": contender(
                0.3 * scale,
                90_112.0,
                15.0,
                so_read=spread(0.05),
                remount=spread(0.2),
                ratio=ratios(
                    create=3.0, first_import=0.6, warm_import=1.02, pyc_import=1.2, so_read=2.5
                ),
            ),
            "uv-hardlink": contender(
                0.1 * scale, 400_000.0 * scale, 100.0 * scale, so_read=spread(0.02)
            ),
            "uv-copy": contender(
                0.2 * scale,
                1e7 * scale,
                800.0 * scale,
                so_read=None,
                ratio=ratios(create=2.0, first_import=1.0, warm_import=1.0, pyc_import=1.0),
            ),
            "pip": {
                **contender(0.9 * scale, 2e7 * scale, 900.0 * scale),
                "warm_import": None,
                "pyc_import": None,
                "ratio": ratios(create=9.0, first_import=0.7, warm_import=None, pyc_import=None),
            },
        },
    }


def mount_report(*, quick: bool = False) -> dict[str, Any]:
    stacks = [mount_stack("cli", 717, 1.0), mount_stack("web", 1979, 2.0)]
    return {
        "benchmark": "mount",
        "timestamp": "2026-11-22T19:20:47+00:00",
        "machine": MACHINE,
        "config": {
            "rounds": 1 if quick else 3,
            "quick": quick,
            "repeats": 2,
            "order": "pkgfs, uv hardlink, uv copy, pip",
            "page_cache": "warm",
            "bytecode": "PYTHONDONTWRITEBYTECODE=1 except the import that writes __pycache__",
            "disk": "statvfs: drop of f_bfree*f_frsize",
            "exclude_newer": "2026-11-01T00:00:00Z",
            "native": "uv-hardlink",
            "contenders": ["pkgfs", "uv-hardlink", "uv-copy", "pip"],
            "contender_commands": {
                "pkgfs": "pkgfs --store <warm store> mount <venv>/lib/pythonX.Y/site-packages",
                "pip": "pip install --no-index --find-links <wheelhouse>",
            },
            "pkgfs_source": "abc123",
            "pkgfs_source_at_end": "abc123",
        },
        "workloads": {w["name"]: w for w in stacks},
        "goals": [
            {"goal": "per-env disk under 1 MiB", "met": True, "detail": "cli 88 KiB"},
            {"goal": "mount flat in the number of files", "met": False, "detail": "x3.75"},
        ],
    }


def ingest_report(ratio: float = 0.89) -> dict[str, Any]:
    pair = {"seconds": spread(1.0), "mb_per_s": spread(400.0), "max_rss_mib": spread(29.0)}
    return {
        "benchmark": "ingest",
        "timestamp": "2026-11-22T17:52:29+00:00",
        "machine": MACHINE,
        "config": {"rounds": 5, "quick": False, "wheels": [{"file": "a.whl", "bytes": 1}]},
        "bytes": {"logical_bytes": 470_583_275, "files": 8147},
        "summary": {"pkgfs": pair, "uv": pair, "ratio": spread(ratio, ratio * 0.9, ratio * 1.1)},
        "goal": {"ratio_at_most": 1.0},
    }


def sync_report() -> dict[str, Any]:
    phase = {"pkgfs": {"seconds": spread(1.9)}, "uv": {"seconds": spread(1.2)}}
    return {
        "benchmark": "sync",
        "timestamp": "2026-11-22T18:13:59+00:00",
        "machine": MACHINE,
        "config": {"rounds": 3, "quick": False, "network": "cold runs download every wheel"},
        "workloads": {
            "web": {
                "wheels": [{"name": "flask"}] * 40,
                "wheel_bytes": 17_697_471,
                "format_check": {"identical": True},
                "summary": {
                    "cold": {**phase, "ratio": spread(1.68, 1.5, 3.3)},
                    "warm": {**phase, "ratio": spread(0.87, 0.8, 1.03)},
                },
            }
        },
    }


def bytecode_report() -> dict[str, Any]:
    against = {"native-pyc": spread(1.51, 1.37, 1.54), "native-nopyc": spread(0.5)}
    return {
        "benchmark": "bytecode",
        "timestamp": "2026-11-22T19:28:47+00:00",
        "machine": MACHINE,
        "config": {"rounds": 3, "quick": False},
        "workloads": {
            "web": {
                "rounds": [{"counts": {"modules": 1648}}],
                "summary": {
                    "compile_sync": spread(2.9),
                    "uv_compile": spread(1.75),
                    "mount": spread(0.29),
                    "first_ratio": against,
                    "warm_ratio": against,
                    "break_even_envs": 1.65,
                },
            }
        },
        "goals": [{"goal": "first import within 10%", "met": False, "detail": "web 1.512"}],
    }


def full_run() -> dict[str, dict[str, Any]]:
    return {
        "ingest": ingest_report(),
        "sync": sync_report(),
        "mount": mount_report(),
        "bytecode": bytecode_report(),
    }


def section(text: str, title: str) -> str:
    """The markdown from ``## title`` up to the next ``## `` heading."""
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : None if end < 0 else end]


def write_run(rundir: Path, reports: dict[str, dict[str, Any]]) -> None:
    rundir.mkdir(parents=True, exist_ok=True)
    for name, data in reports.items():
        (rundir / f"{name}-20261122T192047Z.json").write_text(json.dumps(data))


# --- the markdown ---------------------------------------------------------------------------


def test_losses_list_ratios_above_their_limits_only() -> None:
    text = report.render(full_run())
    losses = section(text, "Where pkgfs loses")
    assert f"| mount | cli | create | **3.00** (2.70{R}3.30)x uv-hardlink |" in losses
    assert "| mount | web | warm import from .pyc | **1.20**" in losses
    assert "| mount | web | largest .so, warm read | **2.50**" in losses
    assert "first import |" not in losses.replace("bytecode | web | first import", "")
    # 1.02 is within the runtime limit of 1.05.
    assert "warm import from source" not in losses
    # From the other benchmarks: sync's cold ratio 1.68 and bytecode's 1.51, not ingest's 0.89.
    assert "| sync | web | cold sync | **1.68**" in losses
    assert "warm sync" not in losses
    assert "| bytecode | web | first import | **1.51**" in losses
    assert "ingest |" not in losses
    # Goals: the unmet ones only.
    assert "mount flat in the number of files" in losses
    assert "per-env disk under 1 MiB" not in losses
    assert "first import within 10%" in losses


def test_ingest_above_one_is_a_loss() -> None:
    losses = section(report.render({"ingest": ingest_report(ratio=1.35)}), "Where pkgfs loses")
    assert "| ingest | on ext4 |" in losses
    assert "**no slower than uv's unpacking**" in losses


def test_missing_benchmarks_say_not_run() -> None:
    text = report.render({"mount": mount_report()})
    for title in ("Filling a store", "Syncing from a lock", "Shared bytecode"):
        heading = next(line for line in text.splitlines() if line.startswith(f"## {title}"))
        assert "Not run in this run." in section(text, heading.removeprefix("## "))
    text = report.render({"ingest": ingest_report()})
    assert "The mount benchmark was not run in this run." in section(text, "Headline")
    assert "Not run in this run." in section(text, "Growth with the number of files")


def test_stack_tables_show_every_measure_and_dashes_for_unmeasured() -> None:
    text = report.render(full_run())
    stacks = section(text, "Creating and using an environment (mount benchmark)")
    header = f"| median (min{R}max) | pkgfs | uv-hardlink | uv-copy | pip |"
    assert header in stacks
    row = next(line for line in stacks.splitlines() if line.startswith("| largest .so, warm read"))
    assert row.endswith("| — | — |")  # null for uv-copy, absent for pip
    row = next(
        line for line in stacks.splitlines() if line.startswith("| warm import from .pyc, s")
    )
    assert row.endswith("| — |")
    assert f"| per-env disk, statvfs, KiB | 88 (88{R}264) |" in stacks
    assert "| per-env inodes, counted, inodes | 15 |" in stacks
    ratio = next(line for line in stacks.splitlines() if line.startswith("| create |"))
    assert (
        ratio
        == f"| create | 3.00 (2.70{R}3.30) | baseline | 2.00 (1.80{R}2.20) | 9.00 (8.10{R}9.90) |"
    )


def test_headline_method_and_growth_come_from_the_data() -> None:
    text = report.render(full_run())
    headline = section(text, "Headline")
    assert f"| cli | 717 | **3.00** (2.70{R}3.30) | 88 · 391 · 9,766 | 15 · 100 · 800 |" in headline
    method = section(text, "Method")
    assert "| mount | 2 of 2 (Test CPU) |" in method
    # Commands and notes are escaped: no HTML tag, no accidental bold.
    assert "mount &lt;venv&gt;/lib/pythonX.Y/site-packages" in method
    assert "\\_\\_pycache\\_\\_" in method
    assert "| pip | pip install --no-index --find-links &lt;wheelhouse&gt; |" in method
    growth = section(text, "Growth with the number of files")
    # uv-hardlink's create medians: 0.1 s at 717 files and 0.2 s at 1,979, +0.792 s per 10k.
    assert "| per 10,000 files | +2.38 | +0.792 | +1.58 | +7.13 |" in growth


def test_old_mount_json_without_contender_list() -> None:
    old = mount_report()
    del old["config"]["contenders"], old["config"]["contender_commands"], old["config"]["native"]
    for w in old["workloads"].values():
        del w["summary"]["pip"]
    text = report.render({"mount": old})
    assert f"| median (min{R}max) | pkgfs | uv-hardlink | uv-copy |" in text


# --- the plots and the files ------------------------------------------------------------------


def test_plots_are_pngs_and_the_markdown_links_them(tmp_path: Path) -> None:
    reports = full_run()
    outputs = reportdata.Outputs(
        tmp_path / "doc" / "B.md", tmp_path / "doc" / "img", published=False
    )
    report.generate(reports, outputs)
    for name in ("creation.png", "disk.png", "inodes.png", "imports.png"):
        data = (outputs.plots / name).read_bytes()
        assert data.startswith(PNG)
        assert f"](img/{name})" in outputs.markdown.read_text()


def test_log_plots_leave_out_values_at_or_below_zero(tmp_path: Path) -> None:
    mount = mount_report()
    mount["workloads"]["cli"]["summary"]["pkgfs"]["statvfs_bytes"] = spread(-4096.0, -8192.0, 0.0)
    paths, notes = write_plots(mount, tmp_path)
    assert all(p.read_bytes().startswith(PNG) for p in paths)
    assert len(notes) == 1
    assert "log scale" in notes[0]


def test_location_rule(tmp_path: Path) -> None:
    rundir, repo = tmp_path / "run", tmp_path / "repo"
    full = reportdata.outputs_for(full_run(), rundir, repo)
    assert full == reportdata.Outputs(repo / "BENCHMARKS.md", repo / "bench" / "plots", True)
    quick = full_run()
    quick["mount"] = mount_report(quick=True)
    partial = {"mount": mount_report()}
    for reports in (quick, partial):
        assert reportdata.outputs_for(reports, rundir, repo) == reportdata.Outputs(
            rundir / "BENCHMARKS.md", rundir / "plots", False
        )


def test_published_report_updates_the_readme_between_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "# pkgfs\n\nintro\n<!-- bench:headline:start -->\nold headline\n"
        "<!-- bench:headline:end -->\n\nrest\n"
    )
    outputs = reportdata.outputs_for(full_run(), tmp_path / "run", tmp_path)
    done = report.generate(full_run(), outputs, readme=readme)
    assert any(line.startswith("headline:") for line in done)
    text = readme.read_text()
    before, _, after = text.partition("<!-- bench:headline:start -->\n")
    block, _, after = after.partition("<!-- bench:headline:end -->\n")
    assert before == "# pkgfs\n\nintro\n"
    assert after == "\nrest\n"
    assert "old headline" not in block
    assert "3.00x the time of `uv-hardlink`" in block
    assert "[BENCHMARKS.md](BENCHMARKS.md)" in block
    assert (tmp_path / "bench" / "plots" / "disk.png").read_bytes().startswith(PNG)
    assert "](bench/plots/disk.png)" in (tmp_path / "BENCHMARKS.md").read_text()


def test_readme_without_both_markers_is_untouched(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    for text in ("# pkgfs\n\nno markers\n", "a\n<!-- bench:headline:start -->\nb\n"):
        readme.write_text(text)
        assert report.update_readme(readme, ["- new"]) is False
        assert readme.read_text() == text
    reversed_markers = "<!-- bench:headline:end -->\n<!-- bench:headline:start -->\n"
    assert report.replace_headline(reversed_markers, ["- new"]) is None


def test_load_run_takes_the_newest_file_per_benchmark(tmp_path: Path) -> None:
    old, new = ingest_report(ratio=2.0), ingest_report(ratio=0.5)
    (tmp_path / "ingest-20261122T100000Z.json").write_text(json.dumps(old))
    (tmp_path / "ingest-20261122T110000Z.json").write_text(json.dumps(new))
    loaded = reportdata.load_run(tmp_path)
    assert list(loaded) == ["ingest"]
    assert loaded["ingest"]["summary"]["ratio"]["median"] == 0.5


def run(argv: list[str], cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with matplotlib's config in ``tmp_path``; its output as text."""
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def test_report_command_line(tmp_path: Path) -> None:
    rundir = tmp_path / "run"
    quick = copy.deepcopy(full_run())
    quick["mount"] = mount_report(quick=True)
    write_run(rundir, quick)
    md, plots = tmp_path / "out" / "B.md", tmp_path / "out" / "plots"
    argv = [sys.executable, "-m", "bench.report", str(rundir), "--md", str(md)]
    done = run([*argv, "--plots", str(plots)], REPO, tmp_path)
    assert done.returncode == 0, done.stderr
    assert md.read_text().startswith("# pkgfs benchmarks\n")
    assert (plots / "imports.png").read_bytes().startswith(PNG)
    # As a script from elsewhere, without --md and --plots: a quick run's report goes into
    # its run directory.
    done = run([sys.executable, str(REPO / "bench" / "report.py"), str(rundir)], tmp_path, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"bench: report: {rundir / 'BENCHMARKS.md'}" in done.stdout
    assert (rundir / "plots" / "creation.png").read_bytes().startswith(PNG)
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run([sys.executable, "-m", "bench.report", str(empty)], REPO, tmp_path)
    assert done.returncode == 1
    assert done.stderr == f"bench: error: no benchmark JSON in {empty}\n"


# --- the harness ------------------------------------------------------------------------------

FAKE_BENCHMARK = """\
import argparse, json, pathlib, sys
parser = argparse.ArgumentParser()
parser.add_argument("--out", type=pathlib.Path)
parser.add_argument("--quick", action="store_true")
parser.add_argument("--rounds", type=int)
args = parser.parse_args()
name = pathlib.Path(__file__).stem
data = json.loads(pathlib.Path(__file__).with_suffix(".data").read_text())
data["config"]["quick"] = args.quick
data["config"]["rounds"] = args.rounds
(args.out / f"{name}-20261122T000000Z.json").write_text(json.dumps(data))
print(f"{name} ran", flush=True)
sys.exit(int(data.get("exit", 0)))
"""


def fake_benchmarks(tmp_path: Path, reports: dict[str, dict[str, Any]]) -> Path:
    """Scripts that take --out, --quick and --rounds (not --workdir) and write ``reports``."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for name, data in reports.items():
        (scripts / f"{name}.py").write_text(FAKE_BENCHMARK)
        (scripts / f"{name}.data").write_text(json.dumps(data))
    return scripts


def test_harness_runs_in_order_and_passes_only_accepted_options(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    scripts = fake_benchmarks(tmp_path, full_run())
    rundir = tmp_path / "run"
    rundir.mkdir()
    args = harness.parse_args(["--quick", "--rounds", "2", "--workdir", str(tmp_path)])
    assert harness.run_all(args.only, rundir, args, scripts) is None
    out, err = capfd.readouterr()
    assert out.splitlines() == ["ingest ran", "sync ran", "mount ran", "bytecode ran"]
    assert "mount.py takes no --workdir" in err
    loaded = reportdata.load_run(rundir)
    assert all(r["config"] == {**r["config"], "quick": True, "rounds": 2} for r in loaded.values())
    assert harness.make_report(rundir) is None
    assert (rundir / "BENCHMARKS.md").is_file()


def test_harness_stops_at_the_first_failure(tmp_path: Path) -> None:
    reports = full_run()
    reports["sync"]["exit"] = 3
    scripts = fake_benchmarks(tmp_path, reports)
    rundir = tmp_path / "run"
    rundir.mkdir()
    args = harness.parse_args(["--only", "bytecode,sync,ingest"])
    assert args.only == ["ingest", "sync", "bytecode"]
    error = harness.run_all(args.only, rundir, args, scripts)
    assert error is not None
    assert error.startswith("sync failed with exit status 3")
    assert "\n" not in error
    assert not list(rundir.glob("bytecode-*.json"))


def test_harness_rejects_bad_arguments() -> None:
    for argv in (["--only", "ingest,nope"], ["--report-only", ".", "--quick"], ["--rounds", "0"]):
        with pytest.raises(SystemExit):
            harness.parse_args(argv)


def test_run_refuses_to_run_as_non_root(tmp_path: Path) -> None:
    argv = [str(REPO / "bench" / "run"), "--quick"]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv to drop root")
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == "bench/run: run it as root (FUSE mounts, apt-get, drop_caches)"


def test_harness_defaults_run_everything() -> None:
    args = harness.parse_args([])
    assert args.only == list(reportdata.BENCHMARKS)
    assert args.quick is False
    assert args.rounds is None
    assert args.workdir is None


def test_headline_compares_with_uv_copy_round_by_round() -> None:
    mount = mount_report()
    for w in mount["workloads"].values():
        # Per round, pkgfs/native and copy/native: their quotient is pkgfs/copy.
        w["rounds"] = [
            {"ratios": {"pkgfs": {"create": 3.0}, "uv-copy": {"create": 6.0}}},
            {"ratios": {"pkgfs": {"create": 2.0}, "uv-copy": {"create": 8.0}}},
            {"ratios": {"pkgfs": {"create": 1.0}, "uv-copy": {"create": 1.0}}},
        ]
    block = "\n".join(report.headline_block({"mount": mount}, "BENCHMARKS.md"))
    assert "3.00x the time of `uv-hardlink` and 0.50x that of `uv-copy`" in block
    assert f"- Inodes per new environment: 15 (pkgfs), 100{R}200 (uv-hardlink)" in block
    # Without per-round ratios (older files), the uv copy comparison is left out.
    plain = "\n".join(report.headline_block({"mount": mount_report()}, "BENCHMARKS.md"))
    assert "that of `uv-copy`" not in plain


def test_why_explains_only_the_losses_of_the_run() -> None:
    losses = section(report.render(full_run()), "Where pkgfs loses")
    why = losses[losses.index("### Why") :]
    assert f"- {explain.MOUNT_FIXED_COST}" in why  # create lost (3.00)
    assert f"- {explain.READS}" in why  # the warm .so read lost (2.50)
    assert f"- {explain.COLD_SYNC}" in why  # the cold sync lost
    # Warm imports from source are within 5% in the data: no metadata round-trip bullet, and
    # pkgfs's largest disk figure is 3x its median, not the first environment's view write.
    assert explain.ROUND_TRIPS not in why
    assert explain.SHARED_VIEW not in why
    mount = mount_report()
    mount["workloads"]["cli"]["summary"]["pkgfs"]["statvfs_bytes"] = spread(90_112.0, 88_000, 1e7)
    why = section(report.render({"mount": mount}), "Where pkgfs loses")
    assert f"- {explain.SHARED_VIEW}" in why


def test_no_loss_no_why() -> None:
    losses = section(report.render({"ingest": ingest_report(ratio=0.8)}), "Where pkgfs loses")
    assert "No ratio above its limit in this run." in losses
    assert "### Why" not in losses
