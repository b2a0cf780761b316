"""``pkgfs status``: every mount (and materialized environment), or those named, with its
health: a healthcheck that exits 1 when one is not healthy.

It only reads: it writes nothing in the state directories (a record of a mount that is gone
is skipped, not removed; ``mount`` and ``unmount`` tidy up).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from pkgfs.store.errors import MountError, StoreError, ViewError
from pkgfs.vfs.env.registry import Environment, environments
from pkgfs.vfs.env.state import MountConfig, MountRecord, read_records
from pkgfs.vfs.env.venv import mountpoint_of, venv_identity, venv_of
from pkgfs.vfs.fuse.mounts import UNRESPONSIVE_AFTER, alive, mount_state
from pkgfs.vfs.fuse.wire import ask

from .output import print_json
from .overlay import merged_tree, mount_config

__all__ = ["cmd_status"]


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
        config = mount_config(directory)
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
            changes = len(merged_tree(config).changes())
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
