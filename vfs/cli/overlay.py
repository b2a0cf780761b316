"""``pkgfs status``, ``diff`` and ``reset``: what is mounted, and what its overlay changed."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path
from typing import TextIO

from pkgfs.store import Store
from pkgfs.store.errors import MountError
from pkgfs.vfs.env.state import MountConfig, MountRecord, mount_dir, read_records
from pkgfs.vfs.fuse.mounts import alive, mount_state
from pkgfs.vfs.fuse.wire import ask
from pkgfs.vfs.overlay import MergedTree

__all__ = ["cmd_diff", "cmd_reset", "cmd_status"]


def _tree(directory: Path) -> tuple[MergedTree, MountRecord | None]:
    config = MountConfig.load(directory / "config.json")
    record = None
    with contextlib.suppress(OSError, ValueError, TypeError):
        record = MountRecord.load(directory)
    with Store.open(config.store) as store:
        tree = MergedTree(
            config.view(store), store.layout.objects, Path(config.upper), Path(config.work)
        )
    return tree, record


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    rows = []
    for directory, record in read_records():
        mountpoint = Path(record.mountpoint)
        state = mount_state(mountpoint)
        if state == "ok" and not alive(record.pid):
            state = "stale"
        if state == "unmounted":
            (directory / "mount.json").unlink(missing_ok=True)  # a daemon killed and cleared
            continue
        changes = len(_tree(directory)[0].changes()) if state == "ok" else None
        rows.append(
            {
                "mountpoint": record.mountpoint,
                "lock": record.lock,
                "packages": record.packages,
                "changes": changes,
                "pid": record.pid,
                "state": state,
            }
        )
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
        return 0
    if not rows:
        print("no pkgfs mounts", file=out)
    for row in rows:
        shown = "?" if row["changes"] is None else row["changes"]
        print(
            f"{row['state']:<6} {row['mountpoint']}  {row['packages']} packages,"
            f" {shown} overlay changes, pid {row['pid']}, lock {row['lock']}",
            file=out,
        )
    return 0


def _known(mountpoint: Path) -> Path:
    directory = mount_dir(mountpoint)
    if not (directory / "config.json").is_file():
        raise MountError(f"{mountpoint}: pkgfs has never mounted it")
    return directory


def cmd_diff(args: argparse.Namespace, out: TextIO) -> int:
    tree, _ = _tree(_known(Path(args.mountpoint).absolute()))
    changes = tree.changes()
    if args.json:
        json.dump([{"path": c.path, "change": c.kind} for c in changes], out, indent=2)
        out.write("\n")
        return 0
    letters = {"added": "A", "modified": "M", "deleted": "D", "replaced": "R"}
    for change in changes:
        print(f"{letters[change.kind]} {change.path}", file=out)
    return 0


def cmd_reset(args: argparse.Namespace, out: TextIO) -> int:
    mountpoint = Path(args.mountpoint).absolute()
    directory = _known(mountpoint)
    paths = [_relative(mountpoint, p) for p in args.paths] or None
    if mount_state(mountpoint) == "ok":
        record = MountRecord.load(directory)
        reply = ask(record.socket.replace("@", "\0", 1), {"op": "reset", "paths": paths})
        if not reply.get("ok"):
            raise MountError(f"{mountpoint}: reset failed: {reply.get('error')}")
    else:
        tree, _ = _tree(directory)
        tree.reset(paths)
    what = "all changes" if paths is None else ", ".join(paths)
    print(f"reset {what} at {mountpoint}", file=out)
    return 0


def _relative(mountpoint: Path, path: str) -> str:
    """A reset PATH below the mountpoint: absolute as given, relative to the mountpoint."""
    full = Path(os.path.normpath(mountpoint / path))  # an absolute path replaces mountpoint
    try:
        return str(full.relative_to(mountpoint))
    except ValueError:
        raise MountError(f"{path}: not below {mountpoint}") from None
