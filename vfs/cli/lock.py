"""``pkgfs sync`` and ``pkgfs lock show``: from a lockfile to wheels in the store."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from pkgfs.store import Store
from pkgfs.store.build import build_locked, installer_environ, recall
from pkgfs.store.bytecode import compile_wheels
from pkgfs.store.errors import BuildError, StoreError, redact
from pkgfs.store.fetch import (
    BuildSources,
    Finder,
    IndexConfig,
    SyncInterrupted,
    SyncOutcome,
    editable_wheels,
    index_config,
    partition_present,
    remember_credentials,
    sync_wheels,
    unreachable_offline,
)
from pkgfs.store.fetch.editable import remembered_for
from pkgfs.store.lock import (
    LockedWheel,
    LockError,
    Lockfile,
    Selection,
    Target,
    choose_wheels,
    default_python,
    discover_lock,
    probe_target,
)
from pkgfs.store.lock.kept import read_lock_kept
from pkgfs.vfs.env.saved import prepare_view
from pkgfs.vfs.env.venv import site_packages_for
from pkgfs.vfs.env.view import Bytecode

from .output import EXIT_INTERRUPTED, print_json

__all__ = [
    "cmd_lock_show",
    "cmd_sync",
    "resolve_lock",
    "selection_of",
    "stored_wheels",
    "sync_locked",
]


@dataclass
class Resolved:
    lockfile: Lockfile
    target: Target
    wheels: list[LockedWheel]  # the lock's, and the editable projects' once built; those
    # with ``build`` set are built (or recalled) by sync
    selection: Selection = field(default_factory=Selection)
    editables: list[LockedWheel] | None = None  # None: not built (``lock show``)
    # For build requirements: as given, credentials included (pip and uv authenticate).
    index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    verbose: bool = False  # a failed build prints its whole output


def selection_of(args: argparse.Namespace) -> Selection:
    """The groups and extras uv sync's options on the command line ask for."""
    return Selection(
        groups=tuple(args.group),
        only_groups=tuple(args.only_group),
        no_groups=(*args.no_group, *(["dev"] if args.no_dev else [])),
        no_default_groups=args.no_default_groups,
        all_groups=args.all_groups,
        extras=tuple(args.extra),
        all_extras=args.all_extras,
    )


def _index_urls(args: argparse.Namespace, lockfile: Lockfile, config: IndexConfig) -> list[str]:
    """The indexes asked, in order, as pip combines them: ``--index-url`` first; a lock's
    own ``-i`` replaces the configured (or default) index, its extra indexes follow;
    ``--no-index`` (the command line's, the lock's or the configuration's) asks none."""
    if getattr(args, "no_index", False):
        return []
    given = list(args.index_url)
    if lockfile.no_index or (config.no_index and not given):
        return given
    if lockfile.index_replaced:
        return list(dict.fromkeys([*given, *lockfile.index_urls]))
    return list(dict.fromkeys([*config.index_urls(given), *lockfile.index_urls]))


def resolve_lock(
    args: argparse.Namespace, store: Store, err: TextIO, *, build: bool = True
) -> Resolved:
    """Discover and read the lock for the target, with the groups and extras the options
    select, and choose its wheels. Says which lock. With ``build``, the lock's editable
    projects are built (or their remembered wheels taken) and join the wheels.

    Indexes and find-links: the command line's, the lock's, then pip's and uv's settings
    (:func:`pkgfs.store.fetch.index_config`), the default index last. Credentials in an
    index URL are remembered for that host (the lock's own wheel URLs may point there) and
    never printed. Raises :class:`LockError` for a lock that cannot
    be found, read or satisfied, :class:`TargetError` for a target that cannot be run,
    :class:`FetchError` for an index that cannot be read, and :class:`BuildError` for an
    editable project that cannot be built.
    """
    lock = args.lock or discover_lock(Path.cwd())
    if args.lock is None:
        print(f"pkgfs: using {redact(str(lock))}", file=err)
    python = args.python or default_python(lock.absolute().parent)
    target = probe_target(python)
    selection = selection_of(args)
    lockfile = read_lock_kept(lock, target, selection)
    for note in lockfile.notes:
        print(redact(f"pkgfs: {lock.name}: {note}"), file=err)
    config = index_config()
    given_urls = _index_urls(args, lockfile, config)
    index_urls = [remember_credentials(u, index=True) for u in given_urls]
    find_links = [*args.find_links, *lockfile.find_links, *config.find_links]
    finder = Finder(
        index_urls=list(dict.fromkeys(index_urls)),
        find_links=list(dict.fromkeys(remember_credentials(u) for u in find_links)),
        offline=args.offline,
        index=store.index,
    )
    wheels = choose_wheels(lockfile, target, finder)
    verbose = bool(getattr(args, "verbose", False))
    if not build:
        return Resolved(lockfile, target, wheels, selection, None, given_urls, find_links, verbose)
    # pip in the build environment authenticates itself: it gets the URLs as given.
    sources = BuildSources(given_urls, finder.find_links, args.offline)
    editables = editable_wheels(
        store,
        lockfile.editables,
        sources,
        target.tags,
        say=lambda line: print(f"pkgfs: {redact(line)}", file=err),
    )
    wheels = sorted([*wheels, *editables], key=lambda w: w.name)
    return Resolved(lockfile, target, wheels, selection, editables, given_urls, find_links, verbose)


def cmd_lock_show(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs lock show``: the wheel chosen for each package, and whether it is stored.

    Raises what :func:`resolve_lock` raises; :func:`pkgfs.vfs.cli.main` reports it.
    Reads the store only (a read-only store too).
    """
    with Store.open_for_reading(getattr(args, "store", None)) as store:
        resolved = resolve_lock(args, store, sys.stderr, build=False)
        to_build = {w.name for w in resolved.wheels if w.build is not None}
        resolved.wheels = [recall(store, w, resolved.target) or w for w in resolved.wheels]
        to_build -= {w.name for w in resolved.wheels if w.build is None}
        present, _ = partition_present(store, resolved.wheels)
        # Editable projects are built by sync and mount, not here: shown with the wheel
        # remembered for their metadata as it is now, if any.
        editables = [(p, remembered_for(store, p)) for p in resolved.lockfile.editables]
    stored = {w.name for w in present}
    if args.json:
        rows = [
            {
                "name": w.name,
                "version": w.version,
                "wheel": w.filename,
                "sha256": w.wheel.sha256,
                "url": None if w.wheel.url is None else redact(w.wheel.url),
                "in_store": w.name in stored,
                "to_build": None if w.build is None else w.build.kind,  # the source, not built yet
            }
            for w in resolved.wheels
        ]
        rows += [
            {
                "name": project.name,
                "version": wheel.version if wheel else project.version,
                "wheel": wheel.filename if wheel else None,
                "sha256": wheel.wheel.sha256 if wheel else None,
                "editable": str(project.path),
                "in_store": wheel is not None,
            }
            for project, wheel in editables
        ]
        print_json(rows, out)
        return 0
    for w in resolved.wheels:
        mark = "stored " if w.name in stored else "build  " if w.name in to_build else "missing"
        print(f"{mark} {w.name:<28} {w.version:<14} {w.filename}", file=out)
    for project, wheel in editables:
        mark = "built  " if wheel else "build  "
        version = wheel.version if wheel else (project.version or "?")
        print(f"{mark} {project.name:<28} {version:<14} editable {project.path}", file=out)
    selected = resolved.selection.describe()
    print(
        f"{len(resolved.wheels)} wheels for {resolved.target.python} ({resolved.target.best_tag}),"
        f" {len(present)} in the store"
        + (f", {len(editables)} editable projects" if editables else "")
        + (f" ({selected})" if selected else ""),
        file=out,
    )
    return 0


class _Progress:
    """A one-line progress bar on a terminal; one plain line per wheel otherwise."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, outcome: SyncOutcome) -> None:
        self.done += 1
        wheel = outcome.wheel
        if outcome.result is not None:
            what = (
                f"added {wheel.name} {wheel.version} ({outcome.result.objects_added} new objects)"
            )
        else:
            what = f"failed {wheel.name} {wheel.version}"
        if not self.tty:
            print(what, file=self.stream)
            return
        width = 30
        filled = width * self.done // max(self.total, 1)
        bar = f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {what}"
        end = "\n" if self.done == self.total else ""
        print(f"\r\x1b[K{bar}", end=end, file=self.stream, flush=True)


def stored_wheels(store: Store, wheels: list[LockedWheel]) -> list[str]:
    """The sha256 under which the store holds each of ``wheels``.

    Raises :class:`StoreError` naming the first wheel that is not stored.
    """
    digests = []
    for wheel in wheels:
        digest = next((h for h in sorted(wheel.hashes) if store.index.has_wheel(h)), None)
        if digest is None:
            raise StoreError(f"{wheel.filename} is not in the store {store.root}: pkgfs sync first")
        digests.append(digest)
    return digests


def sync_locked(
    store: Store, resolved: Resolved, offline: bool, where: str | Path, compile_bytecode: bool
) -> tuple[list[LockedWheel], list[SyncOutcome]]:
    """Get the resolved wheels into the store: (those already there, outcomes of the rest),
    then their bytecode for the target interpreter unless told not to.

    Packages to build from source are built first (or recalled from an earlier build);
    :class:`BuildError` for a source that does not match the lock or fails to build.
    Offline, wheels that only the network could bring are refused in one line naming
    ``where`` (:class:`LockError`). A wheel that cannot be fetched or ingested is an outcome
    with its error, not an exception; Ctrl-C raises :class:`SyncInterrupted` naming the
    wheels kept; :class:`BytecodeError` when the target cannot be run to compile.
    """
    # Sources first: each is built once (or its earlier build recalled) and stored, so what
    # follows sees only wheels. Build requirements come from the lock's indexes and
    # find-links; offline, from find-links only.
    no_index = offline or resolved.lockfile.no_index
    environ = installer_environ(resolved.index_urls, resolved.find_links, no_index)
    try:
        resolved.wheels = build_locked(
            store,
            resolved.wheels,
            resolved.target,
            environ,
            lambda line: print(f"pkgfs: {line}", file=sys.stderr),
            offline=offline,
        )
    except BuildError as exc:
        if resolved.verbose and exc.log is not None:
            with contextlib.suppress(OSError), open(exc.log, encoding="utf-8") as log:
                sys.stderr.write(log.read())
        raise
    present, missing = partition_present(store, resolved.wheels)
    if missing:
        names = ", ".join(w.filename for w in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        store.require_writable(f"it lacks {len(missing)} wheels of the lock: {names}{more}")
    remote = unreachable_offline(missing) if offline else []
    if remote:
        names = ", ".join(w.filename for w in remote)
        raise LockError(where, f"offline, and {len(remote)} wheels are not in the store: {names}")
    outcomes = sync_wheels(store, missing, _Progress(len(missing), sys.stderr)) if missing else []
    if compile_bytecode and not any(o.error for o in outcomes):
        target = resolved.target
        started = time.monotonic()
        try:
            report = compile_wheels(
                store,
                stored_wheels(store, resolved.wheels),
                target.python,
                target.magic,
                progress=lambda line: print(f"pkgfs: {line}", file=sys.stderr),
            )
        except KeyboardInterrupt:  # every wheel is in by now; only bytecode is missing
            raise SyncInterrupted([o for o in outcomes if o.result is not None]) from None
        if report.wheels:
            print(
                f"pkgfs: compiled {report.modules} modules for {target.cache_tag} in"
                f" {time.monotonic() - started:.1f} s ({report.failed} did not compile, skipped)",
                file=sys.stderr,
            )
    return present, outcomes


def _say_kept(interrupted: SyncInterrupted) -> None:
    kept = sorted(f"{o.wheel.name} {o.wheel.version}" for o in interrupted.kept)
    listed = f": {', '.join(kept)}" if kept else ""
    print(
        f"pkgfs: interrupted; kept {len(kept)} wheels ingested before it{listed}",
        file=sys.stderr,
    )


def cmd_sync(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs sync``: exit 0 when every wheel is stored, 1 when some failed (each said in
    one line), 130 on Ctrl-C (saying which wheels were kept).

    Raises what :func:`resolve_lock` and :func:`sync_locked` raise, Ctrl-C excepted.
    """
    with Store.open_to_prepare(getattr(args, "store", None)) as store:
        resolved = resolve_lock(args, store, sys.stderr)
        try:
            present, outcomes = sync_locked(
                store, resolved, args.offline, resolved.lockfile.path, not args.no_compile
            )
        except SyncInterrupted as interrupted:
            _say_kept(interrupted)
            return EXIT_INTERRUPTED
        failed = [o for o in outcomes if o.error is not None]
        view = None
        if not failed:
            target = resolved.target
            magic = "" if args.no_compile else target.magic
            bytecode = Bytecode(magic, target.cache_tag) if magic else None
            site_packages = site_packages_for(target.python, target.environment["python_version"])
            view = prepare_view(
                store, stored_wheels(store, resolved.wheels), site_packages, bytecode
            )
    if getattr(args, "json", False):
        report = {
            "lock": str(resolved.lockfile.path),
            "python": str(resolved.target.python),
            "wheels": len(resolved.wheels),
            "present": len(present),
            "added": [o.wheel.filename for o in outcomes if o.error is None],
            "failed": [{"wheel": o.wheel.filename, "error": str(o.error)} for o in failed],
            "view": view,
        }
        print_json(report, out)
    else:
        summary = f"{len(resolved.wheels)} wheels: {len(present)} already in the store"
        summary += f", {len(outcomes) - len(failed)} added"
        if failed:
            summary += f", {len(failed)} failed"
        print(summary, file=out)
    for outcome in failed:
        print(f"pkgfs: error: {outcome.error}", file=sys.stderr)
    from .switch import say_behind  # noqa: PLC0415

    say_behind(resolved.lockfile.path, sys.stderr)  # environments mounted with it, behind it
    return 1 if failed else 0
