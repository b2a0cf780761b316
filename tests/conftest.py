"""Shared fixtures: a fresh store per test, a wheel factory, and the pkgfs CLI as a process."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pkgfs.vfs.server.address import Server
from tests.indexserver import IndexServer
from tests.wheelmaker import WheelMaker

PKGFS = [sys.executable, "-m", "pkgfs.vfs"]

# The machine's own pip and uv settings name indexes and find-links; a test names its own.
INDEX_SETTINGS = (
    "PKGFS_INDEX_URL", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX",
    "UV_DEFAULT_INDEX", "UV_INDEX_URL", "UV_INDEX", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS",
    "UV_NO_INDEX", "NETRC",
)  # fmt: skip


def isolated(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` without the machine's index settings, and no pip configuration file."""
    clean = {k: v for k, v in environ.items() if k not in INDEX_SETTINGS}
    clean["PIP_CONFIG_FILE"] = os.devnull
    return clean


def stop_servers(root: Path) -> None:
    """Stop every pkgfs server whose state is below ``root`` (its record names it), as
    ``pkgfs server stop`` does; the mounts stay."""
    for record in root.glob("**/pkgfs/servers/*.server"):
        found = Server(str(record.parent), record.stem).read()
        with contextlib.suppress(OSError):
            if found is not None and b"pkgfs.vfs" in Path(f"/proc/{found[0]}/cmdline").read_bytes():
                os.kill(found[0], signal.SIGTERM)


@pytest.fixture(scope="session", autouse=True)
def _no_server_outlives_the_tests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests that start pkgfs servers (each test's XDG_STATE_HOME has its own) stop them;
    whatever one left running is stopped when the session ends."""
    yield
    stop_servers(tmp_path_factory.getbasetemp())


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


RunPkgfs = Callable[..., Result]


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def wheel_dir(tmp_path: Path) -> Path:
    path = tmp_path / "wheels"
    path.mkdir()
    return path


@pytest.fixture
def make_wheel(wheel_dir: Path) -> Callable[..., Path]:
    """``make_wheel(**fields)`` writes a WheelMaker wheel into a per-test directory."""

    def build(**fields: object) -> Path:
        return WheelMaker(**fields).build(wheel_dir)  # type: ignore[arg-type]

    return build


@pytest.fixture
def pkgfs(store_dir: Path, tmp_path: Path) -> RunPkgfs:
    """Run the real ``pkgfs`` CLI in a subprocess against the test's store."""

    def run(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> Result:
        environ = {
            **isolated(dict(os.environ)),
            "PKGFS_STORE": str(store_dir),
            "HOME": str(tmp_path / "home"),
        }
        environ.pop("XDG_DATA_HOME", None)
        environ.update(env or {})
        proc = subprocess.run(
            [*PKGFS, *map(str, args)], capture_output=True, text=True, env=environ, check=False
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every path below ``root`` with its mode and, for files, a hash of its bytes."""
    state: dict[str, tuple[int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            info = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
            state[str(path.relative_to(root))] = (info.st_mode, digest)
    return state


LOCKPROJECT = Path(__file__).parent / "fixtures" / "lockproject"
PLACEHOLDER = "http://index.invalid"


@pytest.fixture
def index_server() -> Iterator[IndexServer]:
    """A real PEP 503/691 index on loopback, serving the lock fixtures' wheels."""
    with IndexServer(sorted((LOCKPROJECT / "wheels").glob("*.whl"))) as server:
        yield server


@pytest.fixture
def lockproject(tmp_path: Path, index_server: IndexServer) -> Path:
    """The uv-made project of tests/fixtures/lockproject, pointing at ``index_server``."""
    project = tmp_path / "lockproject"
    project.mkdir()
    for name in ("pyproject.toml", "uv.lock", "pylock.toml", "requirements.txt"):
        text = (LOCKPROJECT / name).read_text()
        (project / name).write_text(text.replace(PLACEHOLDER, index_server.url))
    return project


def expected_wheels(tag: str = "cp311") -> list[dict[str, str]]:
    selection: list[dict[str, str]] = json.loads((LOCKPROJECT / "EXPECTED.json").read_text())[tag]
    return selection
