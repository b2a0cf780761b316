"""uv.lock, read the way ``uv sync --frozen`` installs it.

uv.lock has no specification; its format is what uv writes (``version = 1``). The rules
this reader follows, each from uv's behaviour:

- The roots are the project itself: packages whose source is ``virtual`` or ``editable``
  at ``"."`` (else the workspace members of ``[manifest]``). They are not wheels and are
  not installed from the store; each is said once.
- A root contributes its ``dependencies`` and its default dependency groups from
  ``[package.dev-dependencies]``: ``dev`` unless ``[tool.uv] default-groups`` in the
  project's pyproject.toml says otherwise (``"all"`` meaning every group).
- Each dependency ``{ name, version?, source?, marker?, extra? }`` is followed when its
  marker holds for the target; ``extra`` adds that package's
  ``[package.optional-dependencies]``. When a name has several versions (a forked
  resolution), ``version``/``source`` pick one, else ``resolution-markers`` do.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from packaging.markers import InvalidMarker, Marker
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name

from pkgfs.store.errors import LockError

from .model import LockedPackage, Lockfile, WheelLink
from .target import Target

__all__ = ["read_uv_lock"]

Table = Mapping[str, Any]


def _marker_holds(lock: Path, text: str | None, target: Target) -> bool:
    if not text:
        return True
    try:
        return Marker(text).evaluate(dict(target.environment))
    except InvalidMarker as exc:
        raise LockError(lock, f"invalid marker {text!r}: {exc}") from None


def _sha256(lock: Path, name: str, entry: Table) -> str:
    text = str(entry.get("hash", ""))
    algorithm, _, value = text.partition(":")
    if algorithm != "sha256" or not value:
        raise LockError(lock, f"package {name!r}: a wheel has no sha256 hash ({text!r})")
    return value.lower()


def _wheel_links(lock: Path, package: Table) -> tuple[WheelLink, ...]:
    name = str(package["name"])
    source: Table = package.get("source", {})
    links = []
    for wheel in package.get("wheels", []):
        url = wheel.get("url")
        filename = wheel.get("filename")
        if url is None and "path" in wheel:
            url = wheel["path"]
        if url is None and "path" in source:  # a local wheel: source = { path = "x.whl" }
            url = source["path"]
        if url is not None and "://" not in url:
            url = urljoin(lock.parent.absolute().as_uri() + "/", url)
        filename = filename or (url.rsplit("/", 1)[-1] if url else None)
        if not filename:
            raise LockError(lock, f"package {name!r}: a wheel has neither url nor filename")
        links.append(WheelLink(filename, url, _sha256(lock, name, wheel), wheel.get("size")))
    return tuple(links)


def _source_kind(source: Table) -> str:
    for kind in ("registry", "git", "directory", "editable", "virtual", "path", "url"):
        if kind in source:
            return kind
    return "registry"


class _Graph:
    """The packages of a uv.lock by name, and the walk from the roots."""

    def __init__(self, lock: Path, data: Table, target: Target) -> None:
        self.lock = lock
        self.target = target
        self.by_name: dict[NormalizedName, list[Table]] = {}
        for package in data.get("package", []):
            name = canonicalize_name(str(package.get("name", "")))
            self.by_name.setdefault(name, []).append(package)

    def entry(self, dependency: Table) -> Table:
        name = canonicalize_name(str(dependency.get("name", "")))
        candidates = self.by_name.get(name, [])
        if "version" in dependency:
            candidates = [p for p in candidates if p.get("version") == dependency["version"]]
        if "source" in dependency and len(candidates) > 1:
            candidates = [p for p in candidates if p.get("source") == dependency["source"]]
        if len(candidates) > 1:
            candidates = [
                p
                for p in candidates
                if any(
                    _marker_holds(self.lock, m, self.target)
                    for m in p.get("resolution-markers", [""])
                )
            ]
        if len(candidates) != 1:
            found = "no" if not candidates else "several"
            raise LockError(self.lock, f"{found} [[package]] entries for dependency {name!r}")
        return candidates[0]

    def walk(self, roots: Iterable[Table], groups: set[str] | None) -> list[Table]:
        """Every package reachable from the roots for the target, roots excluded."""
        selected: dict[tuple[str, str], Table] = {}
        pending: list[Table] = []
        for root in roots:
            pending.extend(root.get("dependencies", []))
            for group, members in root.get("dev-dependencies", {}).items():
                if groups is None or group in groups:
                    pending.extend(members)
        root_keys = {(str(r["name"]), str(r.get("version"))) for r in roots}
        while pending:
            dependency = pending.pop()
            if not _marker_holds(self.lock, dependency.get("marker"), self.target):
                continue
            package = self.entry(dependency)
            key = (str(package["name"]), str(package.get("version")))
            extras = dependency.get("extra", [])
            optional: Table = package.get("optional-dependencies", {})
            for extra in extras:
                pending.extend(optional.get(extra, []))
            if key in selected or key in root_keys:
                continue
            selected[key] = package
            pending.extend(package.get("dependencies", []))
        return sorted(selected.values(), key=lambda p: str(p["name"]))


def _default_groups(lock: Path) -> set[str] | None:
    """uv's default groups for the project beside the lock; None meaning all of them."""
    try:
        project = tomllib.loads((lock.parent / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {"dev"}
    configured = project.get("tool", {}).get("uv", {}).get("default-groups", ["dev"])
    return None if configured == "all" else set(configured)


def read_uv_lock(lock: Path, target: Target) -> Lockfile:
    try:
        data = tomllib.loads(lock.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LockError(lock, exc.strerror or str(exc)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LockError(lock, f"not valid TOML: {exc}") from None
    if data.get("version") != 1:
        raise LockError(lock, f"uv.lock version {data.get('version')!r}; pkgfs reads version 1")
    try:
        requires_python = SpecifierSet(str(data.get("requires-python", "")))
    except InvalidSpecifier as exc:
        raise LockError(lock, f"invalid requires-python: {exc}") from None
    if not requires_python.contains(target.python_version, prereleases=True):
        raise LockError(
            lock,
            f"requires Python {requires_python}; the target {target.python} is"
            f" {target.python_version}: pass --python",
        )
    graph = _Graph(lock, data, target)
    packages: list[Table] = data.get("package", [])
    roots = [
        p
        for p in packages
        if p.get("source", {}).get("virtual") == "." or p.get("source", {}).get("editable") == "."
    ]
    if not roots:
        members = {canonicalize_name(m) for m in data.get("manifest", {}).get("members", [])}
        roots = [p for p in packages if canonicalize_name(str(p.get("name", ""))) in members]
    if not roots:
        raise LockError(lock, "no root project (a virtual or editable source at '.')")
    notes = [
        f"skipped {r['name']} {r.get('version', '')}, the project itself: it is not a wheel"
        for r in roots
    ]
    locked = []
    for package in graph.walk(roots, _default_groups(lock)):
        source: Table = package.get("source", {})
        locked.append(
            LockedPackage(
                name=canonicalize_name(str(package["name"])),
                version=str(package.get("version", "?")),
                wheels=_wheel_links(lock, package),
                has_sdist="sdist" in package,
                source=_source_kind(source),
            )
        )
    return Lockfile(path=lock, kind="uv.lock", packages=locked, notes=notes)
