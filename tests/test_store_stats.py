"""``pkgfs store stats``: deduplication over wheel files, bytecode counted apart.

Bytecode objects have no logical counterpart (no wheel ships them), so counting them as
stored but not as logical made a store with bytecode report a dedup below 1x and negative
savings. Real wheels, really compiled by this interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path

from pkgfs.store import Store
from pkgfs.store.bytecode import compile_wheels
from tests.conftest import RunPkgfs

MakeWheel = Callable[..., Path]
MAGIC = importlib.util.MAGIC_NUMBER.hex()
VENDORED = "".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(400))  # ~11 KiB


def _two_wheels_sharing_a_module(store_dir: Path, make_wheel: MakeWheel) -> list[str]:
    one = make_wheel(name="one", files={"one/__init__.py": "A = 1\n", "one/_vendor.py": VENDORED})
    two = make_wheel(name="two", files={"two/__init__.py": "B = 2\n", "two/_vendor.py": VENDORED})
    with Store.open(store_dir) as store:
        return [store.add(one).sha256, store.add(two).sha256]


def _duplicated_bytes(store_dir: Path, shas: list[str]) -> int:
    """Bytes of the second and later copies of each content, from the manifests."""
    with Store.open(store_dir) as store:
        files = [f for sha in shas for f in store.files(sha)]
    return sum(f.size for f in files) - sum({f.digest: f.size for f in files}.values())


def test_dedup_counts_wheel_files_and_bytecode_apart(
    store_dir: Path, make_wheel: MakeWheel, pkgfs: RunPkgfs
) -> None:
    shas = _two_wheels_sharing_a_module(store_dir, make_wheel)
    before = json.loads(pkgfs("store", "stats", "--json").out)
    assert before["bytecode_modules"] == before["bytecode_objects"] == 0
    # The shared module (and the identical WHEEL files) are stored once.
    assert before["saved_bytes"] == _duplicated_bytes(store_dir, shas) > len(VENDORED)

    with Store.open(store_dir) as store:
        report = compile_wheels(store, shas, Path(sys.executable), MAGIC)
        pycs = {d for sha in shas for _, d, _ in store.index.bytecode(sha, MAGIC)}
        pyc_bytes = sum(store.object_path(d).stat().st_size for d in pycs)
    assert report.modules == 4
    after = json.loads(pkgfs("store", "stats", "--json").out)

    # Wheel files: nothing changed by compiling.
    for key in ("wheels", "files", "logical_bytes", "wheel_objects", "wheel_object_bytes"):
        assert after[key] == before[key], key
    assert after["saved_bytes"] == before["saved_bytes"]
    # Bytecode: its own objects and bytes, the only growth of the store.
    assert after["bytecode_modules"] == 4
    assert after["bytecode_interpreters"] == 1
    # The two _vendor modules compile to different pycs (co_filename differs).
    assert after["bytecode_objects"] == len(pycs) == 4
    assert after["bytecode_bytes"] == pyc_bytes > 0
    assert after["objects"] == after["wheel_objects"] + after["bytecode_objects"]
    assert after["stored_bytes"] == after["wheel_object_bytes"] + after["bytecode_bytes"]
    # The old figure, logical over everything stored, would now be below 1x.
    assert after["logical_bytes"] < after["stored_bytes"]

    text = pkgfs("store", "stats").out
    dedup = next(line for line in text.splitlines() if line.startswith("dedup:"))
    ratio = after["logical_bytes"] / after["wheel_object_bytes"]
    assert dedup.split()[1] == f"{ratio:.2f}x"
    assert ratio > 1
    assert "-" not in dedup
    assert f"  bytecode:    4, {pyc_bytes} bytes" in text
    assert "4 modules compiled for 1 interpreter" in text


def test_json_keeps_the_earlier_keys_first(
    store_dir: Path, make_wheel: MakeWheel, pkgfs: RunPkgfs
) -> None:
    _two_wheels_sharing_a_module(store_dir, make_wheel)
    stats = json.loads(pkgfs("store", "stats", "--json").out)
    earlier = ["store", "wheels", "files", "objects", "logical_bytes", "stored_bytes"]
    assert list(stats)[: len(earlier)] == earlier
    assert all(isinstance(stats[key], int) for key in list(stats)[1:])


def test_an_empty_store(pkgfs: RunPkgfs) -> None:
    result = pkgfs("store", "stats")
    assert result.code == 0
    assert "dedup:         1.00x over wheel files, 0 B saved" in result.out
