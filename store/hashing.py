"""sha256, the store's one hash: of files, and in RECORD's urlsafe-base64 form.

PEP 376 / the RECORD spec: "The hash is either the empty string or the hash algorithm as
named in hashlib.algorithms_guaranteed, followed by the equals character =, followed by
the urlsafe-base64-nopad encoding of the digest (base64.urlsafe_b64encode(digest) with
trailing = removed)."
"""

from __future__ import annotations

import base64
import hashlib
import os

__all__ = ["hash_file", "record_digest", "record_hash_of", "record_hash_of_hex"]


def hash_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """The sha256 hex digest and the size in bytes of the file at ``path``.

    Raises ``OSError`` when it cannot be read.
    """
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
        return digest, f.tell()


def record_digest(digest: bytes) -> str:
    """A raw digest in RECORD's form: urlsafe base64, no padding."""
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def record_hash_of(data: bytes) -> str:
    """RECORD's ``sha256=...`` value for ``data``."""
    return "sha256=" + record_digest(hashlib.sha256(data).digest())


def record_hash_of_hex(hex_digest: str) -> str:
    """RECORD's ``sha256=...`` value for a sha256 given as hex (as the store names objects)."""
    return "sha256=" + record_digest(bytes.fromhex(hex_digest))
