"""Composing views: merged trees, conflicts, generated RECORD/INSTALLER/scripts, saved views."""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import marshal
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pkgfs.store import Store
from pkgfs.store.hashing import record_hash_of
from pkgfs.vfs.env.saved import load_or_compose
from pkgfs.vfs.env.view import (
    VIEW_FORMAT,
    View,
    ViewError,
    ViewFile,
    compose_view,
)

MakeWheel = Callable[..., Path]

PYTHON = "/venv/bin/python"
SITE = "lib/python3.11/site-packages"


@pytest.fixture
def store(store_dir: Path) -> Iterator[Store]:
    with Store.open(store_dir) as opened:
        yield opened


def compose(store: Store, *wheels: str, python: str = PYTHON) -> View:
    return compose_view(store, list(wheels), python=python, site_packages=SITE)


def served(store: Store, file: ViewFile) -> bytes:
    """The bytes a mount serves for ``file``: its inline data, else its store object."""
    if file.data is not None:
        return file.data
    assert file.digest is not None
    return store.object_path(file.digest).read_bytes()


def b64_sha256(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


def record_rows(store: Store, view: View, dist_info: str) -> list[list[str]]:
    text = served(store, view.files[f"{dist_info}/RECORD"]).decode()
    return list(csv.reader(io.StringIO(text)))


def test_purelib_and_platlib_merge_into_one_tree(store: Store, make_wheel: MakeWheel) -> None:
    native = os.urandom(3000)
    wheel = make_wheel(
        name="fast",
        tag="cp311-cp311-linux_x86_64",
        root_is_purelib=False,
        files={
            "fast/__init__.py": "from fast._speed import go\n",
            "fast/_speed.so": native,
            "fast-1.0.data/purelib/fast_pure.py": "PURE = True\n",
        },
    )
    view = compose(store, store.add(wheel).sha256)

    assert served(store, view.files["fast/_speed.so"]) == native
    assert served(store, view.files["fast/__init__.py"]) == b"from fast._speed import go\n"
    assert served(store, view.files["fast_pure.py"]) == b"PURE = True\n"
    assert view.dirs == {"", "fast", "fast-1.0.dist-info"}
    assert view.children()[""] == ["fast", "fast-1.0.dist-info", "fast_pure.py"]
    assert view.wheels == [("fast", "1.0", wheel.name)]


def test_namespace_package_directories_merge(store: Store, make_wheel: MakeWheel) -> None:
    a = make_wheel(name="ns_a", files={"ns/a/__init__.py": "A = 1\n"})
    b = make_wheel(name="ns_b", files={"ns/b/__init__.py": "B = 2\n", "ns/b/deep/x.py": ""})
    view = compose(store, store.add(a).sha256, store.add(b).sha256)

    assert {"ns", "ns/a", "ns/b", "ns/b/deep"} <= view.dirs
    children = view.children()
    assert children[""].count("ns") == 1
    assert children["ns"] == ["a", "b"]
    assert children["ns/b"] == ["__init__.py", "deep"]
    assert served(store, view.files["ns/a/__init__.py"]) == b"A = 1\n"
    assert served(store, view.files["ns/b/__init__.py"]) == b"B = 2\n"


def test_same_path_with_same_content_in_two_wheels_is_fine(
    store: Store, make_wheel: MakeWheel
) -> None:
    shared = {"shared/__init__.py": "SHARED = 1\n"}
    a = make_wheel(name="one", files={**shared, "one.py": ""})
    b = make_wheel(name="two", files={**shared, "two.py": ""})
    view = compose(store, store.add(a).sha256, store.add(b).sha256)

    assert served(store, view.files["shared/__init__.py"]) == b"SHARED = 1\n"
    assert {"one.py", "two.py", "one-1.0.dist-info/RECORD", "two-1.0.dist-info/RECORD"} <= set(
        view.files
    )


@pytest.mark.parametrize("order", ["lock order", "reversed"])
def test_two_wheels_shipping_one_path_serve_the_later_one_and_say_so(
    store: Store, make_wheel: MakeWheel, order: str
) -> None:
    # As jaraco.context and backports.cached-property both ship backports/__init__.py: pip
    # installs both and the later file wins; pkgfs picks the same one whatever the order.
    a = make_wheel(name="one", files={"shared/util.py": "A\n", "one.py": ""})
    b = make_wheel(name="two", files={"shared/util.py": "B = 2\n", "two.py": ""})
    shas = [store.add(a).sha256, store.add(b).sha256]
    view = compose(store, *(shas if order == "lock order" else reversed(shas)))

    served = view.files["shared/util.py"]
    assert store.object_path(served.digest or "").read_bytes() == b"B = 2\n"
    assert view.conflicts == [("shared/util.py", b.name, a.name)]
    (note,) = view.conflict_notes()
    assert "shared/util.py" in note
    assert a.name in note
    assert b.name in note
    # Each RECORD lists the file as it is served, so both verify against the installation.
    b_bytes = b"B = 2\n"
    for wheel in ("one-1.0", "two-1.0"):
        record = (view.files[f"{wheel}.dist-info/RECORD"].data or b"").decode()
        (row,) = [r for r in record.splitlines() if r.startswith("shared/util.py,")]
        assert row == f"shared/util.py,{record_hash_of(b_bytes)},{len(b_bytes)}"


@pytest.mark.parametrize("file_first", [True, False])
def test_file_where_another_wheel_has_a_directory(
    store: Store, make_wheel: MakeWheel, file_first: bool
) -> None:
    as_file = store.add(make_wheel(name="flat", files={"thing": "a file\n"})).sha256
    as_dir = store.add(make_wheel(name="nested", files={"thing/mod.py": "X = 1\n"})).sha256
    order = [as_file, as_dir] if file_first else [as_dir, as_file]
    with pytest.raises(ViewError, match="thing"):
        compose(store, *order)


RICH_FILES: dict[str, str | bytes] = {
    "demo/__init__.py": "VALUE = 1\n",
    "demo/core.py": "def main() -> int:\n    return 0\n",
    "demo/bin.dat": bytes(range(256)) * 40,
    "demo/run.sh": "#!/bin/sh\necho run\n",
    "demo-1.0.data/scripts/tool": "#!python\nprint('tool')\n",
    "demo-1.0.data/scripts/plain.sh": "#!/bin/sh\necho plain\n",
    "demo-1.0.data/data/share/x": "shared data\n",
    "demo-1.0.data/headers/h.h": "int h;\n",
}
RICH_ENTRY_POINTS = (
    "[console_scripts]\ndemo-cli = demo.core:main\n[gui_scripts]\ndemo-gui = demo.core:main\n"
)


@pytest.fixture
def rich(store: Store, make_wheel: MakeWheel) -> tuple[str, View]:
    wheel = make_wheel(
        files=RICH_FILES, entry_points=RICH_ENTRY_POINTS, executable=frozenset({"demo/run.sh"})
    )
    sha256 = store.add(wheel).sha256
    other = store.add(make_wheel(name="other", files={"other.py": "O = 1\n"})).sha256
    return sha256, compose(store, sha256, other)


def test_record_lists_every_file_as_served(store: Store, rich: tuple[str, View]) -> None:
    _, view = rich
    rows = record_rows(store, view, "demo-1.0.dist-info")
    site_files = [p for p in RICH_FILES if not p.startswith("demo-1.0.data/")]
    dist_info = ["METADATA", "WHEEL", "entry_points.txt", "INSTALLER", "RECORD"]
    scripts = ["demo-cli", "demo-gui", "tool", "plain.sh"]
    expected = {
        *site_files,
        *(f"demo-1.0.dist-info/{name}" for name in dist_info),
        *(f"../../../bin/{name}" for name in scripts),
        "../../../share/x",
        "../../../include/site/python3.11/demo/h.h",
    }
    assert {row[0] for row in rows} == expected
    assert len(rows) == len(expected)
    assert ["demo-1.0.dist-info/RECORD", "", ""] in rows

    for path, hash_field, size in rows:
        if path == "demo-1.0.dist-info/RECORD":
            continue
        if path.startswith("../../../bin/"):
            file = view.scripts[path.removeprefix("../../../bin/")]
        elif path.startswith("../../../"):
            file = view.data[path.removeprefix("../../../")]
        else:
            file = view.files[path]
        content = served(store, file)
        assert hash_field == f"sha256={b64_sha256(content)}", path
        assert int(size) == len(content) == file.size, path
    # The hashes of store objects match the bytes a wheel author wrote.
    by_path = {row[0]: row for row in rows}
    assert by_path["demo/bin.dat"][1] == f"sha256={b64_sha256(bytes(range(256)) * 40)}"


def test_installer_and_record_per_wheel(store: Store, rich: tuple[str, View]) -> None:
    _, view = rich
    assert served(store, view.files["demo-1.0.dist-info/INSTALLER"]) == b"pkgfs\n"
    assert served(store, view.files["other-1.0.dist-info/INSTALLER"]) == b"pkgfs\n"
    other = {row[0] for row in record_rows(store, view, "other-1.0.dist-info")}
    assert other == {
        "other.py",
        "other-1.0.dist-info/METADATA",
        "other-1.0.dist-info/WHEEL",
        "other-1.0.dist-info/INSTALLER",
        "other-1.0.dist-info/RECORD",
    }
    record = view.files["demo-1.0.dist-info/RECORD"]
    assert record.size == len(served(store, record))
    assert not record.executable


def test_a_wheel_shipping_its_own_installer_file_gets_ours(
    store: Store, make_wheel: MakeWheel
) -> None:
    files = {"c/__init__.py": "", "c-1.0.dist-info/INSTALLER": "pip\n"}
    view = compose(store, store.add(make_wheel(name="c", files=files)).sha256)
    assert served(store, view.files["c-1.0.dist-info/INSTALLER"]) == b"pkgfs\n"
    rows = [r for r in record_rows(store, view, "c-1.0.dist-info") if r[0].endswith("INSTALLER")]
    installer_hash = f"sha256={b64_sha256(b'pkgfs' + bytes([10]))}"
    assert rows == [["c-1.0.dist-info/INSTALLER", installer_hash, "6"]]


def test_entry_points_and_data_scripts_get_the_environment_shebang(
    store: Store, rich: tuple[str, View]
) -> None:
    _, view = rich
    assert set(view.scripts) == {"demo-cli", "demo-gui", "tool", "plain.sh"}
    for name in ("demo-cli", "demo-gui"):
        content = served(store, view.scripts[name])
        assert content.startswith(b"#!/venv/bin/python\n")
        assert b"from demo.core import main" in content
        assert b"sys.exit(main())" in content
    assert served(store, view.scripts["tool"]) == b"#!/venv/bin/python\nprint('tool')\n"
    assert served(store, view.scripts["plain.sh"]) == b"#!/bin/sh\necho plain\n"
    assert all(script.executable for script in view.scripts.values())
    for script in view.scripts.values():
        assert script.size == len(served(store, script))
    assert view.files["demo/run.sh"].executable
    assert not view.files["demo/core.py"].executable


def test_shebang_follows_the_python_of_the_environment(
    store: Store, rich: tuple[str, View]
) -> None:
    sha256, _ = rich
    view = compose(store, sha256, python="/opt/env/bin/python3.11")
    assert served(store, view.scripts["tool"]).startswith(b"#!/opt/env/bin/python3.11\n")
    assert served(store, view.scripts["demo-cli"]).startswith(b"#!/opt/env/bin/python3.11\n")


def test_data_and_headers_land_beside_site_packages(store: Store, rich: tuple[str, View]) -> None:
    _, view = rich
    assert set(view.data) == {"share/x", "include/site/python3.11/demo/h.h"}
    assert served(store, view.data["share/x"]) == b"shared data\n"
    assert served(store, view.data["include/site/python3.11/demo/h.h"]) == b"int h;\n"
    assert not any(p.startswith("demo-1.0.data") for p in view.files)


def test_dump_and_load_round_trip(store: Store, rich: tuple[str, View]) -> None:
    _, view = rich
    loaded = View.load(view.dump())
    assert loaded == view
    assert loaded.children() == view.children()
    assert View.load(View().dump()) == View()


def test_load_refuses_another_format() -> None:
    blob = marshal.dumps((VIEW_FORMAT + 1, {}, [""], {}, {}, []))
    with pytest.raises(ValueError, match="view format"):
        View.load(blob)


def test_load_or_compose_saves_one_view_that_every_environment_shares(
    store: Store, rich: tuple[str, View]
) -> None:
    sha256, _ = rich
    composed = load_or_compose(store, [sha256], PYTHON, SITE)
    assert composed == compose(store, sha256)
    (saved,) = (store.root / "views-v2").iterdir()
    saved_bytes = saved.read_bytes()

    # The same view again, from the saved file: it is not rewritten.
    assert load_or_compose(store, [sha256], PYTHON, SITE) == composed
    assert saved.read_bytes() == saved_bytes

    # Another environment (another interpreter path) shares the saved file; only its
    # scripts and RECORDs, made per environment, differ.
    other = load_or_compose(store, [sha256], "/other/bin/python", SITE)
    assert [p.name for p in (store.root / "views-v2").iterdir()] == [saved.name]
    assert other == compose(store, sha256, python="/other/bin/python")
    assert other.scripts != composed.scripts
    for name, script in composed.scripts.items():
        if script.data is not None and script.data.startswith(f"#!{PYTHON}\n".encode()):
            moved = other.scripts[name].data
            assert moved is not None
            assert moved.startswith(b"#!/other/bin/python\n")
    lower = {p: f for p, f in composed.files.items() if not p.endswith("/RECORD")}
    assert {p: f for p, f in other.files.items() if not p.endswith("/RECORD")} == lower


@pytest.mark.parametrize(
    "garbage",
    [b"", b"garbage", b"not a view", b"\xff" * 64, "truncated", "old format"],
)
def test_load_or_compose_recomposes_over_a_bad_saved_view(
    store: Store, rich: tuple[str, View], garbage: bytes | str
) -> None:
    sha256, _ = rich
    view = load_or_compose(store, [sha256], PYTHON, SITE)
    (saved,) = (store.root / "views-v2").iterdir()
    good = saved.read_bytes()
    if garbage == "truncated":
        saved.write_bytes(good[:200])
    elif garbage == "old format":
        saved.write_bytes(marshal.dumps((VIEW_FORMAT - 1, {}, [""], {}, {}, [])))
    else:
        assert isinstance(garbage, bytes)
        saved.write_bytes(garbage)

    assert load_or_compose(store, [sha256], PYTHON, SITE) == view
    assert saved.read_bytes() == good  # and saved again, whole
    assert [p.name for p in (store.root / "views-v2").iterdir()] == [saved.name]


def test_missing_wheel_is_not_in_the_store(store: Store, make_wheel: MakeWheel) -> None:
    present = store.add(make_wheel()).sha256
    with pytest.raises(ViewError, match="not in the store"):
        compose(store, present, "0" * 64)
    with pytest.raises(ViewError, match="not in the store"):
        load_or_compose(store, ["f" * 64], PYTHON, SITE)
    assert not (store.root / "views-v2").exists()  # nothing saved for a failed compose


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "UPDATE files SET path = '../../evil' WHERE path = 'demo/core.py'",
            "demo-1.0-py3-none-any.whl: unsafe path '../../evil' in the store index:"
            " run pkgfs store verify",
        ),
        (
            "UPDATE files SET path = 'x/../../../evil' WHERE path LIKE '%share/x'",
            "unsafe path 'x/../../../evil' in the store index",
        ),
        (
            "UPDATE entry_points SET name = '../../evil' WHERE name = 'demo-cli'",
            "demo-1.0-py3-none-any.whl: script name '../../evil' in the store index is not a plain",
        ),
        (
            "UPDATE files SET path = 'sub/tool' WHERE path = 'tool'",
            "script name 'sub/tool' in the store index is not a plain file name",
        ),
        (
            "UPDATE files SET digest = '../../../etc/passwd' WHERE path = 'demo/core.py'",
            "unsafe path 'demo/core.py' in the store index",
        ),
    ],
)
def test_an_index_row_edited_to_an_unsafe_path_is_refused(
    store: Store, make_wheel: MakeWheel, sql: str, expected: str
) -> None:
    sha256 = store.add(make_wheel(files=RICH_FILES, entry_points=RICH_ENTRY_POINTS)).sha256
    with contextlib.closing(sqlite3.connect(store.layout.index)) as db, db:
        db.execute("PRAGMA foreign_keys = OFF")
        assert db.execute(sql).rowcount == 1

    with pytest.raises(ViewError) as refused:
        load_or_compose(store, [sha256], PYTHON, SITE)
    assert expected in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not (store.root / "views-v2").exists()  # nothing saved


def test_a_script_named_like_the_venvs_own_is_neither_made_nor_recorded(
    store: Store, make_wheel: MakeWheel
) -> None:
    # An uninstaller follows RECORD: a row for bin/python would delete the venv's own.
    points = "[console_scripts]\n" + "".join(
        f"{name} = demo.core:main\n" for name in ("python", "python3.11", "activate", "tool")
    )
    sha256 = store.add(make_wheel(entry_points=points)).sha256
    view = compose(store, sha256)
    assert set(view.scripts) == {"tool"}
    record = view.files["demo-1.0.dist-info/RECORD"].data
    assert record is not None
    listed = [row.split(",")[0] for row in record.decode().splitlines()]
    assert [p for p in listed if "/bin/" in p] == ["../../../bin/tool"]


def test_a_view_is_composed_from_a_working_directory_that_was_deleted(
    store: Store, make_wheel: MakeWheel, tmp_path: Path
) -> None:
    """``pkgfs status`` or ``mount`` run in a directory deleted meanwhile (no server: the
    client cannot send a working directory it cannot name) composes views as anywhere."""
    wheel = make_wheel(
        files=RICH_FILES, entry_points=RICH_ENTRY_POINTS, executable=frozenset({"demo/run.sh"})
    )
    sha256 = store.add(wheel).sha256
    expected = compose(store, sha256)
    gone = tmp_path / "gone"
    gone.mkdir()
    before = os.getcwd()
    os.chdir(gone)
    try:
        gone.rmdir()
        view = compose(store, sha256)
    finally:
        os.chdir(before)
    assert record_rows(store, view, "demo-1.0.dist-info") == record_rows(
        store, expected, "demo-1.0.dist-info"
    )
    assert set(view.scripts) == set(expected.scripts)
