"""One command, run by a fork of the server as if it ran in the client's process.

The worker takes the client's stdin, stdout and stderr (the very descriptors it sent), its
working directory, environment and umask, resets the signal handlers the server set, and
runs the normal ``pkgfs`` :func:`~pkgfs.vfs.cli.main`. It is a session of its own, so the
server's signals never reach it, and neither do the terminal's: the client forwards them.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
from collections.abc import Sequence
from typing import TextIO, cast

from .client import REQUEST_TAG

__all__ = ["Request", "run_worker"]

_OCTAL = re.compile(rb"[0-7]{1,3}")
_COUNT = re.compile(rb"[0-9]{1,9}")


class Request:
    """A client's command: its arguments, working directory (absolute), environment and
    umask. Raises ``ValueError`` when the umask is not one of 0 to 0o777."""

    def __init__(self, argv: list[str], cwd: str, env: dict[str, str], umask: int) -> None:
        if not 0 <= umask <= 0o777:
            raise ValueError("umask must be an int of 0 to 0o777")
        self.argv, self.cwd, self.env, self.umask = argv, cwd, env, umask

    @classmethod
    def decode(cls, payload: bytes) -> Request:
        """The request in ``payload``, the bytes after the length prefix, as
        ``pkgfs.vfs.server.client.encode_request`` makes them: NUL-separated fields, the
        tag ``pkgfs-request 1``, the umask in octal, the working directory (absolute), the
        number of arguments, the arguments, then ``NAME=VALUE`` for each variable of the
        environment. Bytes are decoded as the client's ``os.fsencode`` encoded them
        (``os.fsdecode``: the worker gets back the very bytes). Raises ``ValueError``
        saying what is wrong with anything else."""
        fields = payload.split(b"\0")
        if fields[0] != REQUEST_TAG:
            raise ValueError(f"not a request of this pkgfs (it starts {fields[0][:40]!r})")
        if len(fields) < 4:
            raise ValueError("a request needs a umask, a directory and an argument count")
        _tag, umask, cwd, count, *rest = fields
        if not _OCTAL.fullmatch(umask):
            raise ValueError(f"the umask must be 1 to 3 octal digits, not {umask[:40]!r}")
        if not cwd.startswith(b"/"):
            raise ValueError(f"the working directory must be absolute, not {cwd[:80]!r}")
        if not _COUNT.fullmatch(count) or int(count) > len(rest):
            raise ValueError(f"{count[:40]!r} arguments, of {len(rest)} fields left")
        argv, variables = rest[: int(count)], rest[int(count) :]
        env: dict[str, str] = {}
        for variable in variables:
            name, equals, value = variable.partition(b"=")
            if not equals:
                raise ValueError(f"an environment variable without '=': {variable[:80]!r}")
            env[os.fsdecode(name)] = os.fsdecode(value)
        return cls([os.fsdecode(a) for a in argv], os.fsdecode(cwd), env, int(umask, 8))


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
