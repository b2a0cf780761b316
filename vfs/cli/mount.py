"""``pkgfs mount`` and ``pkgfs unmount``: an environment's lifecycle, end to end.

Mounting resolves the lock, syncs and compiles what is missing, composes the view, then
has the daemon (forked early, see ``pkgfs.vfs.fuse.spawn``) mount it, and finally writes the
venv's scripts and data links.

A mount is all or nothing. The mount's state directory (and its ``--overlay DIR``) is locked
(``flock``) by the command while it prepares and by the daemon for the mount's life, so two
mounts never share an overlay. Any failure once the daemon was told to mount (a venv that
cannot be written, Ctrl-C, SIGTERM, a full disk) stops and reaps the daemon, unmounts what
is left, and only then removes what this mount created: no live mount, no daemon, and no
overlay deleted under a live mount.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from pkgfs.store import Store, resolve_store_path
from pkgfs.store.errors import MountError, PkgfsError, TargetError, UsageError
from pkgfs.store.hashing import hash_file
from pkgfs.store.lock import discover_lock, probe_target
from pkgfs.vfs.env.locks import take
from pkgfs.vfs.env.state import MADE_BY_RUN, UNMOUNTED, MountConfig, MountRecord, mount_dir
from pkgfs.vfs.env.venv import (
    Venv,
    depopulate_venv,
    few,
    mountpoint_of,
    populate_venv,
    venv_identity,
    venv_of,
)
from pkgfs.vfs.env.view import View
from pkgfs.vfs.fuse.mounts import (
    UNRESPONSIVE_AFTER,
    BusyError,
    check_fuse,
    fusermount,
    in_mountinfo,
    mount_state,
    wait_for_exit,
)
from pkgfs.vfs.fuse.spawn import EarlyDaemon, fork_daemon

from .lock import resolve_lock, stored_wheels, sync_locked
from .output import print_json

__all__ = ["cmd_mount", "cmd_unmount", "prepare"]


def _mountpoint(given: str, err: TextIO | None = None) -> Path:
    path = Path(given).absolute()
    mountpoint = mountpoint_of(path)
    if err is not None and mountpoint != path:
        print(f"pkgfs: {path} is a venv: mounting its site-packages, {mountpoint}", file=err)
    return mountpoint


def _check_mountpoint(mountpoint: Path) -> None:
    if not os.path.exists(mountpoint) and not in_mountinfo(mountpoint):
        # (a stale mount exists, but stat fails with ENOTCONN)
        raise MountError(f"{mountpoint}: no such directory")
    if mount_state(mountpoint) == "ok":  # the caller asked switch.py first
        raise MountError(f"{mountpoint}: already mounted: pkgfs unmount it first")


def _clear_stale(mountpoint: Path, err: TextIO) -> None:
    if mount_state(mountpoint) == "stale":
        fusermount(mountpoint, lazy=True)
        print(f"pkgfs: {mountpoint}: cleared a stale mount (its daemon had died)", file=err)
    if not mountpoint.is_dir():
        raise MountError(f"{mountpoint}: not a directory")
    present = sorted(os.listdir(mountpoint))
    if present:
        # A mount would hide them: python -m venv's pip (whose bin/pip then breaks), or a
        # whole project. Nothing is hidden silently.
        shown = few(present)
        raise MountError(
            f"{mountpoint}: not empty ({shown}): a mount would hide what is there; make the venv"
            " without packages (python -m venv --without-pip DIR, or uv venv DIR), or empty it"
        )


@contextlib.contextmanager
def _locks(mountpoint: Path, state: Path, overlay: Path) -> Iterator[list[int]]:
    """Lock the mount's state directory and its overlay directory, for as long as the
    command runs; the daemon is handed the same open files and holds them after."""
    held = [
        take(
            state,
            f"{mountpoint}: busy: another pkgfs mount of it is under way, or its daemon still"
            f" serves processes that used it before a lazy unmount (pid in {state / 'mount.json'})",
        )
    ]
    try:
        if overlay != state:
            overlay.mkdir(parents=True, exist_ok=True)
            held.append(
                take(overlay, f"{overlay}: busy: another mount uses this --overlay directory")
            )
        yield held
    finally:
        for fd in held:
            os.close(fd)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back (they are delivered after): a second Ctrl-C must not
    cut a roll-back short."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def cmd_mount(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs mount``. Raises ``PkgfsError`` (one line) when it cannot mount, having
    undone everything it did; ``KeyboardInterrupt`` on SIGINT or SIGTERM, likewise."""
    if args.all:
        if args.mountpoint is not None:
            raise UsageError(f"{args.mountpoint}: --all mounts every environment: name none")
        from .env import mount_all  # noqa: PLC0415

        return mount_all(args, out)
    if args.mountpoint is None:
        raise UsageError("pkgfs mount: name a MOUNTPOINT, or --all")
    mountpoint = _mountpoint(args.mountpoint)
    if mount_state(mountpoint) == "ok":
        from .switch import follow_lock  # noqa: PLC0415

        # Its lock (or the groups asked) changed: switched live, else "already mounted".
        return follow_lock(args, out, mountpoint)
    return _mount(args, out)


def _mount(args: argparse.Namespace, out: TextIO) -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # undone like Ctrl-C
    mountpoint = _mountpoint(args.mountpoint, sys.stderr)
    check_fuse(mountpoint, args.allow_other)
    _check_mountpoint(mountpoint)
    venv = venv_of(mountpoint)
    if venv is not None and args.python is not None:
        _check_python(Path(args.python), venv)
    if args.python is None and venv is not None:
        args.python = str(venv.python)
    if args.lock is None:
        args.lock = discover_lock(venv.project if venv else Path.cwd())
        print(f"pkgfs: using {args.lock}", file=sys.stderr)
    state = mount_dir(mountpoint)
    overlay = Path(args.overlay).absolute() if args.overlay else state
    store_root = resolve_store_path(getattr(args, "store", None)).absolute()
    for forbidden, what in ((store_root, "inside the store"), (mountpoint, "below the mountpoint")):
        if overlay == forbidden or forbidden in overlay.parents:
            raise MountError(f"{overlay}: the overlay cannot be {what}")
    # On failure, remove every directory this mount created, down from the first new one.
    created = next((p for p in reversed([state, *state.parents]) if not p.exists()), None)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    daemon: EarlyDaemon | None = getattr(args, "daemon", None)
    try:
        with _locks(mountpoint, state, overlay) as locks:
            try:
                _clear_stale(mountpoint, sys.stderr)
                if venv is not None:
                    _set_aside_if_new(venv, state, overlay, sys.stderr)
                before = _config_before(state)
                with Store.open_to_prepare(getattr(args, "store", None)) as store:
                    config, view = prepare(
                        args, store, mountpoint=mountpoint, venv=venv, state=state, overlay=overlay
                    )
                    from .switch import reconcile_unmounted  # noqa: PLC0415

                    reconcile_unmounted(args, store, state, before, (config, view))
                # The store's index is closed: the daemon needs only the view and the objects.
                if args.foreground:
                    return _serve_foreground(config, view, venv, out)
                # The daemon is forked by main() before the slow imports (fuse/spawn.py); a
                # caller that did not fork one gets one now.
                daemon = daemon or fork_daemon()
                _raise_if(daemon.start(state, locks))  # once the mount answers
                if venv is not None:
                    # Ctrl-C waits until every script written is recorded (a second or so
                    # for thousands): the roll-back then removes exactly what was made.
                    with _venv_errors(venv), _signals_deferred():
                        warnings = populate_venv(venv, view, state)
                    for warning in warnings:
                        print(f"pkgfs: warning: {warning}", file=sys.stderr)
            except BaseException:
                with _signals_deferred():
                    _roll_back(mountpoint, daemon, state)
                raise
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    _clear_marks(state)
    _say_mounted(args, config, mountpoint, out)
    return 0


def _clear_marks(state: Path) -> None:
    """Mounted by ``pkgfs mount``: ``mount --all`` and a mount server's start mount it again
    (as after a reboot) from now on."""
    for mark in (UNMOUNTED, MADE_BY_RUN):
        (state / mark).unlink(missing_ok=True)


def _say_mounted(
    args: argparse.Namespace, config: MountConfig, mountpoint: Path, out: TextIO
) -> None:
    """One line, or with ``--json`` an object: mountpoint, lock, python, packages, groups."""
    if getattr(args, "json", False):
        row: dict[str, object] = {"mountpoint": str(mountpoint), "lock": str(args.lock)}
        row |= {"python": config.python, "packages": len(config.wheels)}
        row["selection"] = config.selection
        print_json(row, out)
        return
    selected = f", {config.selection}" if config.selection else ""
    print(
        f"mounted {len(config.wheels)} packages at {mountpoint}"
        f" (lock {args.lock}{selected}, python {config.python})",
        file=out,
    )


def _check_python(python: Path, venv: Venv) -> None:
    """``--python`` must run as the venv's own interpreter does: the wheels, their markers
    and the bytecode are chosen for the interpreter that will import them. Raises
    ``MountError`` naming both when they differ (in tags, markers or bytecode magic)."""
    if os.path.realpath(python) == os.path.realpath(venv.python):
        return
    try:
        wanted, own = probe_target(python), probe_target(venv.python)
    except TargetError as exc:
        raise MountError(f"--python: {exc}") from None
    if (wanted.tags, wanted.environment, wanted.magic) == (own.tags, own.environment, own.magic):
        return
    raise MountError(
        f"--python {python} (Python {wanted.python_version}) is not the interpreter of the venv"
        f" at {venv.root} (Python {own.python_version}), which is the one that imports these"
        f" packages: recreate the venv with it ({python} -m venv {venv.root}), or leave out"
        " --python (and relock if the lock needs another Python)"
    )


def _identity(venv: Venv) -> str:
    try:
        return venv_identity(venv, create=True) or ""
    except OSError as exc:
        raise MountError(f"{venv.root}: cannot mark the venv as pkgfs's: {exc}") from None


def _set_aside_if_new(venv: Venv, state: Path, overlay: Path, err: TextIO) -> None:
    """When the environment kept for this mountpoint belonged to another venv (this one
    was made anew at the same path), its overlay is not this venv's: it is moved aside, not
    applied and not deleted, and said in one line. Raises ``MountError`` when it cannot be
    moved."""
    try:
        previous = MountConfig.load(state / "config.json")
    except (OSError, MountError):
        return  # none, or unreadable: nothing to inherit
    current = venv_identity(venv)
    if not previous.venv_id or previous.venv_id == current:
        return  # the same venv (or one mounted by a pkgfs that kept no identity)
    upper, work = Path(previous.upper), Path(previous.work)
    if not upper.exists() and not work.exists():
        return
    aside = overlay / f"previous-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    try:
        aside.mkdir(mode=0o700)
        for part in (upper, work):
            if part.exists():
                part.rename(aside / part.name)
        (state / "config.json").rename(aside / "config.json")
        if (state / "previous.json").exists():  # its rollback is not this venv's either
            (state / "previous.json").rename(aside / "previous.json")
    except OSError as exc:
        raise MountError(
            f"{venv.root}: cannot set the previous venv's overlay aside: {exc}"
        ) from None
    print(
        f"pkgfs: {venv.root} is a new venv: the overlay of the one mounted here before is not"
        f" applied; it is kept in {aside} (delete it when you do not need it)",
        file=err,
    )


def _config_before(state: Path) -> MountConfig | None:
    """The config this environment was last mounted with, if any and readable."""
    try:
        return MountConfig.load(state / "config.json")
    except (OSError, MountError):
        return None


def _serve_foreground(config: MountConfig, view: View, venv: Venv | None, out: TextIO) -> int:
    from pkgfs.vfs.fuse.daemon import serve  # noqa: PLC0415 (trio and pyfuse3 only when serving)

    state = Path(config.state)

    def ready(error: str | None) -> None:
        _raise_if(error)
        if venv is not None:  # the mount answers: only now does the venv get its scripts
            with _venv_errors(venv):
                for warning in populate_venv(venv, view, state):
                    print(f"pkgfs: warning: {warning}", file=sys.stderr)
        print(f"mounted {len(config.wheels)} packages at {config.mountpoint}", file=out, flush=True)

    try:
        return serve(config, view, ready)
    finally:
        depopulate_venv(state)


@contextlib.contextmanager
def _venv_errors(venv: Venv) -> Iterator[None]:
    """An ``OSError`` writing the venv (a full disk, a read-only bin/) as one line."""
    try:
        yield
    except PkgfsError:
        raise
    except OSError as exc:
        raise MountError(f"{venv.root}: cannot write the venv's scripts and links: {exc}") from None


def _roll_back(mountpoint: Path, daemon: EarlyDaemon | None, state: Path) -> None:
    """Undo a mount that failed: stop and reap its daemon, unmount what is left (a daemon
    that was killed leaves a stale mount), remove the venv's scripts and the daemon's
    record. Raises ``MountError`` when the mount cannot be undone: then the caller must
    keep the state directory, for the overlay is still under a live mount."""
    if daemon is not None:
        daemon.stop()
    if in_mountinfo(mountpoint):
        try:
            fusermount(mountpoint, lazy=True)
        except MountError as exc:
            raise MountError(
                f"{mountpoint}: the mount failed, and could not be undone ({exc}): its state"
                f" {state} is kept; pkgfs unmount {mountpoint}"
            ) from None
    depopulate_venv(state)
    (state / "mount.json").unlink(missing_ok=True)


def prepare(
    args: argparse.Namespace,
    store: Store,
    *,
    mountpoint: Path,
    venv: Venv | None,
    state: Path,
    overlay: Path,
    save_as: str = "config.json",
) -> tuple[MountConfig, View]:
    """Resolve, sync, compile and compose: everything a mount needs, before it mounts;
    the config is saved in ``state`` as ``save_as`` (a switch's is ``next.json``)."""
    resolved = resolve_lock(args, store, sys.stderr)
    _, outcomes = sync_locked(store, resolved, args.offline, mountpoint, not args.no_compile)
    failed = [o.error for o in outcomes if o.error is not None]
    if failed:
        raise failed[0]
    if venv is None and args.python is None:
        print(
            f"pkgfs: {mountpoint} is not a venv's site-packages: its packages are for"
            f" {resolved.target.python} (Python {resolved.target.python_version}); --python"
            " chooses another",
            file=sys.stderr,
        )
    upper, work = overlay / "upper", overlay / "work"
    lock_sha256 = ""
    with contextlib.suppress(OSError):
        lock_sha256 = hash_file(args.lock)[0]
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
        lock_sha256=lock_sha256,
        venv_id=_identity(venv) if venv else "",
        selection=resolved.selection.describe(),
    )
    view = config.view(store)  # composed (and saved) now: a conflict fails unmounted
    for note in view.conflict_notes():
        print(f"pkgfs: warning: {note}", file=sys.stderr)
    config.save(state / save_as)
    return config, view


def _raise_if(error: str | None) -> None:
    if error is not None:
        raise MountError(error)


def cmd_unmount(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs unmount``. A busy mount (a process has a file or its working directory in
    it) is detached lazily, and the output says so. Raises ``MountError`` when it is not
    mounted or cannot be unmounted."""
    mountpoint = _mountpoint(args.mountpoint)
    state = mount_state(mountpoint, timeout=UNRESPONSIVE_AFTER)  # a hung daemon: detach it
    if state == "unmounted":
        raise MountError(f"{mountpoint}: not mounted")
    directory = mount_dir(mountpoint)
    pid = None
    with contextlib.suppress(OSError, MountError):
        pid = MountRecord.load(directory).pid
    lazy = args.lazy or state in ("stale", "unresponsive")
    busy = False
    try:
        fusermount(mountpoint, lazy=lazy)
    except BusyError:
        # Detaching it is what the user asked for; the processes that use it keep it.
        fusermount(mountpoint, lazy=True)
        busy = lazy = True
    # A lazily detached daemon serves on until its last user lets go: do not wait for it.
    gone = pid is None or wait_for_exit(pid, timeout=1.0 if lazy else 10.0)
    depopulate_venv(directory)
    with contextlib.suppress(OSError):  # on purpose: a new mount server leaves it unmounted
        (directory / UNMOUNTED).touch()
    if gone:
        (directory / "mount.json").unlink(missing_ok=True)
    if state == "unresponsive" and not gone:
        print(
            f"unmounted {mountpoint} lazily: its daemon (pid {pid}) does not answer (stopped or"
            f" hung) and still runs: kill {pid} before mounting it again",
            file=out,
        )
    elif busy:
        print(
            f"unmounted {mountpoint} lazily (as --lazy does): it was busy, and its daemon"
            f" (pid {pid}) serves the processes still using it until they let go",
            file=out,
        )
    else:
        print(f"unmounted {mountpoint}" + (" (it was stale)" if state == "stale" else ""), file=out)
    return 0
