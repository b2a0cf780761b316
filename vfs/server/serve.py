"""``pkgfs server``: the per-user mount server.

One process per user, state directory and installation (``pkgfs.vfs.server.address``),
started by the first ``pkgfs`` command that needs it, or in the foreground by a systemd
user unit or a container's entrypoint. It imports pkgfs, trio and pyfuse3 once, freezes
what it imported out of the garbage collector's reach (``gc.freeze()``: a collection in a
child never writes to those pages, so they stay shared copy-on-write), and then forks one
worker per command (``pkgfs.vfs.server.worker``). A mount's daemon is a fork of that worker:
nothing to import, nothing to load per file when the server keeps the mount's saved view
(:func:`pkgfs.vfs.env.saved.keep_views`). Every worker and daemon is a session of its own,
so a ``kill -9`` of the server leaves every mount serving; the next command starts another.

The loop is single-threaded (forking a threaded process is unsafe): the listening socket,
each client's connection (``signal N`` lines to forward, or a hang-up: SIGTERM to its
worker) and the signals it receives (SIGCHLD: a worker ended, its status goes back to its
client; SIGTERM, SIGINT, SIGHUP: stop) are one ``selectors`` loop. On stop it takes no new
command, lets the running ones finish, and exits; the mounts stay. It also stops, once
idle, when the pkgfs it runs was upgraded or edited on disk (its key changed): the clients
of the new code use a server of their own.

On start it mounts again every registered environment that is not mounted, as
``pkgfs mount --all`` does (that command, run by a worker, its output in the log), before it
answers any command.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pkgfs.vfs.fuse import wire
from pkgfs.vfs.fuse.spawn import name_process

from .address import Server, clear_old_records, installation_key, new_address
from .client import MAX_REQUEST
from .warm import Kept, keep_mounted_views, preload
from .worker import Request, run_worker

__all__ = ["CHECK_EVERY", "REQUEST_TIMEOUT", "MountServer", "serve", "stop"]

REQUEST_TIMEOUT = 10.0  # seconds a client has to send its whole request
CHECK_EVERY = 60.0  # seconds idle between checks that pkgfs on disk is still the server's
READY_FD = "PKGFS_SERVER_READY_FD"


@dataclass
class _Client:
    conn: socket.socket | None  # None: the server's own command (the remount at start)
    pid: int = 0
    mounts: bool = False  # a mount or an unmount: which views to keep changes
    hung_up: bool = False
    pending: bytes = b""
    report: int = -1  # the read end of the pipe its worker writes its exit status to
    answered: bool = False  # the client has its "exit N": the worker is only exiting


@dataclass
class MountServer:
    """The server of ``server``'s key; :meth:`run` serves until stopped."""

    server: Server
    listener: socket.socket | None = None
    lock_fd: int = -1
    clients: dict[int, _Client] = field(default_factory=dict)  # by worker pid
    stopping: bool = False
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    wake: tuple[socket.socket, socket.socket] | None = None
    kept: Kept = field(default_factory=dict)  # see pkgfs.vfs.server.warm

    def _close_in_child(self) -> None:
        """In a worker: nothing of the server's stays open there (above all not its lock,
        which a mount's daemon would otherwise hold after the server died)."""
        signal.set_wakeup_fd(-1)
        self.selector.close()
        for sock in (self.listener, *(self.wake or ()), *(c.conn for c in self.clients.values())):
            if sock is not None:
                sock.close()
        for client in self.clients.values():
            if client.report >= 0:
                os.close(client.report)
        if self.lock_fd >= 0:
            os.close(self.lock_fd)

    def _take_lock(self) -> bool:
        self.server.make_directory()
        self.lock_fd = os.open(self.server.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.lock_fd)
            self.lock_fd = -1
            return False
        return True

    def run(self, ready: int | None = None) -> int:
        """Serve until SIGTERM, SIGINT or SIGHUP (or ``pkgfs server stop``). Exit status:
        0, or 1 when another server of this key runs (said in one line). ``ready``: a
        descriptor to write ``ok`` (or ``running``) to once listening."""
        if not self._take_lock():
            print(f"pkgfs: a server already runs for {self.server.record}", file=sys.stderr)
            _tell(ready, "running")
            return 1
        for name in clear_old_records(self.server.directory, self.server.key):
            print(f"pkgfs server: removed {name}, a record of an older pkgfs", file=sys.stderr)
        preload()
        address = new_address(self.server.key)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.listener.bind(address)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.wake = socket.socketpair()
        for end in self.wake:
            end.setblocking(False)
        signal.set_wakeup_fd(self.wake[1].fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: None)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.wake[0], selectors.EVENT_READ, "signal")
        self.server.write(os.getpid(), address)
        print(f"pkgfs server {os.getpid()} listening for {self.server.record}", file=sys.stderr)
        gc.freeze()
        _tell(ready, "ok")  # its client connects and waits in the backlog for the remount
        self._remount()
        try:
            self._loop()
        finally:
            self._forget_record()
        return 0

    def _remount(self) -> None:
        """``pkgfs mount --all --offline`` in a worker, its output in the log, waited for:
        commands that come meanwhile wait in the listener's backlog, so a ``pkgfs mount``
        of one of these environments never races the remount."""
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            umask = os.umask(0o022)
            os.umask(umask)
            argv = ["mount", "--all", "--offline", "--restore"]
            request = Request(argv, "/", dict(os.environ), umask)
            pid = self._fork(request, [devnull, 2, 2], None)
        finally:
            os.close(devnull)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        self.clients.pop(pid, None)
        self._keep_views()

    def _loop(self) -> None:
        while not (self.stopping and not self.clients):
            ready = self.selector.select(CHECK_EVERY)
            idle = not ready and not self.clients and not self.stopping
            # Upgraded or edited under it: no client will ever ask it again.
            if idle and installation_key() != self.server.key:
                print("pkgfs server: its pkgfs changed on disk: exiting", file=sys.stderr)
                self._stop()
            for key, _events in ready:
                if key.data == "accept":
                    self._accept()
                elif key.data == "signal":
                    self._signals()
                elif isinstance(key.data, _Report):
                    self._from_worker(key.data.client)
                else:
                    self._from_client(key.data)

    def _signals(self) -> None:
        assert self.wake is not None
        with contextlib.suppress(BlockingIOError):
            for signum in self.wake[0].recv(4096):
                if signum == signal.SIGCHLD:
                    self._reap()
                elif self.stopping:
                    raise SystemExit(0)  # a second stop: exit now; the workers go on
                else:
                    self._stop()

    def _stop(self) -> None:
        print(f"pkgfs server {os.getpid()}: stopping", file=sys.stderr)
        self.stopping = True
        self._forget_record()
        if self.listener is not None:
            self.selector.unregister(self.listener)
            self.listener.close()
            self.listener = None

    def _forget_record(self) -> None:
        found = self.server.read()
        if found is not None and found[0] == os.getpid():
            self.server.forget()

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EMFILE...: go on
            print(f"pkgfs server: accept failed: {exc}", file=sys.stderr)
            time.sleep(0.1)
            return
        fds: list[int] = []
        try:
            conn.setblocking(True)
            conn.settimeout(REQUEST_TIMEOUT)
            uid = wire.peer_uid(conn)
            if uid != os.getuid():
                raise PermissionError(f"uid {uid} is not this server's user")
            request, fds, rest = _read_request(conn)
            if len(fds) != 3:
                raise ValueError(f"{len(fds)} descriptors came, not 3")
            conn.setblocking(False)
            pid = self._fork(request, fds, conn)
            self._take_lines(self.clients[pid], rest)
        except _Probe:
            conn.close()
        except (OSError, ValueError) as exc:
            print(f"pkgfs server: a client was refused: {exc}", file=sys.stderr)
            conn.close()
        finally:
            for fd in fds:
                os.close(fd)

    def _fork(self, request: Request, fds: list[int], conn: socket.socket | None) -> int:
        report, written = os.pipe()
        gc.freeze()  # what the server made since is shared with the child too
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                os.close(report)
                self._close_in_child()
                name_process("pkgfs-command")
                status = run_worker(request, fds)
                _report(written, status)
            finally:
                os._exit(status)
        os.close(written)
        mounts = bool({"mount", "unmount"} & set(request.argv))
        client = _Client(conn, pid, mounts=mounts, hung_up=conn is None, report=report)
        self.clients[pid] = client
        self.selector.register(report, selectors.EVENT_READ, _Report(client))
        if conn is not None:
            self.selector.register(conn, selectors.EVENT_READ, client)
        return pid

    def _from_worker(self, client: _Client) -> None:
        """The worker says its exit status before it exits (a fork of a large server takes
        milliseconds to tear down): the client has it at once."""
        try:
            data = os.read(client.report, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self.selector.unregister(client.report)
        os.close(client.report)
        client.report = -1
        text = data.decode(errors="replace").strip()
        if text.lstrip("-").isdigit():  # else it died first: its exit is reaped as before
            self._answer(client, int(text))

    def _answer(self, client: _Client, code: int) -> None:
        """Send the client ``exit CODE`` (once) and close the connection."""
        if client.answered:
            return
        client.answered = True
        if client.conn is not None:
            if not client.hung_up:
                self.selector.unregister(client.conn)
                with contextlib.suppress(OSError):
                    client.conn.settimeout(1.0)
                    client.conn.sendall(f"exit {code}\n".encode())
            client.conn.close()

    def _keep_views(self) -> None:
        keep_mounted_views(self.kept)

    def _from_client(self, client: _Client) -> None:
        assert client.conn is not None
        try:
            data = client.conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the client hung up: its command is stopped as by Ctrl-C
            self.selector.unregister(client.conn)
            client.hung_up = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(client.pid, signal.SIGTERM)
            return
        self._take_lines(client, data)

    def _take_lines(self, client: _Client, data: bytes) -> None:
        """Forward the signals the ``signal N`` lines in ``data`` ask for."""
        client.pending += data
        *lines, client.pending = client.pending.split(b"\n")
        for line in lines:
            word, _, value = line.decode(errors="replace").partition(" ")
            forwardable = {int(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
            if word == "signal" and value.isdigit() and int(value) in forwardable:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(client.pid, int(value))

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            client = self.clients.pop(pid, None)
            if client is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code  # killed by a signal, as a shell says
            if client.report >= 0:  # it exited without a word (killed): the pipe is closed
                self.selector.unregister(client.report)
                os.close(client.report)
                client.report = -1
            self._answer(client, code)
            if client.mounts:
                self._keep_views()  # after the answer: the client does not wait for it


@dataclass(frozen=True)
class _Report:
    """The selector's data for a worker's status pipe."""

    client: _Client


def _report(written: int, status: int) -> None:
    """In the worker, its command done and its output flushed: let go of the client's
    stdin, stdout and stderr (a caller reading the output to its end sees it now, not
    after the fork is torn down), then say the exit status on ``written``."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    with contextlib.suppress(OSError):
        os.write(written, b"%d\n" % status)
    os.close(written)


class _Probe(ConnectionError):
    """A client that connected and hung up unsaid: ``pkgfs server status`` asking."""


def _read_request(conn: socket.socket) -> tuple[Request, list[int], bytes]:
    """The request a client sends (``pkgfs.vfs.server.client.encode_request``), the
    descriptors that came with it, and what came after it (``signal N`` lines the client
    sent at once). Raises ``ValueError`` on a malformed or oversized request."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
    if not data and not fds:
        raise _Probe
    try:
        while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
            if len(data) >= 4 and int.from_bytes(data[:4], "big") > MAX_REQUEST:
                raise ValueError(f"a request longer than {MAX_REQUEST} bytes")
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionResetError("the client hung up before a whole request")
            data += chunk
        end = 4 + int.from_bytes(data[:4], "big")
        return Request.decode(data[4:end]), fds, data[end:]
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _tell(fd: int | None, word: str) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, f"{word}\n".encode())
        os.close(fd)


def serve(server: Server) -> int:
    """Run the server in this process (``pkgfs server``); see :meth:`MountServer.run`."""
    ready = os.environ.pop(READY_FD, None)
    fd = int(ready) if ready and ready.isdigit() else None
    name_process("pkgfs-server")
    return MountServer(server).run(fd)


def stop(server: Server, timeout: float = 10.0) -> int | None:
    """Stop the running server of ``server`` (SIGTERM, after checking the recorded pid
    holds its lock); its pid, or None when none runs. Mounts stay."""
    found = server.read()
    if found is None:
        return None
    pid, _ = found
    with open(server.lock, "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: a server runs
        else:
            server.forget()  # a record left by a killed server
            return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return pid
