"""Ingest: unpack a wheel into the store, through installer, all or nothing.

``installer.install`` drives the unpacking: it reads WHEEL, maps ``.data`` directories to
schemes and turns entry points into script requests. :class:`StoreDestination` is the
``WheelDestination`` that receives them: each file's bytes are verified against RECORD
while they stream into a private staging directory, and entry points are recorded rather
than written, because a script's shebang belongs to the environment that runs it.

Only when the whole wheel has been read and verified do its new objects get their final
names, followed by one ``syncfs`` and then one index transaction. A bad wheel
therefore leaves the store as it was, and a ``kill -9`` at any instant leaves at worst
some unreferenced objects and a stale staging directory, which ``verify`` accepts.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, cast

import installer
from installer.destinations import WheelDestination
from installer.exceptions import InstallerError
from installer.records import Hash, RecordEntry
from installer.sources import WheelContentElement, WheelFile
from installer.utils import Scheme
from zlib_ng import zlib_ng

from .errors import StoreError, WheelError
from .hashing import hash_file, record_digest
from .index import Index
from .layout import StoreLayout, syncfs
from .objects import create_staged, object_file, publish
from .records import EntryPoint, FileEntry, IngestResult, WheelRecord
from .wheel import CheckedWheel, check_wheel, check_wheel_name

__all__ = ["IngestResult", "StoreDestination", "ingest_wheel"]

_CHUNK = 1 << 20
# zlib-ng's stub declares its error as an instance; at run time it is an Exception class.
_INFLATE_ERRORS = (zlib.error, cast(type[Exception], zlib_ng.error))


class _VerifiedStream:
    """A member's stream that hashes what is read and checks it against RECORD at the end.

    The sha256 it computes is the object name too, so each byte is hashed once when
    RECORD uses sha256 (as every real wheel does).
    """

    def __init__(self, stream: BinaryIO, entry: RecordEntry | None, wheel: Path) -> None:
        self._stream = stream
        self._entry = entry
        self._wheel = wheel
        self._sha256 = hashlib.sha256()
        algorithm = entry.hash_.name.lower() if entry and entry.hash_ else "sha256"
        self._other = None if algorithm == "sha256" else hashlib.new(algorithm)
        self.size = 0
        self.digest = ""  # hex sha256, set once the stream has been read to its end

    @property
    def expected_digest(self) -> str | None:
        """The sha256 that RECORD promises, when it uses sha256: the object's future name."""
        hash_ = self._entry.hash_ if self._entry else None
        if hash_ is None or self._other is not None:
            return None
        try:
            return base64.urlsafe_b64decode(hash_.value + "=" * (-len(hash_.value) % 4)).hex()
        except ValueError:
            return None  # malformed: the check at the end reports the mismatch

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        if data:
            self._sha256.update(data)
            if self._other is not None:
                self._other.update(data)
            self.size += len(data)
        elif not self.digest:
            self._finish()
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def _finish(self) -> None:
        entry = self._entry
        if entry is not None and entry.hash_ is not None:
            hasher = self._other or self._sha256
            if entry.size is not None and entry.size != self.size:
                raise WheelError(self._wheel, f"size of {entry.path!r} does not match RECORD")
            if record_digest(hasher.digest()) != entry.hash_.value:
                raise WheelError(self._wheel, f"hash of {entry.path!r} does not match RECORD")
        self.digest = self._sha256.hexdigest()


def _use_fast_inflate(stream: BinaryIO) -> None:
    """Inflate a zip member with zlib-ng instead of zlib: the same output, about 2x faster.

    Inflating is the largest cost of ingest. zipfile has no public way to choose its
    decompressor, so a fresh deflate stream gets zlib-ng's in place of zlib's before its
    first read; where zipfile's internals differ, zlib keeps the job.
    """
    if getattr(stream, "_compress_type", None) != zipfile.ZIP_DEFLATED:
        return
    if type(getattr(stream, "_decompressor", None)) is type(zlib.decompressobj(-15)):
        stream._decompressor = zlib_ng.decompressobj(-15)  # type: ignore[attr-defined]


class _CheckedWheelFile(WheelFile):
    """installer's WheelFile, handing out streams verified against RECORD."""

    def __init__(self, archive: zipfile.ZipFile, wheel: Path) -> None:
        super().__init__(archive)
        self._wheel = wheel
        self.records: dict[str, RecordEntry] = {}
        self.skipped: list[str] = []

    def get_contents(self) -> Iterator[WheelContentElement]:
        for elements, stream, is_executable in super().get_contents():
            path = elements[0]
            # Same rule as installer, which would skip these with a RuntimeWarning; we skip
            # and count them here instead, as warnings are process-wide and ingest threads.
            if "__pycache__" in path.split("/")[:-1]:
                self.skipped.append(path)
                continue
            _use_fast_inflate(stream)
            verified = _VerifiedStream(stream, self.records.get(path), self._wheel)
            yield elements, cast(BinaryIO, verified), is_executable


class StoreDestination(WheelDestination):
    """Writes a wheel's files into a staging directory, deduplicated by content.

    This is the per-file hot path of ingest, so it works on plain strings and ``os`` calls.
    """

    def __init__(self, layout: StoreLayout, staging: Path, wheel: Path) -> None:
        self._objects = str(layout.objects)
        self._staging = str(staging)
        self._wheel = wheel
        self.files: list[FileEntry] = []
        self.entry_points: list[EntryPoint] = []
        self.staged: dict[str, str] = {}  # new objects: digest -> staged file
        self._destinations: set[tuple[str, str]] = set()

    def _stored(self, digest: str) -> bool:
        return digest in self.staged or os.path.exists(object_file(self._objects, digest))

    def write_script(self, name: str, module: str, attr: str, section: str) -> RecordEntry:
        # Scripts are generated per environment, with that environment's interpreter.
        self.entry_points.append(EntryPoint(section, name, module, attr))
        return RecordEntry(name, None, None)

    def write_file(
        self,
        scheme: Scheme,
        path: str | os.PathLike[str],
        stream: BinaryIO,
        is_executable: bool,
    ) -> RecordEntry:
        path = os.fspath(path)
        # purelib and platlib both land in site-packages, so they share one namespace.
        where = "site-packages" if scheme in ("purelib", "platlib") else scheme
        if (where, path) in self._destinations:
            raise WheelError(self._wheel, f"two members install to {scheme}/{path}")
        self._destinations.add((where, path))
        verified = (
            cast(_VerifiedStream, stream)
            if isinstance(stream, _VerifiedStream)
            # additional metadata (direct_url.json): pkgfs's own bytes, without a RECORD line
            else _VerifiedStream(stream, None, self._wheel)
        )
        known = verified.expected_digest
        staged = None
        if known and self._stored(known):
            verified.drain()  # already stored: verify only, write nothing
        else:
            # The staging directory is private to this ingest: a counter names files uniquely.
            staged = f"{self._staging}/{len(self.files)}"
            with open(create_staged(staged), "wb") as out:
                while chunk := verified.read(_CHUNK):
                    out.write(chunk)
        digest = verified.digest
        if staged is not None:
            if self._stored(digest):
                os.unlink(staged)
            else:
                self.staged[digest] = staged
        self.files.append(FileEntry(scheme, path, digest, verified.size, is_executable))
        return RecordEntry(
            path, Hash("sha256", record_digest(bytes.fromhex(digest))), verified.size
        )

    def finalize_installation(self, scheme: Scheme, record_file_path: str, records: object) -> None:
        # Nothing to write: each environment's view generates its own RECORD.
        pass


def ingest_wheel(
    layout: StoreLayout,
    index: Index,
    wheel: Path,
    *,
    direct_url: bytes | None = None,
    metadata: Mapping[str, bytes] | None = None,
) -> IngestResult:
    """Add ``wheel`` to the store; raise :class:`WheelError` if it is refused.

    ``direct_url`` is added to the dist-info as ``direct_url.json`` (PEP 610: "a
    direct_url.json file MUST be created in the .dist-info directory" of a distribution
    installed from a direct URL or a local directory), and each of ``metadata`` (file name:
    bytes) beside it, through installer's ``additional_metadata``, so the manifest (and
    every view's RECORD) lists them.
    """
    check_wheel_name(wheel)
    try:
        sha256, _ = hash_file(wheel)
    except OSError as exc:
        raise WheelError(wheel, exc.strerror or str(exc)) from None
    present = index.find_wheel(sha256)
    if present is not None:
        return _already_present(wheel, sha256, present.name, present.version)
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise WheelError(wheel, f"not a zip archive ({exc})") from None
    with archive:
        source = _CheckedWheelFile(archive, wheel)
        checked = check_wheel(wheel, archive, source)
        source.records = checked.records
        staging = Path(tempfile.mkdtemp(prefix="ingest-", dir=layout.tmp))
        try:
            destination = StoreDestination(layout, staging, wheel)
            extra = dict(metadata or {})
            if direct_url is not None:
                extra["direct_url.json"] = direct_url
            _unpack(wheel, source, destination, extra)
            # Objects first, made durable; then the index transaction that refers to them.
            objects = str(layout.objects)
            added = [
                digest
                for digest, staged in destination.staged.items()
                if publish(staged, object_file(objects, digest))
            ]
            syncfs(layout.objects)
            record = _wheel_record(wheel, sha256, checked, destination)
            if not index.add_wheel(record):
                return _already_present(wheel, sha256, checked.name, checked.version)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    sizes = {f.digest: f.size for f in record.files}
    return IngestResult(
        wheel=wheel,
        name=record.name,
        version=record.version,
        sha256=sha256,
        already_present=False,
        files=len(record.files),
        unpacked_bytes=sum(f.size for f in record.files),
        objects_added=len(added),
        bytes_added=sum(sizes[d] for d in added),
        skipped=tuple(source.skipped),
    )


def _unpack(
    wheel: Path,
    source: _CheckedWheelFile,
    destination: StoreDestination,
    additional_metadata: dict[str, bytes],
) -> None:
    try:
        installer.install(source, destination, additional_metadata=additional_metadata)
    except WheelError:
        raise
    except zipfile.BadZipFile as exc:  # a CRC mismatch, or a member shorter than declared
        raise WheelError(wheel, f"corrupt archive: {exc}") from None
    except OSError as exc:
        # A write's error names no file: name the store (the objects' parent).
        where = exc.filename or str(Path(destination._objects).parent)
        hint = (
            ": free some space there (pkgfs store gc removes what no environment uses)"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else ""
        )
        reason = exc.strerror or str(exc)
        raise StoreError(f"{where}: cannot write to the store: {reason}{hint}") from exc
    except (InstallerError, ValueError, KeyError, EOFError, *_INFLATE_ERRORS) as exc:
        raise WheelError(wheel, f"{type(exc).__name__}: {exc}") from None


def _wheel_record(
    wheel: Path, sha256: str, checked: CheckedWheel, destination: StoreDestination
) -> WheelRecord:
    return WheelRecord(
        sha256=sha256,
        filename=wheel.name,
        name=checked.name,
        version=checked.version,
        tags=checked.tags,
        root_is_purelib=checked.root_is_purelib,
        dist_info=checked.dist_info,
        wheel_size=wheel.stat().st_size,
        files=tuple(destination.files),
        entry_points=tuple(destination.entry_points),
    )


def _already_present(wheel: Path, sha256: str, name: str, version: str) -> IngestResult:
    return IngestResult(
        wheel=wheel, name=name, version=version, sha256=sha256, already_present=True
    )
