"""uv.lock validated into typed records: the file as uv writes it, checked key by key.

uv.lock has no specification; its format is what uv writes (``version = 1``, uv's
``crates/uv-resolver/src/lock`` serialises it). Every ``[[package]]`` table becomes a
:class:`UvPackage` when the file is read, so a malformed lock is refused in one line naming
the file and the key (``package[3].wheels[0].hash: missing``), never half-walked.
:mod:`pkgfs.store.lock.uvlock` walks these records the way ``uv sync --frozen`` installs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name

from pkgfs.store.errors import LockError

__all__ = [
    "SOURCE_KINDS",
    "UvDependency",
    "UvFile",
    "UvLock",
    "UvPackage",
    "UvSource",
    "parse_uv_lock",
]

T = TypeVar("T")

# The keys of a package's ``source`` table, one of which names its kind (uv's ``Source``).
SOURCE_KINDS = ("registry", "git", "directory", "editable", "virtual", "path", "url")
# Source trees: uv leaves out ``version`` when theirs is dynamic.
_SOURCE_TREES = ("directory", "editable", "virtual")


@dataclass(frozen=True)
class UvSource:
    """Where a package comes from: ``kind`` is one of :data:`SOURCE_KINDS`."""

    kind: str
    value: str


@dataclass(frozen=True)
class UvFile:
    """One ``wheels`` entry, or the ``sdist``, as the lock gives it (a wheel without url,
    path or filename is refused when its link is made)."""

    url: str | None
    path: str | None
    filename: str | None
    hash: str | None
    size: int | None


@dataclass(frozen=True)
class UvDependency:
    """One entry of ``dependencies`` (or of an extra's or a group's list)."""

    name: NormalizedName
    version: str | None = None
    source: UvSource | None = None
    marker: str | None = None
    extras: tuple[str, ...] = ()


@dataclass(frozen=True)
class UvPackage:
    """One ``[[package]]`` table, every key checked for its type."""

    name: NormalizedName
    version: str | None  # None only for a source tree with a dynamic version
    source: UvSource
    wheels: tuple[UvFile, ...] = ()
    sdist: UvFile | None = None
    dependencies: tuple[UvDependency, ...] = ()
    optional_dependencies: Mapping[str, tuple[UvDependency, ...]] = field(default_factory=dict)
    dev_dependencies: Mapping[str, tuple[UvDependency, ...]] = field(default_factory=dict)
    resolution_markers: tuple[str, ...] = ()


@dataclass(frozen=True)
class UvLock:
    """A whole uv.lock, validated: its packages in file order."""

    path: Path
    requires_python: SpecifierSet
    packages: tuple[UvPackage, ...]
    members: tuple[NormalizedName, ...] = ()  # [manifest] members: a workspace's roots


class _Checked:
    """A TOML table of the lock. Each getter checks a key's type, or raises one LockError
    naming the lock, the package and the key (``package 'foo': wheels[0].hash``)."""

    def __init__(
        self, lock: Path, table: Mapping[str, Any], label: str = "", path: str = ""
    ) -> None:
        self.lock, self.table, self.label, self.path = lock, table, label, path

    def _name(self, key: str) -> str:
        dotted = f"{self.path}.{key}" if self.path else key
        return f"{self.label}: {dotted}" if self.label else dotted

    def here(self) -> str:
        """Where this table is: ``package 'foo': wheels[0]``, or "" at the top."""
        return ": ".join(part for part in (self.label, self.path) if part)

    def _child(self, table: Mapping[str, Any], key: str) -> _Checked:
        return _Checked(self.lock, table, self.label, f"{self.path}.{key}" if self.path else key)

    def fail(self, key: str, problem: str) -> LockError:
        return LockError(self.lock, f"{self._name(key)} {problem}")

    def has(self, key: str) -> bool:
        return key in self.table

    def get(self, key: str, kind: type[T], what: str, *, required: bool = False) -> T | None:
        if key not in self.table:
            if required:
                here = self.here()
                raise LockError(self.lock, f"{here + ': ' if here else ''}missing key {key!r}")
            return None
        value = self.table[key]
        # TOML booleans are ints to Python; a size is never a boolean.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(key, f"must be {what}")
        return value

    def string(self, key: str, *, required: bool = False) -> str | None:
        return self.get(key, str, "a string", required=required)

    def strings(self, key: str) -> tuple[str, ...]:
        values = self.get(key, list, "an array of strings") or []
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise self.fail(f"{key}[{i}]", "must be a string")
        return tuple(values)

    def table_at(self, key: str) -> _Checked | None:
        value = self.get(key, dict, "a table")
        return None if value is None else self._child(value, key)

    def tables(self, key: str, parse: Callable[[_Checked], T]) -> tuple[T, ...]:
        values = self.get(key, list, "an array of tables") or []
        parsed = []
        for i, value in enumerate(values):
            if not isinstance(value, dict):
                raise self.fail(f"{key}[{i}]", "must be a table")
            parsed.append(parse(self._child(value, f"{key}[{i}]")))
        return tuple(parsed)

    def groups(self, key: str) -> dict[str, tuple[UvDependency, ...]]:
        """A table of arrays of dependencies: ``optional-dependencies``, ``dev-dependencies``."""
        table = self.table_at(key)
        if table is None:
            return {}
        return {name: table.tables(name, _dependency) for name in table.table}


def _source(table: _Checked | None) -> UvSource | None:
    if table is None:
        return None
    for kind in SOURCE_KINDS:
        if table.has(kind):
            return UvSource(kind, table.string(kind) or "")
    raise LockError(table.lock, f"{table.here()} has none of the keys {', '.join(SOURCE_KINDS)}")


def _file(table: _Checked) -> UvFile:
    return UvFile(
        url=table.string("url"),
        path=table.string("path"),
        filename=table.string("filename"),
        hash=table.string("hash"),
        size=table.get("size", int, "an integer"),
    )


def _dependency(table: _Checked) -> UvDependency:
    return UvDependency(
        name=canonicalize_name(table.string("name", required=True) or ""),
        version=table.string("version"),
        source=_source(table.table_at("source")),
        marker=table.string("marker"),
        extras=table.strings("extra"),
    )


def _package(lock: Path, index: int, value: object) -> UvPackage:
    if not isinstance(value, dict):
        raise LockError(lock, f"package[{index}] must be a table")
    name = _Checked(lock, value, f"package[{index}]").string("name", required=True) or ""
    table = _Checked(lock, value, f"package {name!r}")
    source = _source(table.table_at("source"))
    if source is None:
        raise LockError(lock, f"package {name!r}: missing key 'source'")
    version = table.string("version", required=source.kind not in _SOURCE_TREES)
    sdist = table.table_at("sdist")
    return UvPackage(
        name=canonicalize_name(name),
        version=version,
        source=source,
        wheels=table.tables("wheels", _file),
        sdist=None if sdist is None else _file(sdist),
        dependencies=table.tables("dependencies", _dependency),
        optional_dependencies=table.groups("optional-dependencies"),
        dev_dependencies=table.groups("dev-dependencies"),
        resolution_markers=table.strings("resolution-markers"),
    )


def parse_uv_lock(lock: Path, data: Mapping[str, Any]) -> UvLock:
    """The validated records of a uv.lock whose TOML is ``data``.

    Raises :class:`LockError`, naming ``lock`` and the key, for a version other than 1, an
    invalid ``requires-python``, or any key of the wrong type or missing.
    """
    top = _Checked(lock, data)
    if data.get("version") != 1:
        raise LockError(lock, f"uv.lock version {data.get('version')!r}; pkgfs reads version 1")
    try:
        requires_python = SpecifierSet(top.string("requires-python") or "")
    except InvalidSpecifier as exc:
        raise LockError(lock, f"invalid requires-python: {exc}") from None
    manifest = top.table_at("manifest")
    members = manifest.strings("members") if manifest is not None else ()
    packages = top.get("package", list, "an array of tables") or []
    return UvLock(
        path=lock,
        requires_python=requires_python,
        packages=tuple(_package(lock, i, p) for i, p in enumerate(packages)),
        members=tuple(canonicalize_name(m) for m in members),
    )
