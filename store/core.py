"""The store as one object: open it, add wheels, list, count and verify."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import signal
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from types import TracebackType

from .errors import PkgfsError, ReadOnlyStoreError, StoreError
from .index import Index
from .layout import StoreLayout, resolve_store_path
from .records import EntryPoint, FileEntry, IngestResult, StoreStats, WheelInfo
from .verify import VerifyReport, verify_store

__all__ = ["IngestPool", "Store"]


def _hold_shared(layout: StoreLayout) -> int:
    """The store's lock file, held shared while this writer has the store open: ``gc``
    (which holds it exclusively) waits for every writer, and writers wait for it. Raises
    :class:`StoreError` when the lock file cannot be opened."""
    try:
        fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot open the store lock {layout.lock}: {exc.strerror}") from None
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o644)  # as every file of a shared store, whatever the umask
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"pkgfs: waiting for pkgfs store gc on {layout.root}", file=sys.stderr)
        fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def _check_readable(layout: StoreLayout) -> None:
    """Raise :class:`StoreError` in one line when there is no store at ``layout.root``, or
    this user may not read it (a store made before pkgfs set its modes, under umask 077)."""
    if not layout.index.exists():
        if layout.root.exists() and not os.access(layout.root, os.R_OK | os.X_OK):
            raise StoreError(_unreadable(layout.root, layout.root))
        raise StoreError(f"no store at {layout.root} (its index {layout.index.name} is missing)")
    for path in (layout.root, layout.objects):
        if path.exists() and not os.access(path, os.R_OK | os.X_OK):
            raise StoreError(_unreadable(path, layout.root))
    if not os.access(layout.index, os.R_OK):
        raise StoreError(_unreadable(layout.index, layout.root))


def _unreadable(path: Path, root: Path) -> str:
    info = path.stat()
    return (
        f"{path} is not readable by you (mode {stat.filemode(info.st_mode)}, owner uid"
        f" {info.st_uid}): its owner can share the store with chmod -R a+rX {root}"
    )


class Store:
    """A content-addressed store of unpacked wheels. Safe to share between threads."""

    def __init__(self, root: Path, *, read_only: bool = False, shared_lock: bool = True) -> None:
        self.layout = StoreLayout(root)
        self.read_only = read_only
        self._lock_fd = -1
        if read_only:
            _check_readable(self.layout)
        else:
            self.layout.create()
        if not read_only and shared_lock:
            self._lock_fd = _hold_shared(self.layout)
        try:
            self.index = Index(self.layout.index, read_only=read_only)
        except BaseException:
            self._release()
            raise

    @classmethod
    def open(cls, root: str | os.PathLike[str] | None = None) -> Store:
        """The store at ``root``, else at ``$PKGFS_STORE``, else the XDG default; created if new.

        Raises :class:`StoreError` when it cannot be created or its index opened.
        """
        return cls(resolve_store_path(root))

    @classmethod
    def open_read_only(cls, root: str | os.PathLike[str] | None = None) -> Store:
        """An existing store, found as :meth:`open` finds it, for reading only: nothing is
        created or written, not even the lock file (a reader never waits for ``gc`` nor a
        writer), so another user's store, or one on a read-only mount, can be listed,
        verified and mounted. Adding to it fails.

        Raises :class:`StoreError` when there is no store there or it cannot be read.
        """
        return cls(resolve_store_path(root), read_only=True)

    @classmethod
    def open_for_reading(cls, root: str | os.PathLike[str] | None = None) -> Store:
        """:meth:`open_read_only` for a store that exists; one that does not exist yet (no
        index) is created, where it can be, as :meth:`open` does, so a first ``pkgfs store
        ls`` shows an empty store. Raises :class:`StoreError` as both do."""
        path = resolve_store_path(root)
        if not StoreLayout(path).index.exists() and (not path.exists() or os.access(path, os.W_OK)):
            return cls(path)
        return cls(path, read_only=True)

    @classmethod
    def open_to_prepare(cls, root: str | os.PathLike[str] | None = None) -> Store:
        """For commands that add only what is missing (``sync``, ``mount``): the store as
        :meth:`open` opens it (created if new, its lock file held shared) where this
        process may write it, else read-only (:meth:`open_read_only`), so that a lock
        whose every piece is stored mounts from a store it cannot write, and anything
        missing is :class:`ReadOnlyStoreError` (:meth:`require_writable`)."""
        path = resolve_store_path(root)
        layout = StoreLayout(path)
        if layout.index.exists() and not layout.writable():
            return cls(path, read_only=True)
        return cls(path)

    def require_writable(self, missing: str) -> None:
        """Raise :class:`ReadOnlyStoreError` naming ``missing`` (what a writer would add)
        when this store was opened read-only or this process cannot write it."""
        if self.read_only or not self.layout.writable():
            raise ReadOnlyStoreError(self.root, missing)

    @property
    def root(self) -> Path:
        return self.layout.root

    def close(self) -> None:
        self.index.close()
        self._release()

    def _release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def add(
        self,
        wheel: str | os.PathLike[str],
        *,
        direct_url: bytes | None = None,
        metadata: Mapping[str, bytes] | None = None,
    ) -> IngestResult:
        """Ingest one wheel; raises :class:`WheelError` if refused, leaving the store as it was.
        ``direct_url``: PEP 610's ``direct_url.json``, added to its dist-info; ``metadata``:
        more files for its dist-info (name: bytes), as an installer writes them."""
        # Imported on first use: installer and zlib-ng cost mounts and queries nothing.
        from .ingest import ingest_wheel  # noqa: PLC0415

        path = Path(wheel).absolute()
        return ingest_wheel(self.layout, self.index, path, direct_url=direct_url, metadata=metadata)

    def add_many(
        self, wheels: Iterable[str | os.PathLike[str]], jobs: int | None = None
    ) -> Iterator[IngestResult | PkgfsError]:
        """Ingest wheels in parallel; yield each one's result or error, in the given order."""
        paths = [Path(w).absolute() for w in wheels]
        unique = list(dict.fromkeys(paths))
        workers = min(jobs or os.cpu_count() or 1, len(unique))
        if workers > 1:
            unique.sort(key=_size, reverse=True)  # largest first, so the workers finish together
        with IngestPool(self, workers) as pool:
            futures = {w: pool.submit(w) for w in unique}
            for path in paths:
                yield futures[path].result()

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


class IngestPool:
    """Worker processes that ingest wheels into one store; inline when ``jobs`` is 1.

    Workers are processes, not threads: inflating and hashing release the GIL, but the
    per-file Python work around them (installer, zipfile) does not, and two threads
    ingest about 1.4x slower than two processes. Each worker opens its own index
    connection, as an SQLite connection must not cross a fork. ``submit`` may be called
    from several threads at once (sync's downloaders do).
    """

    def __init__(self, store: Store, jobs: int) -> None:
        self.store = store
        self.jobs = max(1, jobs)
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> IngestPool:
        if self.jobs > 1:
            # forkserver, not fork: the caller may have threads (the mount daemon does) and
            # an open index; the server imports the store once and forks each worker.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            self._pool = ProcessPoolExecutor(
                self.jobs, context, initializer=_open_worker_store, initargs=(self.store.root,)
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, wheel: Path) -> Future[IngestResult | PkgfsError]:
        if self._pool is not None:
            return self._pool.submit(_attempt_in_worker, wheel)
        done: Future[IngestResult | PkgfsError] = Future()
        done.set_result(_attempt(self.store, wheel))
        return done


def _size(wheel: Path) -> int:
    try:
        return wheel.stat().st_size
    except OSError:
        return 0  # ingesting it reports the error


def _attempt(store: Store, wheel: Path) -> IngestResult | PkgfsError:
    try:
        return store.add(wheel)
    except PkgfsError as exc:
        return exc


_worker_store: Store | None = None


def _open_worker_store(root: Path) -> None:
    global _worker_store  # noqa: PLW0603 (one store per worker process, opened once)
    # Ctrl-C reaches the workers too (the terminal signals the whole process group); the
    # parent reports it. A worker just stops: an ingest cut short leaves only staging
    # files, and a KeyboardInterrupt here would print a traceback per worker.
    signal.signal(signal.SIGINT, _exit_quietly)
    _worker_store = Store(root)


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _attempt_in_worker(wheel: Path) -> IngestResult | PkgfsError:
    assert _worker_store is not None
    return _attempt(_worker_store, wheel)
