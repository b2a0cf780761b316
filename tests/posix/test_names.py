"""Names in the writable mount: symlinks into it, racing mkdir/rmdir, listings, lengths."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.posix.kit import (
    RUN_TIMEOUT,
    Case,
    outcome,
    pytestmark,
    run,
)

__all__ = ["pytestmark"]


# -- symlinks into the mount ------------------------------------------------------------


def test_removing_a_symlink_into_the_mount_itself_does_not_hang(case: Case) -> None:
    script = 'mkdir d && ln -s "$PWD/d/x" d/link && rm d/link'
    try:
        proc = run("bash", "-c", script, cwd=case.dir, check=False)
    except subprocess.TimeoutExpired:
        case.mnt.recover("symlink into the mount")
        pytest.fail(f"{script!r} hung for {RUN_TIMEOUT}s")
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(case.dir / "d") == []
    assert "app" in os.listdir(case.site)


def test_a_symlink_to_a_lower_file(case: Case) -> None:
    target = case.site / "app" / "data.txt"
    before = target.stat()
    link = case.dir / "link"
    run("ln", "-s", target, link)
    assert os.readlink(link) == str(target)
    assert link.read_text() == "lower data\n"
    listed = run("ls", "-l", link).stdout
    assert listed.startswith("l"), listed
    assert listed.rstrip().endswith(f"link -> {target}"), listed
    run("touch", "-h", "-d", "@1000000000", link)
    assert os.lstat(link).st_mtime == 1_000_000_000
    assert target.stat().st_mtime == before.st_mtime

    # lchmod: what ext4 answers (Linux has no mode on symlinks), and the target is untouched.
    def lchmod(d: Path) -> object:
        (d / "f").write_text("")
        (d / "l").symlink_to(target)
        return outcome(lambda: os.chmod(d / "l", 0o600, follow_symlinks=False))

    case.both(lchmod)
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(before.st_mode)
    run("mv", link, case.dir / "moved")
    assert os.readlink(case.dir / "moved") == str(target)
    run("rm", case.dir / "moved")
    assert os.listdir(case.dir) == ["both-0"]
    assert target.read_text() == "lower data\n"
    case.mnt.verify_store()


# -- concurrent mkdir/rmdir ---------------------------------------------------------------


def test_concurrent_mkdir_rmdir_loops_leave_nothing(case: Case) -> None:
    loop = 'for i in $(seq 1 200); do mkdir -p "$1-$i/a/b" && rmdir "$1-$i/a/b" "$1-$i/a" "$1-$i" || exit 1; done'
    procs = [
        subprocess.Popen(
            ["bash", "-c", loop, "loop", w], cwd=case.dir, stderr=subprocess.PIPE, text=True
        )
        for w in ("w1", "w2")
    ]
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("mkdir/rmdir loops hung")
        assert "Stale file handle" not in err
        assert proc.returncode == 0, err
    assert os.listdir(case.dir) == []


def test_a_listing_survives_changes_made_while_it_is_read(case: Case) -> None:
    # rm -r and git clean unlink while they list: no entry may be skipped or repeated.
    for i in range(3000):
        (case.dir / f"f{i:04}").touch()
    seen = []
    with os.scandir(case.dir) as entries:
        for entry in entries:
            seen.append(entry.name)
            os.unlink(entry.path)
    assert (len(seen), len(set(seen)), os.listdir(case.dir)) == (3000, 3000, [])


def test_racing_the_same_names_is_never_stale(case: Case) -> None:
    # Both loops on the same names: ext4 answers EEXIST, ENOENT or ENOTEMPTY, never ESTALE.
    loop = 'for i in $(seq 1 200); do mkdir -p "w-$i/a/b"; rmdir "w-$i/a/b" "w-$i/a" "w-$i"; done'
    procs = [
        subprocess.Popen(["bash", "-c", loop], cwd=case.dir, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("mkdir/rmdir loops hung")
        assert "Stale file handle" not in err


# -- listings, blocks, holes ----------------------------------------------------------------


def test_dot_and_dot_dot_in_listings_only(case: Case) -> None:
    def listing(d: Path) -> tuple[list[str], list[str]]:
        (d / "f").write_text("")
        (d / "sub").mkdir()
        return sorted(os.listdir(d)), run("ls", "-a", "-1", d).stdout.splitlines()

    assert case.both(listing) == (["f", "sub"], [".", "..", "f", "sub"])
    top = run("ls", "-a", "-1", case.site).stdout.splitlines()
    assert top[:2] == [".", ".."]
    assert "." not in os.listdir(case.site)
    assert ".." not in os.listdir(case.site)
    # and their inodes are the directory's and its parent's
    out = run("ls", "-a", "-i", "-1", case.dir).stdout.split()
    inodes = dict(zip(out[1::2], map(int, out[0::2]), strict=True))
    assert inodes["."] == case.dir.stat().st_ino
    assert inodes[".."] == case.site.stat().st_ino


def test_st_blocks_of_sparse_and_written_files(case: Case) -> None:
    def blocks(d: Path) -> tuple[int, int, int]:
        run("truncate", "-s", "1G", d / "sparse")
        (d / "written").write_bytes(b"\1" * (1 << 20))
        return (
            (d / "sparse").stat().st_size,
            (d / "sparse").stat().st_blocks,
            (d / "written").stat().st_blocks,
        )

    assert case.both(blocks) == (1 << 30, 0, 2048)


def test_seek_data_and_seek_hole(case: Case) -> None:
    def seeks(d: Path) -> tuple[object, object, object]:
        run("truncate", "-s", "1M", d / "holes")
        (d / "data").write_bytes(b"\1" * 10_000)
        fd = os.open(d / "holes", os.O_RDONLY)
        try:
            in_holes = outcome(lambda: os.lseek(fd, 0, os.SEEK_DATA))
        finally:
            os.close(fd)
        fd = os.open(d / "data", os.O_RDONLY)
        try:
            hole = outcome(lambda: os.lseek(fd, 0, os.SEEK_HOLE))
            data = outcome(lambda: os.lseek(fd, 0, os.SEEK_DATA))
        finally:
            os.close(fd)
        return in_holes, hole, data

    assert case.both(seeks) == ("ENXIO", 10_000, 0)


# -- names and paths ---------------------------------------------------------------------------


def test_name_and_path_lengths(case: Case) -> None:
    def names(d: Path) -> tuple[object, object, object]:
        long = d / ("n" * 255)
        made = outcome(lambda: long.write_text("255"))
        read = outcome(long.read_text)
        too_long = outcome(lambda: (d / ("n" * 256)).write_text(""))
        return made, read, too_long

    assert case.both(names) == (3, "255", "ENAMETOOLONG")

    # Paths inside the mount, opened relative to directory fds (so the kernel's PATH_MAX is
    # not what limits them): one well below 4096 bytes works; within a few bytes of it,
    # creating may fail with ENAMETOOLONG (the upper copy's path is longer), nothing worse.
    rel = len(str(case.dir.relative_to(case.site)))
    fds = [os.open(case.dir, os.O_RDONLY | os.O_DIRECTORY)]

    def descend(length: int) -> str:
        """Directories down to where a file's name makes a path of ``length`` bytes."""
        nonlocal rel
        while length - rel > 201 + 50:
            os.mkdir("d" * 200, dir_fd=fds[-1])
            fds.append(os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
            rel += 201
        return "f" * (length - rel - 1)

    def create(name: str) -> int:
        fd = os.open(name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fds[-1])
        try:
            return os.write(fd, b"deep")
        finally:
            os.close(fd)

    try:
        name = descend(4096 - 512)
        assert create(name) == 4
        assert os.stat(name, dir_fd=fds[-1]).st_size == 4
        assert name in os.listdir(fds[-1])
        name = descend(4096 - 4)
        assert outcome(lambda: create(name)) in (4, "ENAMETOOLONG")
    finally:
        for fd in fds:
            os.close(fd)
    assert "app" in os.listdir(case.site)


# -- inode numbers -----------------------------------------------------------------------------


def _drop_caches() -> None:
    """Make the kernel forget every inode nothing holds (it sends FORGET for each)."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("2\n")


def test_upper_files_keep_their_inode_numbers_after_the_kernel_forgets_them(case: Case) -> None:
    # git's index, tar and rsync's hard-link detection and find -inum trust st_ino.
    (case.dir / "f").write_text("x")
    (case.dir / "d").mkdir()
    (case.dir / "d" / "g").write_text("y")
    os.link(case.dir / "f", case.dir / "h")
    names = ["f", "d", "d/g", "h"]
    before = {name: (case.dir / name).stat().st_ino for name in names}
    assert before["f"] == before["h"]
    for _ in range(3):
        _drop_caches()
        assert {name: (case.dir / name).stat().st_ino for name in names} == before


def test_a_removed_file_does_not_lend_its_number_to_the_next(case: Case) -> None:
    # ext4 hands a freed inode number out again at once; the mount must not take that as
    # the same file, however the kernel's cache stands.
    seen = set()
    for i in range(20):
        path = case.dir / f"f{i}"
        path.write_text(str(i))
        seen.add(path.stat().st_ino)
        _drop_caches()
        assert path.read_text() == str(i)
        path.unlink()
    assert len(seen) == 20


# -- link counts of directories ---------------------------------------------------------------


def _subdirs(path: Path) -> int:
    return sum(1 for e in os.scandir(path) if e.is_dir(follow_symlinks=False))


def test_a_directory_links_its_subdirectories_in_every_layer(case: Case) -> None:
    # 2 + subdirectories, as ext4 counts them: find's leaf optimisation relies on it.
    app = case.site / "app"
    assert app.stat().st_nlink == 2 + _subdirs(app) >= 3  # lower only: app/sub
    (app / "new").mkdir()  # now merged: the upper layer has app/ too
    assert app.stat().st_nlink == 2 + _subdirs(app)
    (app / "new").rmdir()
    assert app.stat().st_nlink == 2 + _subdirs(app)

    def with_a_subdirectory(d: Path) -> int:
        (d / "x").mkdir()
        return d.stat().st_nlink

    assert case.both(with_a_subdirectory) == 3


def test_a_directory_removed_while_open(case: Case) -> None:
    def removed_while_open(d: Path) -> tuple[object, ...]:
        (d / "gone").mkdir()
        fd = os.open(d / "gone", os.O_RDONLY | os.O_DIRECTORY)
        try:
            (d / "gone").rmdir()
            info = os.fstat(fd)
            return (info.st_nlink, stat.S_ISDIR(info.st_mode), outcome(lambda: os.listdir(fd)))
        finally:
            os.close(fd)

    assert case.both(removed_while_open) == (0, True, [])
