"""Which lockfile describes a project directory."""

from __future__ import annotations

from pathlib import Path

from packaging.pylock import is_valid_pylock_path

from pkgfs.store.errors import LockError

__all__ = ["discover_lock", "lock_kind"]

# Tried in this order: the standard first, then uv's own, then pip's.
_CANDIDATES = ("pylock.toml", "uv.lock", "requirements.txt")


def lock_kind(path: Path) -> str:
    """``pylock.toml``, ``uv.lock`` or ``requirements.txt``: how to read ``path``.

    Raises :class:`LockError` for a file name that is none of those formats.
    """
    # PEP 751: the file name MUST be pylock.toml or match pylock.*.toml.
    if is_valid_pylock_path(path):
        return "pylock.toml"
    if path.name == "uv.lock":
        return "uv.lock"
    if path.suffix in (".txt", ".in") or path.name.startswith("requirements"):
        return "requirements.txt"
    raise LockError(
        path, "not a lockfile pkgfs reads (pylock.toml, pylock.*.toml, uv.lock, requirements*.txt)"
    )


def discover_lock(directory: Path) -> Path:
    """The lockfile of the project in ``directory``.

    pylock.toml, else uv.lock, else requirements.txt. A single ``pylock.NAME.toml``
    stands in for ``pylock.toml``. Raises :class:`LockError` when there is none, or
    several ``pylock.NAME.toml`` and no ``pylock.toml``.
    """
    for name in _CANDIDATES:
        path = directory / name
        if path.is_file():
            return path
        if name == "pylock.toml":
            named = sorted(p for p in directory.glob("pylock.*.toml") if is_valid_pylock_path(p))
            if len(named) == 1:
                return named[0]
            if named:
                listed = ", ".join(p.name for p in named)
                raise LockError(directory, f"several lockfiles ({listed}): choose one with --lock")
    raise LockError(directory, "no pylock.toml, uv.lock or requirements.txt here: pass --lock FILE")
