"""What every lockfile reader produces: the packages an environment needs, and their wheels."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import NormalizedName

__all__ = ["LockedPackage", "LockedWheel", "Lockfile", "WheelLink", "sha256_hex"]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def sha256_hex(text: str) -> str | None:
    """``text`` as a sha256 digest (64 lowercase hex digits), or None when it is not one."""
    digest = text.strip().lower()
    return digest if _SHA256_HEX.fullmatch(digest) else None


@dataclass(frozen=True)
class WheelLink:
    """A wheel file a lock or an index offers: where it is and what it must hash to."""

    filename: str
    url: str | None  # http(s):// or file://; None when only the store may have it
    sha256: str | None  # lowercase hex
    size: int | None = None


@dataclass(frozen=True)
class LockedPackage:
    """A package that the lock selects for the target, before a wheel is chosen for it.

    ``wheels`` are the files the lock itself lists (pylock.toml, uv.lock). A hashed
    requirements.txt lists none, only ``hashes``: its wheels come from an index.
    """

    name: NormalizedName
    version: str
    wheels: tuple[WheelLink, ...] = ()
    hashes: frozenset[str] = frozenset()  # allowed sha256 digests, when the lock names them
    has_sdist: bool = False
    source: str = "registry"  # or: vcs, directory, path, url (for error messages)


@dataclass(frozen=True)
class LockedWheel:
    """The one wheel chosen for a package and a target interpreter.

    ``hashes`` are the sha256 digests the wheel may have: the one the lock names, or, for a
    requirements.txt, every ``--hash`` of the requirement.
    """

    name: NormalizedName
    version: str
    wheel: WheelLink
    hashes: frozenset[str]

    @property
    def filename(self) -> str:
        return self.wheel.filename


@dataclass
class Lockfile:
    """A lockfile read for one target: its packages, and where its wheels may be found."""

    path: Path
    kind: str  # "pylock.toml", "uv.lock" or "requirements.txt"
    packages: list[LockedPackage]
    index_urls: list[str] = field(default_factory=list)  # PEP 503 simple indexes, in order
    find_links: list[str] = field(default_factory=list)  # directories or pages of wheel links
    no_index: bool = False  # the lock says --no-index: no index, not even the default one
    # The lock's first index replaces the configured ones (requirements.txt's -i, as pip).
    index_replaced: bool = False
    notes: list[str] = field(default_factory=list)  # said once to the user, e.g. skipped roots
