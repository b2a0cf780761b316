"""The CLI contract: names, output formats and exit statuses that scripts rely on."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import RunPkgfs

MakeWheel = Callable[..., Path]


def test_version(pkgfs: RunPkgfs) -> None:
    result = pkgfs("--version")
    assert (result.code, result.out) == (0, f"pkgfs {version('pkgfs')}\n")


@pytest.mark.parametrize(
    "command",
    [(), ("store",), ("store", "add"), ("store", "ls"), ("store", "stats"), ("store", "verify")],
)
def test_help_on_every_command(pkgfs: RunPkgfs, command: tuple[str, ...]) -> None:
    result = pkgfs(*command, "--help")
    assert result.code == 0
    assert result.out.startswith(f"usage: pkgfs {' '.join(command)}".rstrip())


@pytest.mark.parametrize(
    "args", [(), ("store",), ("store", "add"), ("frobnicate",), ("store", "ls", "--bogus")]
)
def test_usage_errors_exit_2(pkgfs: RunPkgfs, args: tuple[str, ...]) -> None:
    result = pkgfs(*args)
    assert result.code == 2
    assert result.out == ""
    assert "usage: pkgfs" in result.err


def test_add_prints_one_line_per_wheel(pkgfs: RunPkgfs, make_wheel: MakeWheel) -> None:
    one = make_wheel(name="one", files={"one.py": "A = 1\n"})
    two = make_wheel(name="two", files={"two.py": "A = 1\n"})
    result = pkgfs("store", "add", "-j1", one, two)
    assert result.code == 0
    lines = result.out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("one 1.0: 3 objects, ")
    # two.py has the same bytes as one.py, and WHEEL is the same: only METADATA is new.
    assert lines[1].startswith("two 1.0: 1 objects, ")


def test_parallel_add_counts_each_new_object_once(pkgfs: RunPkgfs, make_wheel: MakeWheel) -> None:
    wheels = [make_wheel(name=f"w{i}", files={"shared.py": "A = 1\n"}) for i in range(4)]
    result = pkgfs("store", "add", "-j4", *wheels)
    assert result.code == 0
    # Whichever worker links a shared object first adds it: in total, each is added once.
    # 1 shared.py + 1 WHEEL + 4 METADATA.
    counts = [int(line.split(": ")[1].split()[0]) for line in result.out.splitlines()]
    assert [line.split(":")[0] for line in result.out.splitlines()] == [
        f"w{i} 1.0" for i in range(4)
    ]
    assert sum(counts) == 6


def test_ls_and_stats_json(pkgfs: RunPkgfs, make_wheel: MakeWheel, store_dir: Path) -> None:
    wheel = make_wheel()
    assert pkgfs("store", "add", wheel).code == 0

    listed = json.loads(pkgfs("store", "ls", "--json").out)
    stats = json.loads(pkgfs("store", "stats", "--json").out)

    assert listed == [
        {
            "sha256": listed[0]["sha256"],
            "filename": wheel.name,
            "name": "demo",
            "version": "1.0",
            "tags": "py3-none-any",
            "files": 4,
            "unpacked_bytes": stats["logical_bytes"],
        }
    ]
    assert len(listed[0]["sha256"]) == 64
    assert stats["wheels"] == 1
    assert stats["objects"] == 4
    assert stats["logical_bytes"] == stats["stored_bytes"] > 0
    assert stats["store"] == str(store_dir)


def test_ls_text(pkgfs: RunPkgfs, make_wheel: MakeWheel) -> None:
    assert pkgfs("store", "add", make_wheel()).code == 0
    (line,) = pkgfs("store", "ls").out.splitlines()
    assert line.split()[:4] == ["demo", "1.0", "4", "files"]
    assert line.endswith("py3-none-any")


def test_store_option_before_or_after_the_command(
    pkgfs: RunPkgfs, make_wheel: MakeWheel, tmp_path: Path
) -> None:
    wheel = make_wheel()
    assert pkgfs("--store", tmp_path / "a", "store", "add", wheel).code == 0
    assert pkgfs("store", "add", "--store", tmp_path / "b", wheel).code == 0
    for name in ("a", "b"):
        stats = json.loads(pkgfs("store", "stats", "--json", "--store", tmp_path / name).out)
        assert stats["wheels"] == 1


def test_unusable_store_is_one_line(pkgfs: RunPkgfs, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = pkgfs("--store", blocker / "store", "store", "stats")
    assert result.code == 1
    assert result.err.count("\n") == 1
    assert result.err.startswith(f"pkgfs: error: cannot create store at {blocker / 'store'}")
