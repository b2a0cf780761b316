"""pylock.toml (PEP 751), read and selected with ``packaging.pylock``.

``Pylock.select()`` implements the PEP's installation steps (markers, requires-python,
environments, one version per name, wheel choice by tag priority); this module only turns
its answer into pkgfs's model and refuses what pkgfs cannot mount.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast
from urllib.parse import urljoin

from packaging.markers import Environment, UndefinedComparison, UndefinedEnvironmentName
from packaging.pylock import (
    Package,
    PackageArchive,
    PackageDirectory,
    PackageSdist,
    PackageVcs,
    PackageWheel,
    Pylock,
    PylockSelectError,
    PylockValidationError,
)
from packaging.tags import Tag

from pkgfs.store.errors import LockError

from .model import (
    BuildSource,
    EditableProject,
    LockedPackage,
    Lockfile,
    WheelLink,
    sha256_hex,
    wheel_tags,
)
from .selection import Selection
from .target import Target

__all__ = ["read_pylock"]


def _version_or_none(package: Package) -> str | None:
    return str(package.version) if package.version else None


def _wheel_link(lock: Path, package: str, wheel: PackageWheel) -> WheelLink:
    # PEP 751: "hashes: A table listing known hash values of the file where the key is the
    # hash algorithm and the value is the hash value." We key the store by sha256.
    sha256 = wheel.hashes.get("sha256")
    if sha256 is None:
        raise LockError(lock, f"package {package!r}: wheel {wheel.filename} has no sha256 hash")
    digest = sha256_hex(sha256)
    if digest is None:
        raise LockError(
            lock, f"package {package!r}: wheel {wheel.filename}: {sha256!r} is not a sha256 digest"
        )
    url = wheel.url
    if url is None and wheel.path is not None:
        # PEP 751: a relative "path" is relative to the lock file's directory.
        url = urljoin(lock.parent.absolute().as_uri() + "/", wheel.path)
    return WheelLink(wheel.filename, url, digest, wheel.size)


def _file_url(lock: Path, url: str | None, path: str | None) -> str:
    # PEP 751: "path: ... relative to the lock file" when not absolute.
    if url is not None:
        return url
    return urljoin(lock.parent.absolute().as_uri() + "/", path or ".")


def _file_sha256(lock: Path, package: str, hashes: Mapping[str, str]) -> str | None:
    value = hashes.get("sha256")
    if value is None:
        return None
    digest = sha256_hex(value)
    if digest is None:
        raise LockError(lock, f"package {package!r}: {value!r} is not a sha256 digest")
    return digest


def _build_source(
    lock: Path, package: str, source: PackageSdist | PackageVcs | PackageDirectory | PackageArchive
) -> BuildSource | None:
    """What PEP 751's ``sdist``, ``vcs``, ``archive`` or non-editable ``directory`` table
    says to build a wheel from; None for an editable directory (installed, not built)."""
    if isinstance(source, PackageSdist):
        url = _file_url(lock, source.url, source.path)
        return BuildSource("sdist", url, _file_sha256(lock, package, source.hashes))
    if isinstance(source, PackageArchive):
        url = _file_url(lock, source.url, source.path)
        sha256 = _file_sha256(lock, package, source.hashes)
        return BuildSource("archive", url, sha256, subdirectory=source.subdirectory)
    if isinstance(source, PackageVcs):
        # PEP 751: "[packages.vcs] type: The type of version control system used" ...
        # "commit-id: The exact commit/revision number that is to be installed."
        if source.type != "git":
            raise LockError(
                lock, f"package {package!r}: vcs type {source.type!r}: pkgfs builds git"
            )
        return BuildSource(
            "git",
            _file_url(lock, source.url, source.path),
            commit=source.commit_id,
            requested_revision=source.requested_revision,
            subdirectory=source.subdirectory,
        )
    if source.editable:
        return None
    url = _file_url(lock, None, source.path)
    return BuildSource("directory", url, subdirectory=source.subdirectory)


def _groups(lock: Path, pylock: Pylock, selection: Selection) -> set[str] | None:
    """The ``dependency_groups`` to hand to ``Pylock.select``: None for the lock's
    ``default-groups`` (PEP 751's default), else the groups ``selection`` chooses."""
    if selection == Selection(extras=selection.extras, all_extras=selection.all_extras):
        return None
    defined = {*(pylock.dependency_groups or ()), *(pylock.default_groups or ())}
    return set(selection.choose_groups(lock, defined, pylock.default_groups or ()))


def _offered(tags: Sequence[Tag], pylock: Pylock) -> list[Tag]:
    """The target's ``tags`` that some wheel of the lock carries, in the target's order:
    ``Pylock.select`` ranks a package's wheels by the first of ``tags`` each matches, so it
    chooses exactly as with every tag, without intersecting each wheel's tags with all the
    target's (about 900 for CPython, hashed again for every package). Raises
    ``PylockValidationError`` for a wheel with no file name, as ``select`` would."""
    carried: set[Tag] = set()
    for package in pylock.packages:
        for wheel in package.wheels or ():
            carried.update(wheel_tags(wheel.filename))
    return [tag for tag in tags if tag in carried]


def read_pylock(lock: Path, target: Target, selection: Selection | None = None) -> Lockfile:
    """The packages PEP 751's installation steps select from ``lock`` for ``target``, with
    the extras and dependency groups of ``selection`` (default: the lock's
    ``default-groups``, no extras); ``directory`` packages with ``editable = true`` apart,
    in ``editables``.

    Raises :class:`LockError` (one line naming the file) when the lock cannot be read, is
    not TOML, fails packaging.pylock's validation or selection, holds a marker that cannot
    be evaluated, or a wheel without a sha256 digest, or does not declare a group or an
    extra that ``selection`` asks for.
    """
    selection = selection or Selection()
    if selection.only:
        # PEP 751 selects packages by markers over extras and groups alike: it has no
        # notion of "the project's own dependencies" to leave out.
        raise LockError(lock, "--only-group is for uv.lock; use --no-default-groups --group")
    try:
        data = tomllib.loads(lock.read_text(encoding="utf-8"))
        pylock = Pylock.from_dict(data)
        environment = cast(Environment, dict(target.environment))
        extras = selection.choose_extras(lock, pylock.extras or ())
        selected = list(
            pylock.select(
                environment=environment,
                tags=_offered(target.tags, pylock),
                extras=extras,
                dependency_groups=_groups(lock, pylock, selection),
            )
        )
    except OSError as exc:
        raise LockError(lock, exc.strerror or str(exc)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LockError(lock, f"not valid TOML: {exc}") from None
    except (PylockValidationError, PylockSelectError) as exc:
        raise LockError(lock, str(exc)) from None
    except (UndefinedComparison, UndefinedEnvironmentName) as exc:
        # packaging.pylock validates a marker's syntax, not that its comparisons can be made.
        raise LockError(lock, f"a marker cannot be evaluated for the target: {exc}") from None
    packages = []
    editables = []
    for package, source in selected:
        version = str(package.version) if package.version else "?"
        if isinstance(source, PackageWheel):
            # The selected wheel, and the package's other hashed wheels: resolve.py takes a
            # stored one the target can use over downloading the selected one.
            others = [w for w in package.wheels or () if w is not source and "sha256" in w.hashes]
            links = [_wheel_link(lock, package.name, w) for w in (source, *others)]
            packages.append(LockedPackage(package.name, version, wheels=tuple(links)))
        elif isinstance(source, PackageSdist):
            # select() falls back to the sdist when no wheel matches the target's tags.
            build = _build_source(lock, package.name, source)
            packages.append(LockedPackage(package.name, version, has_sdist=True, build=build))
        elif isinstance(source, PackageDirectory) and source.editable:
            # PEP 751: "editable: A flag representing whether the source tree was an
            # editable install at lock time." A relative path is from the lock's directory.
            path = Path(os.path.normpath(lock.parent.absolute() / source.path))
            if source.subdirectory:
                path = path / source.subdirectory
            editables.append(EditableProject(package.name, _version_or_none(package), path))
        else:
            kind = {PackageVcs: "vcs", PackageDirectory: "directory", PackageArchive: "archive"}
            build = _build_source(lock, package.name, source)
            packages.append(
                LockedPackage(package.name, version, source=kind[type(source)], build=build)
            )
    return Lockfile(path=lock, kind="pylock.toml", packages=packages, editables=editables)
