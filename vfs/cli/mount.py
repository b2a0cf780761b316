"""``pkgfs mount`` and ``pkgfs unmount``: an environment's lifecycle, end to end.

Mounting resolves the lock, syncs and compiles what is missing, composes the view, then
has the daemon (forked early, see ``pkgfs.vfs.fuse.spawn``) mount it, and finally writes the
venv's scripts and data links.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import TextIO

from pkgfs.store import Store
from pkgfs.store.errors import MountError
from pkgfs.store.lock import discover_lock
from pkgfs.vfs.env.state import MountConfig, MountRecord, mount_dir
from pkgfs.vfs.env.venv import Venv, depopulate_venv, populate_venv, venv_of
from pkgfs.vfs.env.view import View
from pkgfs.vfs.fuse.mounts import (
    check_fuse,
    fusermount,
    in_mountinfo,
    mount_state,
    wait_for_exit,
)
from pkgfs.vfs.fuse.spawn import EarlyDaemon, fork_daemon

from .lock import resolve_lock, stored_wheels, sync_locked

__all__ = ["cmd_mount", "cmd_unmount"]


def _prepare_mountpoint(mountpoint: Path, err: TextIO) -> None:
    if not mountpoint.exists():
        if in_mountinfo(mountpoint):  # a stale mount: stat fails with ENOTCONN
            pass
        else:
            raise MountError(f"{mountpoint}: no such directory")
    state = mount_state(mountpoint)
    if state == "ok":
        raise MountError(f"{mountpoint}: already mounted: pkgfs unmount it first")
    if state == "stale":
        fusermount(mountpoint, lazy=True)
        print(f"pkgfs: {mountpoint}: cleared a stale mount (its daemon had died)", file=err)
    if not mountpoint.is_dir():
        raise MountError(f"{mountpoint}: not a directory")


def _overlay_dirs(
    args: argparse.Namespace, state: Path, store: Store, mountpoint: Path
) -> tuple[Path, Path]:
    base = Path(args.overlay).absolute() if args.overlay else state
    for forbidden, what in ((store.root, "inside the store"), (mountpoint, "below the mountpoint")):
        if base == forbidden or forbidden in base.parents:
            raise MountError(f"{base}: the overlay cannot be {what}")
    return base / "upper", base / "work"


def cmd_mount(args: argparse.Namespace, out: TextIO) -> int:
    mountpoint = Path(args.mountpoint).absolute()
    check_fuse()
    _prepare_mountpoint(mountpoint, sys.stderr)
    venv = venv_of(mountpoint)
    if args.python is None and venv is not None:
        args.python = str(venv.python)
    if args.lock is None:
        args.lock = discover_lock(venv.project if venv else Path.cwd())
        print(f"pkgfs: using {args.lock}", file=sys.stderr)
    state = mount_dir(mountpoint)
    # On failure, remove every directory this mount created, down from the first new one.
    created = next((p for p in reversed([state, *state.parents]) if not p.exists()), None)
    try:
        with Store.open(getattr(args, "store", None)) as store:
            config, view = _prepare(args, store, mountpoint, venv, state)
        # The store's index is closed here: the daemon needs only the view and the objects.
        if args.foreground:
            from pkgfs.vfs.fuse.daemon import serve  # noqa: PLC0415 (trio and pyfuse3 only when serving)

            if venv is not None:
                for warning in populate_venv(venv, view, state):
                    print(f"pkgfs: warning: {warning}", file=sys.stderr)
            print(f"mounted {len(config.wheels)} packages at {mountpoint}", file=out, flush=True)
            try:
                return serve(config, view, _raise_if)
            finally:
                depopulate_venv(state)
        # The daemon is forked by main() before the slow imports (see fuse/spawn.py); a caller
        # that did not fork one gets one now.
        daemon: EarlyDaemon = getattr(args, "daemon", None) or fork_daemon()
        _raise_if(daemon.start(state))
        os.statvfs(mountpoint)  # the mount answers
        if venv is not None:
            for warning in populate_venv(venv, view, state):
                print(f"pkgfs: warning: {warning}", file=sys.stderr)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    print(
        f"mounted {len(config.wheels)} packages at {mountpoint}"
        f" (lock {args.lock}, python {config.python})",
        file=out,
    )
    return 0


def _prepare(
    args: argparse.Namespace, store: Store, mountpoint: Path, venv: Venv | None, state: Path
) -> tuple[MountConfig, View]:
    """Resolve, sync, compile and compose: everything a mount needs, before it mounts."""
    resolved = resolve_lock(args, store, sys.stderr)
    _, outcomes = sync_locked(store, resolved, args.offline, mountpoint, not args.no_compile)
    failed = [o.error for o in outcomes if o.error is not None]
    if failed:
        raise failed[0]
    state.mkdir(parents=True, exist_ok=True)
    upper, work = _overlay_dirs(args, state, store, mountpoint)
    config = MountConfig(
        mountpoint=str(mountpoint),
        store=str(store.root),
        lock=str(Path(args.lock).absolute()),
        python=str(venv.python) if venv else str(resolved.target.python),
        site_packages=venv.site_packages_rel if venv else "site-packages",
        wheels=stored_wheels(store, resolved.wheels),
        state=str(state),
        upper=str(upper),
        work=str(work),
        allow_other=args.allow_other,
        magic="" if args.no_compile else resolved.target.magic,
        cache_tag=resolved.target.cache_tag,
    )
    view = config.view(store)  # composed (and saved) now: a conflict fails unmounted
    config.save(state / "config.json")
    return config, view


def _raise_if(error: str | None) -> None:
    if error is not None:
        raise MountError(error)


def cmd_unmount(args: argparse.Namespace, out: TextIO) -> int:
    mountpoint = Path(args.mountpoint).absolute()
    state = mount_state(mountpoint)
    if state == "unmounted":
        raise MountError(f"{mountpoint}: not mounted")
    directory = mount_dir(mountpoint)
    pid = None
    with contextlib.suppress(OSError, ValueError, TypeError):
        pid = MountRecord.load(directory).pid
    fusermount(mountpoint, lazy=args.lazy or state == "stale")
    if pid is not None:
        wait_for_exit(pid)
    depopulate_venv(directory)
    (directory / "mount.json").unlink(missing_ok=True)
    print(f"unmounted {mountpoint}" + (" (it was stale)" if state == "stale" else ""), file=out)
    return 0
