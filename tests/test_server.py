"""The per-user mount server and its thin client, with real FUSE mounts.

Every test runs ``pkgfs`` as a user runs it, through the client
(``python -m pkgfs.vfs.server.client``, the console script's module), in an environment of
its own: its XDG_STATE_HOME gives it a server of its own, stopped when the test ends (and
any left over by the session fixture in conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkgfs.vfs.server.address import Server, installation_key, servers_dir
from pkgfs.vfs.server.client import routed
from tests.mountkit import (
    Env,
    environ_for,
    force_unmount,
    make_project,
    needs_fuse,
    stop_servers,
)
from tests.test_mounts import many_scripts, mounted_now, state_of, wait_until

CLIENT = [sys.executable, "-m", "pkgfs.vfs.server.client"]


def client(env: Env, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*CLIENT, *map(str, args)],
        capture_output=True, text=True, env=env.env, check=False, cwd=env.project,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"pkgfs {args} failed ({proc.returncode}): {proc.stderr}")
    return proc


def server_pid(env: Env) -> int | None:
    record = Server(servers_dir(env.env), installation_key()).read()
    return None if record is None else record[0]


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def daemon_pid(env: Env) -> int:
    rows = json.loads(client(env, "status", "--json", check=False).stdout)
    (row,) = [r for r in rows if r["mountpoint"] == str(env.site)]
    return int(row["pid"])


def serves(env: Env) -> bool:
    return (env.site / "app" / "data.txt").read_text() == "lower data\n"


@pytest.fixture
def base_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = environ_for(tmp_path)
    env.pop("PKGFS_SERVER", None)
    yield env
    stop_servers(tmp_path)


@pytest.fixture
def two(tmp_path: Path, base_env: dict[str, str]) -> Iterator[tuple[Env, Env]]:
    first = make_project(tmp_path / "first", base_env)
    second = make_project(tmp_path / "second", base_env)
    try:
        yield first, second
    finally:
        force_unmount(first.site)
        force_unmount(second.site)


# -- which commands go to the server --------------------------------------------------------


def test_which_commands_go_to_the_server() -> None:
    assert routed(["mount", "x"])
    assert routed(["--store", "mount", "status"])  # "mount" is --store's value here
    assert routed(["--store=/s", "env", "list"])
    assert not routed(["store", "ls"])
    assert not routed(["sync"])
    assert not routed(["server", "stop"])
    assert not routed(["--version"])


def test_the_command_is_a_client_that_imports_only_the_standard_library() -> None:
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["pkgfs"] == "pkgfs.vfs.server.client:main"
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, pkgfs.vfs.server.client;"
         " print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in"
         " ('pkgfs', 'trio', 'pyfuse3', 'packaging', 'installer', 'requests'))))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert loaded == [
        "pkgfs",
        "pkgfs.vfs",
        "pkgfs.vfs.server",
        "pkgfs.vfs.server.address",
        "pkgfs.vfs.server.client",
    ]


def test_each_installation_has_its_own_server(tmp_path: Path) -> None:
    # Two checkouts, or one edited or upgraded since its server started, never share one.
    package = Path(__file__).resolve().parent.parent / "vfs"
    copy = tmp_path / "vfs"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    here, there = installation_key([package]), installation_key([copy])
    assert here != there
    assert installation_key([copy]) == there  # stable
    (copy / "cli" / "mount.py").write_text((copy / "cli" / "mount.py").read_text() + "\n")
    assert installation_key([copy]) != there  # an edit (an upgrade) is another server
    assert installation_key([package], "/other/python") != here


# -- mounting through the server ------------------------------------------------------------


@needs_fuse
def test_commands_run_in_the_server_and_mounts_are_its_forks(two: tuple[Env, Env]) -> None:
    first, second = two
    mounted = client(first, "mount", first.site)
    assert mounted.stdout.startswith(f"mounted 3 packages at {first.site}")
    assert f"pkgfs: using {first.project / 'pylock.toml'}" in mounted.stderr  # its stderr
    server = server_pid(first)
    assert server is not None
    assert "pkgfs.vfs server" in cmdline(server)
    # The daemon is a fork of the server (nothing imported), a session of its own.
    daemon = daemon_pid(first)
    assert "pkgfs.vfs server" in cmdline(daemon)
    assert os.getsid(daemon) == daemon
    # Named apart where ps -o comm, top and pgrep look.
    assert Path(f"/proc/{server}/comm").read_text() == "pkgfs-server\n"
    assert Path(f"/proc/{daemon}/comm").read_text() == "pkgfs-mount\n"
    assert first.run(first.python, "-c", "import app, ns.a; print(app.VALUE)") == "1\n"
    client(second, "mount", second.site)
    assert server_pid(second) == server  # one server for both
    (first.site / "app" / "data.txt").write_text("edited\n")
    diff = client(first, "diff", first.site, "--json")
    assert "app/data.txt" in diff.stdout
    client(first, "reset", first.site)
    assert serves(first)
    listed = client(first, "env", "list").stdout
    assert str(first.site) in listed
    assert str(second.site) in listed
    # A usage error comes back as status 2, with argparse's own message on stderr.
    usage = client(first, "mount", "--no-such-option", check=False)
    assert usage.returncode == 2
    assert "unrecognized arguments" in usage.stderr
    assert client(first, "unmount", first.site).stdout == f"unmounted {first.site}\n"
    assert not mounted_now(first.site)
    assert serves(second)


@needs_fuse
def test_without_a_server_everything_runs_in_process(two: tuple[Env, Env]) -> None:
    first, second = two
    first.env["PKGFS_SERVER"] = "0"
    client(first, "mount", first.site)
    assert server_pid(first) is None
    assert "pkgfs.vfs.server.client mount" in cmdline(daemon_pid(first))
    # A server that cannot be started (its directory is not private) is not used either.
    directory = Path(servers_dir(second.env))
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    client(second, "mount", second.site)
    assert server_pid(second) is None
    assert "pkgfs.vfs.server.client mount" in cmdline(daemon_pid(second))
    assert serves(first)
    assert serves(second)
    client(second, "unmount", second.site)
    client(first, "unmount", first.site)


# -- robustness -----------------------------------------------------------------------------


@needs_fuse
def test_kill_9_of_the_server_leaves_every_mount_serving(two: tuple[Env, Env]) -> None:
    first, second = two
    client(first, "mount", first.site)
    client(second, "mount", second.site)
    server = server_pid(first)
    assert server is not None
    os.kill(server, signal.SIGKILL)
    assert wait_until(lambda: not Path(f"/proc/{server}").exists() or _zombie(server))
    assert serves(first)
    assert serves(second)
    # The next command starts another server, which finds both mounts as they were.
    status = client(first, "status")
    assert status.stdout.count("ok ") == 2, status.stdout
    again = server_pid(first)
    assert again is not None
    assert again != server
    client(first, "unmount", first.site)
    client(second, "unmount", second.site)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@needs_fuse
def test_kill_9_of_one_mount_leaves_the_others_and_mount_all_recovers_it(
    two: tuple[Env, Env],
) -> None:
    first, second = two
    client(first, "mount", first.site)
    client(second, "mount", second.site)
    os.kill(daemon_pid(first), signal.SIGKILL)
    assert serves(second)
    assert wait_until(lambda: client(first, "status", check=False).returncode == 1)
    recovered = client(first, "mount", "--all")
    assert "cleared a stale mount" in recovered.stderr
    assert serves(first)
    assert serves(second)
    assert client(first, "status").returncode == 0
    client(first, "unmount", first.site)
    client(second, "unmount", second.site)


@needs_fuse
def test_two_commands_at_once(two: tuple[Env, Env]) -> None:
    first, second = two
    client(first, "status")  # a server runs; now two mounts ask it at once
    procs = [
        subprocess.Popen(
            [*CLIENT, "mount", str(env.site)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env.env,
            cwd=env.project,
        )
        for env in (first, second)
    ]
    for proc, env in zip(procs, (first, second), strict=True):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.startswith(f"mounted 3 packages at {env.site}")
    assert serves(first)
    assert serves(second)
    client(first, "unmount", first.site)
    client(second, "unmount", second.site)


@needs_fuse
@pytest.mark.parametrize("how", ["ctrl-c", "hang-up"])
def test_interrupting_the_client_rolls_the_mount_back(
    tmp_path: Path, base_env: dict[str, str], how: str
) -> None:
    # SIGINT to the client is forwarded to its worker; a client killed outright hangs up,
    # and its worker gets SIGTERM: either way the mount is undone, as in-process.
    env = make_project(tmp_path / "project", base_env, wheels=[many_scripts(6000)])
    try:
        client(env, "status")  # the server runs already
        with subprocess.Popen(
            [*CLIENT, "mount", str(env.site)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env.env, cwd=env.project,
        ) as proc:  # fmt: skip
            assert wait_until(lambda: mounted_now(env.site) or proc.poll() is not None, 60)
            proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
            out, err = proc.communicate(timeout=60)
        if proc.returncode == 0:
            pytest.fail(f"the mount finished before the signal came: {out}")
        if how == "ctrl-c":
            assert proc.returncode == 130, err
            assert err.splitlines()[-1] == "pkgfs: interrupted"
            assert "Traceback" not in err
        # The worker rolls back after the client is gone: wait for it.
        assert wait_until(lambda: not mounted_now(env.site) and not state_of(env).exists(), 60)
        assert not any(name.startswith("tool") for name in os.listdir(env.venv / "bin"))
    finally:
        force_unmount(env.site)


@needs_fuse
def test_the_server_stops_and_a_new_one_mounts_the_environments_again(
    two: tuple[Env, Env],
) -> None:
    first, second = two
    client(first, "mount", first.site)
    client(second, "mount", second.site)
    client(second, "unmount", second.site)  # on purpose: a new server leaves it so
    server = server_pid(first)
    stopped = subprocess.run(
        [*CLIENT, "server", "stop"], capture_output=True, text=True, env=first.env, check=True
    )
    assert stopped.stdout == f"stopped the pkgfs server {server}\n"
    assert server_pid(first) is None
    assert serves(first)  # its mounts stay
    force_unmount(first.site)  # as a reboot would
    assert not mounted_now(first.site)
    # The next command starts a server; on start it mounts every environment again.
    client(second, "status", check=False)
    assert wait_until(lambda: mounted_now(first.site), 30)
    assert serves(first)
    assert "pkgfs.vfs server" in cmdline(daemon_pid(first))
    # (the server answers once its remount is done)
    assert not mounted_now(second.site)
    # An explicit mount --all mounts every environment, those unmounted on purpose too.
    client(second, "mount", "--all")
    assert serves(second)
    client(first, "unmount", first.site)


def test_pkgfs_server_runs_in_the_foreground(tmp_path: Path, base_env: dict[str, str]) -> None:
    env = Env(tmp_path, tmp_path / "venv", base_env)
    with subprocess.Popen(
        [*CLIENT, "server"], stderr=subprocess.PIPE, text=True, env=base_env, cwd=tmp_path
    ) as proc:
        assert proc.stderr is not None
        assert "listening" in proc.stderr.readline()
        assert server_pid(env) == proc.pid
        second = subprocess.run(
            [*CLIENT, "server"], capture_output=True, text=True, env=base_env, check=False
        )
        assert second.returncode == 1
        assert "a server already runs" in second.stderr
        status = subprocess.run(
            [*CLIENT, "server", "status"], capture_output=True, text=True, env=base_env, check=True
        )
        assert status.stdout.startswith(f"the pkgfs server {proc.pid} runs")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert server_pid(env) is None
