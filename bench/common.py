"""What the benchmarks in bench/ share: finding tools, timing child processes, machine facts.

Each script puts the repository root on ``sys.path`` and imports this as ``bench.common``,
the name mypy (run from the root with ``--explicit-package-bases``) knows it by.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MB = 1_000_000  # MB/s means 10**6 bytes per second throughout
REPO = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


@dataclass(frozen=True)
class Tools:
    """Executables the benchmark runs; all absolute paths."""

    python: Path  # the interpreter whose version the fresh venvs get
    pkgfs: Path
    uv: Path


@dataclass(frozen=True)
class Measurement:
    """One timed child process: wall seconds from spawn to reap, and its own peak RSS."""

    seconds: float
    max_rss_kib: int  # ru_maxrss of the reaped child (Linux reports KiB)
    sync_after_seconds: float  # os.sync() right after it, not part of ``seconds``


# --- tools and machine ---------------------------------------------------------------------


def find_tool(name: str) -> Path:
    """Locate ``name``: next to sys.executable, then on PATH, then in the repo's .venv/bin.

    Raises BenchError when none of them has it.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    if found:
        return Path(found)
    # Running under a system python3 (the shebang) still finds the project's venv tools.
    venv_tool = REPO / ".venv" / "bin" / name
    if venv_tool.is_file():
        return venv_tool
    raise BenchError(f"cannot find {name!r} next to {sys.executable}, on PATH or in .venv/bin")


def capture(argv: Sequence[str | Path], env: Mapping[str, str] | None = None) -> str:
    """Run ``argv`` to completion and return its stdout; raise BenchError on a nonzero exit."""
    proc = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise BenchError(
            f"{Path(argv[0]).name} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout}"
        )
    return proc.stdout


def _proc_field(path: str, key: str) -> str | None:
    # /proc files are "key: value" lines; a missing file (not Linux) is not an error.
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return None


def filesystem_of(path: Path) -> str | None:
    """The filesystem type of the mount holding ``path`` (e.g. "ext4"), or None if unknown."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    resolved, best, fstype = path.resolve(), -1, None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = Path(fields[1])
        if resolved.is_relative_to(mount_point) and len(mount_point.parts) > best:
            best, fstype = len(mount_point.parts), fields[2]
    return fstype


def version_of(tool: Path) -> str:
    """``tool --version``, from stdout or, if that is empty, stderr (argparse's exit() writes
    there); raise BenchError on a nonzero exit."""
    proc = subprocess.run([str(tool), "--version"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"{tool.name} --version exited {proc.returncode}: {proc.stderr.strip()}")
    text = proc.stdout.strip() or proc.stderr.strip()
    return text.splitlines()[0] if text else ""


def machine_info(tools: Tools, workdir: Path) -> dict[str, Any]:
    """Facts about the machine and tool versions that a reader needs to compare runs."""
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name"),
        "mem_total": _proc_field("/proc/meminfo", "MemTotal"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_executable": str(tools.python),
        "pkgfs_version": version_of(tools.pkgfs).removeprefix("pkgfs "),
        "uv_version": capture([tools.uv, "--version"]).strip(),
        "workdir": str(workdir),
        "workdir_filesystem": filesystem_of(workdir),
        # Every peak RSS in the results is at least this: the launcher's own (see LAUNCHER).
        "rss_floor_mib": measure(["true"]).max_rss_kib / 1024,
    }


# --- timed runs ----------------------------------------------------------------------------


# Linux keeps a process's peak RSS across execve(2), and a forked child starts from its
# parent's: a command spawned straight from this process would report at least this
# process's own peak (134 MiB in bench/mount.py). So a fresh interpreter with no site
# packages forks the command and hands back the command's own rusage; what is left as a floor
# is that launcher's size (machine_info's "rss_floor_mib"). It also times the command from
# its fork, which leaves the launcher's start-up out. The report goes to the fd in argv[1],
# which the command does not inherit.
LAUNCHER = """
import os, sys, time
fd = int(sys.argv[1])
os.set_inheritable(fd, False)
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
os.write(fd, f"{seconds!r} {usage.ru_maxrss}".encode())
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def measure_output(
    argv: Sequence[str | Path], env: Mapping[str, str] | None = None
) -> tuple[Measurement, str]:
    """Run ``argv`` through LAUNCHER: its wall time, its own peak RSS, and its stdout.

    Raises BenchError with the child's stderr when it exits nonzero.
    """
    read_end, write_end = os.pipe()
    launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(write_end)]
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            with subprocess.Popen(
                [*launcher, *(str(a) for a in argv)],
                stdout=out,
                stderr=err,
                env=env,
                pass_fds=(write_end,),
            ) as proc:
                os.close(write_end)
                write_end = -1
                returncode = proc.wait()
            if returncode != 0:
                err.seek(0)
                message = err.read().decode(errors="replace").strip()
                raise BenchError(f"{Path(argv[0]).name} exited {returncode}:\n{message}")
            out.seek(0)
            stdout = out.read().decode(errors="replace")
        # The launcher wrote its one short line before exiting: it is in the pipe already.
        seconds, max_rss_kib = os.read(read_end, 4096).decode().split()
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    sync_start = time.perf_counter()
    os.sync()
    measured = Measurement(float(seconds), int(max_rss_kib), time.perf_counter() - sync_start)
    return measured, stdout


def measure(argv: Sequence[str | Path], env: Mapping[str, str] | None = None) -> Measurement:
    """Run ``argv``, timing it and reading its peak RSS from wait4(2).

    Raises BenchError with the child's stderr when it exits nonzero.
    """
    return measure_output(argv, env)[0]


def uv_env(cache_dir: Path) -> dict[str, str]:
    """The environment for uv: ours minus every UV_* setting, plus a private, empty cache."""
    # Dropping UV_* (link mode, bytecode compilation, ...) keeps uv at its defaults.
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
    env["UV_CACHE_DIR"] = str(cache_dir)
    return env


def store_stats(tools: Tools, store: Path) -> dict[str, int]:
    """``pkgfs store stats --json`` as a dict of its integer fields."""
    raw = json.loads(capture([tools.pkgfs, "--store", store, "store", "stats", "--json"]))
    return {k: v for k, v in raw.items() if isinstance(v, int)}


def site_packages(venv: Path) -> Path:
    """The purelib directory of a POSIX venv made by the running interpreter's version."""
    return venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def observe_link_mode(venv: Path) -> dict[str, Any]:
    """How uv placed files: hard links share inodes with its cache, so their st_nlink is > 1.

    Also sums what the venv's site-packages holds, as a cross-check on the byte count.
    """
    files = [p for p in site_packages(venv).rglob("*") if p.is_file() and not p.is_symlink()]
    stats = [p.stat() for p in files]
    linked = sum(1 for s in stats if s.st_nlink > 1)
    return {
        "observed": "hardlink" if linked * 2 > len(files) else "copy or clone",
        "files_with_nlink_gt_1": linked,
        "site_packages_files": len(files),
        "site_packages_bytes": sum(s.st_size for s in stats),
    }


# --- report --------------------------------------------------------------------------------


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of a non-empty sequence."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def write_report(report: dict[str, Any], out_dir: Path, benchmark: str) -> Path:
    """Write ``report`` as ``<benchmark>-<UTC timestamp>.json`` under ``out_dir``; return it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"{benchmark}-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def progress(message: str) -> None:
    """A progress line on stderr, so stdout holds only the result table."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def mounted_under(path: Path) -> list[Path]:
    """Mount points at or below ``path``, deepest first (from /proc/self/mountinfo, with its
    octal escapes such as \\040 decoded)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [Path(line.split()[4].encode().decode("unicode_escape")) for line in f]
    found = [p for p in points if p.is_relative_to(os.path.realpath(path))]
    return sorted(found, key=lambda p: -len(p.parts))
