"""Downloads: a locked wheel's file, fetched or found locally, verified against the lock.

The sha256 and the size the lock names are checked on the bytes as they arrive; a wheel
whose bytes do not match is refused before anything of it reaches the store.
"""

from __future__ import annotations

import hashlib
import http.client
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

from pkgfs.store.contain import contained
from pkgfs.store.errors import FetchError
from pkgfs.store.hashing import hash_file
from pkgfs.store.lock.model import LockedWheel

from .http import open_url

__all__ = ["download"]

_CHUNK = 1 << 20


def _check(wheel: LockedWheel, digest: str, size: int, where: str) -> None:
    expected_size = wheel.wheel.size
    if expected_size is not None and size != expected_size:
        raise FetchError(f"{where}: {size} bytes, the lock says {expected_size} (truncated?)")
    if digest not in wheel.hashes:
        listed = ", ".join(sorted(h[:16] + "..." for h in wheel.hashes))
        raise FetchError(f"{where}: sha256 {digest[:16]}... is not the lock's ({listed})")


def download(wheel: LockedWheel, directory: Path, cancel: threading.Event | None = None) -> Path:
    """The verified wheel file: a local file in place, or a download into ``directory``.

    Setting ``cancel`` stops a download at its next chunk.
    """
    url = wheel.wheel.url
    if url is None:
        raise FetchError(f"{wheel.filename}: not in the store, and the lock gives no URL")
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        try:
            digest, size = hash_file(path)
        except OSError as exc:
            raise FetchError(f"{path}: {exc.strerror}") from None
        _check(wheel, digest, size, str(path))
        return path
    target = contained(directory, wheel.filename)  # a lock's name: one plain file name
    hasher = hashlib.sha256()
    size = 0
    with open_url(url) as response, open(target, "wb") as out:
        declared = response.headers.get("Content-Length")
        try:
            while chunk := response.read(_CHUNK):
                if cancel is not None and cancel.is_set():
                    raise FetchError(f"{url}: interrupted")
                hasher.update(chunk)
                out.write(chunk)
                size += len(chunk)
        except (http.client.IncompleteRead, OSError) as exc:
            raise FetchError(f"{url}: download cut off after {size} bytes ({exc})") from None
    if declared is not None and int(declared) != size:
        raise FetchError(f"{url}: download cut off: {size} of {declared} bytes")
    _check(wheel, hasher.hexdigest(), size, url)
    return target
