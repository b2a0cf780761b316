"""Locks read once per content: what the mount server read, its forks need not read again.

Reading a lock (TOML, validation, PEP 751's or uv's selection for the target) is most of
what a mount of a small environment computes. The mount server keeps every lock of its
mounted environments read (:func:`keep_locks`, :func:`remember`); a worker forked from it
finds the answer in memory (:func:`read_lock_kept`), as it finds their views.

An answer is used only while every file it was read from has the same content (sha256):
the lock, and for uv.lock the project's ``pyproject.toml`` (its ``tool.uv.default-groups``).
A requirements.txt is never kept: pip expands environment variables in it, and it may
include other files.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from pathlib import Path

from .discover import lock_kind
from .model import Lockfile
from .resolve import read_lock
from .selection import Selection
from .target import Target

__all__ = ["Key", "forget_locks_but", "keep_locks", "read_lock_kept", "remember"]

Key = tuple[str, tuple[object, ...], frozenset[tuple[str, str]], Selection]
_kept: dict[Key, tuple[tuple[str, ...], Lockfile]] | None = None


def keep_locks() -> None:
    """From now on, keep the locks this process reads with :func:`remember` (the server)."""
    global _kept  # noqa: PLW0603 (one switch per process)
    if _kept is None:
        _kept = {}


def _sources(lock: Path) -> list[Path] | None:
    """The files reading ``lock`` depends on; None for a lock that is never kept."""
    kind = lock_kind(lock)
    if kind == "pylock.toml":
        return [lock]
    if kind == "uv.lock":
        return [lock, lock.parent / "pyproject.toml"]
    return None


def _digests(files: list[Path]) -> tuple[str, ...]:
    """Each file's sha256 ("" for one that cannot be read). Small files: microseconds."""
    found = []
    for path in files:
        try:
            found.append(hashlib.sha256(path.read_bytes()).hexdigest())
        except OSError:
            found.append("")
    return tuple(found)


def _key(lock: Path, target: Target, selection: Selection | None) -> Key:
    environment = frozenset(target.environment.items())
    return (str(lock.absolute()), tuple(target.tags), environment, selection or Selection())


def read_lock_kept(lock: Path, target: Target, selection: Selection | None = None) -> Lockfile:
    """``read_lock(lock, target, selection)``, answered from what this process (or the
    server it was forked from) kept when the files it was read from are unchanged. Raises
    what :func:`~pkgfs.store.lock.read_lock` raises."""
    files = _sources(lock) if _kept is not None else None
    if _kept is None or files is None:
        return read_lock(lock, target, selection)
    found = _kept.get(_key(lock, target, selection))
    if found is not None and found[0] == _digests(files):
        kept = found[1]  # read from the lock's absolute path: named as the caller named it
        return kept if kept.path == lock else dataclasses.replace(kept, path=lock)
    return read_lock(lock, target, selection)


def remember(lock: Path, target: Target, selection: Selection | None = None) -> Key | None:
    """Read ``lock`` for ``target`` and ``selection`` and keep it (after :func:`keep_locks`;
    else nothing); its key, for :func:`forget_locks_but`, None when it is not kept. Raises
    what :func:`~pkgfs.store.lock.read_lock` raises."""
    files = _sources(lock)
    if _kept is None or files is None:
        return None
    key = _key(lock, target, selection)
    digests = _digests(files)
    found = _kept.get(key)
    if found is not None and found[0] == digests:
        return key
    lockfile = read_lock(Path(key[0]), target, selection)
    if _digests(files) != digests:  # changed while it was read: keep nothing
        return None
    _kept[key] = (digests, lockfile)
    return key


def forget_locks_but(keys: Iterable[Key | None]) -> None:
    """Forget every kept lock but those of ``keys`` (the locks still mounted)."""
    if _kept is None:
        return
    keep = set(keys)
    for key in [k for k in _kept if k not in keep]:
        del _kept[key]
