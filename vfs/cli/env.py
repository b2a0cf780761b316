"""``pkgfs env list`` and ``pkgfs env rm``: the environments this user has made.

``list`` only reads. ``rm`` forgets an environment that is not mounted and that no
``pkgfs mount`` or daemon holds (a daemon serves on after a lazy unmount): its state
directory, with its overlay (the local edits), goes; so do the overlay's ``upper/`` and
``work/`` when ``--overlay DIR`` put them elsewhere (DIR itself is the user's and stays).
The store keeps its wheels until ``pkgfs store gc``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from pkgfs.store.errors import MountError
from pkgfs.vfs.env.locks import holding
from pkgfs.vfs.env.registry import Environment, environments
from pkgfs.vfs.env.state import MADE_BY_RUN, UNMOUNTED, mount_dir
from pkgfs.vfs.env.venv import mountpoint_of, venv_of
from pkgfs.vfs.fuse.mounts import UNRESPONSIVE_AFTER, mount_state

from .output import print_json

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
        # A materialized environment is real files, never mounted.
        state = "materialized" if materialized else mount_state(mountpoint, UNRESPONSIVE_AFTER)
        rows.append(
            {
                "mountpoint": str(mountpoint),
                "state": state,
                "materialized": env.config.materialized or None,
                # A mounted one exists; asking a hung daemon for it would hang.
                "venv": state not in ("unmounted", "materialized") or mountpoint.exists(),
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
        print_json(rows, out)
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
    with _unused(directory, mountpoint):
        env = next(
            (e for d, e in environments() if d == directory and isinstance(e, Environment)),
            None,
        )
        if env is not None:
            overlay = Path(env.config.upper).parent
            if overlay != directory:  # --overlay DIR: ours are only its upper/ and work/
                for part in (Path(env.config.upper), Path(env.config.work)):
                    shutil.rmtree(part, ignore_errors=True)
        shutil.rmtree(directory)
    print(f"forgot {mountpoint} and its overlay", file=out)
    return 0


@contextlib.contextmanager
def _unused(directory: Path, mountpoint: Path) -> Iterator[None]:
    """Hold the state directory's ``flock``, as ``pkgfs mount`` does while it prepares and
    its daemon does while it serves (after a lazy unmount too, when the mount table no
    longer shows it). Raises ``MountError`` when either holds it: the overlay is in use."""
    busy = (
        f"{mountpoint}: busy: a pkgfs mount of it is under way, or its daemon still"
        " serves processes that used it before a lazy unmount: try again when they"
        f" are done (pid in {directory / 'mount.json'})"
    )
    with holding(directory, busy):
        yield


def mount_all(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs mount --all``: mount again every environment that is not mounted (after a
    reboot, or a killed daemon) and whose mountpoint still exists, each as ``pkgfs mount``
    would, with the lock, groups and options it was mounted with, each in a fork of this
    process. One line per environment; exit 1 if any failed."""
    failed = 0
    for directory, env in environments():
        if not isinstance(env, Environment):
            print(f"pkgfs: warning: {env}", file=sys.stderr)
            continue
        config = env.config
        mountpoint = Path(config.mountpoint)
        if config.materialized:
            continue  # (a materialized environment is real files: nothing to mount)
        if getattr(args, "restore", False) and (directory / UNMOUNTED).exists():
            continue  # unmounted with pkgfs unmount: a new mount server leaves it so
        if (directory / MADE_BY_RUN).exists():
            continue  # pkgfs run mounts it when it runs, and unmounts it after
        state = mount_state(mountpoint, timeout=UNRESPONSIVE_AFTER)
        if state == "ok":
            continue
        if state == "unresponsive":
            print(
                f"pkgfs: error: {mountpoint}: mounted, but its daemon does not answer (stopped"
                f" or hung): pkgfs unmount {mountpoint}, end the daemon it names, then pkgfs"
                " mount --all",
                file=sys.stderr,
            )
            failed += 1
            continue
        if not mountpoint.is_dir():
            print(f"pkgfs: skipped {mountpoint}: it is gone (pkgfs env rm it)", file=out)
            continue
        argv = ["--store", config.store, "mount"]
        argv += [str(mountpoint), "--lock", config.lock, *shlex.split(config.selection)]
        if venv_of(mountpoint) is None:
            argv += ["--python", config.python]
        if Path(config.upper).parent != directory:
            argv += ["--overlay", str(Path(config.upper).parent)]
        argv += ["--allow-other"] * config.allow_other + ["--no-compile"] * (not config.magic)
        argv += ["--offline"] * bool(getattr(args, "offline", False))
        out.flush()
        if _run_forked(argv) != 0:
            failed += 1
    return 1 if failed else 0


def _run_forked(argv: list[str]) -> int:
    """``pkgfs ARGV`` in a fork of this process (pkgfs is imported already, and in the
    mount server so are trio and pyfuse3), as a command of its own; its exit status."""
    from . import main  # noqa: PLC0415 (the CLI imports this module)

    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            os._exit(status)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
