"""``pkgfs status``, ``diff`` and ``reset``: what is mounted, and what its overlay changed.

``status`` and ``diff`` only read: they write nothing in the state directories (a record
of a mount that is gone is skipped, not removed; ``mount`` and ``unmount`` tidy up).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TextIO

from pkgfs.store import Store
from pkgfs.store.errors import MountError, PkgfsError, StoreError, ViewError
from pkgfs.store.layout import StoreLayout
from pkgfs.vfs.env.registry import Environment, environments
from pkgfs.vfs.env.state import MountConfig, MountRecord, mount_dir, read_records
from pkgfs.vfs.env.venv import (
    Venv,
    mountpoint_of,
    populate_venv,
    remove_recorded_scripts,
    scripts_recorded,
    venv_identity,
    venv_of,
)
from pkgfs.vfs.env.view import View
from pkgfs.vfs.fuse.mounts import UNRESPONSIVE_AFTER, alive, mount_state
from pkgfs.vfs.fuse.wire import ask
from pkgfs.vfs.overlay import Change, MergedTree
from pkgfs.vfs.overlay.reconcile import shadowing

from .output import print_json

__all__ = ["cmd_diff", "cmd_reset", "cmd_status"]


def _config(directory: Path) -> MountConfig:
    """The config of the mount whose state is in ``directory``. Raises ``MountError`` when
    it is damaged or from another version, ``OSError`` when unreadable."""
    return MountConfig.load(directory / "config.json")


def _tree(config: MountConfig) -> MergedTree:
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


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs status [MOUNTPOINT...]``: every mount with a record, or those named (a
    venv's root names its site-packages; one named that is not mounted is a line on stderr
    and makes the status 1). Reads only; an unreadable record is a warning line on stderr.
    Exit 1 when a mount shown is not healthy: a healthcheck, for all or for one."""
    named = {str(mountpoint_of(Path(m).absolute())) for m in getattr(args, "mountpoints", [])}
    rows = []
    for directory, record in read_records():
        if isinstance(record, MountError):
            if not named:
                print(f"pkgfs: warning: {record}", file=sys.stderr)
            continue
        if named and record.mountpoint not in named:
            continue
        row = _status_row(directory, record)
        if row is not None:
            rows.append(row)
    rows += _materialized_rows(named)
    # A healthcheck: non-zero when any mount is stale, unresponsive, damaged or orphaned, or
    # its lock no longer what it mounted (a rolled-back environment is that on purpose: its
    # lock_state says "rolled-back"). A materialized environment is real files: healthy.
    unhealthy = any(
        row["state"] not in ("ok", "materialized") or row["lock_state"] in ("changed", "missing")
        for row in rows
    )
    for missing in sorted(named - {str(row["mountpoint"]) for row in rows}):
        print(f"pkgfs: {missing}: not mounted", file=sys.stderr)
        unhealthy = True
    if args.json:
        print_json(rows, out)
        return 1 if unhealthy else 0
    if not rows and not named:
        print("no pkgfs mounts", file=out)
    for row in rows:
        _print_status(row, out)
    return 1 if unhealthy else 0


def _status_row(directory: Path, record: MountRecord) -> dict[str, object] | None:
    """What ``status`` says of one mount; None when it is not mounted any more."""
    mountpoint = Path(record.mountpoint)
    state = mount_state(mountpoint, timeout=UNRESPONSIVE_AFTER)
    if state == "ok" and not alive(record.pid):
        state = "stale"
    if state == "unmounted":
        return None  # a daemon killed and its mount cleared: the next mount rewrites this
    config: MountConfig | None = None
    try:
        config = _config(directory)
    except (OSError, MountError) as exc:
        unreadable: Exception = exc
    if state == "ok" and config is not None and _venv_replaced(config, mountpoint):
        state = "orphaned"  # its venv deleted, or made anew: unmount, then mount again
    lock = config.lock_state() if config is not None else "unknown"
    changes = None
    requests = None
    if state == "ok":
        try:
            if config is None:
                raise unreadable
            changes = len(_tree(config).changes())
        except (StoreError, ViewError) as exc:  # its store or its wheels are gone
            print(f"pkgfs: warning: {record.mountpoint}: {exc}", file=sys.stderr)
            state = "damaged"
        except (OSError, MountError) as exc:
            print(f"pkgfs: warning: {exc}", file=sys.stderr)
        requests = _requests(record)
    return {
        "mountpoint": record.mountpoint,
        "lock": record.lock,
        "selection": record.selection,
        "packages": record.packages,
        "changes": changes,
        "pid": record.pid,
        "state": state,
        "lock_state": lock,
        "mode": record.mode,
        "requests": requests,
        "rollback": _rollback(directory),
    }


def _materialized_rows(named: set[str]) -> list[dict[str, object]]:
    """The rows of the materialized environments (``pkgfs materialize``: real files, no
    daemon), of those ``named`` when any are."""
    rows: list[dict[str, object]] = []
    for _directory, env in environments():
        if not isinstance(env, Environment) or not env.config.materialized:
            continue
        config = env.config
        if named and config.mountpoint not in named:
            continue
        rows.append(
            {
                "mountpoint": config.mountpoint,
                "lock": config.lock,
                "selection": config.selection,
                "packages": len(config.wheels),
                "changes": None,
                "pid": None,
                # Its venv deleted, or made anew: as a mount's, no environment any more.
                "state": "orphaned" if _venv_gone(config) else "materialized",
                "lock_state": config.lock_state(),
                "mode": config.materialized,  # how its files were made: clone, copy, hardlink
                "requests": None,
                "rollback": None,
            }
        )
    return rows


def _print_status(row: dict[str, object], out: TextIO) -> None:
    if row["pid"] is None:  # materialized: no daemon
        lock_note = "" if row["lock_state"] == "current" else f" ({row['lock_state']})"
        print(
            f"{row['state']} {row['mountpoint']}  {row['packages']} packages, real files"
            f" ({row['mode']}), lock {row['lock']}{lock_note}",
            file=out,
        )
        if row["state"] == "orphaned":
            print(
                f"pkgfs: {row['mountpoint']}: its venv is gone or was made anew: pkgfs"
                " materialize it again, or pkgfs env rm it",
                file=sys.stderr,
            )
        return
    shown = "?" if row["changes"] is None else row["changes"]
    lock_note = "" if row["lock_state"] == "current" else f" ({row['lock_state']})"
    print(
        f"{row['state']:<6} {row['mountpoint']}  {row['packages']} packages,"
        f" {shown} overlay changes, {row['mode']} mode, pid {row['pid']},"
        f" lock {row['lock']}{lock_note}"
        + (f" ({row['selection']})" if row["selection"] else "")
        + (f"; rollback to {row['rollback']} packages" if row["rollback"] else ""),
        file=out,
    )
    if row["state"] == "ok" and row["lock_state"] == "changed":
        print(
            f"pkgfs: {row['mountpoint']}: its lock changed: pkgfs mount {row['mountpoint']}"
            " switches it (live)",
            file=sys.stderr,
        )


def _rollback(directory: Path) -> int | None:
    """How many packages the environment had before its last switch (what ``pkgfs
    rollback`` returns to), or None when it has not switched."""
    try:
        return len(MountConfig.load(directory / "previous.json").wheels)
    except (OSError, MountError):
        return None


def _venv_gone(config: MountConfig) -> bool:
    """Whether the venv a materialized environment was written into is gone, or was made
    anew at its path."""
    mountpoint = Path(config.mountpoint)
    return not mountpoint.is_dir() or _venv_replaced(config, mountpoint)


def _venv_replaced(config: MountConfig, mountpoint: Path) -> bool:
    """Whether the venv this mount was made for is gone, or was made anew at its path
    (``rm -rf .venv`` while mounted, then ``python -m venv .venv``): the mount serves no
    venv's interpreter then, and a new venv there needs a new mount."""
    if not config.venv_id:
        return False  # not a venv's, or mounted by a pkgfs that kept no identity
    try:
        venv = venv_of(mountpoint)
        return venv is None or venv_identity(venv) != config.venv_id
    except (OSError, MountError):
        return False


def _requests(record: MountRecord) -> dict[str, int] | None:
    """The daemon's requests served so far, per handler; None if it does not answer."""
    try:
        reply = ask(record.socket.replace("@", "\0", 1), {"op": "stats"}, timeout=5.0)
    except (OSError, ValueError):
        return None
    counts = reply.get("requests")
    if not isinstance(counts, dict):
        return None
    return {str(k): int(v) for k, v in counts.items()}


def _known(mountpoint: Path) -> Path:
    directory = mount_dir(mountpoint)
    if not (directory / "config.json").is_file():
        raise MountError(f"{mountpoint}: pkgfs has never mounted it")
    return directory


def cmd_diff(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs diff``: the overlay's changes, one per line on stdout; on stderr, one line
    per package pip or uv changed there. Reads only. Raises ``MountError``."""
    config = _config(_known(mountpoint_of(Path(args.mountpoint).absolute())))
    if config.materialized:
        raise MountError(
            f"{args.mountpoint}: materialized as real files (pkgfs materialize): there is no"
            " overlay; its files are the environment"
        )
    tree = _tree(config)
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
    config = _config(directory)
    tree = _tree(config)  # as it is before the reset: its view, and what it changed
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
