"""From a lockfile to the exact wheels a target interpreter needs."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.tags import Tag

from pkgfs.store.errors import LockError

from .discover import lock_kind
from .model import LockedPackage, LockedWheel, Lockfile, WheelLink, wheel_tags
from .pylock import read_pylock
from .requirements import read_requirements
from .selection import Selection
from .target import Target
from .uvlock import read_uv_lock

if TYPE_CHECKING:  # the finder is fetch's; a lock only asks it questions
    from pkgfs.store.fetch.finder import Finder

__all__ = ["choose_wheels", "read_lock", "selector_for"]


def read_lock(lock: Path, target: Target, selection: Selection | None = None) -> Lockfile:
    """Read ``lock`` (any supported format) for ``target``: the packages it selects, with
    the groups and extras of ``selection`` (default: the lock's default groups, no extras).

    Raises :class:`LockError`, one line naming the file (and the key or line), for a lock
    that is missing, of no known format, unreadable or malformed, that the target's
    Python does not satisfy, or that has no group or extra ``selection`` names.
    """
    if not lock.is_file():
        raise LockError(lock, "no such lockfile" if not lock.exists() else "not a file")
    selection = selection or Selection()
    kind = lock_kind(lock)
    if kind == "pylock.toml":
        return read_pylock(lock, target, selection)
    if kind == "uv.lock":
        return read_uv_lock(lock, target, selection)
    if selection != Selection():
        raise LockError(
            lock,
            "a requirements.txt has no groups or extras: --group, --extra and --no-dev are"
            " for uv.lock and pylock.toml",
        )
    return read_requirements(lock, target)


def _tags(link: WheelLink) -> frozenset[Tag]:
    return wheel_tags(link.filename)


def _build_hint(package: LockedPackage) -> str:
    """What to do when pkgfs cannot build a package itself: the lock names no source it
    can build from (an sdist without a location, a VCS other than git)."""
    return (
        f"the lock names no source pkgfs can build {package.name} from:"
        " relock it with a wheel or an sdist, git, path or URL source"
    )


def _to_build(package: LockedPackage) -> LockedWheel:
    """The wheel that ``package.build`` will give (pkgfs.store.build builds or recalls it)."""
    assert package.build is not None
    label = f"{package.name}-{package.version} ({package.build.kind})"
    return LockedWheel(
        package.name, package.version, WheelLink(label, None, None), frozenset(), package.build
    )


def _no_wheel(lock: Path, what: str, package: LockedPackage) -> LockError:
    """Why ``package`` has no wheel at all, and nothing pkgfs can build one from."""
    if package.source in ("vcs", "git", "directory", "editable", "archive", "url", "path"):
        return LockError(
            lock,
            f"{what} comes from {'an' if package.source in ('archive', 'editable') else 'a'}"
            f" {package.source} source, not a wheel: {_build_hint(package)}",
        )
    if package.has_sdist:
        return LockError(lock, f"{what} has only an sdist: {_build_hint(package)}")
    return LockError(lock, f"{what} lists no wheel")


def _search(
    lock: Path,
    what: str,
    package: LockedPackage,
    selector: Selector,
    finder: Finder | None,
) -> list[WheelLink]:
    """The wheels of a package that the lock names only by hashes (requirements.txt), from
    the first source, in pip's order (the store, find-links, each index), that has one the
    target can use: a stored wheel is used without asking the network. Raises
    :class:`LockError` naming every place looked when none has it."""
    if finder is None:
        raise LockError(lock, f"{what}: its wheels come from an index, and none is configured")
    looked: list[str] = []
    offered: list[WheelLink] = []
    for found in finder.search(package.name, package.version):
        looked.append(found.where)
        hashed = [w for w in found.links if w.sha256 is None or w.sha256 in package.hashes]
        if next(selector((link, _tags(link)) for link in hashed), None) is not None:
            return hashed
        offered += hashed
    if offered:
        return offered  # none for the target: the caller says which there are
    if finder.offline:
        looked.append("(offline: no index asked)")
    elif not finder.index_urls:
        looked.append("(no index: --no-index)")
    raise LockError(lock, f"{what}: no wheel with a listed hash in {', '.join(looked)}")


Selector = Callable[[Iterable[tuple[WheelLink, frozenset[Tag]]]], Iterator[WheelLink]]


@functools.lru_cache(maxsize=4)
def selector_for(tags: tuple[Tag, ...]) -> Selector:
    """One tag-priority selector per target, not one per package: given (wheel, its tags)
    pairs, the wheels the target supports, the one with its most preferred tag first
    (ties keep their order), as pip and uv choose among a release's wheels.

    This is ``packaging.tags.create_compatible_tags_selector`` (packaging 26.1), ranked
    the same way; its selector intersects each wheel's tags with a view of every
    supported tag (about 900 for CPython), hashing hundreds of tags per wheel, where
    looking each of the wheel's few tags up in the ranking is enough.
    """
    ranks: dict[Tag, int] = {}
    for rank, tag in enumerate(tags):
        ranks.setdefault(tag, rank)  # a duplicate keeps its first (best) rank

    def select(tagged: Iterable[tuple[WheelLink, frozenset[Tag]]]) -> Iterator[WheelLink]:
        ranked = []
        for order, (thing, thing_tags) in enumerate(tagged):
            found = [ranks[t] for t in thing_tags if t in ranks]
            if found:
                ranked.append((min(found), order, thing))
        return iter([thing for _rank, _order, thing in sorted(ranked, key=lambda r: r[:2])])

    return select


def _choose(
    lockfile: Lockfile,
    package: LockedPackage,
    target: Target,
    finder: Finder | None,
    selector: Selector,
) -> LockedWheel:
    lock = lockfile.path
    what = f"package {package.name} {package.version}"
    candidates = list(package.wheels)
    if candidates and finder is not None:
        # Any stored wheel the lock lists and the target can use: no download.
        stored = {link.sha256 for link in finder.stored_links(package.name, package.version)}
        held = [link for link in candidates if link.sha256 in stored]
        if next(selector((link, _tags(link)) for link in held), None) is not None:
            candidates = held
    if not candidates and not package.hashes and package.has_sdist and finder is not None:
        # An sdist-only release: a wheel of it already in the store (built by `pip wheel`
        # and `pkgfs store add`, or by an earlier build) is used; the lock names no wheel
        # hash to check it against, as uv installs a wheel it built itself.
        built = finder.stored_links(package.name, package.version)
        if next(selector((link, _tags(link)) for link in built), None) is not None:
            candidates = built
    if not candidates and package.hashes:
        candidates = _search(lock, what, package, selector, finder)
    best = next(selector((link, _tags(link)) for link in candidates), None)
    if best is None and package.build is not None:
        return _to_build(package)  # uv and pip build the sdist when no wheel fits
    if not candidates:
        raise _no_wheel(lock, what, package)
    if best is None:
        offered = ", ".join(sorted({c.filename for c in candidates})[:4])
        raise LockError(
            lock,
            f"{what}: no wheel for {target.best_tag} (Python {target.python_version});"
            f" the lock has {offered}: {_build_hint(package)}",
        )
    hashes = frozenset({best.sha256}) if best.sha256 else package.hashes
    return LockedWheel(package.name, package.version, best, hashes)


def choose_wheels(lockfile: Lockfile, target: Target, finder: Finder | None) -> list[LockedWheel]:
    """One wheel per package, the most specific one the target supports (tag priority).

    A package with no wheel for the target but a source to build from (an sdist, git, a
    directory, an archive) gets a :class:`LockedWheel` with ``build`` set, for
    :mod:`pkgfs.store.build` to build or recall. Raises :class:`LockError` for a package
    selected twice, one with no wheel for the target and nothing to build it from, or a
    hashed requirement whose wheel is nowhere; :class:`FetchError` from ``finder`` for an
    index or find-links source that cannot be read.
    """
    seen: dict[str, str] = {}
    chosen = []
    selector = selector_for(target.tags)  # once: its cache key hashes every tag
    for package in lockfile.packages:
        if package.name in seen:
            raise LockError(
                lockfile.path,
                f"package {package.name} selected twice"
                f" ({seen[package.name]} and {package.version})",
            )
        seen[package.name] = package.version
        chosen.append(_choose(lockfile, package, target, finder, selector))
    return sorted(chosen, key=lambda w: w.name)
