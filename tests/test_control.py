"""The control socket against rude clients: none of them can stop the mount or ``reset``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from pkgfs.vfs.env.state import mount_dir
from tests.mountkit import Env, needs_fuse
from tests.test_mount import base_env, mounted, project

__all__ = ["base_env", "mounted", "project"]  # fixtures used here, defined in test_mount

pytestmark = needs_fuse


def address(env: Env) -> str:
    record = json.loads((mount_dir(env.site, env.env) / "mount.json").read_text())
    name: str = record["socket"]
    return name.replace("@", "\0", 1)


def still_serves(env: Env) -> None:
    assert (env.site / "app" / "data.txt").read_text() == "lower data\n"
    (env.site / "app" / "data.txt").write_text("changed\n")
    result = env.pkgfs("reset", env.site)
    assert result.stdout == f"reset all changes at {env.site}\n"
    assert (env.site / "app" / "data.txt").read_text() == "lower data\n"


def connect(env: Env) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address(env))
    return sock


def test_rude_clients_cannot_stop_the_mount(mounted: Env) -> None:
    # One that asks and hangs up before the reply.
    with connect(mounted) as sock:
        sock.sendall(b'{"op": "reset", "paths": ["nothing"]}\n')
    time.sleep(0.2)
    still_serves(mounted)
    # One that sends garbage, and one that sends a JSON list.
    for garbage in (b"\xff\x00 not json\n", b"[1, 2]\n", b'{"op": "reset", "paths": 3}\n'):
        with connect(mounted) as sock:
            sock.sendall(garbage)
            reply = json.loads(sock.recv(65536))
        assert reply["ok"] is False
        still_serves(mounted)
    # One that sends megabytes without a newline, then hangs up.
    with connect(mounted) as sock:
        try:
            for _ in range(3 * 16):
                sock.sendall(b"x" * 65536)
        except OSError:
            pass  # the daemon hung up on us: that is the point
    still_serves(mounted)
    # Ones that connect and stall, while reset and reads go on beside them.
    stalled = [connect(mounted) for _ in range(4)]
    try:
        stalled[0].sendall(b'{"op": "rese')
        still_serves(mounted)
    finally:
        for sock in stalled:
            sock.close()
    still_serves(mounted)


def test_the_socket_is_not_where_another_user_could_squat(mounted: Env) -> None:
    name = address(mounted)
    old = f"\0pkgfs-control-{mount_dir(mounted.site, mounted.env).name}"
    assert name.startswith(old + "-")  # the old guessable name, and 128 random bits
    assert len(name) == len(old) + 1 + 32
    log = Path(mount_dir(mounted.site, mounted.env) / "log")
    assert "Traceback" not in log.read_text()


OTHER_USER = "pkgfs-test"
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a client as a throwaway user: needs root")
@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason=f"needs {SYSTEM_PYTHON}")
def test_another_user_can_neither_squat_nor_talk(project: Env) -> None:
    if subprocess.run(["id", OTHER_USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER],
            check=True,
        )
    # Another user binds the name the socket would have if it were guessable, first.
    guessable = f"pkgfs-control-{mount_dir(project.site, project.env).name}"
    squat = (
        "import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind('\\0' + sys.argv[1]);"
        " s.listen(); print('bound', flush=True); sys.stdin.read()"
    )
    with subprocess.Popen(
        ["runuser", "-u", OTHER_USER, "--", SYSTEM_PYTHON, "-c", squat, guessable],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/",
    ) as squatter:  # fmt: skip
        assert squatter.stdout is not None
        assert squatter.stdout.readline() == "bound\n"
        project.pkgfs("mount", project.site)
        still_serves(project)
        squatter.communicate("", timeout=10)
    # And cannot talk to the daemon: it hangs up without an answer.
    talk = (
        "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect('\\0' + sys.argv[1])\n"
        "try:\n"
        '    s.sendall(b\'{"op": "reset"}\\n\'); print(repr(s.recv(100)))\n'
        "except OSError as e:\n"
        "    print(type(e).__name__)\n"
    )
    (project.site / "app" / "data.txt").write_text("mine\n")
    name = address(project).removeprefix("\0")
    talked = subprocess.run(
        ["runuser", "-u", OTHER_USER, "--", SYSTEM_PYTHON, "-c", talk, name],
        capture_output=True, text=True, check=False, cwd="/",
    )  # fmt: skip
    assert talked.stdout in ("b''\n", "BrokenPipeError\n", "ConnectionResetError\n"), talked
    assert (project.site / "app" / "data.txt").read_text() == "mine\n"  # not reset
    project.pkgfs("reset", project.site)  # the owner still can
    still_serves(project)
