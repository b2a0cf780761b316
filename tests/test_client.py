"""The thin client's start, its request on the wire and the server's record, with a real
server (no FUSE needed: the commands asked here mount nothing).

How fast the client starts is measured, never tested (README, "The mount server"); what is
tested is what makes it fast: which modules a command that reaches a running server imports.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkgfs.vfs.server.address import RECORD_TAG, Server, installation_key, servers_dir
from pkgfs.vfs.server.client import MAX_REQUEST, REQUEST_TAG, encode_request
from pkgfs.vfs.server.worker import Request
from tests.mountkit import environ_for, stop_servers

REPO = Path(__file__).resolve().parent.parent
CLIENT = [sys.executable, "-m", "pkgfs.vfs.server.client"]

# What a command through a running server must not import: each costs the client
# milliseconds (json pulls re; socket, signal and re pull enum; hashlib loads OpenSSL).
HEAVY = {
    "json", "re", "enum", "hashlib", "_hashlib", "pathlib", "subprocess", "socket",
    "selectors", "signal", "contextlib", "collections", "functools", "typing",
    "importlib.util", "secrets", "random", "struct", "fcntl", "select", "threading",
    "dataclasses", "argparse", "trio", "pyfuse3", "pkgfs.store", "pkgfs.vfs.cli",
}  # fmt: skip
# ...and all it may import beyond what the interpreter loaded before running anything.
CLIENT_MODULES = {
    "pkgfs", "pkgfs.vfs", "pkgfs.vfs.server", "pkgfs.vfs.server.address",
    "pkgfs.vfs.server.client", "_socket", "_sha256", "_sha2",
}  # fmt: skip


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    environ = environ_for(tmp_path)
    environ.pop("PKGFS_SERVER", None)
    yield environ
    stop_servers(tmp_path)


Result = subprocess.CompletedProcess[str]


def run(environ: dict[str, str], *args: str, python: str = sys.executable) -> Result:
    return subprocess.run(
        [python, "-m", "pkgfs.vfs.server.client", *args],
        capture_output=True, text=True, env=environ, check=False, cwd="/",
    )  # fmt: skip


def server_of(environ: dict[str, str]) -> Server:
    return Server(servers_dir(environ), installation_key())


# -- what the client imports ----------------------------------------------------------------


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """The python of a venv where pkgfs is installed as a wheel installs it (a ``pkgfs``
    directory in site-packages, no editable finder: this checkout's editable install
    imports re, enum and pathlib at every start) and its dependencies are this venv's."""
    venv.create(tmp_path / "venv", symlinks=True, with_pip=False)
    python = tmp_path / "venv" / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    (site / "pkgfs").mkdir()
    (site / "pkgfs" / "store").symlink_to(REPO / "store")
    (site / "pkgfs" / "vfs").symlink_to(REPO / "vfs")
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_a_command_through_a_running_server_imports_nothing_heavy(
    env: dict[str, str], installed: Path, tmp_path: Path
) -> None:
    first = run(env, "status", "/nonexistent-path", python=str(installed))  # starts the server
    assert first.returncode == 1, first.stderr
    listing = tmp_path / "modules.json"
    probe = (
        "import sys; before = set(sys.modules);"
        "from pkgfs.vfs.server.client import main; code = main(['status', '/nonexistent-path']);"
        f"after = set(sys.modules); import json; open({str(listing)!r}, 'w').write(json.dumps("
        "[sorted(before), sorted(after)])); sys.exit(code)"
    )
    proc = subprocess.run(
        [installed, "-c", probe], capture_output=True, text=True, env=env, check=False, cwd="/"
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == "pkgfs: /nonexistent-path: not mounted\n"
    before, after = map(set, json.loads(listing.read_text()))
    assert "pkgfs.vfs.cli" not in after  # the server ran it: nothing ran in process
    assert sorted(HEAVY & after) == []
    assert sorted(after - before - CLIENT_MODULES) == []


# -- the request ----------------------------------------------------------------------------


def test_a_request_carries_any_bytes_posix_allows() -> None:
    # Undecodable bytes in an argument, the directory and the environment come back as the
    # very bytes (os.fsencode/os.fsdecode), and an empty argument stays one.
    argv = ["mount", os.fsdecode(b"caf\xe9"), "", "--json"]
    cwd = b"/tmp/d\xffir"
    environ = {b"PATH": b"/usr/bin", b"ODD\xfe": b"va=lue\xff", b"EMPTY": b""}
    data = encode_request(argv, cwd, environ, 0o027)
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    assert data[4:].split(b"\0")[0] == REQUEST_TAG
    request = Request.decode(data[4:])
    assert request.argv == argv
    assert os.fsencode(request.cwd) == cwd
    assert {os.fsencode(k): os.fsencode(v) for k, v in request.env.items()} == environ
    assert request.umask == 0o027
    assert Request.decode(encode_request([], b"/", {}, 0)[4:]).argv == []


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (json.dumps({"argv": [], "cwd": "/", "env": {}, "umask": 18}).encode(), "not a request"),
        (b"pkgfs-request 2\x00022\x00/\x000", "not a request of this pkgfs"),
        (b"pkgfs-request 1", "needs a umask"),
        (b"pkgfs-request 1\x008\x00/\x000", "octal"),
        (b"pkgfs-request 1\x000o22\x00/\x000", "octal"),
        (b"pkgfs-request 1\x001777\x00/\x000", "octal"),
        (b"pkgfs-request 1\x00022\x00relative\x000", "absolute"),
        (b"pkgfs-request 1\x00022\x00/\x003\x00mount", "arguments"),
        (b"pkgfs-request 1\x00022\x00/\x00-1", "arguments"),
        (b"pkgfs-request 1\x00022\x00/\x001\x00status\x00NOEQUALS", "without '='"),
    ],
)
def test_a_malformed_request_is_refused(payload: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Request.decode(payload)


def test_the_server_refuses_a_malformed_request_and_serves_on(env: dict[str, str]) -> None:
    assert run(env, "status", "/nonexistent-path").returncode == 1  # starts the server
    server = server_of(env)
    found = server.read()
    assert found is not None
    old = json.dumps({"argv": ["status"], "cwd": "/", "env": {}, "umask": 18}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(found[1])
        socket.send_fds(sock, [len(old).to_bytes(4, "big") + old], [0, 1, 2])
        sock.settimeout(10)
        assert sock.recv(64) == b""  # refused: hung up, no exit line
    log = Path(server.log).read_text()
    assert "pkgfs server: a client was refused: not a request of this pkgfs" in log
    again = run(env, "status", "/nonexistent-path")
    assert again.stderr == "pkgfs: /nonexistent-path: not mounted\n"
    assert server.read() == found  # the same server


# -- the record -----------------------------------------------------------------------------


def test_the_record_is_four_lines_and_anything_else_is_no_server(tmp_path: Path) -> None:
    server = Server(str(tmp_path), "k" * 64)
    server.write(1234, "\0pkgfs-server-1000-kkkk-abcd")
    assert Path(server.record).name == "k" * 64 + ".server"
    lines = Path(server.record).read_bytes().split(b"\n")
    assert lines == [RECORD_TAG, b"pid 1234", b"socket @pkgfs-server-1000-kkkk-abcd",
                     b"key " + b"k" * 64, b""]  # fmt: skip
    assert server.read() == (1234, "\0pkgfs-server-1000-kkkk-abcd")
    assert Server(str(tmp_path), "j" * 64).read() is None  # no record
    text = Path(server.record).read_bytes()
    for damaged in (
        b"",
        b'{"pid": 1234, "socket": "@pkgfs-server-x"}\n',  # a record of an older pkgfs
        text.replace(b"key kkk", b"key jjj"),  # another key's
        text.replace(b"pid 1234", b"pid -1"),
        text.replace(b"socket @pkgfs", b"socket @other"),
        text + b"more\n",
        text[:-1],
    ):
        Path(server.record).write_bytes(damaged)
        assert server.read() is None, damaged


def test_records_of_an_older_pkgfs_are_no_server_and_removed(env: dict[str, str]) -> None:
    server = server_of(env)
    server.make_directory()
    # This key's record as an older pkgfs wrote it, and another key's whose server is gone.
    json_record = Path(server.record).with_suffix(".json")
    json_record.write_text(json.dumps({"pid": os.getpid(), "socket": "@pkgfs-server-x"}))
    other = Path(server.directory) / ("0" * 64 + ".json")
    other.write_text(json.dumps({"pid": os.getpid(), "socket": "@pkgfs-server-y"}))
    Path(server.record).write_text("not a record\n")
    assert server.read() is None
    proc = run(env, "status", "/nonexistent-path")
    assert proc.stderr == "pkgfs: /nonexistent-path: not mounted\n"
    found = server.read()
    assert found is not None
    assert (
        "pkgfs.vfs server"
        in Path(f"/proc/{found[0]}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    )
    assert not json_record.exists()  # removed before the server said it listens
    assert not other.exists()
    log = Path(server.log).read_text()
    assert f"removed {other.name}, a record of an older pkgfs" in log


def test_a_command_with_an_environment_of_megabytes_runs(env: dict[str, str]) -> None:
    """Linux lets a process have about 2 MiB of arguments and environment (a quarter of
    an 8 MiB stack); a command with 1.2 MB of it runs, and is not lost as "the server went
    away" (the server took no more than 1 MiB)."""
    assert run(env, "status", "/nonexistent-path").returncode == 1  # starts the server
    found = server_of(env).read()
    big = {**env, **{f"PKGFS_TEST_BIG_{i}": "x" * 100_000 for i in range(12)}}
    result = run(big, "status", "/nonexistent-path")
    assert (result.returncode, result.stderr) == (1, "pkgfs: /nonexistent-path: not mounted\n")
    assert server_of(env).read() == found  # the server serves on


def test_the_server_refuses_a_request_longer_than_it_takes_unread(env: dict[str, str]) -> None:
    assert run(env, "status", "/nonexistent-path").returncode == 1  # starts the server
    server = server_of(env)
    found = server.read()
    assert found is not None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(found[1])
        socket.send_fds(sock, [(MAX_REQUEST + 1).to_bytes(4, "big") + REQUEST_TAG], [0, 1, 2])
        sock.settimeout(10)
        assert sock.recv(64) == b""  # refused at once, not after waiting for the rest
    log = Path(server.log).read_text()
    assert f"pkgfs server: a client was refused: a request longer than {MAX_REQUEST}" in log
