"""The CLI contract: names, output formats and exit statuses that scripts rely on."""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import TextIO

import pytest

from pkgfs.vfs.cli import run_command
from tests.conftest import LOCKPROJECT, PKGFS, RunPkgfs

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


# -- the error boundary: no traceback for a broken environment ------------------------------


def test_broken_pipe_exits_quietly(pkgfs: RunPkgfs, make_wheel: MakeWheel, store_dir: Path) -> None:
    assert pkgfs("store", "add", make_wheel()).code == 0
    environ = {**os.environ, "PKGFS_STORE": str(store_dir)}
    for args in (["store", "ls"], ["store", "ls", "--json"], ["store", "stats"]):
        with subprocess.Popen(
            [*PKGFS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ
        ) as proc:
            assert proc.stdout is not None
            assert proc.stderr is not None
            proc.stdout.close()  # the reader is gone before pkgfs writes a byte: `| head -0`
            err = proc.stderr.read().decode()
            assert proc.wait(timeout=30) == 141, err  # 128 + SIGPIPE, as the shell says it
        assert err == ""


def test_closed_stderr_exits_quietly(pkgfs: RunPkgfs, tmp_path: Path) -> None:
    # The error line itself cannot be written: nothing to say it with, and nothing to say.
    with subprocess.Popen(
        [*PKGFS, "--store", str(tmp_path / "store"), "store", "add", str(tmp_path / "no.whl")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    ) as proc:  # fmt: skip
        assert proc.stderr is not None
        proc.stderr.close()
        assert proc.wait(timeout=30) == 141


def test_closed_stdout_from_the_start_is_not_a_bug(tmp_path: Path) -> None:
    # `pkgfs status >&-`: Python starts with no sys.stdout; this was a traceback, exit 1.
    command = f"{shlex.join(PKGFS)} --store {shlex.quote(str(tmp_path / 'store'))} store ls >&-"
    environ = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    done = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, env=environ, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_head_closing_a_long_listing(
    pkgfs: RunPkgfs, make_wheel: MakeWheel, store_dir: Path
) -> None:
    # Enough output to overflow the pipe buffer (64 KiB): `head -1` exits while pkgfs still
    # writes, so the write itself fails.
    wheels = [make_wheel(name=f"w{i}", files={f"w{i}.py": ""}) for i in range(400)]
    assert pkgfs("store", "add", *wheels).code == 0
    once = f"{shlex.join(PKGFS)} store ls --json | head -1"  # about 100 KiB of JSON
    proc = subprocess.run(
        ["bash", "-c", "; ".join([once] * 3)],  # one line read of each
        capture_output=True, text=True, env={**os.environ, "PKGFS_STORE": str(store_dir)},
        check=False,
    )  # fmt: skip
    assert proc.stderr == ""
    assert proc.stdout.splitlines() == ["["] * 3


def test_unexpected_errors_ask_to_be_reported(capsys: pytest.CaptureFixture[str]) -> None:
    def buggy(args: argparse.Namespace, out: TextIO) -> int:
        raise RuntimeError("a bug")

    assert run_command(buggy, argparse.Namespace(), io.StringIO()) == 1
    err = capsys.readouterr().err
    first, second, *_ = err.splitlines()
    assert first.startswith("pkgfs: internal error (a bug in pkgfs ")
    assert "please report it" in first
    assert second == "Traceback (most recent call last):"
    assert err.endswith("RuntimeError: a bug\n")


def _unprivileged() -> list[str]:
    """The prefix that runs a command as a user who owns nothing here ([] if we are one)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop privileges")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's tmp_path is its owner's only)."""
    path = Path(tempfile.mkdtemp(prefix="pkgfs-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _run_unprivileged(store: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*_unprivileged(), *PKGFS, "--store", str(store), *map(str, args)],
        capture_output=True, text=True, check=False,
        env={**os.environ, "HOME": str(store.parent)},
    )  # fmt: skip
    if "No module named" in proc.stderr or proc.returncode == 126:
        pytest.skip(f"this interpreter is not usable by an unprivileged user: {proc.stderr}")
    return proc


def _read_only(*trees: Path) -> None:
    for tree in trees:
        for path in [tree, *tree.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)


@pytest.fixture
def stored_one(shared_dir: Path, make_wheel: MakeWheel) -> tuple[Path, Path]:
    """(a store holding the wheel "one", the wheel "two" where any user may read it)."""
    store = shared_dir / "store"
    one = make_wheel(name="one")
    added = subprocess.run([*PKGFS, "--store", store, "store", "add", one], check=False)
    assert added.returncode == 0
    two = shared_dir / "two-1.0-py3-none-any.whl"
    shutil.copy(make_wheel(name="two", files={"two.py": "TWO = 2\n"}), two)
    two.chmod(0o644)
    return store, two


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("pkgfs: error: "), line
    return line


def test_read_only_store_is_read_and_not_written(stored_one: tuple[Path, Path]) -> None:
    store, two = stored_one
    _read_only(store)  # as another user's store, or one on a read-only mount
    listed = _run_unprivileged(store, "store", "ls")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["one"]
    stats = _run_unprivileged(store, "store", "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["wheels"] == 1
    verified = _run_unprivileged(store, "store", "verify")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.endswith("ok: 4 objects, 1 wheels checked\n")
    assert str(store) in _one_error_line(_run_unprivileged(store, "store", "add", two))
    assert not (store / "index-v1.sqlite-shm").exists()


def test_os_error_inside_a_command_is_one_line(stored_one: tuple[Path, Path]) -> None:
    store, two = stored_one
    for path in [store, *store.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    _read_only(store / "tmp")  # the index opens; staging the wheel fails with EACCES
    line = _one_error_line(_run_unprivileged(store, "store", "add", two))
    # Which write fails first varies; each names its path inside the store and the reason.
    assert line.startswith(f"pkgfs: error: {store}/"), line
    # objects-v1/ read-only: a store this user cannot write, said before anything is done.
    _read_only(store / "objects-v1")
    line = _one_error_line(_run_unprivileged(store, "store", "add", two))
    assert line.startswith(f"pkgfs: error: the store at {store} is read-only"), line


def test_a_target_that_is_no_python(pkgfs: RunPkgfs, tmp_path: Path) -> None:
    lock = LOCKPROJECT / "uv.lock"
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho '{\"tags\": 5}'\n")
    fake.chmod(0o755)
    for python in ("true", fake):
        result = pkgfs("lock", "show", "--lock", lock, "--python", python)
        assert (result.code, result.out) == (1, ""), result.err
        (line,) = result.err.splitlines()
        assert line.endswith(": did not answer as a Python interpreter does"), line


def test_a_damaged_interpreter_cache_is_asked_again(pkgfs: RunPkgfs, tmp_path: Path) -> None:
    lock = LOCKPROJECT / "uv.lock"
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    assert pkgfs("lock", "show", "--lock", lock, env=environ).code == 0
    (cached,) = (tmp_path / "cache" / "pkgfs" / "interpreters").glob("*.json")
    for damage in ("{}", '{"tags": ["not a tag"]}', "[]"):
        cached.write_text(damage)
        result = pkgfs("lock", "show", "--lock", lock, env=environ)
        assert result.code == 0, result.err


def test_log_records_are_redacted() -> None:
    # The daemon logs to a file through the root logger; main() sets the record factory
    # before it forks, so whatever any layer logs has its URLs' credentials hidden.
    script = (
        "import logging, sys\n"
        "from pkgfs.vfs.cli import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "logging.basicConfig(stream=sys.stderr, format='%(message)s')\n"
        "logging.getLogger('pkgfs.vfs').warning('fetching %s', 'https://alice:T0K@host/x')\n"
    )
    proc = subprocess.run([*PKGFS[:1], "-c", script], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "fetching https://***@host/x\n"
