"""The control socket's server end, inside the daemon.

``pkgfs reset`` must run inside the daemon, which owns the overlay's in-memory state and can
tell the kernel what to forget; the socket carries it (and pings), one framed JSON message
each way (``pkgfs.vfs.fuse.wire``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import struct
from pathlib import Path

import pyfuse3
import trio

from .operations import PkgfsOperations

__all__ = ["control_address", "serve_control"]

log = logging.getLogger("pkgfs.vfs")


def control_address(state: Path) -> str:
    """The control socket: an abstract Unix socket (no path, so no length limit from deep
    state directories and nothing stale after a kill), named after the mount's id."""
    return f"\0pkgfs-control-{state.name}"


def _peer_allowed(conn: trio.socket.SocketType) -> bool:
    # An abstract socket has no file permissions: admit only our own user, and root.
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (0, os.getuid())


async def serve_control(ops: PkgfsOperations, listener: socket.socket) -> None:
    """Answer ``pkgfs reset`` (and pings) on the control socket."""
    sock = trio.socket.from_stdlib_socket(listener)
    while True:
        conn, _ = await sock.accept()
        with conn:
            if not _peer_allowed(conn):
                continue
            data = b""
            while not data.endswith(b"\n"):
                chunk = await conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            reply: dict[str, object]
            try:
                request = json.loads(data or b"{}")
                if request.get("op") == "reset":
                    invalidations = ops.reset(request.get("paths"))
                    for inode, name in invalidations:
                        await trio.to_thread.run_sync(_invalidate, inode, name)
                    reply = {"ok": True, "reset": len(invalidations)}
                else:
                    reply = {"ok": True, "pid": os.getpid()}
            except Exception as exc:
                log.exception("control request failed")
                reply = {"ok": False, "error": str(exc)}
            payload = json.dumps(reply).encode() + b"\n"
            while payload:
                sent = await conn.send(payload)
                payload = payload[sent:]


def _invalidate(inode: int, name: bytes | None) -> None:
    try:
        if name is None:
            pyfuse3.invalidate_inode(inode, attr_only=False)
        else:
            pyfuse3.invalidate_entry(inode, name)
    except OSError as exc:
        if exc.errno != errno.ENOENT:  # ENOENT: the kernel had nothing cached
            raise
