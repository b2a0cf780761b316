"""The mount's daemon, forked first and told to serve last.

Most of a small mount's time is imports: pkgfs's own in the command, trio's and pyfuse3's
in the daemon. ``pkgfs mount`` therefore forks the daemon right after parsing its
arguments, before it imports the rest of pkgfs. The daemon detaches and imports trio and
pyfuse3 while the command imports its modules, resolves the lock and composes the view;
on a machine with two CPUs the two run side by side. Then the command writes the mount's
state directory to the daemon ("go"), and the daemon loads the saved config and view from
there, mounts, and answers "ok" (or the error) once the kernel mount exists. If the command
fails first, it closes the pipe unsaid and the daemon exits without a trace.

This module imports only the standard library: it runs before the rest of pkgfs is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from pathlib import Path

__all__ = ["EarlyDaemon", "fork_daemon", "redirect_stdio"]

Ready = Callable[[str | None], None]


class EarlyDaemon:
    """The command's side of a daemon forked by :func:`fork_daemon`."""

    def __init__(self, pid: int, go: int, answer: int) -> None:
        self.pid, self._go, self._answer = pid, go, answer
        self.done = False

    def start(self, state: Path) -> str | None:
        """Tell the daemon to serve the mount in ``state``; None once it serves, else why not."""
        self.done = True
        try:
            os.write(self._go, f"go {state}\n".encode())
        except OSError:
            pass  # it died before it could read (EPIPE): the answer below is EOF
        finally:
            os.close(self._go)
        # It answers once the kernel mount exists; EOF without an answer means it died.
        with os.fdopen(self._answer, "rb") as answer_file:
            answer = answer_file.readline().decode().strip()
        if answer == "ok":
            return None
        _, status = os.waitpid(self.pid, 0)
        exited = f"the daemon exited ({os.waitstatus_to_exitcode(status)}); see {state / 'log'}"
        return answer.removeprefix("error: ") or exited

    def cancel(self) -> None:
        """The mount will not happen: the daemon reads EOF and exits. Idempotent."""
        if self.done:
            return
        self.done = True
        os.close(self._go)
        os.close(self._answer)
        os.waitpid(self.pid, 0)


def fork_daemon() -> EarlyDaemon:
    """Fork the daemon. It detaches and imports what serving needs, then waits for "go"."""
    go_read, go_write = os.pipe()
    answer_read, answer_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon
        code = 1
        try:
            os.close(go_write)
            os.close(answer_read)
            code = _daemon(go_read, answer_write)
        finally:
            os._exit(code)
    os.close(go_read)
    os.close(answer_write)
    return EarlyDaemon(pid, go_write, answer_read)


def _daemon(go: int, answer: int) -> int:
    os.setsid()  # detached: survives the command and its terminal
    redirect_stdio(None, keep=(go, answer))  # a caller reading the command's output sees EOF

    def ready(error: str | None) -> None:
        os.write(answer, (f"error: {error}\n" if error else "ok\n").encode())
        os.close(answer)

    try:
        from .daemon import serve_state  # noqa: PLC0415 (trio and pyfuse3: the slow imports)
    except Exception as exc:
        if _read_line(go).startswith("go "):
            ready(f"cannot start the daemon: {type(exc).__name__}: {exc}")
        return 1
    line = _read_line(go)
    os.close(go)
    if not line.startswith("go "):
        return 0  # the command gave up
    return serve_state(Path(line.removeprefix("go ")), ready)


def _read_line(fd: int) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode().rstrip("\n")


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
