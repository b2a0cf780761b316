"""The ``pkgfs`` command: a thin client of the per-user mount server.

Python spends most of a small ``pkgfs mount`` importing pkgfs, trio and pyfuse3, and a
mount's daemon was a whole process of its own. So the console script imports only the
standard library and hands the commands that mount or ask mounts (:data:`ROUTED`) to the
server (``pkgfs.vfs.server.serve``), which has everything imported and runs each command in
a fork of itself; a mount's daemon is a fork of that fork. It sends its arguments, working
directory, environment and umask, and its stdin, stdout and stderr themselves
(``SCM_RIGHTS``): the command reads and writes them as if it ran here. It forwards SIGINT,
SIGTERM and SIGHUP to the command (Ctrl-C rolls a mount back as before), and returns its exit
status. If it hangs up, the server sends the command SIGTERM.

When no server answers, the first client starts one, detached, and waits until it listens;
two clients at once start one (``pkgfs.vfs.server.address``). When no server can be reached
or started, or with ``PKGFS_SERVER=0``, or for every other command, the command runs in this
process, exactly as it would without a server.

The messages: first a 4-byte big-endian length and a JSON object (``argv``, ``cwd``,
``env``, ``umask``) with the three descriptors; then, client to server, ``signal N`` lines;
server to client, one ``exit N`` line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence

from .address import Server, server_for

__all__ = ["ROUTED", "STARTUP_TIMEOUT", "connect", "main", "routed", "start_server"]

# The commands the server runs: mounting, and asking mounts. Others (store, sync, lock,
# server itself) run here: they gain nothing from a fork, and some run pools of their own.
ROUTED = frozenset({"mount", "unmount", "status", "diff", "reset", "env"})
STARTUP_TIMEOUT = 30.0  # seconds a new server has to listen
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def routed(argv: Sequence[str]) -> bool:
    """Whether the command in ``argv`` (without the program name) goes to the server:
    its first word that is not an option (``--store DIR`` skipped) is in ROUTED."""
    words = iter(argv)
    for word in words:
        if word == "--store":
            next(words, None)
        elif word in ("-h", "--help", "--version"):
            return False
        elif not word.startswith("-"):
            return word in ROUTED
    return False


def connect(server: Server) -> socket.socket | None:
    """A connection to the running server of ``server``, or None when none answers. The
    listener must be of our own uid (``SO_PEERCRED``)."""
    found = server.read()
    if found is None:
        return None
    _pid, address = found
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(address)
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        if struct.unpack("3i", creds)[1] != os.getuid():
            raise PermissionError(f"{address!r} is another user's")
    except OSError:
        sock.close()
        return None
    return sock


def start_server(server: Server, timeout: float = STARTUP_TIMEOUT) -> bool:
    """Start a detached ``pkgfs server`` for ``server`` and wait until it listens (or says
    another one does). False when it could not start; its log says why."""
    import subprocess  # noqa: PLC0415 (only when a server is started)

    read_end, write_end = os.pipe()
    environ = {**os.environ, "PKGFS_SERVER_READY_FD": str(write_end)}
    try:
        with open(server.log, "ab") as log:
            os.chmod(server.log, 0o600)
            subprocess.Popen(
                [sys.executable, "-m", "pkgfs.vfs", "server"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=environ,
                pass_fds=[write_end], start_new_session=True, cwd="/", close_fds=True,
            )  # fmt: skip
    except OSError:
        os.close(read_end)
        return False
    finally:
        os.close(write_end)
    answer = b""
    deadline = time.monotonic() + timeout
    with open(read_end, "rb", buffering=0) as ready:
        while not answer.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([ready], [], [], left)[0]:
                return False
            chunk = ready.read(512)
            if not chunk:
                break
            answer += chunk
    return answer.strip() in (b"ok", b"running")


def _reach(server: Server) -> socket.socket | None:
    """A connection to the server, starting it first when none runs; None if impossible."""
    sock = connect(server)
    if sock is not None:
        return sock
    try:
        server.make_directory()
        fd = os.open(server.start_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:  # another client may be starting it: wait for that one
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.02)
        sock = connect(server)
        if sock is None and start_server(server):
            sock = connect(server)
        return sock
    finally:
        os.close(fd)


def _send_request(sock: socket.socket, argv: Sequence[str]) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    request = {"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask}
    payload = json.dumps(request).encode()
    data = struct.pack(">I", len(payload)) + payload
    sent = socket.send_fds(sock, [data], [0, 1, 2])
    sock.sendall(data[sent:])


def _wait_for_exit(sock: socket.socket, server: Server) -> int:
    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(OSError):
            sock.sendall(f"signal {signum}\n".encode())

    for signum in FORWARDED:
        signal.signal(signum, forward)
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = sock.recv(64)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            print(
                "pkgfs: error: the pkgfs server went away before the command finished"
                f" (see {server.log}); the command itself may still finish: see pkgfs status"
                " before running it again",
                file=sys.stderr,
            )
            return 1
        data += chunk
    word, _, value = data.decode().strip().partition(" ")
    return int(value) if word == "exit" and value.lstrip("-").isdigit() else 1


def _through_server(argv: Sequence[str]) -> int | None:
    """The command's exit status, run by the server; None if no server can run it."""
    try:
        server = server_for()
        for fd in (0, 1, 2):
            os.fstat(fd)  # a closed stdio descriptor cannot be sent: run here
    except OSError:
        return None
    sock = _reach(server)
    if sock is None:
        return None
    with sock:
        try:
            _send_request(sock, argv)
        except (OSError, ValueError):
            return None  # it went away before taking the command: nothing ran
        return _wait_for_exit(sock, server)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``pkgfs`` command, through the server when it is one of ROUTED; its exit
    status (``pkgfs.vfs.cli.main`` says which)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if routed(args) and os.environ.get("PKGFS_SERVER", "1") != "0":
        try:
            status = _through_server(args)
        except KeyboardInterrupt:  # while reaching the server, before signals are forwarded
            print("pkgfs: interrupted", file=sys.stderr)
            return 130
        if status is not None:
            return status
    from pkgfs.vfs.cli import main as in_process  # noqa: PLC0415 (only without a server)

    return in_process(args)


if __name__ == "__main__":
    sys.exit(main())
