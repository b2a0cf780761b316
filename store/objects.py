"""Content-addressed object files: staging, publishing and re-hashing.

An object is visible under its final name only once complete: it is written under a
temporary name in the store's ``tmp/`` (same filesystem), read-only from the start, then
linked to its final name. Two ingests of overlapping wheels need no lock: both hold the same bytes
for a name, and the link lets exactly one of them create it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["OBJECT_MODE", "all_digests", "create_staged", "is_digest", "object_file", "publish"]

# Objects are shared by every wheel and every environment: nobody may write to them.
# The executable bit belongs to a wheel's file, not to its content, so it lives in the index.
OBJECT_MODE = 0o444
BUCKET_MODE = 0o755  # objects-v1/ab/: every user of a shared store enters it

_HEX = frozenset("0123456789abcdef")


def is_digest(text: str) -> bool:
    """True for a sha256 hex digest as the store names objects (64 lowercase hex digits)."""
    return len(text) == 64 and _HEX.issuperset(text)


_NOT_HEX = str.maketrans("", "", "0123456789abcdef")


def all_digests(texts: Iterable[str]) -> bool:
    """:func:`is_digest` of every one of ``texts``, checked at once (a saved view's objects
    at every mount): a name that is not a digest could lead outside ``objects-v1/``."""
    texts = list(texts)
    return set(map(len, texts)) <= {64} and not "".join(texts).translate(_NOT_HEX)


def object_file(objects_dir: str, digest: str) -> str:
    """The object file for ``digest`` below ``objects_dir``; a plain string for hot paths."""
    return f"{objects_dir}/{digest[:2]}/{digest[2:]}"


def create_staged(path: str) -> int:
    """Open a new staging file for writing; it is read-only from birth (0444 whatever the
    umask: every user of a shared store reads it), so never chmod-ed by path."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, OBJECT_MODE)
    os.fchmod(fd, OBJECT_MODE)
    return fd


def publish(staged: str, final: str) -> bool:
    """Give a complete, verified staged file its object name; False if another got there first.

    ``link(2)`` creates the name atomically and never replaces an existing one, so of two
    ingests racing to publish the same content exactly one counts it as added.
    """
    try:
        os.link(staged, final)
    except FileNotFoundError:  # the first object in its bucket: 0755 whatever the umask
        bucket = os.path.dirname(final)
        try:
            os.mkdir(bucket, BUCKET_MODE)
            os.chmod(bucket, BUCKET_MODE)
        except FileExistsError:
            pass
        return publish(staged, final)
    except FileExistsError:
        return False
    return True
