"""Wheels built once from a lock's sources, and remembered in the store by their source.

For each locked package that has no wheel for the target but a source (an sdist, git, a
directory, an archive), :func:`build_locked` first asks the store's index which wheels were
built from that source's key (pkgfs.store.build.source) and takes one the target's tags
accept. Only when there is none does it fetch and verify the source, build the wheel with
pypa/build (pkgfs.store.build.frontend), ingest it like any wheel and then commit the
source -> wheel record: the record is the last write, so an interrupted build leaves at
most staging files and a log in the store's ``tmp/``.

A wheel built from git, a directory or an archive URL gets PEP 610's ``direct_url.json``,
as pip and uv write it; one built from an index's sdist gets none, as with pip and uv.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from packaging.tags import create_compatible_tags_selector
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from pkgfs.store.core import Store
from pkgfs.store.errors import BuildError, PkgfsError
from pkgfs.store.lock.model import BuildSource, LockedWheel, WheelLink
from pkgfs.store.lock.target import Target

from .frontend import build_wheel
from .source import describe, fetch_source, known_key

__all__ = ["build_locked", "direct_url", "recall"]


def direct_url(source: BuildSource) -> str | None:
    """PEP 610's ``direct_url.json`` for a wheel built from ``source``; None for an index's
    sdist (not a direct URL reference).

    PEP 610: "When the requirement is a VCS reference, the vcs_info key MUST be present"
    (with ``commit_id``); "When url refers to a local directory, the dir_info key MUST be
    present"; "When url refers to a source archive or a wheel, the archive_info key MUST be
    present" (``hashes``, and the deprecated ``hash`` that older readers use).
    """
    if source.kind == "sdist":
        return None
    # PEP 610: "When persisting, url MUST be stripped of any sensitive authentication
    # information, for security reasons." (ssh's conventional "git@" is not a secret.)
    parts = urlsplit(source.url)
    url = source.url
    if parts.username is not None and parts.username != "git":
        url = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    data: dict[str, object] = {"url": url}
    if source.kind == "git":
        vcs: dict[str, str] = {"vcs": "git", "commit_id": source.commit or ""}
        if source.requested_revision:
            vcs["requested_revision"] = source.requested_revision
        data["vcs_info"] = vcs
    elif source.kind == "directory":
        data["dir_info"] = {"editable": False}  # as uv writes it; PEP 610's default
    else:
        archive: dict[str, object] = {}
        if source.sha256:
            archive = {"hash": f"sha256={source.sha256}", "hashes": {"sha256": source.sha256}}
        data["archive_info"] = archive
    if source.subdirectory:
        data["subdirectory"] = source.subdirectory
    return json.dumps(data, sort_keys=True)


def _fits(filename: str, target: Target) -> bool:
    try:
        tags = parse_wheel_filename(filename)[-1]
    except (InvalidWheelFilename, InvalidVersion):
        return False
    selector = create_compatible_tags_selector(target.tags)
    return next(selector([(filename, frozenset(tags))]), None) is not None


def _stored(store: Store, key: str, wheel: LockedWheel, target: Target) -> LockedWheel | None:
    for sha256 in store.index.built_from(key):
        info = store.index.find_wheel(sha256)
        if info is not None and _fits(info.filename, target):
            link = WheelLink(info.filename, None, sha256)
            return LockedWheel(wheel.name, wheel.version, link, frozenset({sha256}))
    return None


def recall(store: Store, wheel: LockedWheel, target: Target) -> LockedWheel | None:
    """The stored wheel built earlier from ``wheel.build`` that fits ``target``, if any.

    Hashes a local directory or file to know its key (a remote sdist that the lock gives no
    sha256 for cannot be recalled without downloading it). Raises :class:`BuildError` for
    a local source that cannot be read.
    """
    if wheel.build is None:
        return None
    key = known_key(wheel.build)
    return None if key is None else _stored(store, key, wheel, target)


def _check_built(what: str, wheel: LockedWheel, built: Path, target: Target) -> None:
    try:
        name, version, _, _ = parse_wheel_filename(built.name)
    except (InvalidWheelFilename, InvalidVersion) as exc:
        raise BuildError(f"{what}: the backend made {built.name!r}, not a wheel ({exc})") from None
    if name != canonicalize_name(wheel.name) or (
        wheel.version != "?" and version != Version(wheel.version)
    ):
        raise BuildError(
            f"{what}: the source builds {name} {version}, not what the lock names: relock"
        )
    if not _fits(built.name, target):
        raise BuildError(f"{what}: built {built.name}, which {target.python} cannot use")


@dataclass(frozen=True)
class _Fetched:
    """A source got and verified, waiting to be built: its project directory and key."""

    wheel: LockedWheel
    work: Path
    project: Path
    key: str


def _build_one(
    store: Store,
    fetched: _Fetched,
    target: Target,
    installer_env: Mapping[str, str],
    say: Callable[[str], None],
) -> LockedWheel:
    wheel, work = fetched.wheel, fetched.work
    source = wheel.build
    assert source is not None
    what = f"{wheel.name} {wheel.version}"
    log_path = work.with_name(work.name + ".log")
    say(f"building {what} from {describe(source)}")
    try:
        built = build_wheel(fetched.project, target.python, work, installer_env, log_path)
    except BuildError as exc:
        failed = BuildError(
            f"{what}: building a wheel from {describe(source)} failed: {exc};"
            f" the build's output is in {log_path}"
        )
        failed.log = str(log_path)
        raise failed from None
    _check_built(what, wheel, built, target)
    try:
        pep610 = direct_url(source)
        result = store.add(built, direct_url=None if pep610 is None else pep610.encode())
    except PkgfsError as exc:
        raise BuildError(f"{what}: the wheel built from {describe(source)}: {exc}") from None
    store.index.add_build(fetched.key, result.sha256)  # last: the wheel is stored by now
    log_path.unlink(missing_ok=True)
    link = WheelLink(built.name, None, result.sha256)
    return LockedWheel(wheel.name, wheel.version, link, frozenset({result.sha256}))


def build_locked(
    store: Store,
    wheels: Sequence[LockedWheel],
    target: Target,
    installer_env: Mapping[str, str],
    say: Callable[[str], None] = lambda _: None,
    *,
    offline: bool = False,
) -> list[LockedWheel]:
    """``wheels`` with each one still to build replaced by its stored wheel: recalled from
    an earlier build of the same source for a compatible target, else built now (``say``
    reports ``building docopt 0.6.2 from sdist``).

    Offline, a source only the network can bring (not a file:// URL) is refused unless an
    earlier build of it is stored. Every source is fetched and checked against the lock
    before any is built, so a source that does not match leaves the store as it was.
    ``installer_env`` holds the pip/uv variables for installing build requirements
    (frontend.installer_environ). Raises :class:`BuildError`, one line naming the package
    and the source, for a source that does not match the lock or a build that fails
    (naming the kept log file); the wheels built before a failed build stay stored.
    """
    done: dict[int, LockedWheel] = {}
    pending: list[tuple[int, _Fetched]] = []
    works: list[Path] = []  # removed whatever happens
    try:
        for i, wheel in enumerate(wheels):
            recalled = None if wheel.build is None else recall(store, wheel, target)
            if wheel.build is None or recalled is not None:
                done[i] = recalled or wheel
                continue
            if offline and urlsplit(wheel.build.url).scheme != "file":
                raise BuildError(
                    f"{wheel.name} {wheel.version}: offline, and its wheel is to be built from"
                    f" {describe(wheel.build)}, which only the network can bring"
                )
            store.require_writable(
                f"it lacks the wheel of {wheel.name} {wheel.version}, to be built from"
                f" {describe(wheel.build)}"
            )
            work = Path(tempfile.mkdtemp(prefix="build-", dir=store.layout.tmp))
            works.append(work)
            project, key = fetch_source(f"{wheel.name} {wheel.version}", wheel.build, work)
            # A remote sdist's key is known only once it is here.
            stored = _stored(store, key, wheel, target)
            if stored is not None:
                done[i] = stored
            else:
                pending.append((i, _Fetched(wheel, work, project, key)))
        for i, fetched in pending:
            done[i] = _build_one(store, fetched, target, installer_env, say)
    finally:
        for work in works:
            shutil.rmtree(work, ignore_errors=True)
    return [done[i] for i in range(len(wheels))]
