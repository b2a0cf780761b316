"""Builds real wheel files for tests, correct by default and broken on request.

A correct wheel follows PEP 427: ``{name}-{version}.dist-info/`` with METADATA, WHEEL and
RECORD, every member listed in RECORD with its urlsafe-base64 sha256 and size. Each
``broken`` knob produces one specific defect, so a test can name exactly what it feeds in.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import stat
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Member", "WheelMaker", "record_hash"]


def record_hash(data: bytes, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm, data).digest()
    return f"{algorithm}=" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass
class Member:
    """One archive member: its name, bytes and Unix mode (type bits included)."""

    name: str
    data: bytes
    mode: int = stat.S_IFREG | 0o644


RecordRows = list[list[str]]


@dataclass
class WheelMaker:
    """A wheel to write. Mutate the fields, then call :meth:`build`."""

    name: str = "demo"
    version: str = "1.0"
    tag: str = "py3-none-any"
    files: Mapping[str, bytes | str] = field(
        default_factory=lambda: {
            "demo/__init__.py": "VALUE = 1\n",
            "demo/core.py": "def main() -> int:\n    return 0\n",
        }
    )
    executable: frozenset[str] = frozenset()
    entry_points: str | None = None
    root_is_purelib: bool = True
    metadata: str | bytes | None = None  # replaces the generated METADATA
    wheel_file: str | None = None  # replaces the generated WHEEL
    omit: frozenset[str] = frozenset()  # dist-info files to leave out: "METADATA", ...
    extra: list[Member] = field(default_factory=list)  # added after RECORD is computed
    edit_record: Callable[[RecordRows], RecordRows] | None = None
    filename: str | None = None  # replaces the generated file name
    # Core metadata headers added to the generated METADATA (ignored when ``metadata`` is set);
    # empty means the header is left out, so the default METADATA is unchanged.
    requires_python: str | None = None  # "Requires-Python: ..."
    requires_dist: list[str] = field(default_factory=list)  # one "Requires-Dist: ..." each
    provides_extra: list[str] = field(default_factory=list)  # one "Provides-Extra: ..." each

    @property
    def dist_info(self) -> str:
        return f"{self.name}-{self.version}.dist-info"

    def _metadata(self) -> str:
        lines = ["Metadata-Version: 2.1", f"Name: {self.name}", f"Version: {self.version}"]
        if self.requires_python is not None:
            lines.append(f"Requires-Python: {self.requires_python}")
        lines += [f"Requires-Dist: {requirement}" for requirement in self.requires_dist]
        lines += [f"Provides-Extra: {extra}" for extra in self.provides_extra]
        return "\n".join(lines) + "\n"

    def _members(self) -> list[Member]:
        members = []
        for path, content in self.files.items():
            data = content.encode() if isinstance(content, str) else content
            mode = stat.S_IFREG | (0o755 if path in self.executable else 0o644)
            members.append(Member(path, data, mode))
        generated: dict[str, str | bytes] = {
            "METADATA": self.metadata if self.metadata is not None else self._metadata(),
            "WHEEL": self.wheel_file
            if self.wheel_file is not None
            else (
                "Wheel-Version: 1.0\nGenerator: wheelmaker\n"
                f"Root-Is-Purelib: {str(self.root_is_purelib).lower()}\nTag: {self.tag}\n"
            ),
        }
        if self.entry_points is not None:
            generated["entry_points.txt"] = self.entry_points
        for name, text in generated.items():
            if name not in self.omit:
                data = text.encode() if isinstance(text, str) else text
                members.append(Member(f"{self.dist_info}/{name}", data))
        return members

    def build(self, directory: Path) -> Path:
        members = self._members()
        rows: RecordRows = [[m.name, record_hash(m.data), str(len(m.data))] for m in members]
        record_path = f"{self.dist_info}/RECORD"
        rows.append([record_path, "", ""])
        if self.edit_record is not None:
            rows = self.edit_record(rows)
        if "RECORD" not in self.omit:
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows(rows)
            members.append(Member(record_path, text.getvalue().encode()))
        members.extend(self.extra)
        path = directory / (self.filename or f"{self.name}-{self.version}-{self.tag}.whl")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicates we ask for
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
                for member in members:
                    info = zipfile.ZipInfo(member.name, date_time=(2024, 1, 1, 0, 0, 0))
                    info.external_attr = member.mode << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, member.data)
        return path
