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
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from pkgfs.store.core import IngestPool, Store
from pkgfs.store.errors import PkgfsError, StoreError
from pkgfs.store.lock.model import LockedWheel
from pkgfs.store.records import IngestResult

from .download import Cancel, download

__all__ = [
    "SyncInterrupted",
    "SyncOutcome",
    "partition_present",
    "sync_wheels",
    "unreachable_offline",
]

DOWNLOADS = 8  # wheels fetched at once


@dataclass(frozen=True)
class SyncOutcome:
    wheel: LockedWheel
    result: IngestResult | None = None  # None: it was already in the store
    error: PkgfsError | None = None


class SyncInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`sync_wheels`: ``kept`` are the wheels ingested before it, which
    stay in the store; nothing of the others was stored."""

    def __init__(self, kept: Sequence[SyncOutcome]) -> None:
        super().__init__(f"interrupted; {len(kept)} wheels were kept")
        self.kept = list(kept)


def unreachable_offline(wheels: Sequence[LockedWheel]) -> list[LockedWheel]:
    """The wheels that only the network could bring: not local files."""
    return [w for w in wheels if not (w.wheel.url or "").startswith("file:")]


def partition_present(
    store: Store, wheels: Sequence[LockedWheel]
) -> tuple[list[LockedWheel], list[LockedWheel]]:
    """(already stored, missing): by sha256 only, without touching the network. Raises
    nothing of its own; the index's :class:`StoreError` when it cannot be read."""
    present: list[LockedWheel] = []
    missing: list[LockedWheel] = []
    for wheel in wheels:
        stored = any(store.index.has_wheel(h) for h in wheel.hashes)
        (present if stored else missing).append(wheel)
    return present, missing


def _fetch_and_add(
    store: Store, ingest: IngestPool, wheel: LockedWheel, cancel: Cancel
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
    except BrokenExecutor:  # a worker was killed (the OOM killer, Ctrl-C reaching it)
        return SyncOutcome(wheel, error=StoreError(f"{wheel.filename}: the ingest worker died"))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def sync_wheels(
    store: Store,
    missing: Sequence[LockedWheel],
    on_outcome: Callable[[SyncOutcome], None] = lambda _: None,
    jobs: int = DOWNLOADS,
) -> list[SyncOutcome]:
    """Download, verify and ingest ``missing``; report each outcome as it happens.

    A wheel that cannot be fetched or ingested is an outcome with its ``error``, not an
    exception. Ctrl-C stops the downloads within a moment and raises
    :class:`SyncInterrupted` naming the wheels that were ingested before it.
    """
    outcomes: dict[LockedWheel, SyncOutcome] = {}
    cancel = Cancel()
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
        except BaseException as exc:
            # Ctrl-C: stop downloads now (their connections are shut down) and start no
            # more. Wheels already ingested stay; a half-downloaded file is only a leftover
            # in the store's tmp/.
            cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)
            if isinstance(exc, KeyboardInterrupt):
                raise SyncInterrupted(_kept(futures, outcomes)) from None
            raise
    return [outcomes[wheel] for wheel in missing]


def _kept(
    futures: dict[Future[SyncOutcome], LockedWheel], outcomes: dict[LockedWheel, SyncOutcome]
) -> list[SyncOutcome]:
    """The outcomes that stored a wheel, reported or finished while the others stopped."""
    kept = dict(outcomes)
    for future, wheel in futures.items():
        if future.done() and not future.cancelled() and future.exception() is None:
            kept[wheel] = future.result()
    return [o for o in kept.values() if o.result is not None]
