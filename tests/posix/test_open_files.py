"""Open files live by their inode; O_DIRECT, RENAME_EXCHANGE, xattrs, fallocate."""

from __future__ import annotations

import ctypes
import mmap
import os
import stat
import tempfile
from pathlib import Path

from tests.posix.kit import (
    AT_FDCWD,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    Case,
    outcome,
    pytestmark,
    run,
)

__all__ = ["pytestmark"]


# -- open files live by their inode -------------------------------------------------------


def test_an_unlinked_open_file_lives_until_closed(case: Case) -> None:
    path = case.dir / "u"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert os.write(fd, b"hello") == 5
        os.unlink(path)
        assert not os.path.lexists(path)
        info = os.fstat(fd)
        assert info.st_nlink == 0
        assert info.st_size == 5
        assert os.pread(fd, 100, 0) == b"hello"
        assert os.write(fd, b" world") == 6
        assert os.pread(fd, 100, 0) == b"hello world"
        assert os.fstat(fd).st_size == 11
        os.fchmod(fd, 0o600)
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
    finally:
        os.close(fd)
    assert os.listdir(case.dir) == []


def test_temporary_file(case: Case) -> None:
    with tempfile.TemporaryFile(dir=case.dir) as f:
        f.write(b"x" * 10_000 + b"end")
        f.seek(0)
        assert f.read() == b"x" * 10_000 + b"end"
        f.seek(10_000)
        f.write(b"END")
        f.seek(0)
        assert f.read()[-4:] == b"xEND"
        assert os.fstat(f.fileno()).st_nlink == 0
        assert os.listdir(case.dir) == []
    assert os.listdir(case.dir) == []


def test_rename_over_an_open_file_keeps_its_old_content(case: Case) -> None:
    a, b = case.dir / "a", case.dir / "b"
    a.write_bytes(b"new content")
    b.write_bytes(b"old")
    fd = os.open(b, os.O_RDWR)
    try:
        os.rename(a, b)
        assert b.read_bytes() == b"new content"
        assert os.fstat(fd).st_size == 3
        assert os.fstat(fd).st_nlink == 0
        assert os.fstat(fd).st_ino != b.stat().st_ino
        assert os.pread(fd, 100, 0) == b"old"
        os.pwrite(fd, b"OLD!", 0)
        assert os.pread(fd, 100, 0) == b"OLD!"
        assert b.read_bytes() == b"new content"
    finally:
        os.close(fd)
    assert os.listdir(case.dir) == ["b"]


def test_an_unlinked_open_lower_file_reads_the_old_content(case: Case) -> None:
    path = case.site / "app" / "cli.py"
    content = path.read_bytes()
    fd = os.open(path, os.O_RDONLY)
    try:
        path.unlink()
        assert not os.path.lexists(path)
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 1000, 0) == content
        assert os.read(fd, 1000) == content
    finally:
        os.close(fd)
    assert "cli.py" not in os.listdir(case.site / "app")
    case.mnt.verify_store()


# -- O_DIRECT, RENAME_EXCHANGE, xattrs, fallocate -------------------------------------------


def test_o_direct_with_dd(case: Case) -> None:
    f = case.dir / "d1"
    run("dd", "if=/dev/zero", f"of={f}", "bs=4096", "count=4", "oflag=direct")
    assert f.stat().st_size == 16384
    out = run("dd", f"if={f}", "of=/dev/null", "bs=4096", "iflag=direct")
    assert "16384 bytes" in out.stderr


def test_o_direct_with_aligned_buffers(case: Case) -> None:
    f = case.dir / "direct"
    data = bytes(range(256)) * 32  # 8192 bytes
    fd = os.open(f, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    try:
        with mmap.mmap(-1, len(data)) as out, mmap.mmap(-1, len(data)) as back:
            out.write(data)
            assert os.pwritev(fd, [out], 0) == len(data)
            assert os.preadv(fd, [back], 0) == len(data)
            assert back[:] == data
    finally:
        os.close(fd)
    assert f.read_bytes() == data


def renameat2(a: Path, b: Path, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(a))


def test_rename_exchange(case: Case) -> None:
    def exchange(d: Path) -> object:
        a, b, sub = d / "a", d / "b", d / "sub"
        a.write_text("A")
        b.write_text("B")
        sub.mkdir()
        (sub / "inside").write_text("in")
        ino_a = a.stat().st_ino
        swapped = outcome(lambda: renameat2(a, b, RENAME_EXCHANGE))
        files = (a.read_text(), b.read_text(), b.stat().st_ino == ino_a)
        with_dir = outcome(lambda: renameat2(a, sub, RENAME_EXCHANGE))
        after = (a.is_dir(), sorted(os.listdir(a)) if a.is_dir() else None, sub.is_file())
        noreplace = outcome(lambda: renameat2(b, d / "sub", RENAME_NOREPLACE))
        return swapped, files, with_dir, after, noreplace

    assert case.both(exchange) == (
        None,
        ("B", "A", True),
        None,
        (True, ["inside"], True),
        "EEXIST",
    )


def test_rename_exchange_with_a_lower_file(case: Case) -> None:
    upper, lower = case.dir / "mine.py", case.site / "app" / "sub" / "__init__.py"
    upper.write_text("MINE = 1\n")
    renameat2(upper, lower, RENAME_EXCHANGE)
    assert lower.read_text() == "MINE = 1\n"
    assert upper.read_text() == ""
    case.mnt.verify_store()


def test_user_xattrs_on_an_upper_file(case: Case) -> None:
    def xattrs(d: Path) -> object:
        f = d / "f"
        f.write_text("x")
        os.setxattr(f, "user.k", b"v")
        got = os.getxattr(f, "user.k")
        listed = "user.k" in os.listxattr(f)
        os.setxattr(f, "user.k", b"w", os.XATTR_REPLACE)
        replaced = os.getxattr(f, "user.k")
        create = outcome(lambda: os.setxattr(f, "user.k", b"x", os.XATTR_CREATE))
        os.removexattr(f, "user.k")
        gone = outcome(lambda: os.getxattr(f, "user.k"))
        return got, listed, replaced, create, gone, "user.k" in os.listxattr(f)

    assert case.both(xattrs) == (b"v", True, b"w", "EEXIST", "ENODATA", False)


def test_user_xattrs_through_the_fd_of_an_unlinked_file(case: Case) -> None:
    def unlinked(d: Path) -> object:
        fd = os.open(d / "f", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.setxattr(fd, "user.a", b"1")
            os.unlink(d / "f")
            os.setxattr(fd, "user.b", b"2")
            got = os.getxattr(fd, "user.a"), os.getxattr(fd, "user.b")
            os.removexattr(fd, "user.a")
            return got, sorted(n for n in os.listxattr(fd) if n.startswith("user."))
        finally:
            os.close(fd)

    assert case.both(unlinked) == ((b"1", b"2"), ["user.b"])


def test_user_xattrs_on_a_lower_file(case: Case) -> None:
    lower = case.site / "app" / "sub" / "mod.py"
    content = lower.read_bytes()
    assert outcome(lambda: os.getxattr(lower, "user.k")) == "ENODATA"
    os.setxattr(lower, "user.k", b"v")
    assert os.getxattr(lower, "user.k") == b"v"
    assert "user.k" in os.listxattr(lower)
    assert lower.read_bytes() == content
    os.removexattr(lower, "user.k")
    assert "user.k" not in os.listxattr(lower)
    case.mnt.verify_store()


def test_posix_fallocate_grows_the_file(case: Case) -> None:
    def grow(d: Path) -> tuple[int, bool]:
        fd = os.open(d / "f", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, 1 << 20)
            info = os.fstat(fd)
            return info.st_size, info.st_blocks >= 2048
        finally:
            os.close(fd)

    assert case.both(grow) == (1 << 20, True)


def test_fallocate_command_grows_the_file(case: Case) -> None:
    def grow(d: Path) -> tuple[int, str, int, bool]:
        proc = run("fallocate", "-l", "1M", d / "f", check=False)
        info = (d / "f").stat() if (d / "f").exists() else None
        return (
            proc.returncode,
            proc.stderr.replace(str(d), "D"),
            info.st_size if info else -1,
            bool(info and info.st_blocks >= 2048),
        )

    assert case.both(grow) == (0, "", 1 << 20, True)
