"""pylock.toml (PEP 751), read and selected with ``packaging.pylock``.

``Pylock.select()`` implements the PEP's installation steps (markers, requires-python,
environments, one version per name, wheel choice by tag priority); this module only turns
its answer into pkgfs's model and refuses what pkgfs cannot mount.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import cast
from urllib.parse import urljoin

from packaging.markers import Environment, UndefinedComparison, UndefinedEnvironmentName
from packaging.pylock import (
    PackageArchive,
    PackageDirectory,
    PackageSdist,
    PackageVcs,
    PackageWheel,
    Pylock,
    PylockSelectError,
    PylockValidationError,
)

from pkgfs.store.errors import LockError

from .model import LockedPackage, Lockfile, WheelLink, sha256_hex
from .target import Target

__all__ = ["read_pylock"]


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


def read_pylock(lock: Path, target: Target) -> Lockfile:
    """The packages PEP 751's installation steps select from ``lock`` for ``target``.

    Raises :class:`LockError` (one line naming the file) when the lock cannot be read, is
    not TOML, fails packaging.pylock's validation or selection, holds a marker that cannot
    be evaluated, or a wheel without a sha256 digest.
    """
    try:
        data = tomllib.loads(lock.read_text(encoding="utf-8"))
        pylock = Pylock.from_dict(data)
        environment = cast(Environment, dict(target.environment))
        selected = list(pylock.select(environment=environment, tags=target.tags))
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
            packages.append(LockedPackage(package.name, version, has_sdist=True))
        else:
            kind = {PackageVcs: "vcs", PackageDirectory: "directory", PackageArchive: "archive"}
            packages.append(LockedPackage(package.name, version, source=kind[type(source)]))
    return Lockfile(path=lock, kind="pylock.toml", packages=packages)
