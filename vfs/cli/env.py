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
import json
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
from pkgfs.vfs.env.state import MADE_BY_RUN, UNMOUNTED, MountConfig, mount_dir
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
    process. One line per environment (with ``--json``, one array of
    ``{"mountpoint", "result", ...}`` rows, ``result`` one of ``mounted``, ``skipped`` and
    ``failed``, a mounted one with what ``pkgfs mount --json`` says); exit 1 if any failed.
    An environment another command mounted meanwhile (two ``mount --all`` at once) is
    mounted, not failed."""
    rows: list[dict[str, object]] = []
    for directory, env in environments():
        if not isinstance(env, Environment):
            print(f"pkgfs: warning: {env}", file=sys.stderr)
            continue
        row = _mount_again(args, out, directory, env.config)
        if row is not None:
            rows.append(row)
    if getattr(args, "json", False):
        print_json(rows, out)
    return 1 if any(row["result"] == "failed" for row in rows) else 0


def _left_alone(args: argparse.Namespace, directory: Path, config: MountConfig) -> bool:
    """Whether ``mount --all`` leaves this environment alone, mounted or not."""
    if config.materialized:
        return True  # (a materialized environment is real files: nothing to mount)
    if getattr(args, "restore", False) and (directory / UNMOUNTED).exists():
        return True  # unmounted with pkgfs unmount: a new mount server leaves it so
    return (directory / MADE_BY_RUN).exists()  # pkgfs run mounts it when it runs


def _mount_again(
    args: argparse.Namespace, out: TextIO, directory: Path, config: MountConfig
) -> dict[str, object] | None:
    """One environment of ``mount --all``: its row, None when it is left alone (mounted,
    materialized, unmounted on purpose on a server's start, or pkgfs run's)."""
    as_json = bool(getattr(args, "json", False))
    mountpoint = Path(config.mountpoint)
    state = (
        ""
        if _left_alone(args, directory, config)
        else mount_state(mountpoint, timeout=UNRESPONSIVE_AFTER)
    )
    if state in ("", "ok"):
        return None
    row: dict[str, object] = {"mountpoint": str(mountpoint)}
    if state == "unresponsive":
        print(
            f"pkgfs: error: {mountpoint}: mounted, but its daemon does not answer (stopped"
            f" or hung): pkgfs unmount {mountpoint}, end the daemon it names, then pkgfs"
            " mount --all",
            file=sys.stderr,
        )
        return row | {"result": "failed", "why": "its daemon does not answer"}
    if not mountpoint.is_dir():
        if not as_json:
            print(f"pkgfs: skipped {mountpoint}: it is gone (pkgfs env rm it)", file=out)
        return row | {"result": "skipped", "why": "it is gone"}
    argv = ["--store", config.store, "mount"]
    argv += [str(mountpoint), "--lock", config.lock, *shlex.split(config.selection)]
    if venv_of(mountpoint) is None:
        argv += ["--python", config.python]
    if Path(config.upper).parent != directory:
        argv += ["--overlay", str(Path(config.upper).parent)]
    argv += ["--allow-other"] * config.allow_other + ["--no-compile"] * (not config.magic)
    argv += ["--offline"] * bool(getattr(args, "offline", False))
    argv += ["--json"] * as_json
    out.flush()
    status, said = _run_forked(argv, capture=as_json)
    if status != 0 and mount_state(mountpoint, timeout=UNRESPONSIVE_AFTER) == "ok":
        # Another command (a second mount --all, a server's start) mounted it first.
        if not as_json:
            print(f"{mountpoint}: mounted meanwhile by another pkgfs command", file=out)
        return row | {"result": "mounted", "by": "another command"}
    if status != 0:
        return row | {"result": "failed"}
    with contextlib.suppress(ValueError):
        answer = json.loads(said) if said else {}
        row |= answer if isinstance(answer, dict) else {}
    return row | {"result": "mounted"}


def _run_forked(argv: list[str], capture: bool = False) -> tuple[int, str]:
    """``pkgfs ARGV`` in a fork of this process (pkgfs is imported already, and in the
    mount server so are trio and pyfuse3), as a command of its own: its exit status, and
    with ``capture`` what it wrote to stdout (else it writes to ours: "")."""
    from . import main  # noqa: PLC0415 (the CLI imports this module)

    sys.stderr.flush()
    read_end, write_end = os.pipe() if capture else (-1, -1)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            if capture:
                os.close(read_end)
                sys.stdout = open(write_end, "w")  # noqa: SIM115 (the child's stdout)
            status = main(argv)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            os._exit(status)
    said = b""
    if capture:
        os.close(write_end)
        with open(read_end, "rb") as reader:
            said = reader.read()  # to EOF: the child (and any daemon it forks) closed it
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), said.decode(errors="replace")
