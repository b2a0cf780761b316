"""Private indexes, find-links and several indexes, against a real pypiserver on loopback.

The index requires HTTP basic authentication (an htpasswd file made with passlib) for
listing and downloading, so every credential below is needed, and must never be printed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import venv
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pkgfs.store.fetch.config import DEFAULT_INDEX, index_config
from tests.conftest import Result, RunPkgfs, isolated
from tests.indexserver import IndexServer
from tests.mountkit import Env, environ_for, force_unmount, needs_fuse
from tests.wheelmaker import WheelMaker

USER = "alice"
TOKEN = "s3cr3t-T0KEN"  # noqa: S105 (the test index's own, made up)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PypiServer:
    """``pypi-server run`` on 127.0.0.1 over ``packages``, authentication required."""

    def __init__(self, packages: Path, htpasswd: Path) -> None:
        self.packages = packages
        self.htpasswd = htpasswd
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple/"

    def with_credentials(self, token: str = TOKEN) -> str:
        return self.url.replace("http://", f"http://{USER}:{token}@")

    def start(self) -> None:
        command = [sys.executable, "-m", "pypiserver", "run", "-i", "127.0.0.1",
                   "-p", str(self.port), "-P", str(self.htpasswd), "-a", "download,list,update",
                   "--disable-fallback", str(self.packages)]  # fmt: skip
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    assert self.proc.stderr is not None
                    raise RuntimeError(self.proc.stderr.read().decode()) from None
                time.sleep(0.05)
        raise RuntimeError("pypiserver did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            assert self.proc.stderr is not None
            self.proc.stderr.close()
            self.proc = None


@pytest.fixture
def pypiserver(tmp_path: Path) -> Iterator[PypiServer]:
    packages = tmp_path / "index-packages"
    packages.mkdir()
    # Apache's {SHA} scheme, which pypiserver checks with passlib.
    digest = base64.b64encode(hashlib.sha1(TOKEN.encode()).digest()).decode()  # noqa: S324
    (tmp_path / "htpasswd").write_text(f"{USER}:{{SHA}}{digest}\n")
    server = PypiServer(packages, tmp_path / "htpasswd")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _project(tmp_path: Path, server: PypiServer) -> Path:
    """requirements.txt: ``greeter`` from ``--find-links ./links`` (named in the file) and
    ``helper`` from the authenticating index, both hashed. greeter needs helper and has a
    console script."""
    project = tmp_path / "project"
    links = project / "links"
    links.mkdir(parents=True)
    greeter = WheelMaker(
        name="greeter",
        files={
            "greeter/__init__.py": "from helper import WORD\n\ndef main() -> None:\n    print('hello', WORD)\n"
        },
        entry_points="[console_scripts]\ngreet = greeter:main\n",
        requires_dist=["helper==2.0"],
    ).build(links)
    helper = WheelMaker(
        name="helper", version="2.0", files={"helper/__init__.py": "WORD = 'from the index'\n"}
    ).build(server.packages)
    (project / "requirements.txt").write_text(
        "--find-links ./links\n"
        f"greeter==1.0 --hash=sha256:{_sha256(greeter)}\n"
        f"helper==2.0 \\\n    --hash=sha256:{_sha256(helper)}\n"
    )
    return project


def _clean(result: Result) -> Result:
    assert TOKEN not in result.out
    assert TOKEN not in result.err
    assert "Traceback" not in result.err
    return result


def _errors(result: Result) -> list[str]:
    return [line for line in result.err.splitlines() if line.startswith("pkgfs: error:")]


def test_token_in_the_url_authenticates_and_stays_secret(
    pkgfs: RunPkgfs, tmp_path: Path, pypiserver: PypiServer
) -> None:
    lock = _project(tmp_path, pypiserver) / "requirements.txt"
    wrong = _clean(
        pkgfs("sync", "--lock", lock, "--index-url", pypiserver.with_credentials("nope"))
    )
    assert wrong.code == 1
    (line,) = _errors(wrong)
    # pypiserver answers a wrong password with 403 (none at all: 401, below).
    assert line == (
        f"pkgfs: error: http://127.0.0.1:{pypiserver.port}/simple/helper/: HTTP 403 Forbidden:"
        " the index refused the credentials in the URL"
    )
    assert "nope" not in wrong.err
    nothing = _clean(pkgfs("sync", "--lock", lock, "--index-url", pypiserver.url))
    assert nothing.code == 1
    assert "the index wants credentials" in _errors(nothing)[0]
    synced = _clean(
        pkgfs("sync", "--lock", lock, "--index-url", pypiserver.with_credentials(), "--no-compile")
    )
    assert synced.code == 0, synced.err
    assert synced.out == "2 wheels: 0 already in the store, 2 added\n"


def test_credentials_from_netrc(pkgfs: RunPkgfs, tmp_path: Path, pypiserver: PypiServer) -> None:
    lock = _project(tmp_path, pypiserver) / "requirements.txt"
    home = tmp_path / "home"  # the pkgfs fixture's HOME
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1\nlogin {USER}\npassword {TOKEN}\n")
    netrc.chmod(0o600)  # Python's netrc refuses a password others can read
    synced = _clean(pkgfs("sync", "--lock", lock, "--index-url", pypiserver.url, "--no-compile"))
    assert synced.code == 0, synced.err
    assert synced.out == "2 wheels: 0 already in the store, 2 added\n"


def test_credentials_from_an_importable_keyring(
    pkgfs: RunPkgfs, tmp_path: Path, pypiserver: PypiServer
) -> None:
    # keyring is not a dependency: pkgfs imports it when the user has it. A module with
    # keyring's API (get_password, get_credential) stands in for the user's keyring backend.
    lock = _project(tmp_path, pypiserver) / "requirements.txt"
    module = tmp_path / "userlib"
    module.mkdir()
    (module / "keyring.py").write_text(
        "import types\n"
        f"def get_password(service, username):\n    return {TOKEN!r} if username == {USER!r} else None\n"
        f"def get_credential(service, username):\n    return types.SimpleNamespace(username={USER!r}, password={TOKEN!r}) if service.startswith('http://127.0.0.1:') else None\n"
    )
    synced = _clean(
        pkgfs(
            "sync",
            "--lock",
            lock,
            "--index-url",
            pypiserver.url,
            "--no-compile",
            env={"PYTHONPATH": str(module)},
        )
    )
    assert synced.code == 0, synced.err
    assert synced.out == "2 wheels: 0 already in the store, 2 added\n"


def test_a_404_from_one_index_is_not_here(
    pkgfs: RunPkgfs, tmp_path: Path, pypiserver: PypiServer, index_server: IndexServer
) -> None:
    lock = _project(tmp_path, pypiserver) / "requirements.txt"
    # index_server has no helper: its page answers 404, and the next index has it.
    synced = _clean(
        pkgfs(
            "sync",
            "--lock",
            lock,
            "--no-compile",
            "--index-url",
            index_server.simple_url,
            "--index-url",
            pypiserver.with_credentials(),
        )
    )
    assert synced.code == 0, synced.err
    assert "/simple/helper/" in index_server.requests
    # Nowhere: one line naming the package and every place looked.
    pypiserver.stop()
    (pypiserver.packages / "helper-2.0-py3-none-any.whl").unlink()
    pypiserver.start()
    empty = tmp_path / "empty-store"
    missing = _clean(
        pkgfs(
            "lock",
            "show",
            "--lock",
            lock,
            "--index-url",
            index_server.simple_url,
            "--index-url",
            pypiserver.with_credentials(),
            env={"PKGFS_STORE": str(empty)},
        )
    )
    assert missing.code == 1
    assert _errors(missing) == [
        f"pkgfs: error: {lock}: package helper 2.0: no wheel with a listed hash in the store,"
        f" {lock.parent / 'links'}, {index_server.simple_url}, {pypiserver.url}"
    ]


def test_a_stored_wheel_is_used_without_the_network(
    pkgfs: RunPkgfs, tmp_path: Path, pypiserver: PypiServer
) -> None:
    lock = _project(tmp_path, pypiserver) / "requirements.txt"
    first = _clean(
        pkgfs("sync", "--lock", lock, "--index-url", pypiserver.with_credentials(), "--no-compile")
    )
    assert first.code == 0, first.err
    pypiserver.stop()  # from now on any request fails: connection refused
    again = _clean(
        pkgfs("sync", "--lock", lock, "--index-url", pypiserver.with_credentials(), "--no-compile")
    )
    assert again.code == 0, again.err
    assert again.out == "2 wheels: 2 already in the store, 0 added\n"
    shown = json.loads(
        pkgfs("lock", "show", "--json", "--lock", lock, "--index-url", pypiserver.url).out
    )
    assert {(row["name"], row["in_store"]) for row in shown} == {
        ("greeter", True),
        ("helper", True),
    }


class _Flaky(BaseHTTPRequestHandler):
    """A PEP 503 index of one wheel whose every path answers 503 the first time."""

    wheel: Path
    seen: list[str]
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        with self.lock:
            first = self.path not in self.seen
            self.seen.append(self.path)
        if first:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/simple/helper/":
            body = f'<a href="/files/{self.wheel.name}#sha256={_sha256(self.wheel)}">{self.wheel.name}</a>'.encode()
            kind = "text/html"
        elif self.path == f"/files/{self.wheel.name}":
            body, kind = self.wheel.read_bytes(), "application/octet-stream"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_an_index_that_answers_503_once_is_retried(
    pkgfs: RunPkgfs, tmp_path: Path, pypiserver: PypiServer
) -> None:
    lock = _project(tmp_path, pypiserver) / "requirements.txt"

    class Handler(_Flaky):
        wheel = pypiserver.packages / "helper-2.0-py3-none-any.whl"
        seen: list[str] = []  # noqa: RUF012 (the test reads what the server saw)

    handler = Handler
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/simple/"
            synced = pkgfs("sync", "--lock", lock, "--index-url", url, "--no-compile")
        finally:
            server.shutdown()
    assert synced.code == 0, synced.err
    assert handler.seen == ["/simple/helper/"] * 2 + ["/files/helper-2.0-py3-none-any.whl"] * 2


def test_index_settings_as_pip_and_uv_read_them(tmp_path: Path) -> None:
    assert index_config({}, files=[]).index_urls() == [DEFAULT_INDEX]
    conf = tmp_path / "pip.conf"
    conf.write_text(
        "[global]\nindex-url = http://conf.invalid/simple\nextra-index-url =\n    http://x1.invalid/simple\n"
        "    http://x2.invalid/simple\nfind-links = /srv/wheels\n[install]\nfind_links = /srv/other\n"
    )
    config = index_config({"HOME": str(tmp_path), "PIP_CONFIG_FILE": str(conf)})
    assert config.index_urls() == [
        "http://conf.invalid/simple",
        "http://x1.invalid/simple",
        "http://x2.invalid/simple",
    ]
    assert config.find_links == ("/srv/other",)  # [install] overrides [global]
    environ = {
        "HOME": str(tmp_path),
        "PIP_CONFIG_FILE": str(conf),
        "PIP_INDEX_URL": "http://pip.invalid/simple",
        "PIP_EXTRA_INDEX_URL": "http://pipx.invalid/simple",
        "UV_INDEX": "first=http://uv1.invalid/simple http://uv2.invalid/simple",
    }
    assert index_config(environ).index_urls() == [
        "http://uv1.invalid/simple", "http://uv2.invalid/simple", "http://pip.invalid/simple", "http://pipx.invalid/simple",
    ]  # fmt: skip
    environ["UV_DEFAULT_INDEX"] = "http://uvd.invalid/simple"
    assert (
        index_config(environ).index_urls(["http://cli.invalid/simple"])[2]
        == "http://cli.invalid/simple"
    )
    assert index_config(environ).index_urls()[2] == "http://uvd.invalid/simple"
    assert index_config({**environ, "PIP_NO_INDEX": "1"}).index_urls() == []
    assert index_config({"HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull}).index_urls() == [
        DEFAULT_INDEX
    ]


def test_pip_conf_names_the_index(pkgfs: RunPkgfs, tmp_path: Path, pypiserver: PypiServer) -> None:
    lock = _project(tmp_path, pypiserver) / "requirements.txt"
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nindex-url = {pypiserver.with_credentials()}\n")
    synced = _clean(
        pkgfs("sync", "--lock", lock, "--no-compile", env={"PIP_CONFIG_FILE": str(conf)})
    )
    assert synced.code == 0, synced.err


@needs_fuse
def test_requirements_from_find_links_and_a_private_index_mount_as_pip_installs(
    tmp_path: Path, pypiserver: PypiServer
) -> None:
    project = _project(tmp_path, pypiserver)
    venv.create(project / ".venv", with_pip=False)
    env = Env(project, project / ".venv", environ_for(tmp_path))
    index = pypiserver.with_credentials()
    try:
        mounted = env.pkgfs(
            "mount", env.site, "--lock", project / "requirements.txt", "--index-url", index
        )
        assert TOKEN not in mounted.stdout + mounted.stderr
        assert (
            env.run(env.python, "-c", "import greeter, helper; print(helper.WORD)")
            == "from the index\n"
        )
        assert env.run(env.venv / "bin" / "greet") == "hello from the index\n"
        assert "No broken requirements found." in env.pip("check")
        mounted_set = {
            (p["name"], p["version"]) for p in json.loads(env.pip("list", "--format=json"))
        }
    finally:
        force_unmount(env.site)
    # A second environment with the index stopped: every wheel comes from the store.
    pypiserver.stop()
    venv.create(project / "second", with_pip=False)
    second = Env(project, project / "second", env.env)
    try:
        again = second.pkgfs(
            "mount", second.site, "--lock", project / "requirements.txt", "--index-url", index
        )
        assert "added" not in again.stderr, again.stderr
        assert second.run(second.venv / "bin" / "greet") == "hello from the index\n"
    finally:
        force_unmount(second.site)
    pypiserver.start()
    # The same requirements.txt, from the same sources, into a plain venv by pip itself.
    plain = tmp_path / "plain"
    venv.create(plain, with_pip=False)
    pip = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(plain / "bin" / "python"),
        "--disable-pip-version-check",
    ]
    pip_env = isolated(dict(os.environ))
    installed = subprocess.run([*pip, "install", "-q", "-r", project / "requirements.txt", "--index-url", index],
                               cwd=project, env=pip_env, capture_output=True, text=True, check=False)  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    listed = subprocess.run(
        [*pip, "list", "--format=json"], env=pip_env, capture_output=True, text=True, check=True
    )
    pip_set = {(p["name"], p["version"]) for p in json.loads(listed.stdout)}
    assert mounted_set == pip_set == {("greeter", "1.0"), ("helper", "2.0")}


def test_uv_lock_from_a_private_registry_and_find_links(
    pkgfs: RunPkgfs, tmp_path: Path, pypiserver: PypiServer
) -> None:
    project = _project(tmp_path, pypiserver)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "proj"\nversion = "0.1"\nrequires-python = ">=3.11"\n'
        'dependencies = ["greeter==1.0"]\n[tool.uv]\npackage = false\n'
    )
    uv = Path(sys.executable).parent / "uv"
    locked = subprocess.run(
        [uv, "lock", "--index-url", pypiserver.with_credentials(), "--find-links", "links"],
        cwd=project, env={**isolated(dict(os.environ)), "UV_CACHE_DIR": str(tmp_path / "uv-cache")},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert locked.returncode == 0, locked.stderr
    text = (project / "uv.lock").read_text()
    assert TOKEN not in text  # uv strips credentials: they come from the user's settings
    assert f'source = {{ registry = "{pypiserver.url}" }}' in text
    assert 'source = { registry = "links" }' in text
    lock = project / "uv.lock"
    args = ("sync", "--lock", lock, "--python", sys.executable, "--no-compile")
    refused = _clean(pkgfs(*args))
    assert refused.code == 1
    assert "/packages/helper-2.0-py3-none-any.whl: HTTP 401 Unauthorized" in _errors(refused)[0]
    synced = _clean(pkgfs(*args, env={"UV_INDEX": pypiserver.with_credentials()}))
    assert synced.code == 0, synced.err
    assert synced.out == "2 wheels: 1 already in the store, 1 added\n"  # greeter: the first try


def test_a_stored_listed_wheel_is_preferred_to_a_download(
    pkgfs: RunPkgfs, tmp_path: Path, wheel_dir: Path
) -> None:
    # The lock lists two wheels; the better-tagged one is not stored, the other is: no request.
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    best = WheelMaker(name="dual", tag=f"{tag}-none-any").build(wheel_dir)
    pure = WheelMaker(name="dual").build(wheel_dir)
    assert pkgfs("store", "add", pure).code == 0
    with IndexServer([best, pure]) as server:
        wheels = ", ".join(
            f'{{ url = "{server.url}/files/{w.name}", hashes = {{ sha256 = "{_sha256(w)}" }} }}'
            for w in (best, pure)
        )
        lock = tmp_path / "pylock.toml"
        lock.write_text(
            'lock-version = "1.0"\ncreated-by = "test"\n\n[[packages]]\nname = "dual"\n'
            f'version = "1.0"\nwheels = [{wheels}]\n'
        )
        shown = pkgfs("lock", "show", "--json", "--lock", lock, "--python", sys.executable)
        assert shown.code == 0, shown.err
        assert [(r["wheel"], r["in_store"]) for r in json.loads(shown.out)] == [(pure.name, True)]
        synced = pkgfs("sync", "--lock", lock, "--python", sys.executable, "--no-compile")
        assert synced.out == "1 wheels: 1 already in the store, 0 added\n", synced.err
        assert server.requests == []


def test_https_is_verified_with_the_system_certificates() -> None:
    import truststore  # noqa: PLC0415

    from pkgfs.store.fetch.http import session  # noqa: PLC0415

    adapter = session().get_adapter("https://index.invalid/simple/")
    context = adapter.poolmanager.connection_pool_kw["ssl_context"]  # type: ignore[attr-defined]
    assert isinstance(context, truststore.SSLContext)
    assert session() is session()  # one session, its connections reused, per process
