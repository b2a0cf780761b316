"""``pkgfs diff`` and ``reset``: what a mount's overlay changed, and undoing it.

``diff`` only reads: it writes nothing in the state directories.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TextIO

from pkgfs.store import Store
from pkgfs.store.errors import MountError, PkgfsError, StoreError
from pkgfs.store.layout import StoreLayout
from pkgfs.vfs.env.state import MountConfig, MountRecord, mount_dir
from pkgfs.vfs.env.venv import (
    Venv,
    mountpoint_of,
    populate_venv,
    remove_recorded_scripts,
    scripts_recorded,
    venv_of,
)
from pkgfs.vfs.env.view import View
from pkgfs.vfs.fuse.mounts import mount_state
from pkgfs.vfs.fuse.wire import ask
from pkgfs.vfs.overlay import Change, MergedTree
from pkgfs.vfs.overlay.reconcile import shadowing

from .output import print_json

__all__ = ["cmd_diff", "cmd_reset", "merged_tree", "mount_config"]


def mount_config(directory: Path) -> MountConfig:
    """The config of the mount whose state is in ``directory``. Raises ``MountError`` when
    it is damaged or from another version, ``OSError`` when unreadable."""
    return MountConfig.load(directory / "config.json")


def merged_tree(config: MountConfig) -> MergedTree:
    """The merged tree of the mount of ``config``. Raises ``StoreError`` when its store is
    gone (never making a new one there), ``ViewError`` when its wheels left the store,
    ``OSError`` when unreadable."""
    if not StoreLayout(Path(config.store)).index.is_file():  # opening it would make a new one
        raise StoreError(
            f"{config.store}: its store is not there any more (moved or deleted): put it back,"
            " or unmount the environment and mount it again"
        )
    with Store.open_read_only(config.store) as store:
        return MergedTree(
            config.view(store), store.layout.objects, Path(config.upper), Path(config.work)
        )


def _known(mountpoint: Path) -> Path:
    directory = mount_dir(mountpoint)
    if not (directory / "config.json").is_file():
        raise MountError(f"{mountpoint}: pkgfs has never mounted it")
    return directory


def cmd_diff(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs diff``: the overlay's changes, one per line on stdout; on stderr, one line
    per package pip or uv changed there. Reads only. Raises ``MountError``."""
    config = mount_config(_known(mountpoint_of(Path(args.mountpoint).absolute())))
    if config.materialized:
        raise MountError(
            f"{args.mountpoint}: materialized as real files (pkgfs materialize): there is no"
            " overlay; its files are the environment"
        )
    tree = merged_tree(config)
    changes = tree.changes()
    if args.json:
        print_json([{"path": c.path, "change": c.kind} for c in changes], out)
        return 0
    letters = {"added": "A", "modified": "M", "deleted": "D", "replaced": "R"}
    for change in changes:
        print(f"{letters[change.kind]} {_quoted(change.path)}", file=out)
    for line in shadowing(tree):  # the packages pip or uv changed, as people say it
        print(f"pkgfs: {line}", file=sys.stderr)
    return 0


def _quoted(path: str) -> str:
    """``path`` as it is, or, when it holds a control character, a quote or a backslash, in
    double quotes with C escapes (as ``git diff`` shows such names): one change per line,
    whatever the name."""
    if path.isprintable() and '"' not in path and "\\" not in path:
        return path
    return json.dumps(path, ensure_ascii=False)


def cmd_reset(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs reset``: through the daemon when mounted, else on the overlay directly.
    Raises ``MountError`` (one line) when the daemon does not answer or refuses."""
    mountpoint = mountpoint_of(Path(args.mountpoint).absolute())
    directory = _known(mountpoint)
    paths = [_relative(mountpoint, p) for p in args.paths] or None
    if paths is not None and "" in paths:  # `pkgfs reset MP .`: the whole mount
        paths = None
    config = mount_config(directory)
    tree = merged_tree(config)  # as it is before the reset: its view, and what it changed
    changes = tree.changes()
    if paths is not None:
        _check_changed([change.path for change in changes], mountpoint, paths)
    venv = venv_of(mountpoint)
    scripts = _installed_scripts(config, changes, venv, paths) if venv is not None else []
    mounted = mount_state(mountpoint) == "ok"
    if mounted:
        record = MountRecord.load(directory)
        try:
            reply = ask(record.socket.replace("@", "\0", 1), {"op": "reset", "paths": paths})
        except (OSError, ValueError) as exc:  # it died after the check, or hung up
            raise MountError(
                f"the daemon of {mountpoint} is not answering ({exc.__class__.__name__}:"
                f" {exc}): pkgfs unmount {mountpoint}, then mount it again"
            ) from None
        if not reply.get("ok"):
            raise MountError(f"{mountpoint}: reset failed: {reply.get('error')}")
    else:
        tree.reset(paths)
    what = "all changes" if paths is None else ", ".join(paths)
    print(f"reset {what} at {mountpoint}", file=out)
    if venv is not None:  # still mounted: not unmounted meanwhile (its scripts gone)
        still = mounted and mount_state(mountpoint) == "ok"
        _reset_bin(directory, venv, scripts, tree.view if still else None)
    return 0


def _installed_scripts(
    config: MountConfig, changes: list[Change], venv: Venv, paths: list[str] | None
) -> list[tuple[str, str]]:
    """The scripts in ``bin/`` of the distributions pip or uv installed into the overlay
    (``changes``: its changes before the reset) that this reset drops (their top-level
    ``.dist-info`` added or replaced)."""
    infos = [
        c.path
        for c in changes
        if c.kind in ("added", "replaced")
        and "/" not in c.path
        and c.path.endswith(".dist-info")
        and (paths is None or any(c.path == p or c.path.startswith(p + "/") for p in paths))
    ]
    return scripts_recorded(venv, Path(config.upper), infos)


def _reset_bin(
    directory: Path, venv: Venv, scripts: list[tuple[str, str]], view: View | None
) -> None:
    """``bin/`` follows the reset, as it follows a mount: the scripts of what the reset
    dropped go (where unchanged), and, mounted (``view``: what it serves), the locked
    scripts a pip or uv uninstall removed are written again. A problem is a warning: the
    overlay is already reset."""
    remove_recorded_scripts(venv, scripts)
    if view is None:
        return  # unmounted, bin/ holds none of the lock's scripts: the next mount writes them
    try:
        for warning in populate_venv(venv, view, directory):
            print(f"pkgfs: warning: {warning}", file=sys.stderr)
    except (OSError, PkgfsError) as exc:
        print(f"pkgfs: warning: {venv.bin}: scripts not written again: {exc}", file=sys.stderr)


def _check_changed(changed: list[str], mountpoint: Path, paths: list[str]) -> None:
    """Every PATH must name a change (``changed``), at it or below it, before anything is
    reset: a typo, or a path relative to the current directory rather than the mountpoint,
    is refused in one line (``MountError``) instead of resetting nothing and saying it did."""
    for path in paths:
        if not any(c == path or c.startswith(path + "/") for c in changed):
            raise MountError(
                f"{path}: no change there at {mountpoint}, nothing was reset (PATHs are"
                f" relative to the mountpoint; pkgfs diff {mountpoint} lists the changes)"
            )


def _relative(mountpoint: Path, path: str) -> str:
    """A reset PATH below the mountpoint: absolute as given, relative to the mountpoint."""
    full = Path(os.path.normpath(mountpoint / path))  # an absolute path replaces mountpoint
    try:
        relative = str(full.relative_to(mountpoint))
    except ValueError:
        raise MountError(f"{path}: not below {mountpoint}") from None
    return "" if relative == "." else relative  # the mountpoint itself: everything
