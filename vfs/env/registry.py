"""The environments this user has made: every mount's state directory with a config.

An environment is what ``pkgfs mount`` prepared for a mountpoint: its lock, its wheels, its
view and its overlay, kept in ``$XDG_STATE_HOME/pkgfs/mounts/<id>/`` whether mounted or
not, until ``pkgfs env rm`` forgets it. They are the roots of ``pkgfs store gc``: what any
of them uses stays in the store.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pkgfs.store import Store
from pkgfs.store.errors import MountError

from .saved import view_key
from .state import MountConfig, each_state
from .view import Bytecode

__all__ = ["Environment", "environments", "roots", "same_store"]


@dataclass(frozen=True)
class Environment:
    directory: Path  # its state directory
    config: MountConfig
    # What it was before its last switch (previous.json): what pkgfs rollback returns to.
    previous: MountConfig | None = None


def environments(
    environ: Mapping[str, str] = os.environ,
) -> Iterator[tuple[Path, Environment | MountError]]:
    """Every state directory with a ``config.json``, with its environment, or the
    ``MountError`` saying why its config cannot be read."""

    def load(directory: Path) -> Environment:
        config = MountConfig.load(directory / "config.json")
        try:
            previous = MountConfig.load(directory / "previous.json")
        except FileNotFoundError:
            previous = None
        return Environment(directory, config, previous)

    return each_state(load, "config.json", environ)


def roots(store: Store, envs: list[Environment]) -> tuple[set[str], set[str]]:
    """(wheel sha256s, saved view names) that the environments of ``store`` use, each
    with its previous (rollback) config: a process that imported from the view before a
    switch keeps reading its objects."""
    wheels: set[str] = set()
    views: set[str] = set()
    configs = [env.config for env in envs]
    configs += [env.previous for env in envs if env.previous is not None]
    for config in configs:
        if not same_store(Path(config.store), store.root):
            continue
        wheels.update(config.wheels)
        bytecode = Bytecode(config.magic, config.cache_tag) if config.magic else None
        views.add(view_key(store, config.wheels, config.site_packages, bytecode))
    return wheels, views


def same_store(recorded: Path, root: Path) -> bool:
    """Whether the store an environment recorded is ``root``, however either is spelled
    (a symlink, ``..``, a relative path): its wheels were removed from under it when a
    symlinked ``--store`` or ``$PKGFS_STORE`` did not compare equal. When one cannot be
    reached, their absolute paths are compared."""
    try:
        return os.path.samefile(recorded, root)
    except OSError:
        return os.path.abspath(recorded) == os.path.abspath(root)
