"""The mount daemon: one process per mounted environment.

``pkgfs mount`` forks the daemon once the view is composed (or runs :func:`serve` in the
foreground). The daemon mounts the view with pyfuse3, writes its ``mount.json``, and only
once the mount answers (``statvfs`` succeeds) tells the waiting parent it is ready:
readiness is signalled, never guessed. If that fails (the parent is gone, or its
foreground work failed), it unmounts and exits. It serves until unmounted, or until
SIGTERM/SIGINT, on which it unmounts cleanly. ``pyfuse3.init`` and ``pyfuse3.close`` are
always paired.

Beside the filesystem it answers a control socket (one JSON line per request): ``reset``
must run inside the daemon, which owns the overlay's in-memory state and can tell the
kernel what to forget.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

import pyfuse3
import trio

from pkgfs.store import Store
from pkgfs.store.errors import MountError
from pkgfs.store.layout import StoreLayout
from pkgfs.vfs.env.state import MountConfig, MountRecord
from pkgfs.vfs.env.view import View
from pkgfs.vfs.overlay import MergedTree

from .control import serve_control
from .features import no_open_support
from .mounts import check_fuse
from .operations import PkgfsOperations
from .wire import new_address

__all__ = ["log_output", "serve", "serve_state"]

log = logging.getLogger("pkgfs.vfs")


def _setup_logging(state: Path) -> None:
    handler = logging.FileHandler(state / "log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


async def _main(
    ops: PkgfsOperations, listener: socket.socket, mountpoint: str, ready: Callable[[], None]
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_control, ops, listener)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("signal %d: unmounting", signum)
                    pyfuse3.terminate()
                    return

            async def announce() -> None:
                # The kernel sends statfs to us: it succeeds once pyfuse3.main answers.
                # ``ready`` may block (it writes the venv's scripts in the foreground).
                await trio.to_thread.run_sync(os.statvfs, mountpoint)
                await trio.to_thread.run_sync(ready)

            nursery.start_soon(stop_on_signal)
            nursery.start_soon(announce)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()


def serve_state(state: Path, ready: Callable[[str | None], None], locks: Sequence[int] = ()) -> int:
    """Serve the mount that ``pkgfs mount`` prepared in ``state``: its saved config, and the
    view that config names (saved in the store by the command: this only loads it).

    ``locks`` are descriptors of the mount's locks (``flock``), held open for the mount's
    life: they are released when this process exits."""
    log_output(state / "log")
    try:
        config = MountConfig.load(state / "config.json")
        # Only loads the view the command saved: never waits for the store's lock file.
        with Store.open_read_only(config.store) as store:
            view = config.view(store)
    except Exception as exc:
        log.exception("cannot load the mount in %s", state)
        ready(f"cannot load the mount in {state}: {exc}")
        return 1
    return serve(config, view, ready)


def serve(config: MountConfig, view: View, ready: Callable[[str | None], None]) -> int:
    """Mount ``view`` and serve until unmounted. ``ready(None)`` once the mount answers
    (from a worker thread), ``ready(error)`` if it cannot mount. An exception raised by
    ``ready(None)`` unmounts and propagates from here, as does anything that fails while
    serving. Needs no store index: the view names the objects."""
    state = Path(config.state)
    _setup_logging(state)
    try:
        objects = StoreLayout(Path(config.store)).objects
        tree = MergedTree(view, objects, Path(config.upper), Path(config.work))
        tree.clean_work()  # what a killed daemon left: half-made copies, unlinked open files
        # PKGFS_FUSE_MODE=open serves the open mode even with the patched pyfuse3 (to compare).
        no_open = no_open_support() and os.environ.get("PKGFS_FUSE_MODE") != "open"
        ops = PkgfsOperations(tree, os.getuid(), os.getgid(), no_open=no_open)
        ops.state = state  # where a switch finds its next config (switch.py)
        control = new_address(state.name)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(control)
        listener.listen()
        options = set(pyfuse3.default_options) | {"fsname=pkgfs", "subtype=pkgfs"}
        if config.allow_other:
            options.add("allow_other")
        pyfuse3.init(ops, config.mountpoint, options)
    except Exception as exc:
        log.exception("cannot mount %s", config.mountpoint)
        ready(_why_not(config, exc))
        return 1
    unmount = True
    try:
        record = MountRecord(
            mountpoint=config.mountpoint,
            lock=config.lock,
            python=config.python,
            packages=len(config.wheels),
            pid=os.getpid(),
            upper=config.upper,
            work=config.work,
            log=str(state / "log"),
            socket=control.replace("\0", "@"),
            mode=ops.mode,
            selection=config.selection,
        )
        record.save(state)
        log.info(
            "mounted %s (%d packages, %s mode)", config.mountpoint, len(config.wheels), ops.mode
        )
        trio.run(_main, ops, listener, config.mountpoint, lambda: ready(None))
    except BaseException:
        log.exception("daemon failed")
        raise
    finally:
        pyfuse3.close(unmount=unmount)
        listener.close()
        (state / "mount.json").unlink(missing_ok=True)
        log.info("unmounted %s", config.mountpoint)
    return 0


def _why_not(config: MountConfig, exc: Exception) -> str:
    """Why the mount failed, in one line: libfuse says only "fuse_session_mount failed"
    (its reason went to the log), so ask for the causes a user can fix first."""
    try:
        check_fuse(Path(config.mountpoint), config.allow_other)
    except MountError as cause:
        return str(cause)
    return f"{config.mountpoint}: cannot mount: {exc} (see {Path(config.state) / 'log'})"


def log_output(log: Path) -> None:
    """Send stdout and stderr to ``log``, appending."""
    output = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
