"""The writable mount behaves as a POSIX filesystem, as ext4 would answer.

One real mount (by the CLI, ``--allow-other``) serves the whole module; every test works in
its own directory of it, and where ext4's answer matters, ``Case.both`` runs the same check
on a plain directory of /tmp (ext4 or tmpfs) and on the mount and compares the results.
A watchdog kills the mount's daemon if a test hangs (so its calls fail with ENOTCONN instead
of blocking the suite), and the next test mounts again. Every subprocess has a timeout.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import mmap
import os
import pwd
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from tests.mountkit import (
    Env,
    environ_for,
    force_unmount,
    make_project,
    needs_fuse,
    pkgfs_processes,
)

pytestmark = [
    needs_fuse,
    pytest.mark.skipif(os.geteuid() != 0, reason="owners, devices and other users: needs root"),
]

T = TypeVar("T")

USER = "pkgfs-test"  # the throwaway user of test_nonroot.py
TEST_TIMEOUT = 45.0  # seconds a test may take before the watchdog kills the daemon
RUN_TIMEOUT = 20.0  # seconds for a subprocess
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
NOBODY = 65534


def _digest(root: Path) -> dict[str, str]:
    found = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@dataclass
class Mount:
    env: Env
    plain: Path  # a plain directory on the machine's own filesystem, to compare
    objects: dict[str, str] = field(default_factory=dict)  # the store's objects when mounted
    recovered: list[str] = field(default_factory=list)

    @property
    def site(self) -> Path:
        return self.env.site

    @property
    def store(self) -> Path:
        return Path(self.env.env["PKGFS_STORE"])

    def mount(self) -> None:
        self.env.pkgfs("mount", self.site, "--allow-other")

    def unmount(self) -> None:
        self.env.pkgfs("unmount", self.site)

    def alive(self) -> bool:
        """The mount answers (asked by a process of its own, which cannot hang us)."""
        try:
            proc = run("ls", "-a", self.site, check=False, timeout=5)
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == 0 and os.path.ismount(self.site) and "app" in proc.stdout

    def kill_daemon(self) -> None:
        for pid in pkgfs_processes(self.env.env):
            os.kill(pid, signal.SIGKILL)
        force_unmount(self.site)

    def recover(self, why: str) -> None:
        self.recovered.append(why)
        self.kill_daemon()
        self.mount()

    def verify_store(self) -> None:
        result = self.env.pkgfs("store", "verify", check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert _digest(self.store / "objects-v1") == self.objects


def run(
    *args: str | Path,
    cwd: Path | None = None,
    check: bool = True,
    timeout: float = RUN_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(map(str, args)), capture_output=True, text=True, cwd=cwd, timeout=timeout, check=False
    )
    if check:
        assert proc.returncode == 0, f"{args}: {proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def mnt() -> Iterator[Mount]:
    # Below /tmp with every directory 0755: another user must reach the mountpoint.
    root = Path(tempfile.mkdtemp(prefix="pkgfs-posix-", dir="/tmp"))
    root.chmod(0o755)
    env = make_project(root / "project", environ_for(root))
    (root / "plain").mkdir()
    mount = Mount(env, root / "plain")
    try:
        mount.mount()
        mount.objects = _digest(mount.store / "objects-v1")
        yield mount
    finally:
        mount.kill_daemon()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Case:
    mnt: Mount
    dir: Path  # this test's directory in the mount
    plain: Path  # and on the plain filesystem

    @property
    def site(self) -> Path:
        return self.mnt.site

    def both(self, fn: Callable[[Path], T]) -> T:
        """``fn`` on a fresh plain directory and on a fresh directory of the mount: equal."""
        n = len(list(self.plain.iterdir()))
        plain, mounted = self.plain / f"both-{n}", self.dir / f"both-{n}"
        plain.mkdir()
        mounted.mkdir()
        expected = fn(plain)
        got = fn(mounted)
        assert got == expected, f"mount answered {got!r}, the plain directory {expected!r}"
        return got


@pytest.fixture
def case(mnt: Mount, request: pytest.FixtureRequest) -> Iterator[Case]:
    if not mnt.alive():
        mnt.recover(f"not answering before {request.node.name}")
    name = "t-" + re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)
    (mnt.site / name).mkdir()
    (mnt.plain / name).mkdir()
    fired: list[bool] = []

    def watchdog() -> None:
        fired.append(True)
        mnt.kill_daemon()

    timer = threading.Timer(TEST_TIMEOUT, watchdog)
    timer.start()
    try:
        yield Case(mnt, mnt.site / name, mnt.plain / name)
    finally:
        timer.cancel()
    assert not fired, f"hung for {TEST_TIMEOUT}s: the daemon was killed"
    assert mnt.alive(), "the mount no longer answers"


def outcome(fn: Callable[[], T]) -> T | str:
    """The result of ``fn``, or the name of the errno it failed with."""
    try:
        return fn()
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e))
    except NotImplementedError:
        return "NotImplementedError"


def write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


# -- 1. symlinks into the mount ------------------------------------------------------------


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


# -- 2. concurrent mkdir/rmdir ---------------------------------------------------------------


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


# -- 3. open files live by their inode -------------------------------------------------------


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


# -- 4. owners ---------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class User:
    uid: int
    gid: int

    def run(self, fn: Callable[[], object], timeout: float = RUN_TIMEOUT) -> object:
        """``fn()`` in a forked child running as this user: its result, or the errno's name."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            try:
                os.close(r)
                os.setgroups([])
                os.setresgid(self.gid, self.gid, self.gid)
                os.setresuid(self.uid, self.uid, self.uid)
                data = json.dumps(["ok", outcome(fn)])
            except BaseException as e:
                data = json.dumps(["error", repr(e)])
            os.write(w, data.encode())
            os._exit(0)
        os.close(w)
        try:
            ready, _, _ = select.select([r], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"{fn} hung as uid {self.uid}")
            chunks = []
            while chunk := os.read(r, 65536):
                chunks.append(chunk)
        finally:
            os.close(r)
            os.waitpid(pid, 0)
        kind, value = json.loads(b"".join(chunks))
        assert kind == "ok", value
        return value


@pytest.fixture(scope="module")
def user() -> User:
    if shutil.which("useradd") is None and not _has_user():
        pytest.skip("needs useradd")
    if not _has_user():
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True, timeout=RUN_TIMEOUT,
        )  # fmt: skip
    entry = pwd.getpwnam(USER)
    return User(entry.pw_uid, entry.pw_gid)


def _has_user() -> bool:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return False
    return True


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


# -- 5. fifos, sockets, hard links, devices ----------------------------------------------------


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


# -- 6. times and umask ------------------------------------------------------------------------


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


# -- 7. O_DIRECT, RENAME_EXCHANGE, xattrs, fallocate -------------------------------------------


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


# -- 8. listings, blocks, holes ----------------------------------------------------------------


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


# -- 9. the store ------------------------------------------------------------------------------


def test_zz_the_store_never_changed(mnt: Mount) -> None:
    assert mnt.alive()
    mnt.verify_store()
    assert not mnt.recovered, f"the mount had to be recovered: {mnt.recovered}"
