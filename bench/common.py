"""What bench/ shares: the tools it runs, the stacks it locks, the children's environment.

Run as ``python -m bench.mount`` from the repository root (bench/run does), so this is
``bench.common`` to the scripts and to mypy alike.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# uv ignores releases uploaded after this instant, so a re-lock resolves to the same versions
# on any machine. Move it on purpose: results are comparable only for the same wheels.
EXCLUDE_NEWER = "2026-11-01T00:00:00Z"
UV_LOCK, REQUIREMENTS = "uv.lock", "requirements.txt"


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


@dataclass(frozen=True)
class Stack:
    """A real project's direct dependencies (``uv lock`` adds the rest) and what it imports."""

    name: str
    title: str
    dependencies: tuple[str, ...]
    imports: tuple[str, ...]  # imported together in one ``python -c``

    def pyproject(self) -> str:
        """A pyproject.toml without a build system: uv locks it as a virtual project."""
        deps = "".join(f'    "{d}",\n' for d in self.dependencies)
        return (
            "# Written by bench/common.py (STACKS); edits here are overwritten.\n"
            f'[project]\nname = "bench-{self.name}"\nversion = "0"\n'
            f'requires-python = ">=3.11"\ndependencies = [\n{deps}]\n'
        )


STACKS: dict[str, Stack] = {
    s.name: s
    for s in (
        Stack(
            "cli",
            "small CLI stack",
            ("click", "rich", "httpx"),
            ("click", "rich.console", "httpx"),
        ),
        Stack(
            "web",
            "web stack",
            (
                "flask",
                "sqlalchemy",
                "alembic",
                "pydantic",
                "httpx",
                "requests",
                "rich",
                "fastapi",
                "uvicorn[standard]",
                "jinja2",
                "gunicorn",
            ),
            (
                "flask",
                "sqlalchemy",
                "alembic",
                "pydantic",
                "httpx",
                "requests",
                "rich.console",
                "fastapi",
                "uvicorn",
                "jinja2",
            ),
        ),
        Stack(
            "sci",
            "scientific stack",
            (
                "numpy",
                "pandas",
                "scipy",
                "matplotlib",
                "scikit-learn",
                "pyarrow",
                "statsmodels",
                "sympy",
            ),
            (
                "numpy",
                "pandas",
                "scipy.stats",
                "matplotlib",
                "sklearn.linear_model",
                "pyarrow",
                "statsmodels.api",
                "sympy",
            ),
        ),
    )
}


@dataclass(frozen=True)
class Tools:
    """Executables the benchmark runs; all absolute paths."""

    python: Path  # the interpreter whose version the fresh venvs get
    pkgfs: Path
    uv: Path
    hyperfine: Path

    @classmethod
    def find(cls) -> Tools:
        """Next to this interpreter first (the project's .venv), then on PATH."""
        found: dict[str, Path] = {}
        for name in ("pkgfs", "uv", "hyperfine"):
            beside = Path(sys.executable).parent / name
            where = str(beside) if beside.exists() else shutil.which(name)
            if where is None:
                hint = " (apt-get install hyperfine)" if name == "hyperfine" else ""
                raise BenchError(f"{name} not found beside {sys.executable} or on PATH{hint}")
            found[name] = Path(where).absolute()
        return cls(Path(sys.executable).absolute(), **found)


def capture(argv: Sequence[str | Path], env: Mapping[str, str] | None = None) -> str:
    """Run ``argv``; its stdout. BenchError with the stderr's tail on a nonzero exit."""
    proc = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise BenchError(f"{' '.join(map(str, argv))} exited {proc.returncode}:\n{tail}")
    return proc.stdout


def progress(message: str) -> None:
    """A progress line on stderr."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def child_env(root: Path) -> dict[str, str]:
    """Every child's environment: ours without PYTHON*, UV_*, PIP_* and VIRTUAL_ENV; XDG state
    and cache (pkgfs keeps mount state there) and matplotlib's config under ``root``; and
    PYTHONDONTWRITEBYTECODE=1, so no run writes bytecode that a later one would read."""
    drop = ("PYTHON", "UV_", "PIP_", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["XDG_STATE_HOME"] = str(root / "xdg-state")
    env["XDG_CACHE_HOME"] = str(root / "xdg-cache")
    env["MPLCONFIGDIR"] = str(root / "mplconfig")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def lock(tools: Tools, stack: Stack, projects: Path, relock: bool) -> tuple[Path, str]:
    """The stack's project directory, locked (uv.lock) and exported (requirements.txt), and
    the one package index its lock names. Locks from scratch when there is no lock, when the
    pyproject.toml changed, or with ``relock``."""
    directory = projects / stack.name
    directory.mkdir(parents=True, exist_ok=True)
    pyproject = directory / "pyproject.toml"
    changed = not pyproject.exists() or pyproject.read_text() != stack.pyproject()
    pyproject.write_text(stack.pyproject())
    env = {**os.environ, "UV_CACHE_DIR": str(projects / "uv-cache")}
    uv: list[str | Path] = [tools.uv, "--directory", directory]
    if relock or changed or not (directory / UV_LOCK).exists():
        progress(f"{stack.name}: uv lock (exclude-newer {EXCLUDE_NEWER})")
        (directory / UV_LOCK).unlink(missing_ok=True)
        argv: list[str | Path] = [
            "lock",
            "--no-config",
            "--python",
            tools.python,
            "--exclude-newer",
            EXCLUDE_NEWER,
        ]
        capture([*uv, *argv], env=env)
    export: list[str | Path] = [
        "export",
        "--no-config",
        "--frozen",
        "--python",
        tools.python,
        "--no-emit-project",
    ]
    capture([*uv, *export, "--format", "requirements.txt", "-o", REQUIREMENTS], env=env)
    data = tomllib.loads((directory / UV_LOCK).read_text())
    registries = {p["source"]["registry"] for p in data["package"] if "registry" in p["source"]}
    if len(registries) != 1:
        raise BenchError(f"{directory / UV_LOCK}: expected one package index, not {registries}")
    return directory, registries.pop()


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        pass
    return None


def machine_info(tools: Tools) -> dict[str, Any]:
    """Facts a reader needs to place a run: CPUs, memory, kernel, tool versions, commit."""
    try:
        head = capture(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]).strip()
        dirty = capture(["git", "-C", REPO, "status", "--porcelain", "--", "store", "vfs"])
        commit: str | None = head + ("+changes" if dirty.strip() else "")
    except (BenchError, OSError):
        commit = None
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name"),
        "mem_total": _proc_field("/proc/meminfo", "MemTotal"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uv": capture([tools.uv, "--version"]).strip(),
        "hyperfine": capture([tools.hyperfine, "--version"]).strip(),
        "pkgfs_commit": commit,
    }


def mounted_under(path: Path) -> list[Path]:
    """Mount points at or below ``path``, deepest first (from /proc/self/mountinfo, with its
    octal escapes such as \\040 decoded)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [Path(line.split()[4].encode().decode("unicode_escape")) for line in f]
    found = [p for p in points if p.is_relative_to(os.path.realpath(path))]
    return sorted(found, key=lambda p: -len(p.parts))
