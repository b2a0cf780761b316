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

The messages: first a 4-byte big-endian length and a request (:func:`encode_request`;
``pkgfs.vfs.server.worker.Request.decode`` reads and checks it) with the three
descriptors; then, client to server, ``signal N`` lines; server to client, one ``exit N``
line.

It starts in a few milliseconds on the way to a running server because it imports nothing
that a bare interpreter has not loaded already but ``_socket``, ``_signal`` and a builtin
sha256 (``pkgfs.vfs.server.address``): no json (the request is NUL-separated bytes), no
``socket`` or ``signal`` (both import enum), no contextlib, selectors or hashlib. What only
starting a server needs (subprocess, fcntl, select) is imported then. Measure it in a
non-editable install (an editable install's finder imports re, enum and pathlib at every
start): ``python -X importtime -c "import pkgfs.vfs.server.client"``, about 2 ms on 2
shared CPUs, where json, socket, contextlib and hashlib took about 23; then the
installation key, about 1 ms (``pkgfs.vfs.server.address``). tests/test_client.py checks
the modules, never the time.
"""

import _socket  # not socket: it imports enum, selectors and more (~4 ms of a 20 ms start)
import os
import sys

from .address import Server, server_for

# signal imports enum (~5 ms); _signal is the same functions, on plain ints. TYPE_CHECKING
# as a plain constant: importing typing would cost milliseconds too (see address.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Mapping
else:
    import _signal

__all__ = [
    "MAX_REQUEST",
    "REQUEST_TAG",
    "ROUTED",
    "STARTUP_TIMEOUT",
    "connect",
    "encode_request",
    "main",
    "routed",
    "start_server",
]

# The commands the server runs: mounting, and asking mounts. Others (store, sync, lock,
# server itself) run here: they gain nothing from a fork, and some run pools of their own.
ROUTED = frozenset({"mount", "unmount", "status", "diff", "reset", "env"})
STARTUP_TIMEOUT = 30.0  # seconds a new server has to listen
FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)
REQUEST_TAG = b"pkgfs-request 1"  # the request's first field: its format and version
# Bytes of a request (length prefix apart) the server takes: more than Linux lets a process
# have in arguments and environment with the default 8 MiB stack (a quarter of it, execve(2)).
# A larger one runs in the client's process, as without a server.
MAX_REQUEST = 1 << 22


def routed(argv: list[str]) -> bool:
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


def connect(server: Server) -> _socket.socket | None:
    """A connection to the running server of ``server``, or None when none answers. The
    listener must be of our own uid (``SO_PEERCRED``: a ``struct ucred``, three 32-bit
    ints pid, uid, gid in the machine's order)."""
    found = server.read()
    if found is None:
        return None
    _pid, address = found
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(address)
        creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
        if int.from_bytes(creds[4:8], sys.byteorder) != os.getuid():
            raise PermissionError(f"{address!r} is another user's")
    except OSError:
        sock.close()
        return None
    return sock


def start_server(server: Server, timeout: float = STARTUP_TIMEOUT) -> bool:
    """Start a detached ``pkgfs server`` for ``server`` and wait until it listens (or says
    another one does). False when it could not start; its log says why."""
    import select  # noqa: PLC0415 (only when a server is started)
    import subprocess  # noqa: PLC0415
    import time  # noqa: PLC0415

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


def _reach(server: Server) -> _socket.socket | None:
    """A connection to the server, starting it first when none runs; None if impossible."""
    sock = connect(server)
    if sock is not None:
        return sock
    import fcntl  # noqa: PLC0415 (only when no server answers)
    import time  # noqa: PLC0415

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


def encode_request(
    argv: list[str], cwd: bytes, environ: "Mapping[bytes, bytes]", umask: int
) -> bytes:
    """The request for a command, length prefix included: a 4-byte big-endian length,
    then NUL-separated fields: :data:`REQUEST_TAG`, the umask in octal, the working
    directory, the number of arguments, each argument, and each ``NAME=VALUE`` of the
    environment. None of these can hold a NUL on POSIX (execve(2) and getcwd(2) take C
    strings); arguments go as the bytes they came as (``os.fsencode``)."""
    fields = [REQUEST_TAG, b"%o" % umask, cwd, b"%d" % len(argv), *map(os.fsencode, argv)]
    fields.extend(name + b"=" + value for name, value in environ.items())
    payload = b"\0".join(fields)
    return len(payload).to_bytes(4, "big") + payload


def _send_request(sock: _socket.socket, argv: list[str]) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    data = encode_request(argv, os.getcwdb(), os.environb, umask)
    if len(data) - 4 > MAX_REQUEST:
        raise ValueError(f"a request longer than {MAX_REQUEST} bytes")  # run here
    # SCM_RIGHTS carries an array of C ints (32 bits on Linux), as socket.send_fds packs it.
    fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2))
    sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
    sock.sendall(data[sent:])


def _wait_for_exit(sock: _socket.socket, server: Server) -> int:
    def forward(signum: int, _frame: object) -> None:
        try:  # noqa: SIM105 (contextlib costs ~4 ms of the client's start)
            sock.sendall(b"signal %d\n" % signum)
        except OSError:
            pass

    for signum in FORWARDED:
        _signal.signal(signum, forward)
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


def _through_server(argv: list[str]) -> int | None:
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
    try:
        try:
            _send_request(sock, argv)
        except (OSError, ValueError):
            return None  # it went away before taking the command: nothing ran
        return _wait_for_exit(sock, server)
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> int:
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
