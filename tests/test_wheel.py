"""Every malformed or malicious wheel is refused: one line, exit 1, the store unchanged."""

from __future__ import annotations

import base64
import hashlib
import stat
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import RunPkgfs, snapshot
from tests.wheelmaker import Member, RecordRows, WheelMaker, record_hash

BadWheel = Callable[[Path], Path]


def _edit(edit: Callable[[RecordRows], RecordRows], **fields: object) -> BadWheel:
    return lambda d: WheelMaker(edit_record=edit, **fields).build(d)  # type: ignore[arg-type]


def _with(**fields: object) -> BadWheel:
    return lambda d: WheelMaker(**fields).build(d)  # type: ignore[arg-type]


def _extra(*members: Member, listed: bool = True) -> BadWheel:
    """A wheel with extra members, listed in RECORD with correct hashes unless told not to."""

    def edit(rows: RecordRows) -> RecordRows:
        if listed:
            rows = rows + [[m.name, record_hash(m.data), str(len(m.data))] for m in members]
        return rows

    return _edit(edit, extra=list(members))


def _not_a_zip(d: Path) -> Path:
    path = d / "demo-1.0-py3-none-any.whl"
    path.write_bytes(b"this is not a zip archive\n")
    return path


def _truncated(d: Path) -> Path:
    path = WheelMaker().build(d)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _set_hash(path: str, value: str) -> Callable[[RecordRows], RecordRows]:
    return lambda rows: [[r[0], value, r[2]] if r[0] == path else r for r in rows]


def _set_size(path: str, value: str) -> Callable[[RecordRows], RecordRows]:
    return lambda rows: [[r[0], r[1], value] if r[0] == path else r for r in rows]


def _bomb(d: Path) -> Path:
    """260 MiB of zeros that deflate to a few hundred KiB, honestly listed in RECORD."""
    chunks = 260
    zeros = bytes(1 << 20)
    digest = hashlib.sha256()
    for _ in range(chunks):
        digest.update(zeros)
    value = "sha256=" + base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")
    path = WheelMaker(
        edit_record=lambda rows: [*rows, ["demo/zeros.bin", value, str(chunks << 20)]]
    ).build(d)
    # Streamed into the archive, so building the bomb stays light.
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("demo/zeros.bin", date_time=(2024, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as out:
            for _ in range(chunks):
                out.write(zeros)
    return path


def _lying_size(d: Path) -> Path:
    """A member whose zip headers declare 10 bytes while its data inflates to 64 KiB."""
    payload = b"x" * 65536
    path = WheelMaker(
        files={"demo/__init__.py": "", "demo/big.txt": payload},
        edit_record=_set_size("demo/big.txt", "10"),
    ).build(d)
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (start := data.find(signature, start)) != -1:
            name_len = struct.unpack_from(
                "<H", data, start + (26 if signature == b"PK\x03\x04" else 28)
            )[0]
            name_at = start + (30 if signature == b"PK\x03\x04" else 46)
            if bytes(data[name_at : name_at + name_len]) == b"demo/big.txt":
                struct.pack_into("<I", data, start + offset, 10)
            start += 4
    path.write_bytes(bytes(data))
    return path


CASES: dict[str, tuple[BadWheel, str]] = {
    "not a zip": (_not_a_zip, "not a zip archive"),
    "truncated zip": (_truncated, "not a zip archive"),
    "bad file name": (_with(filename="demo.whl"), "invalid wheel file name"),
    "bad version in file name": (
        _with(filename="demo-1.x.y-py3-none-any.whl"),
        "invalid wheel file name",
    ),
    "missing WHEEL": (_with(omit=frozenset({"WHEEL"})), "demo-1.0.dist-info/WHEEL is missing"),
    "WHEEL major version 2": (
        _with(wheel_file="Wheel-Version: 2.0\nRoot-Is-Purelib: true\n"),
        "unsupported Wheel-Version '2.0'",
    ),
    "WHEEL without Root-Is-Purelib": (
        _with(wheel_file="Wheel-Version: 1.0\nTag: py3-none-any\n"),
        "Root-Is-Purelib must be true or false",
    ),
    "missing METADATA": (_with(omit=frozenset({"METADATA"})), "METADATA is missing"),
    "METADATA without Version": (
        _with(metadata="Metadata-Version: 2.1\nName: demo\n"),
        "METADATA has no Name or no Version",
    ),
    "METADATA not UTF-8": (
        _with(metadata=b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nSummary: caf\xe9\n"),
        "demo-1.0.dist-info/METADATA is not UTF-8",
    ),
    "missing RECORD": (_with(omit=frozenset({"RECORD"})), "RECORD is missing"),
    "RECORD row without hash": (
        _edit(_set_hash("demo/core.py", "")),
        "RECORD: hash / size of demo/core.py is not included",
    ),
    "RECORD hash malformed": (_edit(_set_hash("demo/core.py", "sha256")), "RECORD"),
    "RECORD hash mismatch": (
        _edit(_set_hash("demo/core.py", record_hash(b"something else"))),
        "hash of 'demo/core.py' does not match RECORD",
    ),
    "RECORD size mismatch": (
        _edit(_set_size("demo/core.py", "3")),
        "size of 'demo/core.py' is 32 in the archive, 3 in RECORD",
    ),
    "RECORD with md5": (
        _edit(_set_hash("demo/core.py", record_hash(b"def main() -> int:\n    return 0\n", "md5"))),
        "PEP 427 needs sha256 or better",
    ),
    "RECORD lists a file twice": (
        _edit(lambda rows: [*rows, rows[0]]),
        "RECORD lists 'demo/__init__.py' twice",
    ),
    "file missing from RECORD": (
        _extra(Member("demo/unlisted.py", b"x = 1\n"), listed=False),
        "demo/unlisted.py is not mentioned in RECORD",
    ),
    "RECORD lists a file the wheel lacks": (
        _edit(lambda rows: [*rows, ["demo/ghost.py", record_hash(b""), "0"]]),
        "RECORD lists 'demo/ghost.py', which the archive lacks",
    ),
    "path traversal": (_extra(Member("../evil.py", b"x = 1\n")), "path traversal in '../evil.py'"),
    "nested path traversal": (
        _extra(Member("demo/../../evil.py", b"x = 1\n")),
        "path traversal in 'demo/../../evil.py'",
    ),
    "absolute path": (_extra(Member("/etc/evil.py", b"x = 1\n")), "absolute path '/etc/evil.py'"),
    "symlink member": (
        _extra(Member("demo/link", b"/etc/passwd", stat.S_IFLNK | 0o777)),
        "symbolic link member 'demo/link'",
    ),
    "device member": (
        _extra(Member("demo/dev", b"", stat.S_IFCHR | 0o644)),
        "special file member 'demo/dev'",
    ),
    "fifo member": (
        _extra(Member("demo/fifo", b"", stat.S_IFIFO | 0o644)),
        "special file member 'demo/fifo'",
    ),
    "duplicate member": (
        _extra(Member("demo/__init__.py", b"VALUE = 2\n"), listed=False),
        "duplicate archive member 'demo/__init__.py'",
    ),
    "file and directory at one path": (
        _extra(Member("demo/core.py/inner.py", b"x = 1\n")),
        "'demo/core.py' is both a file and a directory",
    ),
    "two dist-info directories": (
        _extra(Member("other-1.0.dist-info/METADATA", b"Name: other\nVersion: 1.0\n")),
        "exactly one .dist-info",
    ),
    "bad .data scheme": (
        _extra(Member("demo-1.0.data/nowhere/x.txt", b"x\n")),
        "not contained in a valid .data subdirectory",
    ),
    "name differs from METADATA": (
        _with(metadata="Metadata-Version: 2.1\nName: other\nVersion: 1.0\n"),
        "METADATA names 'other', the file name 'demo'",
    ),
    "version differs from METADATA": (
        _with(metadata="Metadata-Version: 2.1\nName: demo\nVersion: 2.0\n"),
        "METADATA has version 2.0, the file name 1.0",
    ),
    "decompression bomb": (_bomb, "decompression bomb"),
    # Scripts land in the venv's bin/: each must be one plain file name there.
    "entry point leading out of bin/": (
        _with(entry_points="[console_scripts]\n../../../x = demo.core:main\n"),
        "entry point '../../../x' in [console_scripts] is not a plain file name",
    ),
    "absolute entry point": (
        _with(entry_points="[gui_scripts]\n/tmp/x = demo.core:main\n"),
        "entry point '/tmp/x' in [gui_scripts] is not a plain file name",
    ),
    "entry point in a subdirectory": (
        _with(entry_points="[console_scripts]\nsub/x = demo.core:main\n"),
        "entry point 'sub/x' in [console_scripts] is not a plain file name",
    ),
    "entry point with a backslash": (
        _with(entry_points="[console_scripts]\n..\\x = demo.core:main\n"),
        "entry point '..\\\\x' in [console_scripts] is not a plain file name",
    ),
    "hidden entry point": (
        _with(entry_points="[console_scripts]\n.. = demo.core:main\n"),
        "entry point '..' in [console_scripts] is not a plain file name",
    ),
    "entry point with a NUL": (
        _with(entry_points="[console_scripts]\nx\x00y = demo.core:main\n"),
        "entry point 'x\\x00y' in [console_scripts] is not a plain file name",
    ),
    "malformed entry point": (
        _with(entry_points="[console_scripts]\nx = not a reference!\n"),
        "entry_points.txt is malformed",
    ),
    ".data/scripts member in a subdirectory": (
        _extra(Member("demo-1.0.data/scripts/sub/tool", b"#!python\n", stat.S_IFREG | 0o755)),
        "script 'demo-1.0.data/scripts/sub/tool' is not a plain file name in scripts/",
    ),
    "hidden .data/scripts member": (
        _extra(Member("demo-1.0.data/scripts/.profile", b"#!python\n", stat.S_IFREG | 0o755)),
        "script 'demo-1.0.data/scripts/.profile' is not a plain file name in scripts/",
    ),
    "member larger than its headers declare": (_lying_size, "demo/big.txt"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_wheel_is_refused_and_store_unchanged(
    case: str, pkgfs: RunPkgfs, make_wheel: Callable[..., Path], store_dir: Path, wheel_dir: Path
) -> None:
    # A store that already holds a wheel, so "unchanged" covers the index and objects too.
    assert (
        pkgfs("store", "add", make_wheel(name="base", files={"base/__init__.py": "B = 1\n"})).code
        == 0
    )
    before = snapshot(store_dir)
    build, expected = CASES[case]
    bad = build(wheel_dir)

    result = pkgfs("store", "add", bad)

    assert result.code == 1, result
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith(f"pkgfs: error: {bad.name}: "), lines[0]
    assert expected in lines[0]
    assert snapshot(store_dir) == before
    assert pkgfs("store", "verify").code == 0


def test_bad_wheel_among_good_ones_fails_alone(
    pkgfs: RunPkgfs, make_wheel: Callable[..., Path], wheel_dir: Path
) -> None:
    good = make_wheel()
    bad = _extra(Member("../evil.py", b""))(wheel_dir / "..")

    result = pkgfs("store", "add", good, bad)

    assert result.code == 1
    assert result.out.startswith("demo 1.0: 4 objects, ")
    assert pkgfs("store", "stats", "--json").out.count('"wheels": 1') == 1
    assert result.err.count("\n") == 1
    assert "evil.py" in result.err


def test_missing_wheel_file(pkgfs: RunPkgfs, tmp_path: Path) -> None:
    result = pkgfs("store", "add", tmp_path / "nope-1.0-py3-none-any.whl")
    assert result.code == 1
    assert result.err == "pkgfs: error: nope-1.0-py3-none-any.whl: No such file or directory\n"
