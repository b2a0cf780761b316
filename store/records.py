"""What the store's index holds, as records: a wheel's files and entry points, what an
ingest learned and did, what ``pkgfs store ls`` and ``stats`` show.

Plain frozen dataclasses, shared by the index (``index.py``, which stores and returns them),
ingest and the command line; no SQL here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "EntryPoint",
    "FileEntry",
    "IngestResult",
    "StoreStats",
    "WheelInfo",
    "WheelRecord",
]


@dataclass(frozen=True)
class FileEntry:
    """One file of a wheel, as the wheel's manifest records it."""

    scheme: str
    path: str
    digest: str
    size: int
    executable: bool


@dataclass(frozen=True)
class EntryPoint:
    """A console or GUI script that installing the wheel creates."""

    section: str
    name: str
    module: str
    attr: str


@dataclass(frozen=True)
class WheelRecord:
    """Everything an ingest learned about one wheel, ready to commit."""

    sha256: str
    filename: str
    name: str
    version: str
    tags: str
    root_is_purelib: bool
    dist_info: str
    wheel_size: int
    files: tuple[FileEntry, ...]
    entry_points: tuple[EntryPoint, ...]


@dataclass(frozen=True)
class IngestResult:
    """What one ``pkgfs store add`` of one wheel did."""

    wheel: Path
    name: str
    version: str
    sha256: str
    already_present: bool
    files: int = 0
    unpacked_bytes: int = 0
    objects_added: int = 0
    bytes_added: int = 0
    skipped: tuple[str, ...] = ()  # members installer would skip (__pycache__)


@dataclass(frozen=True)
class WheelInfo:
    """A wheel in the store, as ``pkgfs store ls`` shows it."""

    sha256: str
    filename: str
    name: str
    version: str
    tags: str
    files: int
    unpacked_bytes: int


@dataclass(frozen=True)
class StoreStats:
    """What the store holds. Deduplication is measured over wheel files only:
    ``logical_bytes`` against ``wheel_object_bytes``. Bytecode has no logical counterpart (no
    wheel ships it), so it is counted apart; an object both kinds use counts as a wheel file's.
    """

    wheels: int
    files: int
    objects: int
    logical_bytes: int  # the sum of file sizes over every wheel
    stored_bytes: int  # the bytes all objects hold: each distinct content once
    wheel_objects: int = 0  # the distinct objects wheel files use
    wheel_object_bytes: int = 0
    bytecode_modules: int = 0  # compiled modules, summed over interpreters
    bytecode_interpreters: int = 0  # distinct interpreter magic numbers
    bytecode_objects: int = 0  # the distinct objects compiled modules use (no wheel file does)
    bytecode_bytes: int = 0

    @property
    def saved_bytes(self) -> int:
        """What storing each distinct wheel file once saves."""
        return self.logical_bytes - self.wheel_object_bytes

    @property
    def dedup(self) -> float:
        """Logical bytes of wheel files over the bytes of the objects they use."""
        return self.logical_bytes / self.wheel_object_bytes if self.wheel_object_bytes else 1.0
