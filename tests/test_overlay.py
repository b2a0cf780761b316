"""The merged tree on temp dirs, no FUSE: each operation checked by the checksums it leaves,
through this tree and a fresh one over the same upper dir; no store object may change."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from pkgfs.store import Store
from pkgfs.vfs.env.view import VIEW_MTIME, View, compose_view
from pkgfs.vfs.overlay import OPAQUE, UPPER_INODES, Attributes, Change, MergedTree, copyup
from tests.conftest import snapshot

MakeWheel = Callable[..., Path]
VIEW_MTIME_NS = VIEW_MTIME * 1_000_000_000
BIG = bytes(range(256)) * 1024  # 256 KiB: more than one copy_file_range call may move
PKG_LISTING = ["__init__.py", "core.py", "data.bin", "run.sh", "sub"]
LIB: dict[str, bytes] = {
    "pkg/__init__.py": b"VALUE = 1\n",
    "pkg/core.py": b"def main() -> int:\n    return 0\n",
    "pkg/data.bin": BIG,
    "pkg/run.sh": b"#!/bin/sh\necho run\n",
    "pkg/sub/__init__.py": b"",
    "pkg/sub/mod.py": b"X = 2\n",
    "pkg/sub/deep/leaf.py": b"LEAF = True\n",
}


@dataclass
class Layers:
    store: Store
    view: View
    upper: Path
    work: Path

    def open(self) -> MergedTree:
        return MergedTree(self.view, self.store.layout.objects, self.upper, self.work)


@pytest.fixture
def layers(store_dir: Path, make_wheel: MakeWheel, tmp_path: Path) -> Iterator[Layers]:
    with Store.open(store_dir) as store:
        lib = make_wheel(name="pkg", files=LIB, executable=frozenset({"pkg/run.sh"}))
        tool = make_wheel(name="tool", files={"tool.py": "TOOL = 1\n"})
        wheels = [store.add(lib).sha256, store.add(tool).sha256]
        view = compose_view(store, wheels, "/venv/bin/python", "lib/python3.11/site-packages")
        before = snapshot(store.layout.objects)
        yield Layers(store, view, tmp_path / "upper", tmp_path / "work")
        assert snapshot(store.layout.objects) == before, "a store object changed"


@pytest.fixture
def tree(layers: Layers) -> MergedTree:
    return layers.open()


def read(tree: MergedTree, path: str) -> bytes:
    """A merged file's bytes, the way the filesystem serves them."""
    if path in tree.upper_paths:
        return Path(tree.upper_path(path)).read_bytes()
    opened = tree.open_lower(path)
    if isinstance(opened, bytes):
        return opened
    try:
        return os.pread(opened, os.fstat(opened).st_size, 0)
    finally:
        os.close(opened)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def merged(tree: MergedTree, path: str = "") -> dict[str, str]:
    """Every path below ``path``: ``dir``, ``-> target`` or the sha256 of its bytes."""
    state: dict[str, str] = {}
    for name in tree.listdir(path):
        child = f"{path}/{name}" if path else name
        mode = tree.getattr(child, 0).mode
        if stat.S_ISDIR(mode):
            state[child] = "dir"
            state.update(merged(tree, child))
        elif stat.S_ISLNK(mode):
            state[child] = "-> " + tree.readlink(child)
        else:
            state[child] = digest(read(tree, child))
    return state


def lower_state(layers: Layers) -> dict[str, str]:
    """The view as the store holds it, independently of MergedTree."""
    state = {d: "dir" for d in layers.view.dirs if d}
    for path, file in layers.view.files.items():
        objects = layers.store.object_path(file.digest or "").read_bytes
        state[path] = digest(file.data if file.data is not None else objects())
    return state


def check(layers: Layers, tree: MergedTree, expected: dict[str, str]) -> None:
    """The merged tree is ``expected``, now and for a tree opened afresh on the same upper."""
    assert merged(tree) == expected
    assert merged(layers.open()) == expected


def marks(layers: Layers) -> set[str]:
    """The whiteouts and opaque markers in the upper dir."""
    found = layers.upper.rglob(".wh.*")
    return {str(p.relative_to(layers.upper)) for p in found}


def raises_errno(code: int, call: Callable[[], object]) -> None:
    with pytest.raises(OSError, match=rf"^\[Errno {code}\]") as caught:
        call()
    assert caught.value.errno == code


def without(state: dict[str, str], prefix: str) -> dict[str, str]:
    return {p: v for p, v in state.items() if p != prefix and not p.startswith(prefix + "/")}


def write(tree: MergedTree, path: str, data: bytes, flags: int | None = None) -> None:
    """Create ``path`` with ``data``, or with ``flags`` open it for writing through the tree."""
    fd = tree.create(path, os.O_WRONLY, 0o644) if flags is None else tree.open_upper(path, flags)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_lower_view_shows_through_unchanged(layers: Layers, tree: MergedTree) -> None:
    original = lower_state(layers)
    assert {p: original[p] for p in LIB} == {p: digest(data) for p, data in LIB.items()}
    check(layers, tree, original)
    assert tree.listdir("") == sorted(["pkg", "pkg-1.0.dist-info", "tool.py", "tool-1.0.dist-info"])
    assert tree.listdir("pkg") == PKG_LISTING
    assert tree.changes() == []
    assert not any(layers.upper.iterdir())


def test_lower_attributes(layers: Layers, tree: MergedTree) -> None:
    assert tree.inode("") == 1
    assert stat.S_ISDIR(tree.getattr("", 1).mode)
    core = tree.getattr("pkg/core.py", 7)
    size = len(LIB["pkg/core.py"])
    uid, gid = os.getuid(), os.getgid()
    times = VIEW_MTIME_NS
    assert core == Attributes(7, stat.S_IFREG | 0o644, size, times, 1, uid, gid, times, times, 8)
    assert tree.getattr("pkg/run.sh", 1).mode == stat.S_IFREG | 0o755
    assert tree.getattr("pkg/data.bin", 1).size == len(BIG)
    sub = tree.getattr("pkg/sub", 1)
    assert (sub.mode, sub.mtime_ns) == (stat.S_IFDIR | 0o755, VIEW_MTIME_NS)
    installer = tree.getattr("pkg-1.0.dist-info/INSTALLER", 1)
    assert (installer.size, read(tree, "pkg-1.0.dist-info/INSTALLER")) == (6, b"pkgfs\n")


# A remount: another process (another hash seed) loads the saved view and numbers it.
REMOUNT = """import json, sys, tempfile
from pathlib import Path
from pkgfs.vfs.env.view import View
from pkgfs.vfs.overlay import MergedTree
view = View.load(Path(sys.argv[1]).read_bytes())
with tempfile.TemporaryDirectory() as d:
    tree = MergedTree(view, Path(d, "objects"), Path(d, "upper"), Path(d, "work"))
    print(json.dumps({p: tree.inode(p) for p in tree.lower_inodes}))
"""


def test_inodes_are_stable_and_distinct(layers: Layers, tree: MergedTree, tmp_path: Path) -> None:
    paths = sorted(lower_state(layers))
    inodes = {p: tree.inode(p) for p in paths}
    assert len(set(inodes.values())) == len(paths)
    assert all(1 < ino < UPPER_INODES for ino in inodes.values())
    (tmp_path / "view").write_bytes(layers.view.dump())
    for seed in ("1", "2"):
        remount = subprocess.run(
            [sys.executable, "-c", REMOUNT, tmp_path / "view"],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            check=True,
        )
        assert json.loads(remount.stdout) == {"": 1, **inodes}
    tree.copy_up("pkg/core.py")  # a copied-up file keeps its number
    assert tree.inode("pkg/core.py") == inodes["pkg/core.py"]


def test_errno_values(layers: Layers, tree: MergedTree) -> None:
    raises_errno(errno.ENOENT, lambda: tree.getattr("pkg/missing.py", 1))
    raises_errno(errno.ENOENT, lambda: tree.listdir("missing"))
    raises_errno(errno.ENOTDIR, lambda: tree.listdir("pkg/core.py"))
    raises_errno(errno.ENOENT, lambda: tree.open_lower("pkg/missing.py"))
    raises_errno(errno.ENOENT, lambda: tree.copy_up("pkg/missing.py"))
    raises_errno(errno.EINVAL, lambda: tree.readlink("pkg/core.py"))
    raises_errno(errno.ENOENT, lambda: tree.unlink("pkg/missing.py"))
    raises_errno(errno.EISDIR, lambda: tree.unlink("pkg/sub"))
    raises_errno(errno.ENOENT, lambda: tree.rmdir("missing"))
    raises_errno(errno.ENOTDIR, lambda: tree.rmdir("pkg/core.py"))
    raises_errno(errno.EEXIST, lambda: tree.create("pkg/core.py", os.O_WRONLY, 0o644))
    raises_errno(errno.EEXIST, lambda: tree.mkdir("pkg/sub", 0o755))
    raises_errno(errno.EEXIST, lambda: tree.symlink("pkg/sub", "elsewhere"))
    raises_errno(errno.ENOENT, lambda: tree.create("missing/x.py", os.O_WRONLY, 0o644))
    raises_errno(errno.ENOTDIR, lambda: tree.create("pkg/core.py/x", os.O_WRONLY, 0o644))
    raises_errno(errno.ENOENT, lambda: tree.rename("pkg/missing.py", "pkg/x.py"))
    raises_errno(errno.ENOENT, lambda: tree.rename("pkg/core.py", "missing/x.py"))
    raises_errno(errno.ENOTDIR, lambda: tree.rename("pkg/core.py", "pkg/run.sh/x.py"))
    raises_errno(errno.EISDIR, lambda: tree.rename("pkg/core.py", "pkg/sub"))
    raises_errno(errno.ENOTDIR, lambda: tree.rename("pkg/sub", "pkg/core.py"))
    raises_errno(errno.EEXIST, lambda: tree.rename("pkg/run.sh", "pkg/core.py", noreplace=True))
    for lower_dir in ("pkg", "pkg/sub", "pkg/sub/deep"):  # overlayfs without redirect_dir
        raises_errno(errno.EXDEV, partial(tree.rename, lower_dir, "elsewhere"))
    assert not any(layers.upper.iterdir())  # no failed call copied anything up
    tree.mkdir("fresh", 0o755)
    raises_errno(errno.ENOTEMPTY, lambda: tree.rename("fresh", "pkg/sub"))
    check(layers, tree, {**lower_state(layers), "fresh": "dir"})


# RECORD is generated: its bytes are inline in the view, not a store object.
COPIES = {"pkg/core.py": 0o644, "pkg/run.sh": 0o755, "pkg/data.bin": 0o644}
COPIES |= {"pkg/sub/deep/leaf.py": 0o644, "pkg-1.0.dist-info/RECORD": 0o644}


@pytest.mark.parametrize(("path", "mode"), list(COPIES.items()))
def test_copy_up_is_an_exact_copy(layers: Layers, tree: MergedTree, path: str, mode: int) -> None:
    original = lower_state(layers)
    before = tree.getattr(path, 1)
    tree.copy_up(path)
    assert path in tree.upper_paths
    info = os.lstat(tree.upper_path(path))
    assert digest(Path(tree.upper_path(path)).read_bytes()) == original[path]
    assert (stat.S_IMODE(info.st_mode), info.st_mtime_ns) == (mode, VIEW_MTIME_NS)
    after = tree.getattr(path, 1)
    assert (after.mode, after.size, after.mtime_ns) == (before.mode, before.size, before.mtime_ns)
    assert os.listdir(layers.work) == []
    assert tree.changes() == [Change(path, "modified")]
    check(layers, tree, original)


def _crash(*args: object) -> None:
    raise OSError(errno.EIO, "simulated crash while copying")


def test_failed_copy_up_leaves_no_partial_file(
    layers: Layers, tree: MergedTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = lower_state(layers)
    monkeypatch.setattr(copyup, "_copy_data", _crash)
    raises_errno(errno.EIO, lambda: tree.copy_up("pkg/sub/mod.py"))
    raises_errno(errno.EIO, lambda: tree.open_upper("pkg/core.py", os.O_WRONLY))
    raises_errno(errno.EIO, lambda: tree.rename("pkg/core.py", "pkg/moved.py"))
    assert not (layers.upper / "pkg/sub/mod.py").exists()
    assert not (layers.upper / "pkg/core.py").exists()
    assert marks(layers) == set()
    assert os.listdir(layers.work) == []
    assert "pkg/sub/mod.py" not in tree.upper_paths
    assert tree.changes() == []
    check(layers, tree, original)
    monkeypatch.undo()
    tree.copy_up("pkg/sub/mod.py")
    check(layers, tree, original)


def test_copy_up_across_filesystems(layers: Layers) -> None:
    shm = Path("/dev/shm")  # noqa: S108 (a tmpfs on purpose: another filesystem)
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(layers.store.root).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the store")
    original = lower_state(layers)
    with tempfile.TemporaryDirectory(dir=shm) as overlay:
        tree = Layers(layers.store, layers.view, Path(overlay, "u"), Path(overlay, "w")).open()
        tree.copy_up("pkg/data.bin")
        copy = Path(tree.upper_path("pkg/data.bin")).read_bytes()
        assert (digest(copy), merged(tree)) == (original["pkg/data.bin"], original)


def test_open_for_writing_copies_up_then_writes_upper(layers: Layers, tree: MergedTree) -> None:
    original = lower_state(layers)
    write(tree, "pkg/core.py", b"# appended\n", os.O_WRONLY | os.O_APPEND)
    content = LIB["pkg/core.py"] + b"# appended\n"
    assert Path(tree.upper_path("pkg/core.py")).read_bytes() == content
    assert tree.getattr("pkg/core.py", 1).size == len(content)
    tree.copy_up("pkg/core.py")  # a no-op now: the upper copy is the file
    check(layers, tree, {**original, "pkg/core.py": digest(content)})


def test_open_with_truncate_copies_up_without_data(
    layers: Layers, tree: MergedTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = lower_state(layers)
    monkeypatch.setattr(copyup, "_copy_data", _crash)  # no data may be copied
    write(tree, "pkg/run.sh", b"#!/bin/sh\n", os.O_WRONLY | os.O_TRUNC)
    assert tree.getattr("pkg/run.sh", 1).mode == stat.S_IFREG | 0o755
    check(layers, tree, {**original, "pkg/run.sh": digest(b"#!/bin/sh\n")})


def test_create_mkdir_symlink_land_in_upper(layers: Layers, tree: MergedTree) -> None:
    original = lower_state(layers)
    write(tree, "pkg/new.py", b"NEW = 1\n")
    tree.mkdir("pkg/sub/newdir", 0o755)
    os.close(tree.create("pkg/sub/newdir/empty.txt", os.O_WRONLY, 0o600))
    tree.symlink("pkg/link", "core.py")

    assert (layers.upper / "pkg/new.py").read_bytes() == b"NEW = 1\n"
    assert (layers.upper / "pkg/sub/newdir").is_dir()
    assert os.readlink(layers.upper / "pkg/link") == "core.py"
    assert tree.listdir("pkg") == sorted([*PKG_LISTING, "link", "new.py"])
    assert tree.listdir("pkg/sub") == ["__init__.py", "deep", "mod.py", "newdir"]
    assert tree.getattr("pkg/sub/newdir/empty.txt", 1).mode == stat.S_IFREG | 0o600
    assert stat.S_ISLNK(tree.getattr("pkg/link", 1).mode)
    new = ["pkg/new.py", "pkg/sub/newdir", "pkg/sub/newdir/empty.txt", "pkg/link"]
    assert tree.created == set(new)
    assert [tree.inode(p) for p in new] == [0] * len(new)  # the filesystem numbers them
    assert tree.changes() == sorted((Change(p, "added") for p in new), key=lambda c: c.path)
    added = {"pkg/new.py": digest(b"NEW = 1\n"), "pkg/sub/newdir": "dir"}
    added |= {"pkg/sub/newdir/empty.txt": digest(b""), "pkg/link": "-> core.py"}
    check(layers, tree, {**original, **added})


def test_unlink_lower_file_writes_a_whiteout(layers: Layers, tree: MergedTree) -> None:
    original = lower_state(layers)
    core = layers.store.object_path(layers.view.files["pkg/core.py"].digest or "")
    tree.unlink("pkg/core.py")
    assert marks(layers) == {"pkg/.wh.core.py"}
    assert not tree.exists("pkg/core.py")
    assert "core.py" not in tree.listdir("pkg")
    raises_errno(errno.ENOENT, lambda: tree.getattr("pkg/core.py", 1))
    assert core.read_bytes() == LIB["pkg/core.py"]
    assert tree.changes() == [Change("pkg/core.py", "deleted")]
    check(layers, tree, without(original, "pkg/core.py"))

    os.close(tree.create("pkg/core.py", os.O_WRONLY, 0o644))  # a new file, the whiteout gone
    assert marks(layers) == set()
    assert tree.changes() == [Change("pkg/core.py", "modified")]
    check(layers, tree, {**original, "pkg/core.py": digest(b"")})


def test_unlink_upper_only_file_leaves_no_whiteout(layers: Layers, tree: MergedTree) -> None:
    original = lower_state(layers)
    os.close(tree.create("pkg/tmp.txt", os.O_WRONLY, 0o644))
    tree.symlink("pkg/tmp.lnk", "tmp.txt")
    tree.unlink("pkg/tmp.txt")
    tree.unlink("pkg/tmp.lnk")
    assert marks(layers) == set()
    assert tree.changes() == []
    check(layers, tree, original)


def test_rmdir_then_mkdir_makes_an_opaque_directory(layers: Layers, tree: MergedTree) -> None:
    original = lower_state(layers)
    raises_errno(errno.ENOTEMPTY, lambda: tree.rmdir("pkg/sub"))
    raises_errno(errno.ENOTEMPTY, lambda: tree.rmdir("pkg/sub/deep"))
    tree.unlink("pkg/sub/deep/leaf.py")
    assert tree.listdir("pkg/sub/deep") == []
    tree.rmdir("pkg/sub/deep")
    assert marks(layers) == {"pkg/sub/.wh.deep"}
    assert not (layers.upper / "pkg/sub/deep").exists()
    assert tree.listdir("pkg/sub") == ["__init__.py", "mod.py"]
    assert tree.changes() == [Change("pkg/sub/deep", "deleted")]
    check(layers, tree, without(original, "pkg/sub/deep"))

    tree.mkdir("pkg/sub/deep", 0o755)
    assert marks(layers) == {f"pkg/sub/deep/{OPAQUE}"}
    assert tree.listdir("pkg/sub/deep") == []
    assert not tree.exists("pkg/sub/deep/leaf.py")
    assert os.listdir(layers.work) == []
    assert tree.changes() == [Change("pkg/sub/deep", "replaced")]
    check(layers, tree, {**without(original, "pkg/sub/deep"), "pkg/sub/deep": "dir"})


def test_rename_lower_file(layers: Layers, tree: MergedTree) -> None:
    original = lower_state(layers)
    tree.rename("pkg/run.sh", "pkg/sub/launch.sh")
    assert marks(layers) == {"pkg/.wh.run.sh"}
    assert (layers.upper / "pkg/sub/launch.sh").read_bytes() == LIB["pkg/run.sh"]
    assert tree.getattr("pkg/sub/launch.sh", 1).mode == stat.S_IFREG | 0o755
    assert not tree.exists("pkg/run.sh")
    assert tree.changes() == [Change("pkg/run.sh", "deleted"), Change("pkg/sub/launch.sh", "added")]
    expected = without(original, "pkg/run.sh")
    check(layers, tree, {**expected, "pkg/sub/launch.sh": original["pkg/run.sh"]})


def test_replace_over_lower_file_as_bytecode_writes_do(layers: Layers, tree: MergedTree) -> None:
    original = lower_state(layers)
    write(tree, "pkg/core.py.140234", b"REPLACED = True\n")
    tree.rename("pkg/core.py.140234", "pkg/core.py")
    assert not tree.exists("pkg/core.py.140234")
    assert marks(layers) == set()
    assert tree.changes() == [Change("pkg/core.py", "modified")]
    check(layers, tree, {**original, "pkg/core.py": digest(b"REPLACED = True\n")})


def test_rename_upper_directory_moves_its_children(layers: Layers, tree: MergedTree) -> None:
    original = lower_state(layers)
    tree.mkdir("fresh", 0o755)
    tree.mkdir("fresh/inner", 0o755)
    write(tree, "fresh/inner/f.py", b"F = 1\n")
    tree.rename("fresh", "pkg/moved")
    assert not tree.exists("fresh")
    assert {"pkg/moved", "pkg/moved/inner", "pkg/moved/inner/f.py"} <= tree.upper_paths
    assert not any(p.startswith("fresh") for p in tree.upper_paths | tree.created)
    assert (layers.upper / "pkg/moved/inner/f.py").read_bytes() == b"F = 1\n"
    assert tree.inode("pkg/moved/inner/f.py") == 0
    new = {"pkg/moved": "dir", "pkg/moved/inner": "dir", "pkg/moved/inner/f.py": digest(b"F = 1\n")}
    check(layers, tree, {**original, **new})


@pytest.mark.parametrize("removed", [True, False])
def test_rename_directory_onto_a_lower_directory_keeps_lower_hidden(
    layers: Layers, tree: MergedTree, removed: bool
) -> None:
    original = lower_state(layers)
    tree.unlink("pkg/sub/deep/leaf.py")
    if removed:
        tree.rmdir("pkg/sub/deep")
    tree.mkdir("fresh", 0o755)
    os.close(tree.create("fresh/new.py", os.O_WRONLY, 0o644))
    tree.rename("fresh", "pkg/sub/deep")
    assert tree.listdir("pkg/sub/deep") == ["new.py"]
    assert not tree.exists("pkg/sub/deep/leaf.py")
    assert marks(layers) == {f"pkg/sub/deep/{OPAQUE}"}
    expected = {**without(original, "pkg/sub/deep"), "pkg/sub/deep": "dir"}
    check(layers, tree, {**expected, "pkg/sub/deep/new.py": digest(b"")})


def test_setattr_copies_up_and_applies(
    layers: Layers, tree: MergedTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = lower_state(layers)
    tree.setattr("pkg/core.py", mode=stat.S_IFREG | 0o600)
    assert tree.getattr("pkg/core.py", 1).mode == stat.S_IFREG | 0o600
    tree.setattr("pkg/data.bin", size=10)
    assert tree.getattr("pkg/data.bin", 1).size == 10
    when = (1_700_000_000_123_456_789, 1_700_000_001_987_654_321)
    tree.setattr("pkg/run.sh", times_ns=when)
    attrs = tree.getattr("pkg/run.sh", 1)
    assert (attrs.mode, attrs.mtime_ns) == (stat.S_IFREG | 0o755, when[1])
    monkeypatch.setattr(copyup, "_copy_data", _crash)  # truncating to 0 copies no data
    tree.setattr("pkg/sub/mod.py", size=0)
    changed = ["pkg/core.py", "pkg/data.bin", "pkg/run.sh", "pkg/sub/mod.py"]
    assert tree.changes() == [Change(p, "modified") for p in changed]
    new = {"pkg/data.bin": digest(BIG[:10]), "pkg/sub/mod.py": digest(b"")}
    check(layers, tree, {**original, **new})


def _change_everything(tree: MergedTree) -> None:
    write(tree, "pkg/core.py", b"MODIFIED = 1\n", os.O_WRONLY | os.O_TRUNC)
    tree.unlink("pkg/__init__.py")
    os.close(tree.create("pkg/new.py", os.O_WRONLY, 0o644))
    tree.unlink("pkg/sub/deep/leaf.py")
    tree.rmdir("pkg/sub/deep")
    tree.mkdir("pkg/sub/deep", 0o755)
    os.close(tree.create("pkg/sub/deep/other.py", os.O_WRONLY, 0o644))
    tree.rename("tool.py", "pkg/tool.py")
    tree.unlink("pkg/run.sh")
    tree.mkdir("pkg/run.sh", 0o755)  # a directory where a file was


EVERYTHING = [
    Change("pkg/__init__.py", "deleted"),
    Change("pkg/core.py", "modified"),
    Change("pkg/new.py", "added"),
    Change("pkg/run.sh", "replaced"),
    Change("pkg/sub/deep", "replaced"),
    Change("pkg/sub/deep/other.py", "added"),
    Change("pkg/tool.py", "added"),
    Change("tool.py", "deleted"),
]


def test_reset_some_paths(layers: Layers, tree: MergedTree) -> None:
    original = lower_state(layers)
    _change_everything(tree)
    reset = ["pkg/core.py", "pkg/sub/deep", "pkg/sub/deep/other.py"]
    assert tree.reset(["pkg/core.py", "/pkg/sub/"]) == reset
    assert read(tree, "pkg/core.py") == LIB["pkg/core.py"]
    assert tree.listdir("pkg/sub/deep") == ["leaf.py"]
    assert tree.changes() == [c for c in EVERYTHING if c.path not in reset]
    assert {p: v for p, v in merged(tree).items() if p.startswith("pkg/sub/")} == {
        p: v for p, v in original.items() if p.startswith("pkg/sub/")
    }


def test_reset_everything_restores_the_lower_view(layers: Layers, tree: MergedTree) -> None:
    original = lower_state(layers)
    listings = {d: tree.listdir(d) for d in layers.view.dirs}
    _change_everything(tree)
    assert sorted(tree.reset(None)) == [c.path for c in EVERYTHING]
    assert tree.changes() == []
    assert {d: tree.listdir(d) for d in layers.view.dirs} == listings
    assert marks(layers) == set()
    check(layers, tree, original)


def test_changes_and_state_survive_a_new_tree(layers: Layers, tree: MergedTree) -> None:
    _change_everything(tree)
    tree.symlink("pkg/link", "core.py")
    assert tree.changes() == sorted(
        [*EVERYTHING, Change("pkg/link", "added")], key=lambda c: c.path
    )
    again = layers.open()
    assert again.changes() == tree.changes()
    assert again.upper_paths == tree.upper_paths
    assert (again.whiteouts, again.opaque) == ({"pkg/__init__.py", "tool.py"}, {"pkg/sub/deep"})
    assert marks(layers) == {"pkg/.wh.__init__.py", ".wh.tool.py", f"pkg/sub/deep/{OPAQUE}"}
    assert merged(again) == merged(tree)
    assert merged(again)["pkg/link"] == "-> core.py"
