"""``pkgfs store verify``: re-hash every object, check every manifest against them, and check
that every path the index and the saved views hold stays inside its root."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .contain import is_plain_name, is_safe_path
from .hashing import hash_file
from .index import Index
from .layout import StoreLayout
from .objects import is_digest
from .sealed import unseal

__all__ = ["VerifyReport", "verify_store"]


@dataclass
class VerifyReport:
    """Problems make the store unsound; notes are harmless leftovers of interrupted work."""

    objects_checked: int = 0
    wheels: int = 0
    problems: list[str] = field(default_factory=list)
    unreferenced: list[str] = field(default_factory=list)  # complete objects no wheel uses yet
    leftovers: list[Path] = field(default_factory=list)  # staging of interrupted ingests

    @property
    def ok(self) -> bool:
        return not self.problems


def _object_files(layout: StoreLayout, report: VerifyReport) -> dict[str, Path]:
    found: dict[str, Path] = {}
    if not layout.objects.is_dir():
        return found
    for bucket in sorted(os.scandir(layout.objects), key=lambda e: e.name):
        if not bucket.is_dir(follow_symlinks=False):
            report.problems.append(f"{bucket.path}: stray entry in the objects directory")
            continue
        for entry in os.scandir(bucket.path):
            digest = bucket.name + entry.name
            if not entry.is_file(follow_symlinks=False) or not is_digest(digest):
                report.problems.append(f"{entry.path}: not an object")
                continue
            found[digest] = Path(entry.path)
    return found


def _check_object(digest: str, path: Path, indexed_size: int | None) -> list[str]:
    problems = []
    try:
        info = path.stat()
        actual, size = hash_file(path)
    except OSError as exc:
        return [f"object {digest}: unreadable: {exc.strerror}"]
    if actual != digest:
        problems.append(f"object {digest}: content hashes to {actual}")
    if indexed_size is not None and size != indexed_size:
        problems.append(f"object {digest}: {size} bytes, the index says {indexed_size}")
    if info.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        problems.append(f"object {digest}: writable (mode {stat.S_IMODE(info.st_mode):o})")
    return problems


def _check_rows(index: Index) -> list[str]:
    """Index rows that name a path no wheel could have passed ingest with: a file path
    that is not a normalized relative path, or a script that is not one plain file name.
    Composing a view refuses them too; here the user learns the index was edited."""
    problems = []
    for wheel in index.wheels():
        where = f"{wheel.filename}: index row"
        dist_info = index.dist_info(wheel.sha256)
        if not is_plain_name(dist_info):
            problems.append(f"{where}: .dist-info name {dist_info!r} is unsafe")
        for f in index.files(wheel.sha256):
            plain = is_plain_name(f.path) if f.scheme == "scripts" else is_safe_path(f.path)
            if not plain:
                problems.append(f"{where}: unsafe path {f.scheme}/{f.path!r}")
        for entry in index.entry_points(wheel.sha256):
            if not is_plain_name(entry.name):
                problems.append(f"{where}: entry point {entry.name!r} is not a plain file name")
    # A build is recorded only after its wheel's ingest committed, so its wheel is there.
    for source, sha256 in index.builds():
        if not index.has_wheel(sha256):
            problems.append(f"build of {source}: its wheel {sha256} is not in the index")
    return problems


def _check_views(layout: StoreLayout) -> list[str]:
    """Saved views that fail their checksum.

    A problem, not a note, though a mount that meets one only composes it again: pkgfs
    writes a view whole (staged in tmp/, then renamed), so a crash never leaves a bad one,
    and a file that fails its checksum was damaged on disk or written by someone else,
    which verify exists to tell, as for an object. Verify only reads: the next mount
    replaces the file, or the user deletes it.
    """
    if not layout.views.is_dir():
        return []
    problems = []
    for entry in sorted(os.scandir(layout.views), key=lambda e: e.name):
        if not entry.is_file(follow_symlinks=False):
            problems.append(f"{entry.path}: not a saved view")
            continue
        try:
            with open(entry.path, "rb") as f:
                unseal(f.read())
        except OSError as exc:
            problems.append(f"{entry.path}: unreadable: {exc.strerror}")
        except ValueError as exc:
            problems.append(f"{entry.path}: {exc} (damaged; the next mount composes it again)")
    return problems


def verify_store(layout: StoreLayout, index: Index, jobs: int | None = None) -> VerifyReport:
    """Check every object, index row and saved view of the store; never changes it.

    Raises ``sqlite3.Error`` if the index cannot be read; anything else is a problem or a
    note in the report.
    """
    report = VerifyReport()
    indexed = index.objects()
    on_disk = _object_files(layout, report)
    report.wheels = len(index.wheels())
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        # hashlib releases the GIL on large buffers, so threads hash in parallel.
        results = pool.map(
            lambda item: _check_object(item[0], item[1], indexed.get(item[0])),
            sorted(on_disk.items()),
        )
        for problems in results:
            report.objects_checked += 1
            report.problems.extend(problems)
    for digest in sorted(indexed.keys() - on_disk.keys()):
        report.problems.append(f"object {digest}: missing, but the index lists it")
    report.unreferenced = sorted(on_disk.keys() - indexed.keys())
    for wheel, scheme, path, digest in index.dangling_files():
        report.problems.append(f"{wheel}: {scheme}/{path}: no object {digest} of its size")
    report.problems.extend(_check_rows(index))
    report.problems.extend(_check_views(layout))
    if layout.tmp.is_dir():
        report.leftovers = sorted(layout.tmp.iterdir())
    return report
