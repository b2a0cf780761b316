"""One command, run by a fork of the server as if it ran in the client's process.

The worker takes the client's stdin, stdout and stderr (the very descriptors it sent), its
working directory, environment and umask, resets the signal handlers the server set, and
runs the normal ``pkgfs`` :func:`~pkgfs.vfs.cli.main`. It is a session of its own, so the
server's signals never reach it, and neither do the terminal's: the client forwards them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import TextIO, cast

__all__ = ["Request", "run_worker"]


class Request:
    """A client's command: what the client sent, checked. Raises ``ValueError`` (with what
    is wrong) on anything else."""

    def __init__(self, message: dict[str, object]) -> None:
        argv, cwd, env, umask = (message.get(k) for k in ("argv", "cwd", "env", "umask"))
        if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            raise ValueError("argv must be a list of strings")
        if not isinstance(cwd, str):
            raise ValueError("cwd must be a string")
        if not (
            isinstance(env, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        ):
            raise ValueError("env must map strings to strings")
        if not isinstance(umask, int) or not 0 <= umask <= 0o777:
            raise ValueError("umask must be an int of 0 to 0o777")
        self.argv: list[str] = argv
        self.cwd, self.env, self.umask = cwd, env, umask


def _stdio() -> None:
    """New sys.stdin, stdout and stderr on descriptors 0, 1 and 2, buffered as Python
    buffers them at startup (line by line on a terminal; stderr always)."""
    encoding = sys.stdout.encoding if sys.stdout is not None else "utf-8"

    def stream(fd: int, writes: bool, errors: str, lines: bool) -> TextIO:
        buffering = 1 if lines or os.isatty(fd) else -1
        opened = open(  # noqa: SIM115 (the process's new stdio)
            fd, "w" if writes else "r", buffering, encoding, errors, closefd=False
        )
        return cast(TextIO, opened)

    sys.stdin = stream(0, False, "strict", False)
    sys.stdout = stream(1, True, "strict", False)
    sys.stderr = stream(2, True, "backslashreplace", True)


def run_worker(request: Request, fds: Sequence[int]) -> int:
    """In the forked worker: take on the client's ``fds`` (stdin, stdout, stderr) and
    context, run the command, and return its exit status. The caller has closed the
    server's own descriptors and must ``os._exit`` with the status."""
    os.setsid()
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    _stdio()
    os.umask(request.umask)
    os.environ.clear()
    os.environ.update(request.env)
    sys.argv = ["pkgfs", *request.argv]
    try:
        os.chdir(request.cwd)
    except OSError as exc:
        print(f"pkgfs: error: {request.cwd}: {exc.strerror}", file=sys.stderr)
        return 1
    from pkgfs.vfs.cli import main  # noqa: PLC0415 (imported by the server long before)

    try:
        status = main(request.argv)
    except SystemExit as exc:  # argparse: usage errors (2), --help (0)
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:  # before the command's own boundary took over
        print("pkgfs: interrupted", file=sys.stderr)
        status = 130
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):
            stream.flush()
    return status
