"""Downloads: a locked wheel's file, fetched or found locally, verified against the lock.

The sha256 and the size the lock names are checked on the bytes as they arrive; a wheel
whose bytes do not match is refused before anything of it reaches the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import urllib3.exceptions

from pkgfs.store.contain import contained
from pkgfs.store.errors import FetchError
from pkgfs.store.hashing import hash_file
from pkgfs.store.lock.model import LockedWheel

from .http import get

__all__ = ["Cancel", "download"]

_CHUNK = 1 << 16


def _check(wheel: LockedWheel, digest: str, size: int, where: str) -> None:
    expected_size = wheel.wheel.size
    if expected_size is not None and size != expected_size:
        raise FetchError(f"{where}: {size} bytes, the lock says {expected_size} (truncated?)")
    if digest not in wheel.hashes:
        listed = ", ".join(sorted(h[:16] + "..." for h in wheel.hashes))
        raise FetchError(
            f"{where}: sha256 {digest[:16]}... is not the lock's ({listed}): the file is not"
            " the one locked (the index replaced it, or the lock was edited); nothing of it is"
            " stored: lock again if the new file is to be trusted"
        )


class Cancel:
    """Stops downloads: after :meth:`set`, each running download ends within a moment with
    a :class:`FetchError`, even one waiting on a stalled server (its connection is shut
    down under it), and none starts."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    @contextlib.contextmanager
    def watching(self, response: Any) -> Iterator[None]:
        """While inside, :meth:`set` shuts down the connection ``response`` reads from."""
        try:
            # A duplicate of the descriptor: shutting it down shuts down the connection
            # itself, and closing it leaves the response's own descriptor alone.
            connection = socket.socket(fileno=os.dup(response.fileno()))
        except (AttributeError, OSError, ValueError):  # not a socket: nothing to unblock
            yield
            return
        with self._lock:
            self._connections.add(connection)
        try:
            if self.is_set():
                connection.shutdown(socket.SHUT_RDWR)
            yield
        finally:
            with self._lock:
                self._connections.discard(connection)
            connection.close()


def _content_length(url: str, header: str | None) -> int | None:
    # RFC 9110: Content-Length = 1*DIGIT. A client may read on to the end of the connection
    # when it is not a number; we refuse it, as nothing then says how long the file is.
    if header is None:
        return None
    if not header.strip().isdigit():
        raise FetchError(
            f"{url}: the server sent a Content-Length that is not a number: {header!r}"
        )
    return int(header)


def _local(wheel: LockedWheel, path: Path) -> Path:
    """A wheel the lock names by path, verified where it is."""
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)
        if regular:  # /dev/zero, or a FIFO, would be read forever
            digest, size = hash_file(path)
    except OSError as exc:
        raise FetchError(f"{path}: {exc.strerror}") from None
    if not regular:
        raise FetchError(f"{path}: not a regular file: not a wheel")
    _check(wheel, digest, size, str(path))
    return path


def download(wheel: LockedWheel, directory: Path, cancel: Cancel | None = None) -> Path:
    """The verified wheel file: a local file in place, or a download into ``directory``.

    Setting ``cancel`` stops a download within a moment. Raises :class:`FetchError` (one
    line naming the file or the redacted URL) when the wheel has no URL, cannot be read or
    fetched, is cut off or interrupted, has a Content-Length that is not a number, or does
    not match the lock's size or sha256.
    """
    url = wheel.wheel.url
    if url is None:
        raise FetchError(f"{wheel.filename}: not in the store, and the lock gives no URL")
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return _local(wheel, Path(unquote(parsed.path)))
    target = contained(directory, wheel.filename)  # a lock's name: one plain file name
    hasher = hashlib.sha256()
    size = 0
    cancel = cancel or Cancel()
    if cancel.is_set():
        raise FetchError(f"{url}: interrupted")
    with (
        contextlib.closing(get(url, stream=True)) as response,
        open(target, "wb") as out,
        cancel.watching(response.raw),
    ):
        declared = _content_length(url, response.headers.get("Content-Length"))
        while True:
            try:
                # read1: whatever has arrived, so a slow server cannot hold a cancel back;
                # the bytes as sent (Accept-Encoding: identity), as the lock hashed them.
                chunk = response.raw.read1(_CHUNK, decode_content=False)
            except (
                http.client.HTTPException,
                urllib3.exceptions.HTTPError,
                OSError,
                ValueError,  # reading a response whose connection a cancel closed
            ) as exc:
                if cancel.is_set():
                    raise FetchError(f"{url}: interrupted") from None
                raise FetchError(f"{url}: download cut off after {size} bytes ({exc})") from None
            if not chunk:
                break
            hasher.update(chunk)
            try:
                out.write(chunk)
            except OSError as exc:  # ENOSPC, EDQUOT: the store's disk, not the network
                raise FetchError(f"{target}: cannot write the download: {exc.strerror}") from None
            size += len(chunk)
        if cancel.is_set():
            raise FetchError(f"{url}: interrupted")
    if declared is not None and declared != size:
        raise FetchError(f"{url}: download cut off: {size} of {declared} bytes")
    _check(wheel, hasher.hexdigest(), size, url)
    return target
