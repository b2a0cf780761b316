"""A mount's lifecycle against the kernel: the mount table read as bytes, all-or-nothing
mounting (a full disk, Ctrl-C), the locks, read-only status and diff, versioned state
files, and unmounting a busy mount. Real mounts, real processes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkgfs.vfs.env.state import mount_dir
from pkgfs.vfs.fuse.mounts import mountpoints
from tests.conftest import PKGFS, snapshot
from tests.mountkit import (
    Env,
    fails,
    force_unmount,
    make_project,
    needs_fuse,
    pkgfs_processes,
)
from tests.test_mount import base_env, mounted, project
from tests.wheelmaker import WheelMaker

__all__ = ["base_env", "mounted", "project"]  # fixtures used here, defined in test_mount

pytestmark = needs_fuse


def mounted_now(path: Path) -> bool:
    return os.fsencode(os.path.realpath(path)) in mountpoints()


def state_of(env: Env) -> Path:
    return mount_dir(env.site, env.env)


def wait_until(condition: object, timeout: float = 10.0) -> bool:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


# -- the mount table --------------------------------------------------------------------------


def test_mountinfo_escapes_are_decoded_as_bytes(tmp_path: Path) -> None:
    table = tmp_path / "mountinfo"
    table.write_bytes(
        b"36 35 98:0 / /mnt/proj\\040\xc3\xa9\\040x rw,noatime master:1 - fuse pkgfs rw\n"
        b"37 35 98:0 / /a\\011b\\012c\\134d rw - ext4 /dev/x rw\n"
    )
    assert mountpoints(str(table)) == [b"/mnt/proj \xc3\xa9 x", b"/a\tb\nc\\d"]


def test_a_mountpoint_with_an_accent_and_spaces(tmp_path: Path, base_env: dict[str, str]) -> None:
    env = make_project(tmp_path / "proj é x", base_env)
    try:
        env.pkgfs("mount", env.site)
        assert mounted_now(env.site)
        (row,) = env.status()
        assert row["state"] == "ok"
        assert "already mounted, up to date" in env.pkgfs("mount", env.site).stdout
        env.pkgfs("unmount", env.site)
        assert not mounted_now(env.site)
        env.pkgfs("mount", env.site)  # and again
        assert env.run(env.python, "-c", "import app; print(app.VALUE)") == "1\n"
        os.kill(int(str(env.status()[0]["pid"])), signal.SIGKILL)
        assert wait_until(lambda: env.status()[0]["state"] == "stale")
        assert "cleared a stale mount" in env.pkgfs("mount", env.site).stderr
    finally:
        force_unmount(env.site)


# -- all or nothing ---------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of the test's own, with room for 1,000 files."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,nr_inodes=1000", "pkgfs-test", disk], check=True
    )
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", disk], check=False)


def fill(disk: Path) -> None:
    """Fill ``disk``: its bytes, then its inodes."""
    with open(disk / "filler", "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)
    (disk / "inodes").mkdir()
    with contextlib.suppress(OSError):
        for i in range(100_000):
            (disk / "inodes" / str(i)).touch()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")
def test_a_full_disk_after_the_mount_undoes_it(small_disk: Path, base_env: dict[str, str]) -> None:
    # The venv lives on a full disk: the mount succeeds, writing its scripts fails.
    env = make_project(small_disk / "project", base_env)
    try:
        (env.venv / ".pkgfs-venv").write_text("1" * 32 + "\n")  # as a first mount marks it
        fill(small_disk)
        error = fails(env, "mount", env.site)
        assert "cannot write the venv's scripts and links" in error
        assert "No space left on device" in error
        assert not mounted_now(env.site)
        assert not state_of(env).exists()
        assert sorted(os.listdir(env.venv / "bin"))[:1] == ["Activate.ps1"]
        assert not (env.venv / "bin" / "app-cli").exists()
        (small_disk / "filler").unlink()
        shutil.rmtree(small_disk / "inodes")
        env.pkgfs("mount", env.site)  # nothing was left in the way
        assert (env.venv / "bin" / "app-cli").exists()
    finally:
        force_unmount(env.site)


def test_a_full_disk_before_the_venv_is_marked_is_one_line(
    small_disk: Path, base_env: dict[str, str]
) -> None:
    env = make_project(small_disk / "project", base_env)
    try:
        fill(small_disk)
        error = fails(env, "mount", env.site)
        assert "cannot mark the venv as pkgfs's" in error
        assert "No space left on device" in error
        assert sorted(p.name for p in env.venv.iterdir() if p.name.startswith(".pkgfs")) == []
        assert not mounted_now(env.site)
    finally:
        force_unmount(env.site)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")
def test_a_full_disk_holding_the_store_is_one_line_saying_so(
    small_disk: Path, tmp_path: Path, base_env: dict[str, str]
) -> None:
    # SQLite says only "disk I/O error" when it cannot grow its WAL files, and a write's
    # ENOSPC named no file: neither said that the disk was full, nor where, nor what to do.
    store = small_disk / "store"
    env = make_project(tmp_path / "project", {**base_env, "PKGFS_STORE": str(store)})
    env.pkgfs("sync", "--lock", env.project / "pylock.toml")
    big = WheelMaker(name="big", files={"big.bin": os.urandom(6 << 20)}).build(tmp_path)
    disk = os.statvfs(small_disk)
    with open(small_disk / "filler", "wb") as f:  # 2 MiB left: the index opens, big does not fit
        f.write(b"\0" * (disk.f_bavail * disk.f_frsize - (2 << 20)))
    before = snapshot(store)
    error = fails(env, "store", "add", big)
    assert error == (
        f"pkgfs: error: {store}: cannot write to the store: No space left on device: free some"
        " space there (pkgfs store gc removes what no environment uses)"
    )
    assert snapshot(store) == before
    fill(small_disk)
    # A reader writes nothing into the store (not even SQLite's -wal): it works on a full disk.
    listed = env.pkgfs("store", "ls")
    assert listed.returncode == 0, listed
    assert listed.stdout.startswith("app "), listed
    small = WheelMaker(name="small", files={"small.py": "x = 1\n"}).build(tmp_path)
    error = fails(env, "store", "add", small)
    assert error.startswith(f"pkgfs: error: {store}"), error
    assert "full" in error or "No space left on device" in error, error
    assert snapshot(store) == before
    (small_disk / "filler").unlink()
    shutil.rmtree(small_disk / "inodes")
    assert env.pkgfs("store", "verify").returncode == 0


def many_scripts(count: int) -> WheelMaker:
    points = "".join(f"tool{i} = tools:main\n" for i in range(count))
    return WheelMaker(
        name="tools",
        files={"tools.py": "def main() -> None:\n    pass\n"},
        entry_points=f"[console_scripts]\n{points}",
    )


def test_ctrl_c_after_the_mount_undoes_it(tmp_path: Path, base_env: dict[str, str]) -> None:
    # Ctrl-C as soon as the kernel mount exists: the daemon may not even serve yet, and
    # dies of the SIGTERM the roll-back sends it, leaving a stale mount to clear. (6,000
    # scripts keep the command busy after the mount, should the poll be slow.)
    env = make_project(tmp_path / "project", base_env, wheels=[many_scripts(6000)])
    try:
        with subprocess.Popen(
            [*PKGFS, "mount", str(env.site)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env.env, cwd=env.project,
        ) as proc:  # fmt: skip
            assert wait_until(lambda: mounted_now(env.site) or proc.poll() is not None, 60)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        if proc.returncode == 0:
            pytest.fail(f"the mount finished before SIGINT came: {out}")
        assert proc.returncode == 130, err
        assert err.splitlines()[-1] == "pkgfs: interrupted"
        assert "Traceback" not in err
        assert not mounted_now(env.site)
        assert pkgfs_processes(env.env) == set()
        assert not state_of(env).exists()
        assert not any(name.startswith("tool") for name in os.listdir(env.venv / "bin"))
    finally:
        force_unmount(env.site)


def test_the_daemon_checks_the_mount_answers_before_saying_ok(project: Env) -> None:
    # --foreground: the "mounted" line comes once the mount answers and the scripts exist.
    with subprocess.Popen(
        [*PKGFS, "mount", "--foreground", str(project.site)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=project.env, cwd=project.project,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("mounted 3 packages")
        # No waiting: it must already be true.
        assert mounted_now(project.site)
        assert os.statvfs(project.site).f_bsize > 0
        assert (project.venv / "bin" / "app-cli").exists()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert not mounted_now(project.site)
    assert not (project.venv / "bin" / "app-cli").exists()


# -- locks ------------------------------------------------------------------------------------


def test_a_mount_under_way_keeps_a_second_one_out(project: Env) -> None:
    import fcntl  # noqa: PLC0415

    state = state_of(project)
    state.mkdir(parents=True)
    fd = os.open(state, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a `pkgfs mount` preparing it holds it
        error = fails(project, "mount", project.site)
        assert error.startswith(f"pkgfs: error: {project.site}: busy: another pkgfs mount")
        assert not mounted_now(project.site)
    finally:
        os.close(fd)
    project.pkgfs("mount", project.site)


def test_two_mounts_cannot_share_an_overlay(tmp_path: Path, base_env: dict[str, str]) -> None:
    first = make_project(tmp_path / "first", base_env)
    second = make_project(tmp_path / "second", base_env)
    overlay = tmp_path / "overlay"
    try:
        first.pkgfs("mount", first.site, "--overlay", overlay)
        error = fails(second, "mount", second.site, "--overlay", overlay)
        assert error == (
            f"pkgfs: error: {overlay}: busy: another mount uses this --overlay directory"
        )
        assert not mounted_now(second.site)
        first.pkgfs("unmount", first.site)
        second.pkgfs("mount", second.site, "--overlay", overlay)  # free again
    finally:
        force_unmount(first.site)
        force_unmount(second.site)


def test_unmount_of_a_busy_mount_detaches_it_lazily(mounted: Env) -> None:
    (row,) = mounted.status()
    pid = int(str(row["pid"]))
    user = subprocess.Popen(  # a process working inside the mount keeps it busy
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        cwd=mounted.site / "app", stdin=subprocess.PIPE, env=mounted.env,
    )  # fmt: skip
    try:
        result = mounted.pkgfs("unmount", mounted.site)
        assert result.stdout.startswith(f"unmounted {mounted.site} lazily (as --lazy does)")
        assert not mounted_now(mounted.site)
        assert not (mounted.venv / "bin" / "app-cli").exists()
        # Its daemon serves the user still, and keeps the overlay: no second mount yet.
        assert os.listdir(f"/proc/{user.pid}/cwd") != []
        error = fails(mounted, "mount", mounted.site)
        assert f"{mounted.site}: busy" in error
    finally:
        user.communicate(b"", timeout=10)
    assert wait_until(lambda: not os.path.exists(f"/proc/{pid}"))
    mounted.pkgfs("mount", mounted.site)


# -- state: read only, versioned --------------------------------------------------------------


def test_status_and_diff_write_nothing(mounted: Env) -> None:
    home = Path(mounted.env["XDG_STATE_HOME"])
    (mounted.site / "app" / "new.py").write_text("")
    before = snapshot(home)
    mounted.status()
    mounted.pkgfs("diff", mounted.site)
    assert snapshot(home) == before
    # A daemon killed and its mount cleared by hand: status skips it, and leaves it.
    os.kill(int(str(mounted.status()[0]["pid"])), signal.SIGKILL)
    force_unmount(mounted.site)
    assert wait_until(lambda: mounted.status() == [])
    before = snapshot(home)
    assert mounted.pkgfs("status").stdout == "no pkgfs mounts\n"
    assert mounted.pkgfs("diff", mounted.site).stdout == "A app/new.py\n"
    assert snapshot(home) == before


def rewrite(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, **changes}))


def test_state_files_from_another_version(mounted: Env) -> None:
    state = state_of(mounted)
    rewrite(state / "config.json", format=99)
    result = mounted.pkgfs("diff", mounted.site, check=False)
    assert result.returncode == 1
    assert result.stderr == (
        f"pkgfs: error: {state / 'config.json'}: written by another version of pkgfs (state"
        f" format 99, this pkgfs reads 1): pkgfs unmount {mounted.site}, then pkgfs mount it"
        " again\n"
    )
    rewrite(state / "mount.json", format=None)
    result = mounted.pkgfs("status")
    assert result.stdout == "no pkgfs mounts\n"
    assert result.stderr.startswith(f"pkgfs: warning: {state / 'mount.json'}: written by another")
    assert len(result.stderr.splitlines()) == 1
    mounted.pkgfs("unmount", mounted.site)
    mounted.pkgfs("mount", mounted.site)
    assert mounted.status()[0]["state"] == "ok"
    assert mounted.pkgfs("diff", mounted.site).stdout == ""


def test_a_daemon_that_does_not_answer_is_one_line(mounted: Env) -> None:
    import socket  # noqa: PLC0415

    state = state_of(mounted)
    rewrite(state / "mount.json", socket="@pkgfs-test-nobody-listens")
    error = fails(mounted, "reset", mounted.site)
    assert error == (
        f"pkgfs: error: the daemon of {mounted.site} is not answering (ConnectionRefusedError:"
        f" [Errno 111] Connection refused): pkgfs unmount {mounted.site}, then mount it again"
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as rude:
        rude.bind("\0pkgfs-test-hangs-up")
        rude.listen()
        rewrite(state / "mount.json", socket="@pkgfs-test-hangs-up")
        proc = subprocess.Popen(
            [*PKGFS, "reset", str(mounted.site)],
            stderr=subprocess.PIPE, text=True, env=mounted.env,
        )  # fmt: skip
        conn, _ = rude.accept()
        conn.close()  # as a daemon dying after the accept
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert err.startswith(f"pkgfs: error: the daemon of {mounted.site} is not answering")
    assert len(err.splitlines()) == 1


# -- mountpoints and health ----------------------------------------------------------------


def test_a_venv_with_pip_in_it_is_not_hidden(project: Env) -> None:
    # python -m venv puts pip into site-packages: a mount over it would break bin/pip.
    (project.site / "pip").mkdir()
    (project.site / "pip" / "__init__.py").write_text("")
    (project.site / "pip-24.0.dist-info").mkdir()
    result = project.pkgfs("mount", project.site, check=False)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()[-1:]
    assert line.startswith(f"pkgfs: error: {project.site}: not empty (pip, pip-24.0.dist-info)")
    assert "--without-pip" in line
    assert not os.path.ismount(project.site)
    assert sorted(os.listdir(project.site)) == ["pip", "pip-24.0.dist-info"]
    assert project.status() == []


def test_the_venv_root_means_its_site_packages(project: Env) -> None:
    result = project.pkgfs("mount", project.venv)
    assert f"mounting its site-packages, {project.site}" in result.stderr
    assert os.path.ismount(project.site)
    assert not os.path.ismount(project.venv)
    assert project.run(project.python, "-c", "import app; print(app.__name__)") == "app\n"
    assert project.pkgfs("diff", project.venv).stdout == ""
    project.pkgfs("unmount", project.venv)
    assert not os.path.ismount(project.site)


def test_a_directory_that_is_no_venv_says_which_python(project: Env, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    lock = project.project / "pylock.toml"
    try:
        result = project.pkgfs("mount", plain, "--lock", lock)
        (note,) = [line for line in result.stderr.splitlines() if "is not a venv" in line]
        assert "--python" in note
        assert sys.executable in note or "Python 3." in note
    finally:
        force_unmount(plain)


def test_status_is_a_healthcheck(mounted: Env) -> None:
    ok = mounted.pkgfs("status", "--json", check=False)
    assert ok.returncode == 0
    assert json.loads(ok.stdout)[0]["lock_state"] == "current"
    lock = mounted.project / "pylock.toml"
    original = lock.read_bytes()
    lock.write_bytes(original + b"\n# edited\n")
    changed = mounted.pkgfs("status", check=False)
    assert changed.returncode == 1
    assert "(changed)" in changed.stdout
    # pkgfs mount follows it, live (the same wheels here: nothing else changes).
    again = mounted.pkgfs("mount", mounted.site)
    assert f"switched {mounted.site} to the new pylock.toml: +0 -0 ~0 packages" in again.stdout
    assert mounted.pkgfs("status", check=False).returncode == 0
    lock.write_bytes(original)
    assert mounted.pkgfs("status", check=False).returncode == 1
    mounted.pkgfs("mount", mounted.site)
    assert mounted.pkgfs("status", check=False).returncode == 0
    # One mount's healthcheck: named by its venv's root; one not mounted is unhealthy.
    one = mounted.pkgfs("status", mounted.venv, "--json", check=False)
    assert one.returncode == 0
    assert [r["mountpoint"] for r in json.loads(one.stdout)] == [str(mounted.site)]
    elsewhere = mounted.project / "not-mounted"
    elsewhere.mkdir()
    other = mounted.pkgfs("status", elsewhere, check=False)
    assert other.returncode == 1
    assert other.stderr == f"pkgfs: {elsewhere}: not mounted\n"
    assert other.stdout == ""
    (row,) = mounted.status()
    os.kill(int(str(row["pid"])), signal.SIGKILL)
    assert wait_until(lambda: mounted.status()[0]["state"] == "stale")
    stale = mounted.pkgfs("status", check=False)
    assert stale.returncode == 1
    assert stale.stdout.startswith("stale")
    assert mounted.pkgfs("status", mounted.site, check=False).returncode == 1


def test_a_new_venv_at_the_same_path_does_not_inherit_the_old_overlay(project: Env) -> None:
    project.pkgfs("mount", project.site)
    (project.site / "app" / "data.txt").write_text("an edit of the old venv\n")
    (project.site / "app" / "sub" / "mod.py").unlink()
    project.pkgfs("unmount", project.site)
    shutil.rmtree(project.venv)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", project.venv], check=True)

    mounted = project.pkgfs("mount", project.site)
    (note,) = [line for line in mounted.stderr.splitlines() if "is a new venv" in line]
    aside = Path(note.split(" it is kept in ")[1].split(" (")[0])
    assert (project.site / "app" / "data.txt").read_text() == "lower data\n"
    assert (project.site / "app" / "sub" / "mod.py").exists()
    assert project.pkgfs("diff", project.site).stdout == ""
    # Kept, not lost: the old edits are where the note says.
    assert (aside / "upper" / "app" / "data.txt").read_text() == "an edit of the old venv\n"
    # The same venv mounted again keeps its own edits.
    (project.site / "app" / "data.txt").write_text("an edit of the new venv\n")
    project.pkgfs("unmount", project.site)
    again = project.pkgfs("mount", project.site)
    assert "is a new venv" not in again.stderr
    assert (project.site / "app" / "data.txt").read_text() == "an edit of the new venv\n"
