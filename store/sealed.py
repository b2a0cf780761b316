"""Sealed files: a blob behind a header naming its sha256, as the store's ``views-v2/`` holds.

A saved view is a cache anyone who can write the store could edit; the seal makes a
truncated or damaged file detectable by the mount that loads it (which composes afresh)
and by ``pkgfs store verify`` (which reports it), without either knowing what is inside.
It does not stop an attacker who recomputes the checksum: the loader checks every path
it finds as well (``pkgfs.vfs.env.saved``).
"""

from __future__ import annotations

import hashlib

__all__ = ["seal", "unseal"]

_MAGIC = b"pkgfs-view-v2\n"


def seal(blob: bytes) -> bytes:
    """``blob`` behind a header naming its sha256: what a saved view file holds."""
    return _MAGIC + hashlib.sha256(blob).hexdigest().encode() + b"\n" + blob


def unseal(data: bytes) -> bytes:
    """The blob of a sealed file; ``ValueError`` if it is truncated, tampered or foreign."""
    if not data.startswith(_MAGIC):
        raise ValueError("not a saved view")
    start = len(_MAGIC)
    header, blob = data[start : start + 65], data[start + 65 :]
    if header != hashlib.sha256(blob).hexdigest().encode() + b"\n":
        raise ValueError("saved view does not match its checksum")
    return blob
