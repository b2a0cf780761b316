"""``pkgfs store gc``: remove what no root needs: wheels, objects, views, leftovers.

The roots are given by the caller (the environments it knows, and any lock it names): the
wheels to keep and the saved views to keep. Everything else goes:

- wheels outside the roots, with their manifests, entry points, bytecode and build records
  (the index's ``builds`` rows, ``editables-v1/`` records naming them);
- objects that no kept wheel's files nor its bytecode use, and object files the index does
  not know (left by an ingest killed between publishing its objects and its commit);
- saved views outside the roots, and everything in ``tmp/`` (staging of interrupted work).

Order, for a crash at any instant: the index forgets the wheels and objects in one
transaction, and only then are files unlinked. A ``kill -9`` before the commit changes
nothing; after it, it leaves object files that no row names, which ``verify`` reports as
harmless and the next ``gc`` removes.

Exclusion: every writer holds the store's lock file shared for as long as it has the
store open (:class:`pkgfs.store.core.Store`); ``gc`` holds it exclusively, so no ingest,
build or compile is publishing objects while it decides what is unreferenced. A mounted
environment reads objects without the index and holds no lock: its wheels must be roots.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import StoreError
from .index import Index
from .layout import StoreLayout
from .objects import is_digest

__all__ = ["GcReport", "collect_garbage", "exclusive", "remove_wheels"]

EDITABLE_RECORDS = "editables-v1"  # pkgfs.store.fetch.editable's records


@dataclass
class GcReport:
    """What ``gc`` removed, or would remove with ``dry_run``: sizes in bytes."""

    dry_run: bool
    wheels: list[str] = field(default_factory=list)  # file names
    objects: int = 0
    object_bytes: int = 0
    views: int = 0
    view_bytes: int = 0
    leftovers: int = 0  # entries of tmp/
    leftover_bytes: int = 0
    kept_wheels: int = 0

    @property
    def freed(self) -> int:
        return self.object_bytes + self.view_bytes + self.leftover_bytes


@contextlib.contextmanager
def exclusive(layout: StoreLayout, wait: bool = True) -> Iterator[None]:
    """Hold the store's lock file exclusively. Raises :class:`StoreError` when ``wait`` is
    false and another pkgfs command has the store open."""
    fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise StoreError(
                f"{layout.root}: another pkgfs command is using the store (sync, mount, add):"
                " try again when it is done"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _size(path: Path) -> int:
    """Bytes under ``path`` (a file or a tree), not following symlinks."""
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def collect_garbage(
    layout: StoreLayout,
    index: Index,
    keep_wheels: set[str],
    keep_views: set[str],
    *,
    dry_run: bool = False,
) -> GcReport:
    """Remove every wheel whose sha256 is not in ``keep_wheels``, every saved view whose
    name is not in ``keep_views``, the objects only they used, and ``tmp/``. The caller
    holds :func:`exclusive`. Raises ``OSError`` when a file cannot be removed (what was
    removed before stays removed, and the store stays sound)."""
    report = GcReport(dry_run)
    wheels = index.wheels()
    gone = [w for w in wheels if w.sha256 not in keep_wheels]
    report.wheels = sorted(w.filename for w in gone)
    report.kept_wheels = len(wheels) - len(gone)
    rows = index.objects()  # digest -> size, before anything goes
    doomed = index.unreferenced_objects(without={w.sha256 for w in gone})
    if not dry_run:
        index.remove_wheels([w.sha256 for w in gone])  # and the rows of ``doomed``, at once
    _remove_objects(layout, report, doomed, set(rows))
    _remove_entries(layout, report, keep_views)
    if not dry_run:
        _forget_editables(layout, {w.sha256 for w in gone})
    return report


def remove_wheels(layout: StoreLayout, index: Index, sha256s: set[str]) -> GcReport:
    """``pkgfs store rm``: forget the wheels whose sha256 is in ``sha256s`` and the objects
    that only they used (their files, their bytecode), in one index transaction, then
    unlink those objects. The caller holds :func:`exclusive` and has checked that no
    environment needs them. Raises ``OSError`` when a file cannot be removed (the index
    has forgotten it: ``gc`` removes it later, ``verify`` calls it harmless)."""
    report = GcReport(dry_run=False)
    wheels = [w for w in index.wheels() if w.sha256 in sha256s]
    report.wheels = sorted(w.filename for w in wheels)
    # (and any row no wheel used before: the index drops those rows in the same commit)
    doomed = index.unreferenced_objects(without=sha256s)
    index.remove_wheels([w.sha256 for w in wheels])  # with the rows of ``doomed``, at once
    for digest, size in sorted(doomed.items()):
        report.objects += 1
        report.object_bytes += size
        layout.object_path(digest).unlink(missing_ok=True)
    _forget_editables(layout, {w.sha256 for w in wheels})
    return report


def _remove_objects(
    layout: StoreLayout, report: GcReport, doomed: dict[str, int], rows: set[str]
) -> None:
    for digest, size in sorted(doomed.items()):
        report.objects += 1
        report.object_bytes += size
        if not report.dry_run:
            layout.object_path(digest).unlink(missing_ok=True)
    # Object files no row names: an ingest killed after publishing, before its commit.
    for path in _object_files(layout):
        if path.parent.name + path.name in rows:
            continue
        report.objects += 1
        report.object_bytes += path.lstat().st_size
        if not report.dry_run:
            path.unlink(missing_ok=True)


def _remove_entries(layout: StoreLayout, report: GcReport, keep_views: set[str]) -> None:
    """Saved views outside the roots, and everything in tmp/."""
    views = sorted(layout.views.iterdir()) if layout.views.is_dir() else []
    for view in views:
        if view.name in keep_views:
            continue
        report.views += 1
        report.view_bytes += _size(view)
        if not report.dry_run:
            view.unlink(missing_ok=True)
    leftovers = sorted(layout.tmp.iterdir()) if layout.tmp.is_dir() else []
    for entry in leftovers:
        report.leftovers += 1
        report.leftover_bytes += _size(entry)
        if not report.dry_run:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)


def _object_files(layout: StoreLayout) -> Iterator[Path]:
    if not layout.objects.is_dir():
        return
    for bucket in os.scandir(layout.objects):
        if not bucket.is_dir(follow_symlinks=False):
            continue
        for entry in os.scandir(bucket.path):
            if entry.is_file(follow_symlinks=False) and is_digest(bucket.name + entry.name):
                yield Path(entry.path)


def _forget_editables(layout: StoreLayout, removed: set[str]) -> None:
    """Drop the editable-build records that name a removed wheel (they would be ignored,
    as their wheel is gone; removing them keeps the directory from growing)."""
    records = layout.root / EDITABLE_RECORDS
    if not records.is_dir() or not removed:
        return
    for record in records.iterdir():
        try:
            wheel = json.loads(record.read_bytes()).get("wheel")
        except (OSError, ValueError, AttributeError):
            continue
        if wheel in removed:
            record.unlink(missing_ok=True)
