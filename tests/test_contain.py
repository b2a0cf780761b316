"""Containment: safe names, and writes that never leave their root nor replace a file."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from pkgfs.store.contain import (
    Made,
    Root,
    contained,
    is_plain_name,
    is_plain_path,
    is_safe_path,
    unsafe_path_in,
)
from pkgfs.store.errors import UnsafePathError
from pkgfs.store.fetch.download import download
from pkgfs.store.lock.model import LockedWheel, WheelLink
from tests.conftest import snapshot
from tests.indexserver import IndexServer

PLAIN = ["tool", "app-cli", "python3.11", "a b", "x=", "é"]
NOT_PLAIN = ["", ".", "..", ".hidden", "../x", "/etc/x", "sub/tool", "a\\b", "a\x00b", "/"]
SAFE = ["a", "a/b", ".libs/x.so", "pkg/.hidden", "a./b", "..a/b"]
UNSAFE = ["", "/a", "a/", "a//b", "./a", "a/.", "a/./b", "a/..", "../a", "a/../b", "a\\b", "a\0b"]


@pytest.mark.parametrize("name", PLAIN)
def test_plain_names(name: str) -> None:
    assert is_plain_name(name)
    assert is_plain_path(f"bin/{name}")


@pytest.mark.parametrize("name", NOT_PLAIN)
def test_names_that_are_not_plain(name: str) -> None:
    assert not is_plain_name(name)
    if "/" not in name:
        assert not is_plain_path(f"bin/{name}")


def test_safe_paths_checked_one_by_one_and_all_at_once() -> None:
    for path in SAFE:
        assert is_safe_path(path), path
    for path in UNSAFE:
        assert not is_safe_path(path), path
        assert unsafe_path_in([*SAFE, path, *SAFE]) == path
    assert unsafe_path_in(SAFE) is None
    assert unsafe_path_in([]) is None


@pytest.fixture
def root_dir(tmp_path: Path) -> Path:
    path = tmp_path / "venv"
    (path / "bin").mkdir(parents=True)
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    (path / "precious").write_text("precious\n")
    return path


def test_create_file_writes_whole_files_with_their_mode(root_dir: Path) -> None:
    with Root(root_dir) as root:
        made = root.create_file("bin/tool", b"#!/bin/sh\n", 0o755)
    assert made == Made("bin/tool", sha256=made.sha256 if made else None)
    assert (root_dir / "bin" / "tool").read_bytes() == b"#!/bin/sh\n"
    assert (root_dir / "bin" / "tool").stat().st_mode & 0o777 == 0o755
    assert sorted(os.listdir(root_dir / "bin")) == ["tool"]  # no temporary left


def test_create_never_replaces_a_file_a_symlink_or_a_dangling_symlink(
    root_dir: Path, outside: Path
) -> None:
    bin_dir = root_dir / "bin"
    (bin_dir / "python").symlink_to("/usr/bin/python3")
    (bin_dir / "activate").write_text("# the venv's own\n")
    (bin_dir / "dangling").symlink_to(outside / "created-through-the-link")
    (bin_dir / "precious").symlink_to(outside / "precious")
    before = snapshot(root_dir.parent)
    with Root(root_dir) as root:
        for name in ("python", "activate", "dangling", "precious"):
            assert root.create_file(f"bin/{name}", b"evil\n", 0o755) is None
        assert root.create_symlink("bin/python", "/evil") is None
    assert snapshot(root_dir.parent) == before


def test_nothing_is_followed_through_a_symlinked_directory(root_dir: Path, outside: Path) -> None:
    (root_dir / "share").symlink_to(outside)
    before = snapshot(outside)
    with Root(root_dir) as root:
        with pytest.raises(OSError, match="Not a directory"):  # O_NOFOLLOW
            root.create_file("share/new", b"x", 0o644)
        with pytest.raises(OSError, match="Not a directory"):
            root.create_symlink("share/link", "/etc")
        assert not root.remove(Made("share/precious", symlink="x"))
    assert snapshot(outside) == before


@pytest.mark.parametrize("path", ["../outside/x", "/etc/x", "bin/../x", "bin/.x", "bin//x", ""])
def test_unsafe_paths_are_refused(root_dir: Path, path: str) -> None:
    with Root(root_dir) as root:
        with pytest.raises(UnsafePathError, match="not a path of plain names"):
            root.create_file(path, b"x", 0o644)
        with pytest.raises(UnsafePathError):
            root.create_symlink(path, "x")
        assert not root.remove(Made(path, sha256="0" * 64))


def _made(made: Made | None) -> Made:
    assert made is not None
    return made


def test_remove_only_what_is_still_exactly_what_was_made(root_dir: Path, outside: Path) -> None:
    bin_dir = root_dir / "bin"
    with Root(root_dir) as root:
        kept, replaced, edited, relinked, linked = (
            _made(root.create_file("bin/kept", b"one\n", 0o755)),
            _made(root.create_file("bin/replaced", b"two\n", 0o755)),
            _made(root.create_file("bin/edited", b"three\n", 0o755)),
            _made(root.create_symlink("relinked", str(outside))),
            _made(root.create_symlink("linked", str(outside))),
        )
        (bin_dir / "replaced").unlink()
        (bin_dir / "replaced").symlink_to(outside / "precious")  # same bytes through a link
        (bin_dir / "edited").write_text("three, edited\n")
        (root_dir / "relinked").unlink()
        (root_dir / "relinked").symlink_to("/elsewhere")
        removed = [root.remove(m) for m in (kept, replaced, edited, relinked, linked)]
        assert removed == [True, False, False, False, True]
        assert not root.remove(kept)  # gone already
    assert sorted(os.listdir(bin_dir)) == ["edited", "replaced"]
    assert os.readlink(root_dir / "relinked") == "/elsewhere"
    assert (outside / "precious").read_text() == "precious\n"  # a link removed, not followed


def test_made_round_trips_through_json() -> None:
    for made in (Made("bin/x", sha256="ab" * 32), Made("share", symlink="/venv/site/.d/share")):
        assert Made.from_json(made.to_json()) == made
    for bad in (
        {"path": "x"},
        {"path": "x", "sha256": "a", "symlink": "b"},
        ["x"],
        {"sha256": "a"},
    ):
        with pytest.raises(ValueError, match="not a made path"):
            Made.from_json(bad)


@pytest.mark.parametrize(
    "filename", ["../escaped-1.0-py3-none-any.whl", "{tmp}/abs-1.0-py3-none-any.whl"]
)
def test_a_download_named_by_a_lock_stays_in_its_directory(
    tmp_path: Path, make_wheel: Callable[..., Path], filename: str
) -> None:
    wheel_file = make_wheel()
    digest = hashlib.sha256(wheel_file.read_bytes()).hexdigest()
    directory = tmp_path / "downloads"
    directory.mkdir()
    before = snapshot(tmp_path)
    with IndexServer([wheel_file]) as server:
        # A real server offers the bytes the lock names, under a name the lock made up.
        url = f"{server.url}/files/{wheel_file.name}"
        link = WheelLink(filename.format(tmp=tmp_path), url, digest)
        wheel = LockedWheel(name="demo", version="1.0", wheel=link, hashes=frozenset({digest}))  # type: ignore[arg-type]
        with pytest.raises(UnsafePathError, match="not one plain file name"):
            download(wheel, directory)
    assert snapshot(tmp_path) == before


def test_contained_refuses_a_symlink_in_place(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "x.whl").symlink_to(outside / "precious")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        contained(tmp_path, "x.whl")
    assert contained(tmp_path, "y.whl") == tmp_path / "y.whl"
