"""bench/report.py and bench/mount.py's summary on small results shaped like the real ones."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bench import mount, report

MACHINE = {
    "cpus": 2,
    "cpu_model": "Test CPU",
    "mem_total": "1000 kB",
    "kernel": "6.0-test",
    "python": "3.11.7",
    "uv": "uv 0.13.9",
    "hyperfine": "hyperfine 1.15.0",
    "pkgfs_commit": "abc1234",
}


def a_round(ratios: dict[str, float], requests: int | None, mode: str | None) -> dict[str, Any]:
    """One round as bench/mount.py's run_round returns it: native takes 1 s for every measure
    and pkgfs ``ratios[measure]`` s; creation 0.3 s against 0.2 s."""
    created = {
        c: {"create": t, "statvfs_bytes": b, "statvfs_inodes": i, "counted_bytes": b,
            "counted_inodes": i}
        for c, t, b, i in (("pkgfs", 0.3, 73_728, 18), ("native", 0.2, 5_890_048, 1_211),
                           ("uv-copy", 2.0, 599_457_792, 12_532))
    }  # fmt: skip
    times = {m: {"pkgfs": r, "native": 1.0} for m, r in ratios.items()}
    return {
        "created": created,
        "times": times,
        "ratios": {**ratios, "create": 1.5},
        "requests": dict.fromkeys(mount.WARM, requests),
        "mode": mode,
        "daemon_peak_rss_mib": 46.0,
    }


def a_run(rounds_ratios: list[dict[str, float]], requests: int | None = 400) -> dict[str, Any]:
    mode = None if requests is None else "no-open"
    rounds = [a_round(r, requests, mode) for r in rounds_ratios]
    stack = {
        "name": "sci",
        "title": "scientific stack",
        "imports": ["numpy", "pandas"],
        "wheels": 28,
        "files": 11_321,
        "rounds": rounds,
        "summary": mount.summarize(rounds),
    }
    return {
        "started": "2026-12-05T18:00:00+00:00",
        "finished": "2026-12-05T18:20:00+00:00",
        "quick": True,
        "load": [1.5, 2.25],
        "machine": MACHINE,
        "config": {"rounds": len(rounds), "runs": 5, "cold_runs": 3},
        "commands": {"pkgfs": "pkgfs mount ...", "native": "uv pip sync ...", "uv-copy": "..."},
        "measures": {m: f"cmd {m}" for m in mount.MEASURES},
        "stacks": [stack],
    }


# walk loses (goal 1.2), warm import meets its goal exactly (1.05), the metadata scan loses in
# the median though one round is under its goal, the cold import wins.
ROUNDS = [
    {"walk": 8.0, "warm_import": 1.05, "metadata": 1.3, "cold_import": 0.9},
    {"walk": 9.0, "warm_import": 1.00, "metadata": 1.0, "cold_import": 1.0},
    {"walk": 7.0, "warm_import": 1.10, "metadata": 1.2, "cold_import": 1.1},
]


def test_summary_is_the_median_of_per_round_ratios() -> None:
    summary = mount.summarize([a_round(r, 400, "open") for r in ROUNDS])
    assert summary["ratios"]["walk"] == {"median": 8.0, "min": 7.0, "max": 9.0}
    assert summary["ratios"]["metadata"]["median"] == 1.2
    assert summary["times"]["walk"]["native"] == {"median": 1.0, "min": 1.0, "max": 1.0}
    assert summary["requests"]["warm_import"]["median"] == 400
    assert summary["modes"] == ["open"]
    assert summary["created"]["uv-copy"]["statvfs_inodes"]["median"] == 12_532


def test_not_every_round_has_the_cold_measure() -> None:
    """Without drop_caches a round has no cold import: the summary leaves it out."""
    rounds = [a_round({k: v for k, v in r.items() if k != "cold_import"}, 1, "x") for r in ROUNDS]
    summary = mount.summarize(rounds)
    assert "cold_import" not in summary["times"]
    assert "cold_import" not in summary["ratios"]
    run = a_run(ROUNDS)
    run["stacks"][0]["summary"] = summary
    rows = goal_lines(report.render(run))
    assert rows["first import after dropping caches"].endswith("| **n/a** | not measured |")


def goal_lines(text: str) -> dict[str, str]:
    """The goals table's rows, by measure title."""
    rows = [line for line in text.splitlines() if line.startswith("| sci |") and "goal" not in line]
    return {row.split(" | ")[1]: row for row in rows if row.count("|") == 6}


def test_goals_are_judged_on_the_medians() -> None:
    text = report.render(a_run(ROUNDS))
    rows = goal_lines(text)
    assert rows["`find` + lstat walk"].endswith("| **8.00** | **not met** |")
    assert rows["warm import"].endswith("| **1.05** | met |")  # at the goal is within it
    assert rows["`importlib.metadata` scan"].endswith("| **1.20** | **not met** |")
    assert rows["first import after dropping caches"].endswith("| **1.00** | met |")


def test_where_pkgfs_still_loses_names_every_loss_and_no_win() -> None:
    text = report.render(a_run(ROUNDS))
    section = text.split("## Where pkgfs still loses")[1].split("\n## ")[0]
    assert "**sci, `find` + lstat walk: 8.00x native**" in section
    assert "**sci, `importlib.metadata` scan: 1.20x native**" in section
    assert "**sci, create: 1.50x native**" in section
    assert "warm import:" not in section
    assert "dropping caches:" not in section
    assert "Why: every lookup" in section
    assert "**sci, memory: a daemon of 46.0 MiB peak RSS" in section


def test_requests_and_mode_are_reported_and_absent_ones_say_so() -> None:
    text = report.render(a_run(ROUNDS))
    assert "the mount in `no-open` mode" in text
    assert "| sci | 400 | 400 | 400 |" in text
    old = report.render(a_run(ROUNDS, requests=None))
    assert "| sci | n/a | n/a | n/a |" in old
    assert "`None` mode" in old
    assert "n/a daemon requests per warm import" in "\n".join(
        report.headline_block(a_run(ROUNDS, requests=None))
    )


def test_the_page_states_the_shared_machine_and_the_disk() -> None:
    text = report.render(a_run(ROUNDS), earlier="### Filling a store\n\nkept\n")
    assert "**The machine was not reserved for the run**" in text
    assert "load average 1.50 at the start, 2.25 at the end" in text
    assert "| pkgfs | 0.300 | **1.50** | 72 | 72 | 18 |" in text
    assert "| uv-copy | 2.000 |  | 585,408 | 585,408 | 12,532 |" in text
    assert text.endswith("### Filling a store\n\nkept\n")


def test_headline_replaces_only_between_the_markers() -> None:
    readme = f"intro\n{report.HEADLINE_START}\n- old\n{report.HEADLINE_END}\nafter\n"
    new = report.replace_headline(readme, report.headline_block(a_run(ROUNDS)))
    assert new is not None
    assert new.startswith(f"intro\n{report.HEADLINE_START}\n- sci (11,321 files)")
    assert "- old" not in new
    assert new.endswith(f"{report.HEADLINE_END}\nafter\n")
    assert "runtime goals met: 2 of 4" in new
    assert report.replace_headline("no markers\n", ["- x"]) is None


def test_a_quick_run_keeps_its_page_in_the_run_directory(tmp_path: Path) -> None:
    before = report.MARKDOWN.read_bytes() if report.MARKDOWN.exists() else None
    (tmp_path / "mount.json").write_text(json.dumps(a_run(ROUNDS)))
    assert report.main([str(tmp_path)]) == 0
    assert "## Where pkgfs still loses" in (tmp_path / "BENCHMARKS.md").read_text()
    after = report.MARKDOWN.read_bytes() if report.MARKDOWN.exists() else None
    assert after == before


@pytest.mark.parametrize("measure", mount.MEASURES)
def test_each_measure_runs_in_the_venv_it_is_given(measure: str, tmp_path: Path) -> None:
    (tmp_path / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    argv = mount.measure_argv(measure, tmp_path, ("numpy", "pandas"))
    assert str(tmp_path) in argv[0] + argv[1]
    if measure.endswith("import"):
        assert argv[-1] == "import numpy, pandas"


def test_a_broken_run_file_is_an_error(tmp_path: Path) -> None:
    run = a_run(ROUNDS)
    broken = copy.deepcopy(run)
    del broken["stacks"][0]["summary"]["ratios"]
    (tmp_path / "mount.json").write_text(json.dumps(broken))
    with pytest.raises(KeyError):
        report.main([str(tmp_path)])


def test_the_main_report_keeps_the_sweep_section() -> None:
    sweep = f"{report.SWEEP_START}\n## Creation and memory by size\n| 700 |\n{report.SWEEP_END}\n"
    old = f"# pkgfs benchmarks\n\nold figures\n\n{sweep}\nnotes on levers\n\n## Not re-run\nx\n"
    new = "# pkgfs benchmarks\n\nnew figures\n\n## Not re-run\nx\n"
    kept = report.keep_sweep(old, new)
    assert kept.startswith("# pkgfs benchmarks\n\nnew figures\n\n" + sweep)
    assert "notes on levers\n\n## Not re-run\nx\n" in kept
    assert report.keep_sweep(new, new) == new  # no sweep yet: nothing added


def test_the_sweep_renders_its_goals() -> None:
    from bench import sweep  # noqa: PLC0415

    def stats(median: float) -> dict[str, float]:
        return {"median": median, "min": median, "max": median}

    def size(files: int, pkgfs: float, uv: float, extra: float) -> dict[str, Any]:
        memory = {"mounted": stats(extra), "walked": stats(extra * 2)}
        return {
            "files": files, "pkgfs": stats(pkgfs), "uv": stats(uv),
            "ratio": stats(pkgfs / uv),
            "memory": {"server_kib": 30_000, "extra_kib": memory, "daemon_kib": memory},
        }  # fmt: skip

    data = {
        "machine": MACHINE, "rounds": 5, "wheels": 20, "load": [1.0, 2.0],
        "when": "2026-12-06 02:00 to 02:10 UTC",
        "sizes": [size(740, 0.2, 0.1, 9000), size(61_220, 0.22, 2.0, 9000)],
    }  # fmt: skip
    text = "\n".join(sweep.render(data))
    assert (
        "| 740 | 0.200 | 0.100 | **2.00** | <= 0.5 **not met** | 8.8 | 17.6 | 8.8; 17.6 |" in text
    )
    assert "| 61,220 | 0.220 | 2.000 | **0.11** | <= 0.5 met |" in text
    assert "**1.10x** (goal <= 1.2: met)" in text
    assert "at most **8.8 MiB** of PSS to the machine (goal <= 15 MiB: met)" in text
