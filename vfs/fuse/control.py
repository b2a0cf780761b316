"""The control socket's server end, inside the daemon.

``pkgfs reset`` and a switch (``switch.py``) must run inside the daemon, which owns the
overlay's in-memory state and can tell the kernel what to forget; the socket carries them
(and pings), one framed JSON message
each way (``pkgfs.vfs.fuse.wire``, which also says how the socket is named and guarded).

No client can stop the mount: each connection is answered in its own task, a request is
read within :data:`REQUEST_TIMEOUT` seconds and :data:`wire.MAX_MESSAGE` bytes, at most
:data:`MAX_CLIENTS` are served at once, and whatever goes wrong with one client (garbage,
a hang-up before the reply, a stall) is logged and ends that connection only.
"""

from __future__ import annotations

import errno
import logging
import os
import socket

import pyfuse3
import trio

from pkgfs.store.errors import PkgfsError

from . import wire
from .operations import PkgfsOperations

__all__ = ["MAX_CLIENTS", "REQUEST_TIMEOUT", "invalidate", "serve_control"]

log = logging.getLogger("pkgfs.vfs")

REQUEST_TIMEOUT = 10.0  # seconds a client has to send its request, and to take the reply
MAX_CLIENTS = 32  # connections served at once; more are closed unanswered


class _RequestError(ValueError):
    """A request this daemon will not carry out; its text goes back to the client."""


async def serve_control(ops: PkgfsOperations, listener: socket.socket) -> None:
    """Answer ``pkgfs reset`` (and pings) on ``listener`` until cancelled. Raises nothing
    else: a failed accept is logged and retried, a failed connection only logged."""
    sock = trio.socket.from_stdlib_socket(listener)
    slots = trio.Semaphore(MAX_CLIENTS)
    async with trio.open_nursery() as nursery:
        while True:
            try:
                conn, _ = await sock.accept()
            except OSError as exc:  # EMFILE, ENOBUFS...: the mount goes on; try again soon
                log.warning("control socket: accept failed: %s", exc)
                await trio.sleep(0.5)
                continue
            if slots.value == 0:
                log.warning("control socket: %d clients already: one refused", MAX_CLIENTS)
                conn.close()
                continue
            await slots.acquire()
            nursery.start_soon(_serve_client, ops, conn, slots)


async def _serve_client(
    ops: PkgfsOperations, conn: trio.socket.SocketType, slots: trio.Semaphore
) -> None:
    try:
        with conn:
            await _answer(ops, conn)
    except trio.TooSlowError:
        log.warning("control socket: a client was too slow: dropped")
    except (OSError, ValueError) as exc:  # hung up, garbage, too long
        log.warning("control socket: a client failed: %s", exc)
    except Exception:
        log.exception("control socket: a request failed")
    finally:
        slots.release()


async def _answer(ops: PkgfsOperations, conn: trio.socket.SocketType) -> None:
    uid = wire.peer_uid(conn)
    if not wire.trusted(uid):
        log.warning("control socket: uid %d is not this mount's owner: refused", uid)
        return
    with trio.fail_after(REQUEST_TIMEOUT):
        line = await _read_message(conn)
    reply: dict[str, object]
    try:
        reply = await _carry_out(ops, wire.decode(line))
    except ValueError as exc:  # not JSON, not an object, not a request we know
        reply = {"ok": False, "error": f"bad request: {exc}"}
    except OSError as exc:
        log.warning("control request failed: %s", exc)
        reply = {"ok": False, "error": str(exc)}
    payload = wire.encode(reply)
    with trio.fail_after(REQUEST_TIMEOUT):
        while payload:
            sent = await conn.send(payload)
            payload = payload[sent:]


async def _read_message(conn: trio.socket.SocketType) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await conn.recv(65536)
        if not chunk:
            raise ConnectionResetError("the client hung up before a whole request")
        data += chunk
        if len(data) > wire.MAX_MESSAGE:
            raise ValueError(f"a request longer than {wire.MAX_MESSAGE} bytes")
    return data


async def _carry_out(ops: PkgfsOperations, request: dict[str, object]) -> dict[str, object]:
    op = request.get("op", "ping")
    if op == "ping":
        return {"ok": True, "pid": os.getpid()}
    if op == "stats":
        # Requests served so far, per handler: a benchmark's daemon round trips.
        return {"ok": True, "mode": ops.mode, "requests": dict(ops.requests)}
    if op == "switch":
        return await _switch(ops, request)
    if op != "reset":
        raise _RequestError(f"unknown op {op!r}")
    paths = request.get("paths")
    if paths is not None and not (
        isinstance(paths, list) and all(isinstance(p, str) for p in paths)
    ):
        raise _RequestError("paths must be null or a list of strings")
    invalidations = await ops.reset(paths)
    for inode, name in invalidations:
        await trio.to_thread.run_sync(invalidate, inode, name)
    return {"ok": True, "reset": len(invalidations)}


async def _switch(ops: PkgfsOperations, request: dict[str, object]) -> dict[str, object]:
    """``pkgfs mount`` on a changed lock, or ``pkgfs rollback``: see ``switch.py``."""
    from .switch import switch  # noqa: PLC0415

    if ops.state is None:
        raise _RequestError("this daemon does not know its state directory")
    try:
        return await switch(ops, ops.state, request.get("keep_overlay") is True)
    except (PkgfsError, OSError, ValueError) as exc:  # a damaged next.json, a missing wheel
        log.warning("switch failed: %s", exc)
        return {"ok": False, "error": str(exc)}


def invalidate(inode: int, name: bytes | None) -> None:
    """Tell the kernel to forget ``name`` in directory ``inode``, or (``name`` None) the
    inode's cached data and attributes. Blocks: call it outside the event loop."""
    try:
        if name is None:
            pyfuse3.invalidate_inode(inode, attr_only=False)
        else:
            pyfuse3.invalidate_entry(inode, name)
    except OSError as exc:
        if exc.errno != errno.ENOENT:  # ENOENT: the kernel had nothing cached
            raise
