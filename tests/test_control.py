"""The control socket against rude clients: none of them can stop the mount or ``reset``."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

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
