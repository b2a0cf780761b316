"""``pkgfs sync``: get every wheel a lock selects into the store, verified.

Wheels already stored are recognised by their sha256 alone, without the network. Missing
ones are downloaded several at once into the store's ``tmp/``, checked against the lock's
hashes (and size), and only then ingested; a mismatch is refused and nothing of that wheel
is stored. Each wheel is ingested as soon as it has arrived, so an interrupted sync keeps
every wheel it finished.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from pkgfs.store.core import IngestPool, Store
from pkgfs.store.errors import PkgfsError
from pkgfs.store.index import IngestResult
from pkgfs.store.lock.model import LockedWheel

from .download import download

__all__ = ["SyncOutcome", "partition_present", "sync_wheels", "unreachable_offline"]

DOWNLOADS = 8  # wheels fetched at once


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
