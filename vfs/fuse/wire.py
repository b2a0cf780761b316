"""The control socket's wire format, its address, and its client end.

One request or reply is one JSON object on one line (newline-framed JSON), at most
:data:`MAX_MESSAGE` bytes. The server end is ``pkgfs.vfs.fuse.control``; this module
imports only the standard library, so commands that ask a daemon load nothing more.

The socket is an abstract Unix socket (no file: no path length limit from deep state
directories, nothing stale after a kill) whose name ends in 128 random bits, recorded in
the mount's ``mount.json`` (in the owner's 0700 state directory): another local user
cannot bind it first, for they cannot guess it. Both ends also check who is at the other
end (``SO_PEERCRED``): the daemon answers only its own user and root, and the client
talks only to a listener of its own user or root, so a name another user saw and bound
after the daemon died is refused too.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import struct
from typing import Protocol

__all__ = [
    "MAX_MESSAGE",
    "ask",
    "decode",
    "encode",
    "new_address",
    "peer_uid",
    "trusted",
]

MAX_MESSAGE = 1 << 20  # bytes, newline included


def new_address(mount_id: str) -> str:
    """A fresh, unguessable abstract socket name for the mount whose id is ``mount_id``."""
    return f"\0pkgfs-control-{mount_id}-{secrets.token_hex(16)}"


class _Socket(Protocol):
    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


def peer_uid(sock: _Socket) -> int:
    """The uid of the process at the other end of a connected Unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def trusted(uid: int) -> bool:
    """Whether a peer of ``uid`` may talk to us: our own user, or root."""
    return uid in (0, os.getuid())


def encode(message: dict[str, object]) -> bytes:
    """One framed message. Raises ``ValueError`` when it is longer than MAX_MESSAGE."""
    data = json.dumps(message).encode() + b"\n"
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"a message is at most {MAX_MESSAGE} bytes")
    return data


def decode(line: bytes) -> dict[str, object]:
    """The message of one frame; ``ValueError`` unless it is a JSON object."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("a message must be a JSON object")
    return message


def ask(address: str, request: dict[str, object], timeout: float = 30.0) -> dict[str, object]:
    """Send ``request`` to the control socket at ``address`` and return the reply.

    Raises ``OSError`` when the daemon cannot be reached, hangs up or does not answer in
    ``timeout`` seconds (``ConnectionRefusedError``, ``ConnectionResetError``,
    ``TimeoutError``...), ``PermissionError`` when the listener is another user's, and
    ``ValueError`` when its reply is not one framed message.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        uid = peer_uid(sock)
        if not trusted(uid):
            raise PermissionError(f"the control socket is held by uid {uid}, not by its daemon")
        sock.sendall(encode(request))
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("the daemon closed the control socket")
            data += chunk
            if len(data) > MAX_MESSAGE:
                raise ValueError("the daemon's reply is too long")
    return decode(data)
