"""Ingest: what lands in the store, deduplication, concurrency and crash safety."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
from zlib_ng import zlib_ng

from pkgfs.store import Store
from pkgfs.store.ingest import _use_fast_inflate
from tests.conftest import PKGFS, RunPkgfs
from tests.wheelmaker import Member, WheelMaker, record_hash

MakeWheel = Callable[..., Path]


def _reference_install(wheel: Path, target: Path) -> dict[tuple[str, str], bytes]:
    """What installer's own reference destination writes, by (scheme, path)."""
    schemes = ("purelib", "platlib", "headers", "scripts", "data")
    destination = SchemeDictionaryDestination(
        {s: str(target / s) for s in schemes}, interpreter="/usr/bin/python3", script_kind="posix"
    )
    with WheelFile.open(wheel) as source:
        install(source, destination, additional_metadata={})
    files = {}
    for scheme in schemes:
        for path in sorted((target / scheme).rglob("*")):
            if path.is_file():
                files[(scheme, str(path.relative_to(target / scheme)))] = path.read_bytes()
    return files


def test_ingest_matches_installers_reference_install(
    store_dir: Path, make_wheel: MakeWheel, tmp_path: Path
) -> None:
    wheel = make_wheel(
        name="rich_demo",
        root_is_purelib=False,
        files={
            "rich_demo/__init__.py": "X = 1\n",
            "rich_demo/_speed.so": os.urandom(4096),
            "rich_demo/tool.sh": "#!/bin/sh\necho hi\n",
            "rich_demo-1.0.data/purelib/rich_demo_pure.py": "Y = 2\n",
            "rich_demo-1.0.data/scripts/rich-tool": "#!python\nprint('tool')\n",
            "rich_demo-1.0.data/data/share/rich_demo/readme.txt": "data file\n",
            "rich_demo-1.0.data/headers/rich_demo.h": "int x;\n",
        },
        executable=frozenset({"rich_demo/tool.sh", "rich_demo-1.0.data/scripts/rich-tool"}),
        entry_points=(
            "[console_scripts]\nrich = rich_demo:main\n"
            "[gui_scripts]\nrich-gui = rich_demo.gui:run\n"
        ),
    )
    reference = _reference_install(wheel, tmp_path / "ref")

    with Store.open(store_dir) as store:
        result = store.add(wheel)
        manifest = {(f.scheme, f.path): f for f in store.files(result.sha256)}
        entry_points = store.entry_points(result.sha256)
        stored = {key: store.object_path(f.digest).read_bytes() for key, f in manifest.items()}

    # installer writes RECORD and generates launchers; the store keeps entry points instead,
    # and keeps .data/scripts with their original "#!python" shebang, fixed per environment.
    reference.pop(("platlib", "rich_demo-1.0.dist-info/RECORD"))
    reference = {k: v for k, v in reference.items() if k[0] != "scripts"}
    assert {k: v for k, v in stored.items() if k[0] != "scripts"} == reference
    assert stored[("scripts", "rich-tool")] == b"#!python\nprint('tool')\n"
    assert manifest[("scripts", "rich-tool")].executable
    assert manifest[("platlib", "rich_demo/tool.sh")].executable
    assert not manifest[("platlib", "rich_demo/__init__.py")].executable
    assert [(e.section, e.name, e.module, e.attr) for e in entry_points] == [
        ("console", "rich", "rich_demo", "main"),
        ("gui", "rich-gui", "rich_demo.gui", "run"),
    ]
    assert result.files == len(manifest) == 10  # 7 files, METADATA, WHEEL, entry_points.txt
    assert result.objects_added == 10


def test_objects_are_read_only_and_named_by_sha256(store_dir: Path, make_wheel: MakeWheel) -> None:
    with Store.open(store_dir) as store:
        result = store.add(make_wheel())
        for entry in store.files(result.sha256):
            path = store.object_path(entry.digest)
            data = path.read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry.digest
            assert len(data) == entry.size
            assert stat.S_IMODE(path.stat().st_mode) == 0o444
            assert path.parent.parent == store_dir / "objects-v1"


def test_wheel_built_by_setuptools(store_dir: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "hello").mkdir(parents=True)
    (project / "hello" / "__init__.py").write_text("def main() -> None:\n    print('hello')\n")
    (project / "hello" / "data.json").write_text('{"a": 1}\n')
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "hello-world"\nversion = "0.3"\n'
        '[project.scripts]\nhello = "hello:main"\n'
        '[tool.setuptools.package-data]\nhello = ["*.json"]\n'
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(project),
        ],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("hello_world-0.3-*.whl")
    with WheelFile.open(wheel) as source:
        record = {
            row[0]: row
            for row in (line.split(",") for line in source.read_dist_info("RECORD").splitlines())
        }

    with Store.open(store_dir) as store:
        result = store.add(wheel)
        manifest = store.files(result.sha256)
        entry_points = store.entry_points(result.sha256)

    assert (result.name, result.version) == ("hello-world", "0.3")
    assert {f.path for f in manifest} == set(record) - {"hello_world-0.3.dist-info/RECORD"}
    for f in manifest:
        assert (
            record_hash(Path(store_dir / "objects-v1" / f.digest[:2] / f.digest[2:]).read_bytes())
            == record[f.path][1]
        )
        assert str(f.size) == record[f.path][2]
    assert [(e.name, e.module, e.attr) for e in entry_points] == [("hello", "hello", "main")]


def test_same_content_is_stored_once(store_dir: Path, make_wheel: MakeWheel) -> None:
    shared = os.urandom(50_000)
    files_v1 = {"pkg/__init__.py": "V = 1\n", "pkg/big.bin": shared, "pkg/same.py": "S = 0\n"}
    files_v2 = {"pkg/__init__.py": "V = 2\n", "pkg/big.bin": shared, "pkg/same.py": "S = 0\n"}
    v1 = make_wheel(name="pkg", version="1.0", files=files_v1)
    v2 = make_wheel(name="pkg", version="1.1", files=files_v2)
    twin = make_wheel(name="twin", files={"twin/copy.bin": shared, "twin/again.bin": shared})

    with Store.open(store_dir) as store:
        first = store.add(v1)
        second = store.add(v2)
        third = store.add(twin)
        stats = store.stats()

    # v1: 3 files + METADATA + WHEEL. v2 adds its __init__, METADATA (new version).
    # WHEEL is byte-identical across all three wheels; twin adds only its METADATA.
    assert first.objects_added == 5
    assert second.objects_added == 2
    assert third.objects_added == 1
    assert stats.wheels == 3
    assert stats.files == 5 + 5 + 4
    assert stats.objects == 8
    assert (
        stats.logical_bytes == first.unpacked_bytes + second.unpacked_bytes + third.unpacked_bytes
    )
    assert stats.logical_bytes - stats.stored_bytes >= 3 * len(shared)


def test_adding_a_present_wheel_adds_nothing(
    pkgfs: RunPkgfs, make_wheel: MakeWheel, store_dir: Path
) -> None:
    wheel = make_wheel()
    assert pkgfs("store", "add", wheel).code == 0
    index_before = (store_dir / "index-v1.sqlite").read_bytes()

    again = pkgfs("store", "add", wheel)

    assert again.code == 0
    assert again.out == "demo 1.0: already present\n"
    assert (store_dir / "index-v1.sqlite").read_bytes() == index_before


def test_pycache_members_are_skipped_and_counted(store_dir: Path, make_wheel: MakeWheel) -> None:
    pyc = Member("demo/__pycache__/core.cpython-311.pyc", b"\x00" * 16)
    wheel = make_wheel(
        extra=[pyc],
        edit_record=lambda rows: [*rows, [pyc.name, record_hash(pyc.data), str(len(pyc.data))]],
    )
    with Store.open(store_dir) as store:
        result = store.add(wheel)
        paths = {f.path for f in store.files(result.sha256)}
    assert result.skipped == (pyc.name,)
    assert pyc.name not in paths


def _many_file_wheel(directory: Path, name: str, shared: dict[str, bytes], own: int) -> Path:
    files: dict[str, bytes | str] = {f"{name}/__init__.py": ""}
    files.update({f"{name}/shared_{k}": v for k, v in shared.items()})
    files.update({f"{name}/own_{i}.bin": os.urandom(2048) for i in range(own)})
    return WheelMaker(name=name, files=files).build(directory)


def test_concurrent_adds_of_overlapping_wheels(
    pkgfs: RunPkgfs, wheel_dir: Path, store_dir: Path
) -> None:
    shared = {f"s{i}.bin": os.urandom(4096) for i in range(300)}
    a, b, c, d = (_many_file_wheel(wheel_dir, n, shared, 50) for n in ("aa", "bb", "cc", "dd"))
    env = {**os.environ, "PKGFS_STORE": str(store_dir)}

    procs = [
        subprocess.Popen(
            [*PKGFS, "store", "add", *map(str, wheels)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for wheels in ((a, b, c), (c, b, d), (d, a))
    ]
    outcomes = [p.communicate(timeout=120) for p in procs]

    assert [p.returncode for p in procs] == [0, 0, 0], outcomes
    verify = pkgfs("store", "verify")
    assert verify.code == 0, verify.out
    stats = pkgfs("store", "stats", "--json").out
    # 4 wheels x (50 own + __init__? no: "" is shared) ; shared: 300 + empty __init__ + WHEEL.
    assert '"wheels": 4' in stats
    assert f'"objects": {4 * 50 + 300 + 1 + 1 + 4}' in stats  # + 4 METADATA


def _count(directories: list[Path]) -> int:
    total = 0
    for directory in directories:
        with contextlib.suppress(OSError):
            total += sum(1 for _ in os.scandir(directory))
    return total


def _staged(store: Path) -> int:
    return _count(list((store / "tmp").glob("ingest-*")))


def _published(store: Path) -> int:
    return _count(list((store / "objects-v1").glob("??")))


# Kill points, by what the ingest has visibly done: files staged while unpacking, then
# objects published before the index commit. Observed, not timed, so each kill lands in
# its phase whatever the machine's speed.
KILL_POINTS = [
    ("staged", _staged, 1),
    ("staged", _staged, 700),
    ("staged", _staged, 2000),
    ("published", _published, 1),
    ("published", _published, 600),
    ("published", _published, 1900),
]


@pytest.mark.parametrize(("phase", "progress", "threshold"), KILL_POINTS)
def test_kill_9_during_ingest_leaves_a_verifiable_store(
    pkgfs: RunPkgfs,
    wheel_dir: Path,
    tmp_path: Path,
    phase: str,
    progress: Callable[[Path], int],
    threshold: int,
) -> None:
    wheel = _many_file_wheel(
        wheel_dir, "big", {f"{i}": os.urandom(16384) for i in range(600)}, 1500
    )
    store = tmp_path / "store"
    assert pkgfs("--store", store, "store", "stats").code == 0
    proc = subprocess.Popen(
        [*PKGFS, "--store", str(store), "store", "add", str(wheel)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    while proc.poll() is None and progress(store) < threshold:
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    verify = pkgfs("--store", store, "store", "verify")
    assert verify.code == 0, (phase, threshold, verify.out)
    listed = pkgfs("--store", store, "store", "ls", "--json").out
    # All or nothing: the wheel is wholly present (every file), or absent.
    assert '"wheels": 0' in pkgfs("--store", store, "store", "stats", "--json").out or (
        '"files": 2103' in listed  # 600 + 1500 + __init__ + METADATA + WHEEL
    )
    # Whatever the kill left, the same wheel can be added afterwards, and verifies.
    assert pkgfs("--store", store, "store", "add", wheel).code == 0
    assert pkgfs("--store", store, "store", "verify").code == 0
    assert '"files": 2103' in pkgfs("--store", store, "store", "ls", "--json").out


@pytest.mark.parametrize("jobs", [1, 4])
def test_add_many_reports_in_order(store_dir: Path, make_wheel: MakeWheel, jobs: int) -> None:
    wheels = [make_wheel(name=f"w{i}", files={f"w{i}/__init__.py": f"I = {i}\n"}) for i in range(6)]
    with Store.open(store_dir) as store:
        results = list(store.add_many(wheels, jobs=jobs))
    assert [getattr(r, "name", None) for r in results] == [f"w{i}" for i in range(6)]


def test_members_inflate_with_zlib_ng(make_wheel: MakeWheel) -> None:
    """If zipfile's internals change, ingest still works with zlib, only slower: say so."""
    with zipfile.ZipFile(make_wheel()) as archive, archive.open("demo/core.py") as stream:
        _use_fast_inflate(stream)  # type: ignore[arg-type]
        assert type(stream._decompressor) is type(zlib_ng.decompressobj(-15))  # type: ignore[attr-defined]
        assert stream.read() == b"def main() -> int:\n    return 0\n"
