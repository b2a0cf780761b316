"""``pkgfs store add|ls|stats|verify``: the store itself."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import BrokenExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from pkgfs.store import IngestResult, PkgfsError, Store, StoreError, resolve_store_path
from pkgfs.store.errors import ReadOnlyStoreError
from pkgfs.store.layout import StoreLayout

from .output import EXIT_FAILURE, EXIT_OK, human, print_json

__all__ = [
    "cmd_store_add",
    "cmd_store_gc",
    "cmd_store_ls",
    "cmd_store_rm",
    "cmd_store_stats",
    "cmd_store_verify",
    "open_store",
    "open_store_for_reading",
]


def open_store(args: argparse.Namespace) -> Store:
    """The store ``--store`` names, else the default one; :class:`StoreError` when it
    cannot be created or its index cannot be opened."""
    # --store is SUPPRESSed unless given, before or after the subcommand.
    return Store.open(getattr(args, "store", None))


def open_store_for_reading(args: argparse.Namespace) -> Store:
    """The store ``--store`` names, else the default one, read-only (nothing written, not
    even its lock file: a reader never waits for a writer), as another user's store or a
    read-only mount is; a store that does not exist yet is created empty. Raises
    :class:`StoreError` when it cannot be read."""
    return Store.open_for_reading(getattr(args, "store", None))


def _refuse_read_only(args: argparse.Namespace, command: str, why: str) -> None:
    """:class:`ReadOnlyStoreError` (one line) for a store that exists and that this
    process may not write: a read-only mount, another user's store."""
    layout = StoreLayout(resolve_store_path(getattr(args, "store", None)))
    if layout.index.exists() and not layout.writable():
        raise ReadOnlyStoreError(layout.root, why, command)


def _describe(result: IngestResult) -> str:
    head = f"{result.name} {result.version}"
    if result.already_present:
        return f"{head}: already present"
    line = (
        f"{head}: {result.objects_added} objects, {human(result.bytes_added)} added"
        f" ({result.files} files, {human(result.unpacked_bytes)} unpacked)"
    )
    if result.skipped:
        line += f"; skipped {len(result.skipped)} __pycache__ members"
    return line


def cmd_store_add(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs store add``: one line per wheel; exit 1 if any was refused (each refusal a
    :class:`WheelError` line). Raises :class:`StoreError`, or an :class:`OSError` from a
    store it cannot write, for :func:`pkgfs.vfs.cli.main` to report."""
    status = EXIT_OK
    _refuse_read_only(args, "pkgfs store add", "adding wheels writes to it")
    with open_store(args) as store:
        try:
            for outcome in store.add_many(args.wheels, jobs=args.jobs):
                if isinstance(outcome, PkgfsError):
                    print(f"pkgfs: error: {outcome}", file=sys.stderr)
                    status = EXIT_FAILURE
                else:
                    print(_describe(outcome), file=out)
        except BrokenExecutor:  # a worker was killed: what was added before stays
            raise StoreError(f"{store.root}: an ingest worker died; run the add again") from None
    return status


def cmd_store_ls(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs store ls``: the ingested wheels, from a read-only store too. Raises
    :class:`StoreError` for a store that cannot be opened, for :func:`pkgfs.vfs.cli.main`."""
    with open_store_for_reading(args) as store:
        wheels = store.wheels()
    if args.json:
        print_json([asdict(w) for w in wheels], out)
        return EXIT_OK
    for w in wheels:
        print(
            f"{w.name:<24} {w.version:<12} {w.files:>6} files {human(w.unpacked_bytes):>10}"
            f"  {w.sha256[:12]}  {w.tags}",
            file=out,
        )
    return EXIT_OK


def cmd_store_stats(args: argparse.Namespace, out: TextIO) -> int:
    with open_store_for_reading(args) as store:
        stats = store.stats()
        root = store.root
    if args.json:
        # The first six keys are those of earlier versions; the rest were added after them.
        fields = {"store": str(root), **asdict(stats), "saved_bytes": stats.saved_bytes}
        print_json(fields, out)
        return EXIT_OK

    def size(n: int) -> str:
        return f"{n} bytes ({human(n)})"

    other = stats.objects - stats.wheel_objects - stats.bytecode_objects
    magics = stats.bytecode_interpreters
    compiled = f"{stats.bytecode_modules} modules compiled for {magics} interpreter"
    compiled += "" if magics == 1 else "s"
    print(f"store:         {root}", file=out)
    print(f"wheels:        {stats.wheels}", file=out)
    print(f"files:         {stats.files}, {size(stats.logical_bytes)} unpacked", file=out)
    print(f"objects:       {stats.objects}, {size(stats.stored_bytes)} stored", file=out)
    print(f"  wheel files: {stats.wheel_objects}, {size(stats.wheel_object_bytes)}", file=out)
    print(
        f"  bytecode:    {stats.bytecode_objects}, {size(stats.bytecode_bytes)}, {compiled}",
        file=out,
    )
    if other:
        print(f"  other:       {other} (no wheel file or module uses them)", file=out)
    print(
        f"dedup:         {stats.dedup:.2f}x over wheel files, {human(stats.saved_bytes)} saved",
        file=out,
    )
    return EXIT_OK


def cmd_store_verify(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs store verify``: every problem on a line, exit 1 if any; a read-only store
    too. Raises :class:`StoreError` for a store that cannot be opened, for
    :func:`pkgfs.vfs.cli.main`."""
    with open_store_for_reading(args) as store:
        report = store.verify(jobs=args.jobs)
    for problem in report.problems:
        print(problem, file=out)
    if report.unreferenced:
        print(
            f"note: {len(report.unreferenced)} objects no wheel refers to"
            " (left by an interrupted ingest; harmless)",
            file=out,
        )
    if report.leftovers:
        print(f"note: {len(report.leftovers)} staging directories of interrupted ingests", file=out)
    verdict = "ok" if report.ok else f"{len(report.problems)} problems"
    print(f"{verdict}: {report.objects_checked} objects, {report.wheels} wheels checked", file=out)
    return EXIT_OK if report.ok else EXIT_FAILURE


def cmd_store_gc(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs store gc``: remove what no environment of this user (and no ``--lock``)
    uses. Raises :class:`StoreError` (one line) when another command has the store open,
    or when an environment's config cannot be read (its roots would be unknown)."""
    from pkgfs.store.gc import collect_garbage, exclusive  # noqa: PLC0415
    from pkgfs.vfs.env.registry import Environment, environments, roots  # noqa: PLC0415

    from .lock import resolve_lock, stored_wheels  # noqa: PLC0415

    envs: list[Environment] = []
    for directory, env in environments():
        if not isinstance(env, Environment):
            # Its mountpoint may be unknown too (pkgfs env rm needs it): name the directory.
            raise StoreError(
                f"{env}; until then gc removes nothing, as what that environment uses is"
                f" unknown (or delete {directory} to forget it, its overlay with it)"
            )
        envs.append(env)
    root = resolve_store_path(getattr(args, "store", None))
    if not StoreLayout(root).index.is_file():
        raise StoreError(f"{root}: no store here")
    opened: contextlib.AbstractContextManager[Store]
    if args.dry_run:  # only reads: beside a writer, or on a store it may not write
        opened = Store.open_read_only(root)
    else:
        _refuse_read_only(args, "pkgfs store gc", "gc removes from it")
        opened = _exclusive_store(root, exclusive)
    with opened as store:
        keep_wheels, keep_views = roots(store, envs)
        if args.lock is not None:
            # What the lock selects and the store holds stays; a wheel never stored has
            # nothing to keep (it refused: "pkgfs sync first", to download what to keep).
            # One still to build names no hash to look for: refused as before.
            resolved = resolve_lock(args, store, sys.stderr, build=False)
            for locked in resolved.wheels:
                if not locked.hashes:
                    keep_wheels.update(stored_wheels(store, [locked]))
                keep_wheels.update(d for d in locked.hashes if store.index.has_wheel(d))
        report = collect_garbage(
            store.layout, store.index, keep_wheels, keep_views, dry_run=args.dry_run
        )
    if args.json:
        print_json({**asdict(report), "freed": report.freed}, out)
        return EXIT_OK
    verb = "would remove" if report.dry_run else "removed"
    for wheel in report.wheels:
        print(f"{verb} {wheel}", file=out)
    print(
        f"{verb} {len(report.wheels)} wheels, {report.objects} objects, {report.views} views,"
        f" {report.leftovers} leftovers: {human(report.freed)}; kept {report.kept_wheels} wheels"
        f" of {len(envs)} environments",
        file=out,
    )
    return EXIT_OK


@contextlib.contextmanager
def _exclusive_store(
    root: Path, exclusive: Callable[..., contextlib.AbstractContextManager[None]]
) -> Iterator[Store]:
    """The store at ``root`` with its lock file held exclusively (no other command has it
    open). Raises :class:`StoreError` at once when one has."""
    with exclusive(StoreLayout(root), wait=False), Store(root, shared_lock=False) as store:
        yield store


def cmd_store_rm(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs store rm WHEEL...``: each WHEEL a stored wheel's file name or sha256 (or a
    prefix of it naming one wheel). Refuses, in one line, a wheel that a registered
    environment uses (its current or its previous, rollback, config) unless ``--force``;
    then removes the wheels from the index in one transaction, then the objects only they
    used. Raises :class:`StoreError` (one line; nothing removed) for a name the store does
    not hold, a wheel in use, or a store another command has open."""
    from pkgfs.store import resolve_store_path  # noqa: PLC0415
    from pkgfs.store.gc import exclusive, remove_wheels  # noqa: PLC0415
    from pkgfs.store.layout import StoreLayout  # noqa: PLC0415
    from pkgfs.vfs.env.registry import Environment, environments, same_store  # noqa: PLC0415

    root = resolve_store_path(getattr(args, "store", None))
    if not StoreLayout(root).index.is_file():
        raise StoreError(f"{root}: no store here")
    with exclusive(StoreLayout(root), wait=False), Store(root, shared_lock=False) as store:
        wheels = store.index.wheels()
        chosen = {}
        for given in args.wheels:
            found = [w for w in wheels if given in (w.filename, w.sha256)]
            found = found or [w for w in wheels if len(given) >= 8 and w.sha256.startswith(given)]
            if len(found) != 1:
                what = "no stored wheel" if not found else f"{len(found)} stored wheels"
                raise StoreError(
                    f"{given}: {what} of that file name or sha256 in {root} (pkgfs store ls)"
                )
            chosen[found[0].sha256] = found[0]
        if not args.force:
            for _directory, env in environments():
                if not isinstance(env, Environment):
                    raise StoreError(
                        f"{env}: what that environment uses is unknown, so nothing is removed;"
                        " pkgfs env rm it, or mount it again (or --force)"
                    )
                if not same_store(Path(env.config.store), store.root):
                    continue
                for config, which in ((env.config, "uses"), (env.previous, "can roll back to")):
                    used = set(config.wheels) & chosen.keys() if config is not None else set()
                    if used:
                        wheel = chosen[sorted(used)[0]].filename
                        raise StoreError(
                            f"{wheel}: the environment at {env.config.mountpoint} {which} it:"
                            " nothing removed (pkgfs env rm that environment, or --force)"
                        )
        report = remove_wheels(store.layout, store.index, set(chosen))
    for wheel in report.wheels:
        print(f"removed {wheel}", file=out)
    print(
        f"removed {len(report.wheels)} wheels, {report.objects} objects:"
        f" {human(report.object_bytes)}",
        file=out,
    )
    return EXIT_OK
