"""``pkgfs run``: mount a lock's environment, run a command in it, unmount: an entrypoint.

``pkgfs run --lock FILE [--venv DIR] [--python PY] -- CMD...`` makes the venv when it is
missing (``python -m venv --without-pip``, with ``--python`` or ``python3``), mounts the
lock at its site-packages as ``pkgfs mount`` does (the daemon detached, the mount's output
on stderr), runs CMD with the venv's ``bin`` first on ``PATH`` and ``VIRTUAL_ENV`` set,
forwards the signals a supervisor sends (``docker stop``'s SIGTERM, SIGHUP, SIGQUIT,
SIGUSR1, SIGUSR2 and SIGINT) to CMD, and when CMD is gone unmounts, whatever ended it, and
exits with CMD's status (``128 + N`` when signal N ended it, as the shell reports it).
Without CMD it serves the environment until SIGTERM or SIGINT, then unmounts and exits 0:
a sidecar.

As a container's PID 1 it also reaps orphaned processes: every child it has is waited for,
so none is left a zombie.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from pkgfs.store.errors import MountError
from pkgfs.store.lock import discover_lock
from pkgfs.vfs.env.state import MADE_BY_RUN, mount_dir, state_home
from pkgfs.vfs.env.venv import depopulate_venv, mountpoint_of
from pkgfs.vfs.fuse.mounts import BusyError, fusermount, in_mountinfo
from pkgfs.vfs.fuse.spawn import EarlyDaemon

from .mount import cmd_mount

__all__ = ["FORWARDED", "cmd_run", "default_venv"]

# What a supervisor sends to stop or poke a service; each is passed on to CMD.
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
STOPPING = (signal.SIGTERM, signal.SIGINT)  # what ends a run without CMD
EXIT_NOT_FOUND, EXIT_NOT_EXECUTABLE = 127, 126  # as the shell says them


def default_venv(lock: Path, python: str) -> Path:
    """``$XDG_STATE_HOME/pkgfs/run/<id>/venv``, ``<id>`` from the lock's real path and the
    interpreter: one venv per (lock, python), in the state directory a container keeps on
    its tmpfs."""
    key = f"{os.path.realpath(lock)}\0{python}".encode()
    return state_home() / "run" / hashlib.sha256(key).hexdigest()[:16] / "venv"


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs run``. Raises ``MountError`` (one line) when the venv cannot be made or the
    environment cannot be mounted, having undone the mount; CMD's own failure is its exit
    status, not an error."""
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if args.lock is None:
        args.lock = discover_lock(Path.cwd())
        print(f"pkgfs: using {args.lock}", file=sys.stderr)
    python = args.python or "python3"
    venv = Path(args.venv).absolute() if args.venv else default_venv(args.lock, python)
    _make_venv(venv, python)
    args.python = None  # the venv's own interpreter is the target from here on
    mountpoint = mountpoint_of(venv)
    mount = argparse.Namespace(**vars(args))
    mount.mountpoint, mount.all, mount.foreground = str(mountpoint), False, False
    mount.overlay = None
    cmd_mount(mount, sys.stderr)  # its "mounted ..." line on stderr: stdout is CMD's
    (mount_dir(mountpoint) / MADE_BY_RUN).touch()  # mount --all leaves it to pkgfs run
    daemon: EarlyDaemon | None = getattr(args, "daemon", None)
    with _forwarding() as forward:
        try:
            if command:
                return _run(command, venv, forward, daemon)
            _serve_until_stopped(forward)
            return 0
        finally:
            with _signals_held():
                _unmount(mountpoint, daemon)


def _make_venv(venv: Path, python: str) -> None:
    """A venv without pip at ``venv`` unless one is there; ``MountError`` when it cannot be
    made."""
    if (venv / "pyvenv.cfg").is_file():
        return
    interpreter = shutil.which(python)
    if interpreter is None:
        raise MountError(f"--python {python}: no such interpreter: name one with --python")
    venv.parent.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(
        [interpreter, "-m", "venv", "--without-pip", str(venv)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        last = (made.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise MountError(f"{venv}: {interpreter} -m venv --without-pip failed: {last}")


class _Forward:
    """The signals received since the run began, passed on to the child once it exists."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.received: list[int] = []

    def __call__(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        if self.child is not None and self.child.returncode is None:
            if signum in (signal.SIGINT, signal.SIGQUIT) and _terminal_sent_it():
                return  # the terminal delivered it to CMD too: not twice
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signum)


def _terminal_sent_it() -> bool:
    """Whether we are in the terminal's foreground process group (then a Ctrl-C or Ctrl-\\
    reached CMD, which shares our group, without us)."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _forwarding() -> Iterator[_Forward]:
    forward = _Forward()
    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    try:
        yield forward
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM held back while unmounting: a second one must not cut it short."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOPPING))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _run(command: list[str], venv: Path, forward: _Forward, daemon: EarlyDaemon | None) -> int:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", os.defpath)])
    env["VIRTUAL_ENV"] = str(venv)
    env.pop("PYTHONHOME", None)
    try:
        forward.child = subprocess.Popen(command, env=env)
    except FileNotFoundError:
        print(f"pkgfs: error: {command[0]}: command not found", file=sys.stderr)
        return EXIT_NOT_FOUND
    except PermissionError:
        print(f"pkgfs: error: {command[0]}: permission denied", file=sys.stderr)
        return EXIT_NOT_EXECUTABLE
    for signum in forward.received:  # any that came before it started
        forward(signum, None)
    return _wait(forward.child, daemon)


def _wait(child: subprocess.Popen[bytes], daemon: EarlyDaemon | None) -> int:
    """Wait for ``child``, reaping every other child that ends meanwhile (orphans that a
    container's PID 1 inherits); its exit status, ``128 + N`` for signal N."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:  # reaped elsewhere: ask the child itself
            code = child.wait()
            break
        if pid == child.pid:
            code = os.waitstatus_to_exitcode(status)
            child.returncode = code
            break
        if daemon is not None and pid == daemon.pid:
            daemon.reaped = True  # it died: the mount is stale, and _unmount detaches it
    return 128 - code if code < 0 else code


def _serve_until_stopped(forward: _Forward) -> None:
    # The handler runs once select returns; the wakeup fd makes a signal that comes between
    # the check and the wait end the wait too.
    wake, woken = os.pipe()
    os.set_blocking(woken, False)
    previous = signal.set_wakeup_fd(woken)
    try:
        while not any(signum in STOPPING for signum in forward.received):
            select.select([wake], [], [])
            os.read(wake, 512)
    finally:
        signal.set_wakeup_fd(previous)
        os.close(wake)
        os.close(woken)


def _unmount(mountpoint: Path, daemon: EarlyDaemon | None) -> None:
    """Stop the daemon (it unmounts on SIGTERM) and reap it; detach whatever is left (a
    daemon that died leaves a stale mount), remove the venv's scripts. Raises
    ``MountError`` when the mount cannot be detached."""
    if daemon is not None:
        with contextlib.suppress(ChildProcessError):
            daemon.stop()
    if in_mountinfo(mountpoint):
        try:
            fusermount(mountpoint, lazy=False)
        except BusyError:
            fusermount(mountpoint, lazy=True)  # a leftover process of CMD's keeps it open
    state = mount_dir(mountpoint)
    depopulate_venv(state)
    (state / "mount.json").unlink(missing_ok=True)
