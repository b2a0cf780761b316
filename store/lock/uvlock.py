"""uv.lock, read the way ``uv sync --frozen`` installs it.

uv.lock has no specification; its format is what uv writes (``version = 1``). The rules
this reader follows, each from uv's behaviour:

- The roots are the project itself: packages whose source is ``virtual`` or ``editable``
  at ``"."`` (else the workspace members of ``[manifest]``).
- A root contributes its ``dependencies``, the ``[package.optional-dependencies]`` of the
  extras asked for, and the groups chosen from ``[package.dev-dependencies]``: ``dev``
  unless ``[tool.uv] default-groups`` in the project's pyproject.toml says otherwise
  (``"all"`` meaning every group), changed by ``--group``, ``--no-dev`` and the like
  (:class:`~pkgfs.store.lock.selection.Selection` quotes uv's rules).
- Every ``editable`` source reached (the project, workspace members, ``editable = true``
  path dependencies) is installed editable, as uv does: built from its directory, not
  found in the lock (:class:`~pkgfs.store.lock.model.EditableProject`). A ``virtual``
  source ("a project that is not packaged": ``package = false``, or no
  ``[build-system]``) is not installed, silently as with uv; its dependencies are.
- Each dependency ``{ name, version?, source?, marker?, extra? }`` is followed when its
  marker holds for the target; ``extra`` adds that package's
  ``[package.optional-dependencies]``. When a name has several versions (a forked
  resolution), ``version``/``source`` pick one, else ``resolution-markers`` do.

The file is first validated into typed records (:mod:`pkgfs.store.lock.uvrecords`), so a
malformed lock is refused in one line naming the file and the key, never half-walked.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qs, unquote, urldefrag, urljoin, urlsplit

from packaging.markers import InvalidMarker, Marker, UndefinedComparison, UndefinedEnvironmentName
from packaging.utils import NormalizedName, canonicalize_name

from pkgfs.store.errors import LockError
from pkgfs.store.hashing import hash_file

from .model import BuildSource, EditableProject, LockedPackage, Lockfile, WheelLink, sha256_hex
from .selection import Selection
from .target import Target
from .uvrecords import UvDependency, UvFile, UvLock, UvPackage, parse_uv_lock

__all__ = ["read_uv_lock"]


def _marker_holds(lock: Path, text: str | None, target: Target) -> bool:
    if not text:
        return True
    try:
        return Marker(text).evaluate(dict(target.environment))
    except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName) as exc:
        raise LockError(lock, f"invalid marker {text!r}: {exc}") from None


def _sha256(lock: Path, name: str, entry: UvFile, what: str = "a wheel") -> str:
    text = entry.hash or ""
    algorithm, _, value = text.partition(":")
    if algorithm != "sha256" or not value:
        raise LockError(lock, f"package {name!r}: {what} has no sha256 hash ({text!r})")
    digest = sha256_hex(value)
    if digest is None:
        raise LockError(lock, f"package {name!r}: hash {text!r} is not a sha256 digest")
    return digest


def _flat_wheel(lock: Path, package: UvPackage, wheel: UvFile) -> WheelLink | None:
    """A wheel of a find-links directory: uv locks ``--find-links DIR`` as ``source =
    { registry = "DIR" }`` (relative to the lock's directory) and each wheel as ``{ path =
    "FILE" }`` relative to DIR, without a hash: the file is hashed where it is."""
    registry = package.source.value
    if package.source.kind != "registry" or wheel.path is None or wheel.url is not None:
        return None
    if "://" in registry and not registry.startswith("file:"):
        return None
    base = Path(unquote(urlsplit(registry).path)) if "://" in registry else Path(registry)
    file = (lock.parent.absolute() / base / wheel.path).absolute()
    if wheel.hash:
        sha256, size = _sha256(lock, package.name, wheel), wheel.size
    else:
        try:
            sha256, size = hash_file(file)
        except OSError as exc:
            raise LockError(lock, f"package {package.name!r}: {file}: {exc.strerror}") from None
    return WheelLink(wheel.filename or file.name, file.as_uri(), sha256, size)


def _wheel_links(lock: Path, package: UvPackage) -> tuple[WheelLink, ...]:
    links = []
    for wheel in package.wheels:
        flat = _flat_wheel(lock, package, wheel)
        if flat is not None:
            links.append(flat)
            continue
        url = wheel.url
        if url is None and wheel.path is not None:
            url = wheel.path
        if url is None and package.source.kind == "path":  # source = { path = "x.whl" }
            url = package.source.value
        if url is not None and "://" not in url:
            url = urljoin(lock.parent.absolute().as_uri() + "/", url)
        filename = wheel.filename or (url.rsplit("/", 1)[-1] if url else None)
        if not filename:
            raise LockError(lock, f"package {package.name!r}: a wheel has neither url nor filename")
        links.append(WheelLink(filename, url, _sha256(lock, package.name, wheel), wheel.size))
    return tuple(links)


def _lock_relative(lock: Path, where: str) -> str:
    """A URL, or a path relative to the lock's directory (uv writes those) as a file:// URL."""
    if "://" in where:
        return where
    return urljoin(lock.parent.absolute().as_uri() + "/", where)


def _git_source(value: str) -> BuildSource:
    """uv's ``source = { git = "URL?rev=REV&subdirectory=DIR#COMMIT" }`` (uv's
    ``GitSource``: the query names what was asked for, the fragment the commit locked)."""
    url, commit = urldefrag(value.removeprefix("git+"))
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    requested = next((query[k][0] for k in ("rev", "tag", "branch") if k in query), None)
    subdirectory = query.get("subdirectory", [None])[0]
    return BuildSource(
        "git",
        parts._replace(query="").geturl(),
        commit=commit or None,
        requested_revision=requested,
        subdirectory=subdirectory,
    )


def _build_source(lock: Path, package: UvPackage) -> BuildSource | None:
    """What to build a wheel of ``package`` from when no wheel fits, as ``uv sync`` does:
    the registry's sdist, the git commit, the directory (not editable), or the archive at a
    path or URL; None for the project's own trees (virtual, editable)."""
    source = package.source
    sdist = package.sdist
    sdist_hash = None
    if sdist is not None and sdist.hash is not None:
        sdist_hash = _sha256(lock, package.name, sdist, "its sdist")
    if source.kind == "git":
        return _git_source(source.value)
    if source.kind == "directory":
        return BuildSource("directory", _lock_relative(lock, source.value))
    if source.kind in ("path", "url") and not source.value.endswith(".whl"):
        return BuildSource("archive", _lock_relative(lock, source.value), sdist_hash)
    if source.kind == "registry" and sdist is not None:
        where = sdist.url or sdist.path
        if where is None:
            raise LockError(lock, f"package {package.name!r}: its sdist has neither url nor path")
        return BuildSource("sdist", _lock_relative(lock, where), sdist_hash)
    return None


class _Graph:
    """The packages of a uv.lock by name, and the walk from the roots."""

    def __init__(self, uv: UvLock, target: Target) -> None:
        self.lock = uv.path
        self.target = target
        self.by_name: dict[NormalizedName, list[UvPackage]] = {}
        for package in uv.packages:
            self.by_name.setdefault(package.name, []).append(package)

    def entry(self, dependency: UvDependency) -> UvPackage:
        name = dependency.name
        candidates = self.by_name.get(name, [])
        if dependency.version is not None:
            candidates = [p for p in candidates if p.version == dependency.version]
        if dependency.source is not None and len(candidates) > 1:
            candidates = [p for p in candidates if p.source == dependency.source]
        if len(candidates) > 1:
            candidates = [
                p
                for p in candidates
                if any(
                    _marker_holds(self.lock, m, self.target) for m in p.resolution_markers or [""]
                )
            ]
        if len(candidates) != 1:
            found = "no" if not candidates else "several"
            raise LockError(self.lock, f"{found} [[package]] entries for dependency {name!r}")
        return candidates[0]

    def walk(self, roots: Iterable[UvPackage], pending: list[UvDependency]) -> list[UvPackage]:
        """Every package reachable from ``pending`` (the roots' chosen dependencies) for the
        target, the roots excluded."""
        selected: dict[tuple[str, str | None], UvPackage] = {}
        root_keys = {(r.name, r.version) for r in roots}
        while pending:
            dependency = pending.pop()
            if not _marker_holds(self.lock, dependency.marker, self.target):
                continue
            package = self.entry(dependency)
            key = (package.name, package.version)
            for extra in dependency.extras:
                pending.extend(package.optional_dependencies.get(extra, ()))
            if key in selected or key in root_keys:
                continue
            selected[key] = package
            pending.extend(package.dependencies)
        return sorted(selected.values(), key=lambda p: p.name)


def _root_dependencies(
    lock: Path, roots: list[UvPackage], selection: Selection
) -> list[UvDependency]:
    """What the roots bring for ``selection``: their dependencies and chosen extras (unless
    ``--only-group``), and the chosen groups. Raises :class:`LockError` for a group or an
    extra that no root defines."""
    groups = selection.choose_groups(
        lock, {g for r in roots for g in r.dev_dependencies}, _default_groups(lock)
    )
    extras = selection.choose_extras(lock, {e for r in roots for e in r.optional_dependencies})
    pending: list[UvDependency] = []
    for root in roots:
        if not selection.only:
            pending.extend(root.dependencies)
            for extra, members in root.optional_dependencies.items():
                if canonicalize_name(extra) in extras:
                    pending.extend(members)
        for group, members in root.dev_dependencies.items():
            if canonicalize_name(group) in groups:
                pending.extend(members)
    return pending


def _source_dir(lock: Path, package: UvPackage) -> Path:
    """The absolute directory of a source tree; uv writes it relative to the lock's."""
    return Path(os.path.normpath(lock.parent.absolute() / package.source.value))


def _default_groups(lock: Path) -> set[str] | None:
    """uv's default groups for the project beside the lock; None meaning all of them.

    Raises :class:`LockError` naming pyproject.toml when ``default-groups`` is neither
    ``"all"`` nor an array of strings.
    """
    pyproject = lock.parent / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {"dev"}
    tool = project.get("tool")
    uv = tool.get("uv") if isinstance(tool, dict) else None
    configured = uv.get("default-groups", ["dev"]) if isinstance(uv, dict) else ["dev"]
    if configured == "all":
        return None
    if not isinstance(configured, list) or not all(isinstance(g, str) for g in configured):
        raise LockError(pyproject, 'tool.uv.default-groups must be "all" or an array of strings')
    return set(configured)


def read_uv_lock(lock: Path, target: Target, selection: Selection | None = None) -> Lockfile:
    """The packages ``uv sync --frozen`` would install from ``lock`` for ``target``, with
    the groups and extras of ``selection`` (default: uv's default groups, no extras); the
    editable projects apart, in ``editables``.

    Raises :class:`LockError` (one line naming the file and the key) when the lock cannot
    be read, is not TOML, is malformed (see :func:`parse_uv_lock`), has no root project,
    does not admit the target's Python, names a dependency it does not hold, or does not
    define a group or an extra that ``selection`` asks for.
    """
    selection = selection or Selection()
    try:
        data = tomllib.loads(lock.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LockError(lock, exc.strerror or str(exc)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LockError(lock, f"not valid TOML: {exc}") from None
    uv = parse_uv_lock(lock, data)
    if not uv.requires_python.contains(target.python_version, prereleases=True):
        raise LockError(
            lock,
            f"requires Python {uv.requires_python}; the target {target.python} is"
            f" {target.python_version}: pass --python",
        )
    roots = [
        p for p in uv.packages if p.source.kind in ("virtual", "editable") and p.source.value == "."
    ]
    if not roots:
        roots = [p for p in uv.packages if p.name in uv.members]
    if not roots:
        raise LockError(lock, "no root project (a virtual or editable source at '.')")
    selected = _Graph(uv, target).walk(roots, _root_dependencies(lock, roots, selection))
    installed = [] if selection.only else roots
    editables = [
        EditableProject(p.name, p.version, _source_dir(lock, p))
        for p in [*installed, *selected]
        if p.source.kind == "editable"
    ]
    locked = [
        LockedPackage(
            name=package.name,
            version=package.version or "?",
            wheels=_wheel_links(lock, package),
            has_sdist=package.sdist is not None,
            source=package.source.kind,
            build=_build_source(lock, package),
        )
        for package in selected
        if package.source.kind not in ("editable", "virtual")
    ]
    # The indexes the lock was resolved against, in order: where an editable project's
    # build requirements come from, as uv takes them from its configured indexes.
    registries = [p.source.value for p in uv.packages if p.source.kind == "registry"]
    index_urls = [url for url in dict.fromkeys(registries) if "://" in url]
    return Lockfile(
        path=lock, kind="uv.lock", packages=locked, index_urls=index_urls, editables=editables
    )
