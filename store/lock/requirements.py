"""A pinned, hashed requirements.txt, as ``uv pip compile --generate-hashes`` and
``pip-compile --generate-hashes`` write it.

pip documents the format ("Requirements File Format") but ships no parser outside its
internals, so the lines are read here; each requirement itself is parsed by
``packaging.requirements`` (PEP 508). Rules followed, from pip's documentation:

- A line ending in a backslash continues on the next line. A ``#`` at the start of a line
  or after whitespace starts a comment.
- ``${VAR}`` is replaced by the environment variable VAR.
- Options: ``-i/--index-url``, ``--extra-index-url``, ``-f/--find-links``, ``--no-index``,
  ``-r/--requirement`` (relative to this file); ``-c``, ``--trusted-host``, ``--pre`` and
  ``--require-hashes`` need nothing from us. ``-e <path>`` is a local project installed
  editable (built from its directory); a direct URL is not a wheel pkgfs can use.
- Hash-checking mode: every requirement must be pinned with ``==`` and carry at least one
  ``--hash``; a wheel whose sha256 is not among them is refused.
"""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from packaging.markers import Marker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from pkgfs.store.errors import LockError

from .model import EditableProject, LockedPackage, Lockfile, sha256_hex
from .target import Target

__all__ = ["read_requirements"]

_HOW = "(uv pip compile --generate-hashes requirements.in -o requirements.txt)"

_COMMENT = re.compile(r"(^|\s+)#.*$")
_ENV_VAR = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
# Options that take a value, and flags. Those not handled below need nothing from pkgfs:
# only wheels are ever used (as with --only-binary :all:), and hashes are always required.
_WITH_VALUE = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-r",
               "--requirement", "-c", "--constraint", "-e", "--editable", "--trusted-host",
               "--only-binary", "--no-binary", "--use-feature"}  # fmt: skip
_FLAGS = {"--no-index", "--pre", "--require-hashes", "--prefer-binary"}
_SHORT_WITH_VALUE = ("-i", "-f", "-r", "-c", "-e")


def _logical_lines(text: str, environ: Mapping[str, str]) -> Iterator[tuple[int, str]]:
    """(first line number, line) with continuations joined and comments removed."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        line = _COMMENT.sub("", raw)
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        joined = " ".join(pending).strip()
        pending = []
        if joined:
            yield start, _ENV_VAR.sub(lambda m: environ.get(m.group(1), m.group(0)), joined)
    if pending and " ".join(pending).strip():
        yield start, " ".join(pending).strip()


def _options(where: str, line: str) -> Iterator[tuple[str, str | None]]:
    """The (option, value) pairs of an option line: ``--o=v``, ``--o v``, ``-ov`` or a flag."""
    try:
        tokens = shlex.split(line)
    except ValueError as exc:
        raise LockError(where, f"cannot parse {line!r}: {exc}") from None
    while tokens:
        token = tokens.pop(0)
        if token.startswith("--") and "=" in token:
            name, value = token.split("=", 1)
            yield name, value
        elif token[:2] in _SHORT_WITH_VALUE and len(token) > 2:
            yield token[:2], token[2:]
        elif token in _WITH_VALUE:
            if not tokens:
                raise LockError(where, f"{token} needs a value")
            yield token, tokens.pop(0)
        elif token in _FLAGS:
            yield token, None
        else:
            raise LockError(where, f"unsupported option {token}")


class _Reader:
    def __init__(self, lock: Path, target: Target, environ: Mapping[str, str]) -> None:
        self.target = target
        self.environ = environ
        self.lockfile = Lockfile(path=lock, kind="requirements.txt", packages=[])
        self.index_url: str | None = None
        self.extra_index_urls: list[str] = []
        self.seen: set[Path] = set()

    def read(self, path: Path) -> None:
        path = path.absolute()
        if path in self.seen:
            return  # -r cycles
        self.seen.add(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise LockError(path, exc.strerror or str(exc)) from None
        except UnicodeDecodeError as exc:
            raise LockError(path, f"not UTF-8: {exc}") from None
        for number, line in _logical_lines(text, self.environ):
            where = f"{path}:{number}"
            if line.startswith("-"):
                for name, value in _options(where, line):
                    self._option(path, name, value)
            else:
                self._requirement(where, line)

    def _option(self, path: Path, name: str, value: str | None) -> None:
        lockfile = self.lockfile
        if name in ("-i", "--index-url"):
            self.index_url = value  # like pip: the last one replaces the default index
        elif name == "--extra-index-url":
            self.extra_index_urls.append(str(value))
        elif name in ("-f", "--find-links"):
            link = str(value)
            if "://" not in link:  # a directory, relative to this file
                link = str((path.parent / link).absolute())
            lockfile.find_links.append(link)
        elif name == "--no-index":
            lockfile.no_index = True
        elif name in ("-r", "--requirement"):
            self.read(path.parent / str(value))
        elif name in ("-e", "--editable"):
            self._editable(path, str(value))

    def _editable(self, path: Path, value: str) -> None:
        """pip's ``-e <path>``: "Install a project in editable mode ... from a local project
        path or a VCS url". A path (or ``file:`` URL) is relative to this file's directory;
        extras (``-e .[cli]``) are not followed. A VCS checkout is not supported."""
        target = value.split("#", 1)[0]
        if "+" in target.split("://", 1)[0] and "://" in target:
            self.lockfile.notes.append(f"skipped -e {value}: an editable VCS checkout")
            return
        if target.startswith("file:"):
            target = url2pathname(urlsplit(target).path)
        target = re.sub(r"\[[^\]]*\]$", "", target)
        directory = Path(os.path.normpath(path.parent.absolute() / target))
        self.lockfile.editables.append(EditableProject(_project_name(directory), None, directory))

    def _holds(self, where: str, marker: Marker) -> bool:
        try:
            return marker.evaluate(dict(self.target.environment))
        except (UndefinedComparison, UndefinedEnvironmentName) as exc:
            raise LockError(where, f"marker {str(marker)!r} cannot be evaluated: {exc}") from None

    def _requirement(self, where: str, line: str) -> None:
        text, *options = re.split(r"\s+(?=--)", line)
        hashes = set()
        for option in options:
            name, value = [*re.split(r"[=\s]+", option.strip(), maxsplit=1), ""][:2]
            if name != "--hash":
                raise LockError(where, f"unsupported per-requirement option {option.strip()!r}")
            algorithm, _, digest = value.partition(":")
            if algorithm == "sha256" and digest:
                checked = sha256_hex(digest)
                if checked is None:
                    raise LockError(where, f"--hash={value} is not a sha256 digest")
                hashes.add(checked)
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            raise LockError(where, f"invalid requirement {text!r}: {exc}") from None
        if requirement.marker and not self._holds(where, requirement.marker):
            return
        name = canonicalize_name(requirement.name)
        if requirement.url:
            self.lockfile.packages.append(LockedPackage(name, "?", source="url"))
            return
        pins = [s for s in requirement.specifier if s.operator in ("==", "===")]
        if len(pins) != 1 or "*" in pins[0].version:
            raise LockError(
                where, f"{requirement.name} is not pinned with ==: lock it first {_HOW}"
            )
        try:
            Version(pins[0].version)  # "===" takes any string; wheel names hold versions
        except InvalidVersion:
            raise LockError(
                where, f"{requirement.name}: {pins[0].version!r} is not a version: pin it with =="
            ) from None
        if not hashes:
            raise LockError(
                where,
                f"{requirement.name} has no --hash=sha256:...: hashes are required, lock it"
                f" with them {_HOW}",
            )
        self.lockfile.packages.append(
            LockedPackage(name, pins[0].version, hashes=frozenset(hashes))
        )


def _project_name(directory: Path) -> NormalizedName:
    """The ``[project] name`` of the project in ``directory``, else the directory's name: a
    label for messages only, as the built wheel's METADATA names the distribution."""
    try:
        project = tomllib.loads((directory / "pyproject.toml").read_text(encoding="utf-8"))
        name = project["project"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        name = directory.name
    return canonicalize_name(name if isinstance(name, str) else directory.name)


def read_requirements(
    lock: Path, target: Target, environ: Mapping[str, str] = os.environ
) -> Lockfile:
    """The pinned, hashed requirements of ``lock`` (and the files it includes) for ``target``.

    Raises :class:`LockError` naming the file and line for a file that cannot be read, an
    unsupported option, an invalid requirement or marker, a requirement not pinned with
    ``==`` to a version, or one without a ``--hash=sha256:`` digest.
    """
    reader = _Reader(lock, target, environ)
    reader.read(lock)
    lockfile = reader.lockfile
    if not lockfile.no_index:
        primary = [reader.index_url] if reader.index_url else []
        lockfile.index_urls = primary + reader.extra_index_urls
        lockfile.index_replaced = bool(primary)
    return lockfile
