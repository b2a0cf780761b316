"""What every lockfile reader produces: the packages an environment needs, and their wheels."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, NormalizedName, parse_wheel_filename
from packaging.version import InvalidVersion

__all__ = [
    "BuildSource",
    "EditableProject",
    "LockedPackage",
    "LockedWheel",
    "Lockfile",
    "WheelLink",
    "sha256_hex",
    "wheel_tags",
]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@functools.lru_cache(maxsize=4096)
def wheel_tags(filename: str) -> frozenset[Tag]:
    """The tags a wheel's file name gives (PEP 427: ``{python tag}-{abi tag}-{platform
    tag}``, each of them possibly a ``.``-joined set), parsed once per file name; none for
    a name that is not a wheel's."""
    try:
        return frozenset(parse_wheel_filename(filename)[-1])
    except (InvalidWheelFilename, InvalidVersion):
        return frozenset()


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
class BuildSource:
    """A lock entry that is not a wheel: the source a wheel is built from.

    ``kind`` is ``sdist`` (an index's or find-links' sdist, installed as from a registry),
    ``archive`` (an sdist or source archive named by URL or path: a direct URL, PEP 610),
    ``git`` (a repository at one commit) or ``directory`` (a source tree, not editable).
    ``url`` is the file's http(s):// or file:// URL, the repository's URL (``file://``,
    ``https://``, ``ssh://``; no ``git+``), or the directory's file:// URL.
    """

    kind: str
    url: str
    sha256: str | None = None  # of the sdist or archive file, when the lock names it
    commit: str | None = None  # git: the full commit id the lock pins
    requested_revision: str | None = None  # git: the branch or tag asked for (PEP 610)
    subdirectory: str | None = None  # the project's directory inside the source


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
    build: BuildSource | None = None  # what a wheel is built from when none fits the target


@dataclass(frozen=True)
class LockedWheel:
    """The one wheel chosen for a package and a target interpreter.

    ``hashes`` are the sha256 digests the wheel may have: the one the lock names, or, for a
    requirements.txt, every ``--hash`` of the requirement.

    With ``build`` set, the wheel is still to be built from that source (or recalled from
    the store's record of an earlier build): ``wheel`` has no URL and ``hashes`` is empty.
    """

    name: NormalizedName
    version: str
    wheel: WheelLink
    hashes: frozenset[str]
    build: BuildSource | None = None

    @property
    def filename(self) -> str:
        return self.wheel.filename


@dataclass(frozen=True)
class EditableProject:
    """A local project the lock installs editable, as ``uv sync`` and ``pip install -e`` do:
    the project itself, a workspace member, an ``editable`` source. Its wheel is built from
    ``path`` (PEP 660's ``build_editable``), never found in the lock."""

    name: NormalizedName
    version: str | None  # None when the lock leaves it out (a dynamic version)
    path: Path  # absolute: the directory holding its pyproject.toml (or setup.py)


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
    editables: list[EditableProject] = field(default_factory=list)  # built, not in ``packages``
