"""What the mount server loads once for all its forks: modules, the parser, mounted views.

A fork inherits its parent's memory copy-on-write: whatever the server has loaded, a worker
and a mount's daemon find ready, and share with every other fork as long as nobody writes
to it. So the server imports everything a command or a daemon runs, builds the argument
parser, and keeps the saved view of every mounted environment, with its lower paths indexed
(``pkgfs.vfs.env.saved.keep_views``), and the interpreter's parsed tags; a new mount of one of
those locks then loads nothing, and its daemon shares the view instead of holding a copy.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pkgfs.store import Store
from pkgfs.store.lock import Selection, probe_target
from pkgfs.store.lock.kept import forget_locks_but, keep_locks, remember
from pkgfs.store.lock.resolve import selector_for
from pkgfs.vfs.env.registry import Environment, environments
from pkgfs.vfs.env.saved import forget_views, view_key
from pkgfs.vfs.env.view import Bytecode
from pkgfs.vfs.fuse.mounts import mountpoints

__all__ = ["Kept", "keep_mounted_views", "preload"]

# Each mounted environment's (store, wheels, layout, magic): the file of the view kept for it.
Kept = dict[tuple[str, tuple[str, ...], str, str], str]


def preload() -> None:
    """Import everything a command or a mount runs, so no worker imports anything."""
    import pyfuse3  # noqa: F401, PLC0415
    import trio  # noqa: F401, PLC0415

    import pkgfs.vfs.cli.env  # noqa: PLC0415
    import pkgfs.vfs.cli.lock  # noqa: PLC0415
    import pkgfs.vfs.cli.mount  # noqa: PLC0415
    import pkgfs.vfs.cli.overlay  # noqa: PLC0415
    import pkgfs.vfs.cli.status  # noqa: PLC0415
    import pkgfs.vfs.fuse.daemon  # noqa: F401, PLC0415
    from pkgfs.vfs.cli import build_parser  # noqa: PLC0415
    from pkgfs.vfs.env.saved import keep_views  # noqa: PLC0415
    from pkgfs.vfs.fuse.features import no_open_support  # noqa: PLC0415

    no_open_support()  # cached: every daemon knows it already
    build_parser()  # cached: about 20 ms of argparse and gettext saved in every command
    keep_views()
    keep_locks()


def keep_mounted_views(kept: Kept) -> None:
    """Keep (``keep_views``) the saved view of every mounted environment, with its
    interpreter's parsed tags and tag selector, so the next mount of one of these locks,
    and its daemon, inherit them; forget the views no mounted environment uses.

    Mounted means in the kernel's mount table, read once: no mount is asked anything (a
    stale one's view is kept until the next call, which costs memory, not a round trip
    to every daemon and a thread each after every command)."""
    mounted: set[tuple[str, tuple[str, ...], str, str]] = set()
    locks: dict[tuple[str, tuple[int, int], str], str] = {}
    table = set(mountpoints())
    for _directory, env in environments():
        if not isinstance(env, Environment):
            continue
        config = env.config
        key = (config.store, tuple(config.wheels), config.site_packages, config.magic)
        if os.fsencode(config.mountpoint) not in table:
            continue
        mounted.add(key)
        # Venvs of one base interpreter read a lock alike: one entry for all of them.
        found = (config.lock, _identity(config.python), config.selection)
        locks.setdefault(found, config.python)
        if key in kept:
            continue
        try:
            with Store.open_read_only(config.store) as store:
                config.view(store)
                bytecode = Bytecode(config.magic, config.cache_tag) if config.magic else None
                name = view_key(store, config.wheels, config.site_packages, bytecode)
                kept[key] = str(store.layout.views / name)
        except Exception as exc:  # a cache only: the mounts load it themselves
            print(f"pkgfs server: cannot keep the view of {config.mountpoint}: {exc}",
                  file=sys.stderr)  # fmt: skip
    for key in set(kept) - mounted:
        del kept[key]
    forget_views(kept.values())
    _keep_locks(locks)


def _identity(python: str) -> tuple[int, int]:
    """The file ``python`` runs, as (device, inode): venvs of one base interpreter read a
    lock alike (one stat, where a realpath is one per component); (0, 0) when it is gone."""
    try:
        info = os.stat(python)
    except OSError:
        return (0, 0)
    return (info.st_dev, info.st_ino)


def _keep_locks(locks: dict[tuple[str, tuple[int, int], str], str]) -> None:
    """Keep each (lock, interpreter, selection) of a mounted environment read (``locks``
    gives one path of each interpreter), with the interpreter's tags parsed and its tag
    selector built; forget every other lock."""
    remembered = []
    for (lock, _file, selection), python in sorted(locks.items()):
        try:
            target = probe_target(python)
            selector_for(target.tags)
            remembered.append(remember(Path(lock), target, Selection.parse(selection)))
        except Exception as exc:  # a cache only: the mounts read the lock themselves
            print(f"pkgfs server: cannot keep {lock} read: {exc}", file=sys.stderr)
    forget_locks_but(remembered)
