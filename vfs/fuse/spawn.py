"""The mount's daemon, forked first and told to serve last.

Most of a small mount's time is imports: pkgfs's own in the command, trio's and pyfuse3's
in the daemon. ``pkgfs mount`` therefore forks the daemon right after parsing its
arguments, before it imports the rest of pkgfs. The daemon detaches and imports trio and
pyfuse3 while the command imports its modules, resolves the lock and composes the view;
on a machine with two CPUs the two run side by side. Then the command writes the mount's
state directory to the daemon ("go", with the mount's locks), and the daemon loads the
saved config and view from there, mounts, and answers "ok" (or the error) once the mount
answers. If the command fails first, it closes the socket unsaid and the daemon exits
without a trace; if it fails after "go", it stops the daemon (:meth:`EarlyDaemon.stop`)
before it removes anything the mount uses.

This module imports only the standard library: it runs before the rest of pkgfs is loaded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

__all__ = ["EarlyDaemon", "fork_daemon", "name_process", "redirect_stdio"]

Ready = Callable[[str | None], None]

STOP_TIMEOUT = 10.0  # seconds a daemon told to stop has before it is killed


class EarlyDaemon:
    """The command's side of a daemon forked by :func:`fork_daemon`.

    The two talk over a socket pair: "go" goes one way, with the descriptors of the locks
    the daemon is to hold for the mount's life (``SCM_RIGHTS``: the very same open files,
    so the locks never lapse between the command and the daemon); "ok" or the error comes
    back once the mount answers.
    """

    def __init__(self, pid: int, channel: socket.socket) -> None:
        self.pid, self._channel = pid, channel
        self.started = False  # "go" was sent: from here on the daemon may have mounted
        self.reaped = False

    def start(self, state: Path, locks: Sequence[int] = ()) -> str | None:
        """Tell the daemon to serve the mount in ``state``, holding ``locks``; None once the
        mount answers, else why not (the daemon has then exited, and been reaped)."""
        self.started = True
        # If it died before it could read (EPIPE), the answer below is EOF.
        with contextlib.suppress(OSError):
            socket.send_fds(self._channel, [f"go {state}\n".encode()], list(locks))
        answer = _read_line(self._channel)
        self._channel.close()
        if answer == "ok":
            return None
        _, status = os.waitpid(self.pid, 0)
        self.reaped = True
        exited = f"the daemon exited ({os.waitstatus_to_exitcode(status)}); see {state / 'log'}"
        return answer.removeprefix("error: ") or exited

    def cancel(self) -> None:
        """The mount will not happen: the daemon reads EOF and exits. Idempotent; does
        nothing once "go" was sent (then :meth:`stop` undoes the mount)."""
        if self.started:
            return
        self.started = True
        self._channel.close()
        os.waitpid(self.pid, 0)
        self.reaped = True

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Undo a started daemon: SIGTERM (it unmounts and exits), SIGKILL after ``timeout``
        seconds, and reap it. Idempotent. A mount it leaves behind (it was killed, or had
        not yet set up its signal handlers) is stale: the caller unmounts it."""
        self.cancel()
        self._channel.close()
        if self.reaped:
            return
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                break
            time.sleep(0.01)
        self.reaped = True


def fork_daemon() -> EarlyDaemon:
    """Fork the daemon. It detaches and imports what serving needs, then waits for "go"."""
    command_end, daemon_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the daemon
        code = 1
        try:
            command_end.close()
            code = _daemon(daemon_end)
        finally:
            os._exit(code)
    daemon_end.close()
    return EarlyDaemon(pid, command_end)


def name_process(name: str) -> None:
    """Call this process ``name`` where ``ps -o comm``, ``top`` and ``pgrep`` look
    (``/proc/self/comm``: 15 bytes at most): a mount's daemon and the mount server are
    forks of one Python and would all read ``python3``. Best effort."""
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write(name[:15])


def _daemon(channel: socket.socket) -> int:
    os.setsid()  # detached: survives the command and its terminal
    name_process("pkgfs-mount")
    redirect_stdio(None, keep=(channel.fileno(),))  # a caller of the command sees EOF

    def ready(error: str | None) -> None:
        # Raises OSError when the command is gone: then the daemon unmounts and exits.
        try:
            channel.sendall((f"error: {error}\n" if error else "ok\n").encode())
        finally:
            channel.close()

    try:
        from .daemon import serve_state  # noqa: PLC0415 (trio and pyfuse3: the slow imports)
    except Exception as exc:
        if _read_go(channel)[0].startswith("go "):
            ready(f"cannot start the daemon: {type(exc).__name__}: {exc}")
        return 1
    line, locks = _read_go(channel)
    if not line.startswith("go "):
        return 0  # the command gave up
    return serve_state(Path(line.removeprefix("go ")), ready, locks)


def _read_go(channel: socket.socket) -> tuple[str, list[int]]:
    """The "go" line and the descriptors that came with it ("" on EOF)."""
    data, fds, _flags, _address = socket.recv_fds(channel, 4096, 16)
    while data and not data.endswith(b"\n"):
        chunk = channel.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode().rstrip("\n"), fds


def _read_line(channel: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = channel.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def redirect_stdio(log: Path | None, keep: Collection[int]) -> None:
    """Point stdin at /dev/null and stdout and stderr at ``log`` (or /dev/null); close every
    other inherited descriptor but ``keep``."""
    start = 3
    for fd in sorted(k for k in keep if k >= start):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, os.sysconf("SC_OPEN_MAX"))
    devnull = os.open(os.devnull, os.O_RDWR)
    output = devnull if log is None else os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(devnull, 0)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(devnull)
    if output != devnull:
        os.close(output)
