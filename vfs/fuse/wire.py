"""The control socket's wire format, and its client end.

One request or reply is one JSON object on one line (newline-framed JSON), at most
:data:`MAX_MESSAGE` bytes. The server end is ``pkgfs.vfs.fuse.control``; this module
imports only the standard library, so commands that ask a daemon load nothing more.
"""

from __future__ import annotations

import json
import socket

__all__ = ["MAX_MESSAGE", "ask", "decode", "encode"]

MAX_MESSAGE = 1 << 20  # bytes, newline included


def encode(message: dict[str, object]) -> bytes:
    """One framed message."""
    return json.dumps(message).encode() + b"\n"


def decode(line: bytes) -> dict[str, object]:
    """The message of one frame; ``ValueError`` unless it is a JSON object."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("a message must be a JSON object")
    return message


def ask(address: str, request: dict[str, object], timeout: float = 30.0) -> dict[str, object]:
    """Send ``request`` to the control socket at ``address`` and return the reply.

    Raises ``OSError`` when the daemon cannot be reached or hangs up, and ``ValueError``
    when its reply is not one framed message.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
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
