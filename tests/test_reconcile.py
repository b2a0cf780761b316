"""The overlay against a new view, no FUSE: the lower index across a switch (numbers kept
for unchanged paths, new ones for changed paths) and the reconciliation's rules (an edit of
an unchanged file carried over, of a changed file set aside, a package uninstalled in the
overlay dropped when the new view pins it, or kept with a warning)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from pkgfs.store import Store
from pkgfs.vfs.env.view import View, compose_view
from pkgfs.vfs.overlay import MergedTree
from pkgfs.vfs.overlay.lower import index_view
from pkgfs.vfs.overlay.reconcile import carry_out, plan

MakeWheel = Callable[..., Path]
SITE = "lib/python3.11/site-packages"


def _views(store: Store, make_wheel: MakeWheel) -> tuple[View, View]:
    def add(name: str, version: str, files: dict[str, str]) -> str:
        return store.add(make_wheel(name=name, version=version, files=files)).sha256

    lib10 = add("lib", "1.0", {"lib/__init__.py": "V = 1\n", "lib/same.py": "S = 1\n"})
    lib11 = add("lib", "1.1", {"lib/__init__.py": "V = 2\n", "lib/same.py": "S = 1\n"})
    other = add("other", "1.0", {"other/__init__.py": "O = 1\n", "other/mod.py": ""})
    keep = add("keep", "1.0", {"keep/__init__.py": "K = 1\n"})
    before = compose_view(store, [lib10, other, keep], "/venv/bin/python", SITE)
    after = compose_view(store, [lib11, other, keep], "/venv/bin/python", SITE)
    return before, after


def _write(tree: MergedTree, path: str, text: str) -> None:
    fd = tree.open_upper(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def test_unchanged_paths_keep_their_numbers_and_changed_ones_get_new(
    store_dir: Path, make_wheel: MakeWheel
) -> None:
    with Store.open(store_dir) as store:
        before, after = _views(store, make_wheel)
    first = index_view(before)
    second = index_view(after, first)
    assert second.inodes["lib/same.py"] == first.inodes["lib/same.py"]
    assert second.inodes["keep/__init__.py"] == first.inodes["keep/__init__.py"]
    assert second.inodes["lib"] == first.inodes["lib"]  # a directory in both
    assert second.inodes["lib/__init__.py"] > first.high  # never a number used before
    assert {"lib/__init__.py", "lib-1.0.dist-info", "lib-1.1.dist-info"} <= set(second.changed)
    assert "keep/__init__.py" not in second.changed
    assert "lib-1.0.dist-info" not in second.inodes
    assert len(set(second.inodes.values())) == len(second.inodes)
    third = index_view(before, second)  # and back: numbers above any used so far
    assert third.inodes["lib/__init__.py"] > second.high


def test_edits_are_carried_over_or_set_aside(
    store_dir: Path, make_wheel: MakeWheel, tmp_path: Path
) -> None:
    with Store.open(store_dir) as store:
        before, after = _views(store, make_wheel)
        tree = MergedTree(before, store.layout.objects, tmp_path / "upper", tmp_path / "work")
    _write(tree, "keep/__init__.py", "K = 'mine'\n")  # the new view leaves it unchanged
    _write(tree, "lib/same.py", "S = 'mine'\n")  # unchanged too, in a package that changed
    _write(tree, "lib/__init__.py", "V = 'mine'\n")  # the new view changes it
    reconciled = plan(tree, after)
    assert (reconciled.drop, reconciled.aside) == ([], ["lib/__init__.py"])
    touched = carry_out(tree, reconciled, tmp_path / "set-aside")
    tree.empty_trash()
    assert touched == ["lib/__init__.py"]
    (aside,) = (tmp_path / "set-aside").iterdir()  # one directory per reconciliation
    assert (aside / "lib" / "__init__.py").read_text() == "V = 'mine'\n"
    (note,) = reconciled.notes
    assert note == (
        f"your edit of lib/__init__.py is set aside in {aside / 'lib/__init__.py'}:"
        " the lock changed that file"
    )
    assert [c.path for c in tree.changes()] == ["keep/__init__.py", "lib/same.py"]
    assert os.listdir(tmp_path / "work") == []


def test_a_package_uninstalled_in_the_overlay_is_back_unless_kept(
    store_dir: Path, make_wheel: MakeWheel, tmp_path: Path
) -> None:
    with Store.open(store_dir) as store:
        before, after = _views(store, make_wheel)
        tree = MergedTree(before, store.layout.objects, tmp_path / "upper", tmp_path / "work")
    for path in sorted(p for p in before.files if p.startswith(("other/", "other-1.0.dist-info"))):
        tree.unlink(path)  # as pip uninstall: every file, then the directories
    for directory in ("other/__pycache__", "other", "other-1.0.dist-info"):
        if tree.exists(directory):
            tree.rmdir(directory)
    _write(tree, "keep/__init__.py", "K = 'mine'\n")
    assert not tree.exists("other/__init__.py")

    kept = plan(tree, after, keep_overlay=True)
    assert kept.drop == []
    (warning,) = kept.warnings
    assert warning.startswith("other (uninstalled in the overlay) is KEPT over the locked other")

    reconciled = plan(tree, after)
    assert reconciled.notes == [
        "other (uninstalled in the overlay) is back: the lock pins other 1.0"
    ]
    assert sorted(reconciled.drop) == ["other", "other-1.0.dist-info"]
    carry_out(tree, reconciled, tmp_path / "aside")
    tree.empty_trash()
    assert tree.exists("other/__init__.py")
    assert [c.path for c in tree.changes()] == ["keep/__init__.py"]
