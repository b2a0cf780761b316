"""``pkgfs env list`` and ``pkgfs env rm``: the environments this user has made.

``list`` only reads. ``rm`` forgets an environment that is not mounted: its state
directory, with its overlay (the local edits), goes; so do the overlay's ``upper/`` and
``work/`` when ``--overlay DIR`` put them elsewhere (DIR itself is the user's and stays).
The store keeps its wheels until ``pkgfs store gc``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from pkgfs.store.errors import MountError
from pkgfs.vfs.env.registry import Environment, environments
from pkgfs.vfs.env.state import mount_dir
from pkgfs.vfs.env.venv import mountpoint_of, venv_of
from pkgfs.vfs.fuse.mounts import mount_state

__all__ = ["cmd_env_list", "cmd_env_rm", "mount_all"]


def cmd_env_list(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs env list``: every environment, mounted or not. Reads only; a config that
    cannot be read is a warning line on stderr."""
    rows = []
    for _directory, env in environments():
        if not isinstance(env, Environment):
            print(f"pkgfs: warning: {env}", file=sys.stderr)
            continue
        mountpoint = Path(env.config.mountpoint)
        materialized = bool(env.config.materialized)
        rows.append(
            {
                "mountpoint": str(mountpoint),
                # A materialized environment is real files, never mounted.
                "state": "materialized" if materialized else mount_state(mountpoint),
                "materialized": env.config.materialized or None,
                "venv": mountpoint.exists(),
                "lock": env.config.lock,
                "lock_state": env.config.lock_state(),
                "packages": len(env.config.wheels),
                "selection": env.config.selection,
                "state_dir": str(env.directory),
                "overlay": str(Path(env.config.upper).parent),
                # What pkgfs rollback returns to: the config before its last switch.
                "previous": None
                if env.previous is None
                else {"lock": env.previous.lock, "packages": len(env.previous.wheels)},
            }
        )
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
        return 0
    if not rows:
        print("no pkgfs environments", file=out)
    for row in rows:
        gone = "" if row["venv"] else ", its mountpoint is gone"
        previous = row["previous"]
        if isinstance(previous, dict):
            gone += f"; rollback to {previous['packages']} packages"
        print(
            f"{row['state']:<12} {row['mountpoint']}  {row['packages']} packages,"
            f" lock {row['lock']} ({row['lock_state']}){gone}",
            file=out,
        )
    return 0


def cmd_env_rm(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs env rm MOUNTPOINT``. Raises ``MountError`` (one line) when it is mounted or
    pkgfs knows no environment there."""
    mountpoint = mountpoint_of(Path(args.mountpoint).absolute())
    directory = mount_dir(mountpoint)
    if not (directory / "config.json").is_file():
        raise MountError(f"{mountpoint}: pkgfs knows no environment there (pkgfs env list)")
    if mount_state(mountpoint) != "unmounted":
        raise MountError(f"{mountpoint}: mounted: pkgfs unmount it first")
    env = next(
        (e for d, e in environments() if d == directory and isinstance(e, Environment)), None
    )
    if env is not None:
        overlay = Path(env.config.upper).parent
        if overlay != directory:  # --overlay DIR: ours are only its upper/ and work/
            for part in (Path(env.config.upper), Path(env.config.work)):
                shutil.rmtree(part, ignore_errors=True)
    shutil.rmtree(directory)
    print(f"forgot {mountpoint} and its overlay", file=out)
    return 0


def mount_all(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs mount --all``: mount again every environment that is not mounted (after a
    reboot, or a killed daemon) and whose mountpoint still exists, each as ``pkgfs mount``
    would, with the lock, groups and options it was mounted with. One line per
    environment; exit 1 if any failed."""
    failed = 0
    for directory, env in environments():
        if not isinstance(env, Environment):
            print(f"pkgfs: warning: {env}", file=sys.stderr)
            continue
        config = env.config
        mountpoint = Path(config.mountpoint)
        if config.materialized or mount_state(mountpoint) == "ok":
            continue  # (a materialized environment is real files: nothing to mount)
        if not mountpoint.is_dir():
            print(f"pkgfs: skipped {mountpoint}: it is gone (pkgfs env rm it)", file=out)
            continue
        argv = [sys.executable, "-m", "pkgfs.vfs", "--store", config.store, "mount"]
        argv += [str(mountpoint), "--lock", config.lock, *shlex.split(config.selection)]
        if venv_of(mountpoint) is None:
            argv += ["--python", config.python]
        if Path(config.upper).parent != directory:
            argv += ["--overlay", str(Path(config.upper).parent)]
        argv += ["--allow-other"] * config.allow_other + ["--no-compile"] * (not config.magic)
        argv += ["--offline"] * bool(getattr(args, "offline", False))
        out.flush()
        if subprocess.run(argv, check=False).returncode != 0:
            failed += 1
    return 1 if failed else 0
