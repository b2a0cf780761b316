"""Owners, other users, special files, hard links, devices, times and the umask."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

from tests.posix.kit import (
    NOBODY,
    RUN_TIMEOUT,
    Case,
    User,
    pytestmark,
    run,
)

__all__ = ["pytestmark"]


# -- owners ---------------------------------------------------------------------------------


def test_chown_is_stored_and_survives_a_remount(case: Case) -> None:
    f, d = case.dir / "f", case.dir / "d"
    f.write_text("x")
    d.mkdir()
    os.chown(f, NOBODY, NOBODY)
    os.chown(d, NOBODY, 0)
    lower = case.site / "app" / "sub" / "__init__.py"
    os.chown(lower, NOBODY, NOBODY)
    owners = {p: (p.stat().st_uid, p.stat().st_gid) for p in (f, d, lower)}
    assert owners == {f: (NOBODY, NOBODY), d: (NOBODY, 0), lower: (NOBODY, NOBODY)}
    case.mnt.unmount()
    case.mnt.mount()
    assert {p: (p.stat().st_uid, p.stat().st_gid) for p in (f, d, lower)} == owners
    case.mnt.verify_store()


def test_files_another_user_creates_are_theirs(case: Case, user: User) -> None:
    shared = case.dir / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    theirs, root_owned = shared / "theirs", shared / "roots"
    root_owned.write_text("root's\n")
    root_owned.chmod(0o644)

    def as_user() -> object:
        theirs.write_text("mine\n")
        (shared / "dir").mkdir()
        with open(theirs, "a") as f:
            f.write("more\n")
        return theirs.read_text()

    assert user.run(as_user) == "mine\nmore\n"
    for path in (theirs, shared / "dir"):
        assert (path.stat().st_uid, path.stat().st_gid) == (user.uid, user.gid), path
    assert user.run(root_owned.read_text) == "root's\n"
    assert user.run(lambda: root_owned.write_text("theirs")) == "EACCES"
    assert user.run(lambda: os.chmod(root_owned, 0o600)) == "EPERM"
    assert root_owned.read_text() == "root's\n"
    # A lower file is root's: readable, not writable.
    lower = case.site / "app" / "data.txt"
    assert user.run(lower.read_text) == "lower data\n"
    assert user.run(lambda: open(lower, "a").close()) == "EACCES"
    assert user.run(lambda: os.mkdir(case.dir / "nope")) == "EACCES"


def test_a_set_group_id_directory_gives_its_group(case: Case, user: User) -> None:
    def sgid(d: Path) -> object:
        s = d / "s"
        s.mkdir()
        os.chown(s, 0, NOBODY)
        s.chmod(0o2777)
        assert user.run(lambda: (s / "f").write_text("")) == 0
        assert user.run(lambda: os.mkdir(s / "sub")) is None
        return [
            (
                (s / n).stat().st_uid == user.uid,
                (s / n).stat().st_gid,
                (s / n).stat().st_mode & 0o2000,
            )
            for n in ("f", "sub")
        ]

    assert case.both(sgid) == [(True, NOBODY, 0), (True, NOBODY, 0o2000)]


# -- fifos, sockets, hard links, devices ----------------------------------------------------


def test_a_fifo(case: Case) -> None:
    path = case.dir / "fifo"
    os.mkfifo(path, 0o600)
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(w, b"through the fifo")
            assert os.read(r, 100) == b"through the fifo"
        finally:
            os.close(w)
    finally:
        os.close(r)
    assert stat.S_ISFIFO(os.lstat(path).st_mode)


def test_a_unix_socket(case: Case) -> None:
    path = case.dir / "sock"
    assert len(str(path)) < 100, "too long for sun_path"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(RUN_TIMEOUT)
            client.connect(str(path))
            conn, _ = server.accept()
            with conn:
                client.sendall(b"ping")
                assert conn.recv(10) == b"ping"
                conn.sendall(b"pong")
                assert client.recv(10) == b"pong"
    path.unlink()
    assert os.listdir(case.dir) == []


def test_a_hard_link_shares_the_inode(case: Case) -> None:
    a, b = case.dir / "a", case.dir / "b"
    a.write_bytes(b"one")
    os.link(a, b)
    sa, sb = a.stat(), b.stat()
    assert sa.st_ino == sb.st_ino
    assert sa.st_nlink == sb.st_nlink == 2
    with open(b, "ab") as f:
        f.write(b" two")
    assert a.read_bytes() == b"one two"
    os.chmod(a, 0o600)
    assert stat.S_IMODE(b.stat().st_mode) == 0o600
    a.unlink()
    assert b.stat().st_nlink == 1
    assert b.read_bytes() == b"one two"


def test_a_hard_link_to_a_lower_file(case: Case) -> None:
    lower = case.site / "ns" / "a" / "__init__.py"
    link = case.dir / "linked.py"
    os.link(lower, link)
    assert lower.stat().st_ino == link.stat().st_ino
    assert lower.stat().st_nlink == link.stat().st_nlink == 2
    assert link.read_text() == "A = 'a'\n"
    link.write_text("A = 'changed'\n")
    assert lower.read_text() == "A = 'changed'\n"
    case.mnt.verify_store()


def test_a_character_device_as_root(case: Case) -> None:
    def mknod(d: Path) -> object:
        os.mknod(d / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        info = os.lstat(d / "null")
        return stat.S_ISCHR(info.st_mode), stat.S_IMODE(info.st_mode), info.st_rdev

    assert case.both(mknod) == (True, 0o600, os.makedev(1, 3))


# -- times and umask ------------------------------------------------------------------------


def test_ctime_moves_on_chmod_chown_link_and_rename(case: Case) -> None:
    def moves(d: Path) -> dict[str, bool]:
        f = d / "f"
        f.write_text("x")

        def chmod() -> Path:
            os.chmod(f, 0o600)
            return f

        def chown() -> Path:
            os.chown(f, NOBODY, NOBODY)
            return f

        def link() -> Path:
            os.link(f, d / "g")
            return f

        def rename() -> Path:
            os.rename(f, d / "h")
            return d / "h"

        ops = {"chmod": chmod, "chown": chown, "link": link, "rename": rename}
        found = {}
        before = f.stat().st_ctime_ns
        for name, op in ops.items():
            time.sleep(0.02)
            after = op().stat().st_ctime_ns
            found[name] = after > before
            before = after
        return found

    assert case.both(moves) == {"chmod": True, "chown": True, "link": True, "rename": True}


def test_atime_is_stored(case: Case) -> None:
    def atime(d: Path) -> tuple[float, bool]:
        f = d / "f"
        f.write_text("x")
        mtime = f.stat().st_mtime_ns
        run("touch", "-a", "-d", "@1000000000", f)
        info = f.stat()
        return info.st_atime, info.st_mtime_ns == mtime

    assert case.both(atime) == (1_000_000_000, True)
    lower = case.site / "app" / "sub" / "mod.py"
    mtime = lower.stat().st_mtime_ns
    os.utime(lower, ns=(2_000_000_000 * 10**9, mtime))
    assert (lower.stat().st_atime_ns, lower.stat().st_mtime_ns) == (2_000_000_000 * 10**9, mtime)


def test_the_umask_alone_applies(case: Case) -> None:
    def modes(d: Path) -> list[int]:
        found = []
        for mask in (0, 0o022, 0o077):
            old = os.umask(mask)
            try:
                os.close(os.open(d / f"f{mask}", os.O_CREAT | os.O_WRONLY, 0o666))
                os.mkdir(d / f"d{mask}", 0o777)
            finally:
                os.umask(old)
            found += [stat.S_IMODE((d / f"f{mask}").stat().st_mode)]
            found += [stat.S_IMODE((d / f"d{mask}").stat().st_mode)]
        return found

    assert case.both(modes) == [0o666, 0o777, 0o644, 0o755, 0o600, 0o700]
