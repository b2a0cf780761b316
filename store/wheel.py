"""Checks on a wheel archive made before any of it is unpacked.

installer validates RECORD against the archive's members and maps ``.data`` directories to
schemes; what it leaves to the caller is refusing archives that are unsafe or inconsistent
(path traversal, links and devices, duplicate members, decompression bombs, a RECORD that
lists files the archive lacks, a METADATA that disagrees with the file name, a script whose
name would leave the venv's bin/). Everything
here reads only the central directory and the three small ``.dist-info`` files, so a bad
wheel is refused before a single byte of it is written.
"""

from __future__ import annotations

import configparser
import hashlib
import posixpath
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

from installer.exceptions import InstallerError
from installer.records import InvalidRecordEntry, RecordEntry, parse_record_file
from installer.sources import WheelFile
from installer.utils import parse_entrypoints, parse_metadata_file
from packaging.metadata import parse_email
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from .contain import is_plain_name
from .errors import WheelError

__all__ = ["MAX_UNPACKED_BYTES", "CheckedWheel", "check_wheel", "check_wheel_name"]

# Decompression bombs. Across ~900 real wheels (numpy, scipy, torch, tensorflow, onnx...)
# no archive unpacks to more than 18x its size, while single members do reach deflate's
# ceiling of ~1000x (onnx test data), so a per-member ratio would refuse real wheels.
# We cap the whole archive instead, from the sizes its central directory declares
# (zipfile never inflates a member past its declared size, and CRC-checks it at the end).
MAX_UNPACKED_BYTES = 32 << 30  # above any real wheel (torch with CUDA unpacks to ~4 GiB)
EXPANSION_FLOOR = 256 << 20  # small wheels may expand freely up to this
MAX_EXPANSION = 50

# PEP 427: "The hash algorithm must be sha256 or better; specifically, md5 and sha1 are
# not permitted, as signed wheel files rely on the strong hashes in RECORD to validate
# the integrity of the archive."
_WEAK_HASHES = frozenset({"md5", "sha1"})


@dataclass(frozen=True)
class CheckedWheel:
    """A wheel that passed every check; what ingest needs to know about it."""

    name: str  # canonical
    version: str  # normalized
    tags: str  # the compressed tag set, as in the file name
    dist_info: str
    root_is_purelib: bool
    records: dict[str, RecordEntry]  # by archive path
    unpacked_bytes: int


def _refuse(wheel: Path, reason: str) -> WheelError:
    return WheelError(wheel, reason)


def _check_member_name(wheel: Path, name: str) -> None:
    # PEP 427 archives use '/' separators and relative paths; installing must never
    # write outside the target directory.
    if "\x00" in name or "\\" in name:
        raise _refuse(wheel, f"unsafe member name {name!r}")
    if name.startswith("/") or posixpath.isabs(name):
        raise _refuse(wheel, f"absolute path {name!r}")
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        raise _refuse(wheel, f"path traversal in {name!r}")
    if any(part in ("", ".") for part in parts):
        raise _refuse(wheel, f"non-normalized path {name!r}")


def _check_members(wheel: Path, archive: zipfile.ZipFile) -> tuple[dict[str, zipfile.ZipInfo], int]:
    """Every file member by name, and their declared total size."""
    files: dict[str, zipfile.ZipInfo] = {}
    dirs: set[str] = set()
    total = 0
    for info in archive.infolist():
        name = info.filename
        _check_member_name(wheel, name)
        if name in files or name in dirs:
            raise _refuse(wheel, f"duplicate archive member {name!r}")
        mode = info.external_attr >> 16
        if info.is_dir():
            dirs.add(name)
            continue
        # Many zip writers store permission bits only; no file type means a regular file.
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise _refuse(wheel, f"symbolic link member {name!r}")
        if kind not in (0, stat.S_IFREG):
            raise _refuse(wheel, f"special file member {name!r} (mode {mode:o})")
        if info.flag_bits & 0x1:
            raise _refuse(wheel, f"encrypted member {name!r}")
        files[name] = info
        total += info.file_size
    limit = min(MAX_UNPACKED_BYTES, max(EXPANSION_FLOOR, MAX_EXPANSION * wheel.stat().st_size))
    if total > limit:
        raise _refuse(
            wheel,
            f"unpacks to {total} bytes, over the {limit}-byte limit for an archive of its size"
            " (decompression bomb?)",
        )
    # A member may not also be a directory of another member ("pkg" and "pkg/mod.py").
    for name in files:
        parent = posixpath.dirname(name)
        while parent:
            if parent in files:
                raise _refuse(wheel, f"{parent!r} is both a file and a directory")
            parent = posixpath.dirname(parent)
    return files, total


def _read_dist_info(
    wheel: Path, source: WheelFile, members: dict[str, zipfile.ZipInfo], name: str
) -> str:
    path = f"{source.dist_info_dir}/{name}"
    if path not in members:
        raise _refuse(wheel, f"{path} is missing")
    try:
        return source.read_dist_info(name)
    except UnicodeDecodeError:
        raise _refuse(wheel, f"{path} is not UTF-8") from None


def _check_wheel_file(wheel: Path, text: str, dist_info: str) -> bool:
    """Parse WHEEL; return Root-Is-Purelib."""
    metadata = parse_metadata_file(text)
    version = metadata.get("Wheel-Version")
    # PEP 427: an installer "must fail if Wheel-Version has a greater major version than
    # the version it supports".
    if not version or not str(version).strip().startswith("1."):
        raise _refuse(wheel, f"{dist_info}/WHEEL: unsupported Wheel-Version {version!r}")
    purelib = str(metadata.get("Root-Is-Purelib", "")).strip().lower()
    if purelib not in ("true", "false"):
        raise _refuse(wheel, f"{dist_info}/WHEEL: Root-Is-Purelib must be true or false")
    return purelib == "true"


def _check_metadata(wheel: Path, text: str, dist_info: str, name: str, version: Version) -> None:
    raw, _unparsed = parse_email(text)
    meta_name, meta_version = raw.get("name"), raw.get("version")
    if not meta_name or not meta_version:
        raise _refuse(wheel, f"{dist_info}/METADATA has no Name or no Version")
    if canonicalize_name(meta_name) != name:
        raise _refuse(wheel, f"METADATA names {meta_name!r}, the file name {name!r}")
    try:
        parsed = Version(meta_version)
    except InvalidVersion:
        raise _refuse(wheel, f"METADATA version {meta_version!r} is invalid") from None
    if parsed != version:
        raise _refuse(wheel, f"METADATA has version {meta_version}, the file name {version}")


def _check_record(
    wheel: Path, source: WheelFile, members: dict[str, zipfile.ZipInfo]
) -> dict[str, RecordEntry]:
    record_path = f"{source.dist_info_dir}/RECORD"
    text = _read_dist_info(wheel, source, members, "RECORD")
    # installer checks that every member is listed with a hash and a size.
    try:
        source.validate_record(validate_contents=False)
    except source.validation_error as exc:
        issues: list[str] = getattr(exc, "issues", [str(exc)])
        first = issues[0].split(", ", 1)[-1] if issues[0].startswith("In ") else issues[0]
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        raise _refuse(wheel, f"RECORD: {first}{more}") from None
    records: dict[str, RecordEntry] = {}
    try:
        for elements in parse_record_file(text.splitlines()):
            entry = RecordEntry.from_elements(*elements)
            if entry.path in records:
                raise _refuse(wheel, f"RECORD lists {entry.path!r} twice")
            records[entry.path] = entry
    except (InvalidRecordEntry, ValueError) as exc:
        if isinstance(exc, WheelError):
            raise
        raise _refuse(wheel, f"RECORD is malformed: {exc}") from None
    for path, entry in records.items():
        info = members.get(path)
        if info is None:
            raise _refuse(wheel, f"RECORD lists {path!r}, which the archive lacks")
        if path == record_path or entry.hash_ is None or entry.size is None:
            continue
        algorithm = entry.hash_.name.lower()
        if algorithm in _WEAK_HASHES or algorithm not in hashlib.algorithms_guaranteed:
            raise _refuse(
                wheel, f"RECORD hashes {path!r} with {algorithm!r}; PEP 427 needs sha256 or better"
            )
        if entry.size != info.file_size:
            raise _refuse(
                wheel,
                f"size of {path!r} is {info.file_size} in the archive, {entry.size} in RECORD",
            )
    return records


def _check_scripts(wheel: Path, source: WheelFile, members: dict[str, zipfile.ZipInfo]) -> None:
    """Every script the wheel installs must be one plain file name in the scripts directory.

    The entry points spec: "The name may contain any characters except =, but it cannot
    start or end with any whitespace character, or start with [", and "For console
    scripts, the name of the entry point is the name of the command". PEP 427: "Each
    subdirectory of distribution-1.0.data/ is a key into a dict of destination
    directories", scripts/ the one holding commands. Neither lets a name leave that
    directory, and a name with a "/" is no command a shell finds; pip and installer would
    write "../../../x" outside it, so it is refused here, before any byte is written.
    """
    entry_points = f"{source.dist_info_dir}/entry_points.txt"
    if entry_points in members:
        text = _read_dist_info(wheel, source, members, "entry_points.txt")
        try:
            # installer's own parser, so that ingest sees exactly the names it will.
            parsed = list(parse_entrypoints(text))
        except (configparser.Error, AssertionError) as exc:  # installer asserts on a bad value
            raise _refuse(wheel, f"{entry_points} is malformed: {exc}") from None
        for name, _module, _attr, section in parsed:
            if not is_plain_name(name):
                raise _refuse(
                    wheel, f"entry point {name!r} in [{section}_scripts] is not a plain file name"
                )
    scripts = f"{source.data_dir}/scripts/"
    for member in members:
        if member.startswith(scripts) and not is_plain_name(member[len(scripts) :]):
            raise _refuse(wheel, f"script {member!r} is not a plain file name in scripts/")


def check_wheel_name(wheel: Path) -> tuple[str, Version]:
    """The canonical name and version that a wheel's file name (PEP 427) declares."""
    try:
        name, version, _build, _tags = parse_wheel_filename(wheel.name)
    except (InvalidWheelFilename, InvalidVersion) as exc:
        raise _refuse(wheel, f"invalid wheel file name: {exc}") from None
    return name, version


def check_wheel(wheel: Path, archive: zipfile.ZipFile, source: WheelFile) -> CheckedWheel:
    """Refuse ``wheel`` with a :class:`WheelError` unless it is safe and consistent.

    The caller has checked its name with :func:`check_wheel_name`.
    """
    name, version = check_wheel_name(wheel)
    members, total = _check_members(wheel, archive)
    try:
        dist_info = source.dist_info_dir
    except InstallerError as exc:
        raise _refuse(wheel, getattr(exc, "reason", str(exc))) from None
    root_is_purelib = _check_wheel_file(
        wheel, _read_dist_info(wheel, source, members, "WHEEL"), dist_info
    )
    _check_metadata(
        wheel, _read_dist_info(wheel, source, members, "METADATA"), dist_info, name, version
    )
    records = _check_record(wheel, source, members)
    _check_scripts(wheel, source, members)
    # The file name's compressed tag set, e.g. "cp311-cp311-manylinux_2_17_x86_64".
    tags = "-".join(wheel.name[: -len(".whl")].split("-")[-3:])
    return CheckedWheel(
        name=name,
        version=str(version),
        tags=tags,
        dist_info=dist_info,
        root_is_purelib=root_is_purelib,
        records=records,
        unpacked_bytes=total,
    )
