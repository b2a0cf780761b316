"""``pkgfs sync``: get every wheel a lock selects into the store, verified.

Wheels already stored are recognised by their sha256 alone, without the network. Missing
ones are downloaded several at once into the store's ``tmp/``, checked against the lock's
hashes (and size), and only then ingested; a mismatch is refused and nothing of that wheel
is stored. Each wheel is ingested as soon as it has arrived, so an interrupted sync keeps
every wheel it finished.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from .core import IngestPool, Store
from .errors import PkgfsError
from .index import IngestResult
from .lock.finder import FetchError, open_url
from .lock.model import LockedWheel

__all__ = ["SyncOutcome", "download", "partition_present", "sync_wheels", "unreachable_offline"]

DOWNLOADS = 8  # wheels fetched at once
_CHUNK = 1 << 20


@dataclass(frozen=True)
class SyncOutcome:
    wheel: LockedWheel
    result: IngestResult | None = None  # None: it was already in the store
    error: PkgfsError | None = None


def unreachable_offline(wheels: Sequence[LockedWheel]) -> list[LockedWheel]:
    """The wheels that only the network could bring: not local files."""
    return [w for w in wheels if not (w.wheel.url or "").startswith("file:")]


def partition_present(
    store: Store, wheels: Sequence[LockedWheel]
) -> tuple[list[LockedWheel], list[LockedWheel]]:
    """(already stored, missing): by sha256 only, without touching the network."""
    present: list[LockedWheel] = []
    missing: list[LockedWheel] = []
    for wheel in wheels:
        stored = any(store.index.has_wheel(h) for h in wheel.hashes)
        (present if stored else missing).append(wheel)
    return present, missing


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
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
                size = f.tell()
        except OSError as exc:
            raise FetchError(f"{path}: {exc.strerror}") from None
        _check(wheel, digest, size, str(path))
        return path
    target = directory / wheel.filename
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


def _fetch_and_add(
    store: Store, ingest: IngestPool, wheel: LockedWheel, cancel: threading.Event
) -> SyncOutcome:
    directory = Path(tempfile.mkdtemp(prefix="download-", dir=store.layout.tmp))
    try:
        # The download thread waits while a worker process ingests: the CPU work runs
        # outside this process's GIL, beside the other downloads.
        result = ingest.submit(download(wheel, directory, cancel)).result()
        if isinstance(result, PkgfsError):
            return SyncOutcome(wheel, error=result)
        return SyncOutcome(wheel, result=result)
    except PkgfsError as exc:
        return SyncOutcome(wheel, error=exc)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def sync_wheels(
    store: Store,
    missing: Sequence[LockedWheel],
    on_outcome: Callable[[SyncOutcome], None] = lambda _: None,
    jobs: int = DOWNLOADS,
) -> list[SyncOutcome]:
    """Download, verify and ingest ``missing``; report each outcome as it happens."""
    outcomes = {}
    cancel = threading.Event()
    with (
        IngestPool(store, min(os.cpu_count() or 1, len(missing))) as ingest,
        ThreadPoolExecutor(max_workers=max(1, min(jobs, len(missing)))) as pool,
    ):
        futures = {pool.submit(_fetch_and_add, store, ingest, w, cancel): w for w in missing}
        try:
            for future in as_completed(futures):
                outcome = future.result()
                on_outcome(outcome)
                outcomes[futures[future]] = outcome
        except BaseException:
            # Ctrl-C: stop downloads at their next chunk and start no more. Wheels already
            # ingested stay; a half-downloaded file is only a leftover in the store's tmp/.
            cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [outcomes[wheel] for wheel in missing]
