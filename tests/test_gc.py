"""Environments as a whole: ``pkgfs store gc`` keeps what they use, ``env list|rm``,
``mount --all`` after a reboot, and ``--json`` from ``sync`` and ``mount``.

Real projects, real mounts, a real store; a second pkgfs process holds the store open to
show that gc never runs beside a writer.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pkgfs.store import Store
from tests.conftest import PKGFS
from tests.mountkit import Env, environ_for, force_unmount, make_project, needs_fuse

pytestmark = needs_fuse


def _store(env: Env) -> Path:
    return Path(env.env["PKGFS_STORE"])


def _names(env: Env) -> set[str]:
    listed = json.loads(env.pkgfs("store", "ls", "--json").stdout)
    return {row["name"] for row in listed}


@pytest.fixture
def two(tmp_path: Path) -> tuple[Env, Env]:
    base = environ_for(tmp_path)
    first = make_project(tmp_path / "first", base, extra={"onlyfirst": {"of/__init__.py": "F=1\n"}})
    second = make_project(
        tmp_path / "second", base, extra={"onlysecond": {"os2/__init__.py": "S=2\n"}}
    )
    for env in (first, second):
        env.pkgfs("mount", env.site)
    return first, second


def test_gc_keeps_what_environments_use_and_removes_the_rest(two: tuple[Env, Env]) -> None:
    first, second = two
    try:
        listed = json.loads(first.pkgfs("env", "list", "--json").stdout)
        assert {row["mountpoint"] for row in listed} == {str(first.site), str(second.site)}
        assert all(row["state"] == "ok" and row["lock_state"] == "current" for row in listed)
        # Both environments are roots, mounted or not: nothing of theirs goes.
        first.pkgfs("unmount", first.site)
        kept = first.pkgfs("store", "gc", "--json")
        assert json.loads(kept.stdout)["wheels"] == []
        assert "onlyfirst" in _names(first)

        refused = first.pkgfs("env", "rm", second.site, check=False)
        assert refused.returncode == 1
        assert "mounted: pkgfs unmount it first" in refused.stderr
        first.pkgfs("env", "rm", first.site)
        assert [
            r["mountpoint"] for r in json.loads(first.pkgfs("env", "list", "--json").stdout)
        ] == [str(second.site)]

        dry = json.loads(first.pkgfs("store", "gc", "--dry-run", "--json").stdout)
        assert dry["wheels"] == ["onlyfirst-1.0-py3-none-any.whl"]
        assert "onlyfirst" in _names(first)  # a dry run removes nothing

        done = first.pkgfs("store", "gc")
        assert "removed onlyfirst-1.0-py3-none-any.whl" in done.stdout
        assert _names(first) == {"app", "nsa", "nsb", "onlysecond"}
        assert first.pkgfs("store", "verify").returncode == 0
        # The mounted environment still serves, and a new one of its lock needs nothing.
        assert second.run(second.python, "-c", "import os2, app; print(os2.S)") == "2\n"
        second.pkgfs("unmount", second.site)
        second.pkgfs("mount", second.site, "--offline")
        assert second.run(second.python, "-c", "import os2; print(os2.S)") == "2\n"
    finally:
        for env in two:
            force_unmount(env.site)


def test_gc_removes_leftovers_of_a_killed_ingest(two: tuple[Env, Env]) -> None:
    first, _second = two
    store = _store(first)
    try:
        orphan = store / "objects-v1" / "ab" / ("c" * 62)  # published, never committed
        orphan.parent.mkdir(exist_ok=True)
        orphan.write_bytes(b"half an ingest")
        (store / "tmp" / "ingest-dead").mkdir(parents=True)
        (store / "tmp" / "ingest-dead" / "x").write_bytes(b"staged")
        report = json.loads(first.pkgfs("store", "gc", "--json").stdout)
        assert report["objects"] == 1
        assert report["leftovers"] == 1
        assert not orphan.exists()
        assert list((store / "tmp").iterdir()) == []
        assert first.pkgfs("store", "verify").returncode == 0
    finally:
        for env in two:
            force_unmount(env.site)


def test_gc_never_runs_beside_a_writer(tmp_path: Path) -> None:
    env = make_project(tmp_path / "project", environ_for(tmp_path))
    env.pkgfs("sync", "--lock", env.project / "pylock.toml")
    before = sorted(p.name for p in (_store(env) / "objects-v1").rglob("*"))
    holder = subprocess.Popen(  # another pkgfs command with the store open for writing
        [
            sys.executable,
            "-c",
            "import sys, pkgfs.store as s; st = s.Store.open(sys.argv[1]); print('open', flush=True);"
            " sys.stdin.read()",
            str(_store(env)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env.env,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "open\n"
        refused = env.pkgfs("store", "gc", check=False)
        assert refused.returncode == 1
        (line,) = refused.stderr.splitlines()
        assert "another pkgfs command is using the store" in line
        # A dry run only reads: it answers beside the writer, and removes nothing.
        dry = json.loads(env.pkgfs("store", "gc", "--dry-run", "--json").stdout)
        assert (dry["dry_run"], len(dry["wheels"])) == (True, 3)
    finally:
        holder.communicate("", timeout=30)
    assert sorted(p.name for p in (_store(env) / "objects-v1").rglob("*")) == before
    # No environment: everything is garbage, and gc says so.
    report = json.loads(env.pkgfs("store", "gc", "--json").stdout)
    assert len(report["wheels"]) == 3
    with Store.open(_store(env)) as store:
        assert store.index.wheels() == []
        assert store.index.objects() == {}


def test_mount_all_brings_back_every_environment(two: tuple[Env, Env], tmp_path: Path) -> None:
    # As after a reboot: one daemon killed (its mount stale), one unmounted cleanly, and a
    # third environment whose venv is gone.
    first, second = two
    third = make_project(tmp_path / "third", dict(first.env))
    try:
        third.pkgfs("mount", third.site)
        third.pkgfs("unmount", third.site)
        shutil.rmtree(third.venv)
        (row,) = [r for r in first.status() if r["mountpoint"] == str(first.site)]
        os.kill(int(str(row["pid"])), signal.SIGKILL)
        second.pkgfs("unmount", second.site)
        assert first.pkgfs("status", check=False).returncode == 1

        result = first.pkgfs("mount", "--all", check=False)
        assert result.returncode == 0, result.stderr
        assert f"skipped {third.site}: it is gone" in result.stdout
        assert first.pkgfs("status").returncode == 0
        assert first.run(first.python, "-c", "import of; print(of.F)") == "1\n"
        assert second.run(second.python, "-c", "import os2; print(os2.S)") == "2\n"
        # Nothing left to do: a second run mounts nothing and succeeds.
        assert first.pkgfs("mount", "--all").returncode == 0
    finally:
        for env in (*two, third):
            force_unmount(env.site)


def test_two_mount_all_at_once_both_succeed_and_json_lists_each(two: tuple[Env, Env]) -> None:
    first, second = two
    try:
        for env in two:
            env.pkgfs("unmount", env.site)
        # Two at once (a login script and a server's start): each environment is mounted
        # by one of them; the other finds it mounted meanwhile, which is not a failure.
        argv, pipe = [*PKGFS, "mount", "--all"], subprocess.PIPE
        both = [
            subprocess.Popen(
                argv, env=first.env, cwd=first.project, stdout=pipe, stderr=pipe, text=True
            )
            for _ in range(2)
        ]
        for command in both:
            _out, err = command.communicate(timeout=120)
            assert command.returncode == 0, err
        assert first.run(first.python, "-c", "import of; print(of.F)") == "1\n"
        assert second.run(second.python, "-c", "import os2; print(os2.S)") == "2\n"
        second.pkgfs("unmount", second.site)
        rows = json.loads(first.pkgfs("mount", "--all", "--json").stdout)
        assert [(row["mountpoint"], row["result"]) for row in rows] == [
            (str(second.site), "mounted")
        ]
        assert rows[0]["packages"] == 4  # what pkgfs mount --json says: its three and onlysecond
        assert json.loads(first.pkgfs("mount", "--all", "--json").stdout) == []
    finally:
        for env in two:
            force_unmount(env.site)


def test_mount_without_a_mountpoint_is_a_usage_error(tmp_path: Path) -> None:
    env = make_project(tmp_path / "project", environ_for(tmp_path))
    missing = env.pkgfs("mount", check=False)
    assert missing.returncode == 2  # as argparse exits on its own usage errors
    assert missing.stderr == "pkgfs: error: pkgfs mount: name a MOUNTPOINT, or --all\n"
    both = env.pkgfs("mount", "--all", env.site, check=False)
    assert both.returncode == 2
    assert "--all mounts every environment: name none" in both.stderr


def test_sync_and_mount_say_what_they_did_as_json(tmp_path: Path) -> None:
    env = make_project(tmp_path / "project", environ_for(tmp_path))
    lock = env.project / "pylock.toml"
    try:
        synced = json.loads(env.pkgfs("sync", "--lock", lock, "--json").stdout)
        assert (synced["wheels"], synced["present"], synced["failed"]) == (3, 0, [])
        assert sorted(synced["added"]) == [
            "app-1.0-py3-none-any.whl",
            "nsa-1.0-py3-none-any.whl",
            "nsb-1.0-py3-none-any.whl",
        ]
        again = json.loads(env.pkgfs("sync", "--lock", lock, "--json").stdout)
        assert (again["present"], again["added"]) == (3, [])
        mounted = json.loads(env.pkgfs("mount", env.site, "--json").stdout)
        assert mounted["mountpoint"] == str(env.site)
        assert mounted["packages"] == 3
        assert mounted["python"] == str(env.python)
    finally:
        force_unmount(env.site)


def test_env_rm_keeps_an_overlay_a_lazily_unmounted_daemon_still_serves(tmp_path: Path) -> None:
    # After `pkgfs unmount --lazy` the mount table no longer shows the mount, but its
    # daemon serves the processes still inside it, from the overlay: env rm must not
    # delete that overlay under them (it did: their edits vanished).
    env = make_project(tmp_path / "project", environ_for(tmp_path))
    env.pkgfs("mount", env.site)
    (env.site / "EDIT.txt").write_text("mine\n")
    inside = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], cwd=env.site, stdin=subprocess.PIPE
    )
    try:
        env.pkgfs("unmount", "--lazy", env.site)
        refused = env.pkgfs("env", "rm", env.site, check=False)
        assert refused.returncode == 1
        (line,) = refused.stderr.splitlines()
        assert line.startswith(f"pkgfs: error: {env.site}: busy: ")
        assert Path(f"/proc/{inside.pid}/cwd/EDIT.txt").read_text() == "mine\n"
        listed = json.loads(env.pkgfs("env", "list", "--json").stdout)
        assert [row["mountpoint"] for row in listed] == [str(env.site)]
    finally:
        inside.communicate(b"", timeout=30)
        force_unmount(env.site)
    # Once the last process has left, the daemon exits and the environment can go.
    for _ in range(200):
        done = env.pkgfs("env", "rm", env.site, check=False)
        if done.returncode == 0 or "busy" not in done.stderr:
            break
        time.sleep(0.05)
    assert done.returncode == 0, done.stderr
    assert json.loads(env.pkgfs("env", "list", "--json").stdout) == []


def test_a_stopped_daemon_is_unresponsive_and_nothing_hangs_on_it(tmp_path: Path) -> None:
    # status, the healthcheck, asked the daemon with statfs and waited as long as a stopped
    # (or hung) daemon does: forever; so did env list, mount --all and unmount.
    env = make_project(tmp_path / "project", environ_for(tmp_path))
    env.pkgfs("mount", env.site)
    (row,) = env.status()
    pid = int(str(row["pid"]))
    os.kill(pid, signal.SIGSTOP)
    try:

        def pkgfs(*args: str | Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "pkgfs.vfs", *map(str, args)],
                capture_output=True,
                text=True,
                env=env.env,
                cwd=env.project,
                timeout=120,  # a hang fails the test instead of hanging it
                check=False,
            )

        status = pkgfs("status", "--json")
        assert status.returncode == 1, status.stderr
        assert [r["state"] for r in json.loads(status.stdout)] == ["unresponsive"]
        listed = pkgfs("env", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [(r["state"], r["venv"]) for r in json.loads(listed.stdout)] == [
            ("unresponsive", True)
        ]
        again = pkgfs("mount", "--all")
        assert again.returncode == 1
        (line,) = again.stderr.splitlines()
        assert line.startswith(f"pkgfs: error: {env.site}: mounted, but its daemon does not")
        gone = pkgfs("unmount", env.site)
        assert gone.returncode == 0, gone.stderr
        assert f"its daemon (pid {pid}) does not answer" in gone.stdout
        assert f"kill {pid}" in gone.stdout
    finally:
        os.kill(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGCONT)
        force_unmount(env.site)
    # Its daemon ended, the environment mounts again as after a reboot.
    assert env.pkgfs("mount", "--all").returncode == 0
    assert env.pkgfs("status").returncode == 0
    force_unmount(env.site)


def test_gc_keeps_an_environment_mounted_through_a_symlink_to_the_store(tmp_path: Path) -> None:
    # The store named through a symlink ($PKGFS_STORE=/data/pkgfs with /data a link) did
    # not compare equal to its real path: gc removed the wheels of a mounted environment,
    # and its imports failed.
    base = environ_for(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path / "store", target_is_directory=True)
    (tmp_path / "store").mkdir()
    linked = {**base, "PKGFS_STORE": str(tmp_path / "link")}
    env = make_project(tmp_path / "project", linked, extra={"mine": {"mine.py": "M = 1\n"}})
    try:
        env.pkgfs("mount", env.site)
        real = Env(env.project, env.venv, base)  # gc through the store's real path
        report = json.loads(real.pkgfs("store", "gc", "--json").stdout)
        assert report["wheels"] == []
        assert report["objects"] == 0
        assert "mine" in _names(real)
        assert env.run(env.python, "-c", "import mine, app; print(mine.M)") == "1\n"
    finally:
        force_unmount(env.site)


def test_status_says_damaged_when_a_mounts_store_is_gone_and_makes_no_new_one(
    tmp_path: Path,
) -> None:
    # status (the healthcheck) stopped at the first environment whose wheels were not in
    # its store, listing none; and reading a moved store's mount made an empty store there.
    base = environ_for(tmp_path)
    first = make_project(tmp_path / "first", base)
    second = make_project(tmp_path / "second", {**base, "PKGFS_STORE": str(tmp_path / "s2")})
    try:
        first.pkgfs("mount", first.site)
        second.pkgfs("mount", second.site)
        (tmp_path / "s2").rename(tmp_path / "s2.moved")
        status = first.pkgfs("status", "--json", check=False)
        assert status.returncode == 1
        states = {r["mountpoint"]: r["state"] for r in json.loads(status.stdout)}
        assert states == {str(first.site): "ok", str(second.site): "damaged"}
        (warning,) = status.stderr.splitlines()
        assert warning.startswith(f"pkgfs: warning: {second.site}: {tmp_path / 's2'}: its store")
        diff = second.pkgfs("diff", second.site, check=False)
        assert diff.returncode == 1
        assert len(diff.stderr.splitlines()) == 1
        assert not (tmp_path / "s2").exists()  # no new, empty store in its place
        (tmp_path / "s2.moved").rename(tmp_path / "s2")
        assert first.pkgfs("status").returncode == 0
    finally:
        force_unmount(first.site)
        force_unmount(second.site)


def test_gc_lock_keeps_what_the_store_holds_of_a_lock_never_synced_whole(tmp_path: Path) -> None:
    # --lock of a lock with a wheel never stored refused ("pkgfs sync first"): to keep a
    # lock's wheels, it had to download the rest first. What is stored of it is kept.
    base = environ_for(tmp_path)
    synced = make_project(tmp_path / "synced", base, extra={"onlysynced": {"os1.py": ""}})
    other = make_project(tmp_path / "other", base, extra={"neverstored": {"ns9.py": ""}})
    synced.pkgfs("sync", "--lock", synced.project / "pylock.toml")
    report = json.loads(
        other.pkgfs("store", "gc", "--lock", other.project / "pylock.toml", "--json").stdout
    )
    assert report["wheels"] == ["onlysynced-1.0-py3-none-any.whl"]
    assert _names(synced) == {"app", "nsa", "nsb"}  # the lock's wheels the store held
    assert synced.pkgfs("store", "verify").returncode == 0


def test_a_damaged_config_stops_gc_with_what_to_do_and_a_stray_file_does_not(
    tmp_path: Path,
) -> None:
    # gc said "pkgfs env rm it" of an environment whose config it could not read, so whose
    # mountpoint env rm could not be given; a stray file beside the state directories
    # stopped gc, status and env list as if it were a damaged environment.
    env = make_project(tmp_path / "project", environ_for(tmp_path))
    env.pkgfs("mount", env.site)
    env.pkgfs("unmount", env.site)
    mounts = Path(env.env["XDG_STATE_HOME"]) / "pkgfs" / "mounts"
    (mounts / "notes.txt").write_text("mine\n")
    for command in (("store", "gc", "--dry-run"), ("status",), ("env", "list")):
        done = env.pkgfs(*command)
        assert done.stderr == "", command
    (state,) = [d for d in mounts.iterdir() if d.is_dir()]
    (state / "config.json").write_text('{"format": 1, "mountp')
    refused = env.pkgfs("store", "gc", check=False)
    assert refused.returncode == 1
    (line,) = refused.stderr.splitlines()
    assert line.startswith(f"pkgfs: error: {state / 'config.json'}: damaged")
    assert line.endswith(f"(or delete {state} to forget it, its overlay with it)")
    assert len(_names(env)) == 3  # nothing removed
    shutil.rmtree(state)
    assert len(json.loads(env.pkgfs("store", "gc", "--json").stdout)["wheels"]) == 3
