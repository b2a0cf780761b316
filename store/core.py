"""The store as one object: open it, add wheels, list, count and verify."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from .errors import PkgfsError
from .index import EntryPoint, FileEntry, Index, StoreStats, WheelInfo
from .ingest import IngestResult, ingest_wheel
from .layout import StoreLayout, resolve_store_path
from .verify import VerifyReport, verify_store

__all__ = ["Store"]


class Store:
    """A content-addressed store of unpacked wheels. Safe to share between threads."""

    def __init__(self, root: Path) -> None:
        self.layout = StoreLayout(root)
        self.layout.create()
        self.index = Index(self.layout.index)

    @classmethod
    def open(cls, root: str | os.PathLike[str] | None = None) -> Store:
        """The store at ``root``, else at ``$PKGFS_STORE``, else the XDG default; created if new."""
        return cls(resolve_store_path(root))

    @property
    def root(self) -> Path:
        return self.layout.root

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def add(self, wheel: str | os.PathLike[str]) -> IngestResult:
        """Ingest one wheel; raises :class:`WheelError` if refused, leaving the store as it was."""
        return ingest_wheel(self.layout, self.index, Path(wheel).absolute())

    def add_many(
        self, wheels: Iterable[str | os.PathLike[str]], jobs: int | None = None
    ) -> Iterator[IngestResult | PkgfsError]:
        """Ingest wheels in parallel; yield each one's result or error, in the given order."""

        def attempt(wheel: str | os.PathLike[str]) -> IngestResult | PkgfsError:
            try:
                return self.add(wheel)
            except PkgfsError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
            yield from pool.map(attempt, wheels)

    def wheels(self) -> list[WheelInfo]:
        return self.index.wheels()

    def files(self, sha256: str) -> list[FileEntry]:
        """The manifest of the wheel whose file has this sha256."""
        return self.index.files(sha256)

    def entry_points(self, sha256: str) -> list[EntryPoint]:
        return self.index.entry_points(sha256)

    def object_path(self, digest: str) -> Path:
        return self.layout.object_path(digest)

    def stats(self) -> StoreStats:
        return self.index.stats()

    def verify(self, jobs: int | None = None) -> VerifyReport:
        return verify_store(self.layout, self.index, jobs)
