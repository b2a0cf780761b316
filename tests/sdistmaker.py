"""Real source trees and sdists for tests, built offline.

Each tree declares a PEP 517 in-tree backend (``backend-path = ["."]``, no ``requires``), so
any frontend (pypa/build, pip, uv) builds it without downloading anything. The backend
writes a standard wheel (METADATA, WHEEL, RECORD, console scripts) and a standard sdist
(``{name}-{version}/`` with PKG-INFO), and appends one line per wheel it builds to the file
named by ``$SDISTMAKER_LOG``, so a test can count builds. ``$SDISTMAKER_FAIL=<name>`` makes
that project's wheel build fail; ``$SDISTMAKER_HOLD=<dir>`` makes each wheel build write
``<dir>/started`` and wait for ``<dir>/go``, so a test can interrupt a build.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

from tests.wheelmaker import WheelMaker

__all__ = ["BUILD_LOG_ENV", "builds_logged", "make_backend_wheel", "make_sdist", "make_tree"]

BUILD_LOG_ENV = "SDISTMAKER_LOG"

_BACKEND = '''\
"""In-tree PEP 517 backend of a test project (tests/sdistmaker.py)."""

import base64
import hashlib
import io
import os
import tarfile
import time
import zipfile

NAME = {name!r}
VERSION = {version!r}
REQUIRES = {requires!r}
SCRIPTS = {scripts!r}
HERE = os.getcwd()  # PEP 517: "the current directory is the root of the source tree"


def _dist():
    return NAME.replace("-", "_") + "-" + VERSION


def _metadata():
    lines = ["Metadata-Version: 2.1", "Name: " + NAME, "Version: " + VERSION]
    lines += ["Requires-Dist: " + r for r in REQUIRES]
    return "\\n".join(lines) + "\\n"


def _sources():
    root = os.path.join(HERE, "src")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for filename in sorted(filenames):
            path = os.path.join(dirpath, filename)
            yield os.path.relpath(path, root).replace(os.sep, "/"), path


def _record_hash(data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def _hold():
    # $SDISTMAKER_HOLD=DIR: say "started" there, then wait (a minute at most) for "go".
    hold = os.environ.get("SDISTMAKER_HOLD")
    if hold:
        open(os.path.join(hold, "started"), "w").close()
        for _ in range(600):
            if os.path.exists(os.path.join(hold, "go")):
                break
            time.sleep(0.1)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _hold()
    if os.environ.get("SDISTMAKER_FAIL") == NAME:
        raise RuntimeError("sdistmaker: told to fail building " + NAME)
    log = os.environ.get("{log_env}")
    if log:
        with open(log, "a") as out:
            out.write(NAME + " " + VERSION + "\\n")
    dist_info = _dist() + ".dist-info"
    members = [(name, open(path, "rb").read()) for name, path in _sources()]
    members.append((dist_info + "/METADATA", _metadata().encode()))
    wheel = "Wheel-Version: 1.0\\nGenerator: sdistmaker\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    members.append((dist_info + "/WHEEL", wheel.encode()))
    if SCRIPTS:
        text = "[console_scripts]\\n" + "".join(k + " = " + v + "\\n" for k, v in SCRIPTS.items())
        members.append((dist_info + "/entry_points.txt", text.encode()))
    record = "".join(n + "," + _record_hash(d) + "," + str(len(d)) + "\\n" for n, d in members)
    record += dist_info + "/RECORD,,\\n"
    members.append((dist_info + "/RECORD", record.encode()))
    filename = _dist() + "-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return filename


def build_sdist(sdist_directory, config_settings=None):
    filename = _dist() + ".tar.gz"
    files = [("pyproject.toml", os.path.join(HERE, "pyproject.toml"))]
    if os.path.exists(os.path.join(HERE, "backend.py")):
        files.append(("backend.py", os.path.join(HERE, "backend.py")))
    files += [("src/" + name, path) for name, path in _sources()]
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as archive:
        for name, path in files:
            archive.add(path, _dist() + "/" + name)
        info = tarfile.TarInfo(_dist() + "/PKG-INFO")
        data = _metadata().encode()
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return filename
'''


def _backend(name: str, version: str, requires: list[str], scripts: dict[str, str]) -> str:
    return _BACKEND.format(
        name=name, version=version, requires=requires, scripts=scripts, log_env=BUILD_LOG_ENV
    )


def make_tree(
    root: Path,
    name: str,
    version: str,
    files: dict[str, str],
    requires: list[str] | None = None,
    scripts: dict[str, str] | None = None,
    backend: str | None = None,
) -> Path:
    """A source tree at ``root``: pyproject.toml, the in-tree backend, and ``files`` (paths
    relative to site-packages) under ``src/``. With ``backend``, the tree instead declares
    that installed backend (``requires = [backend]``: see :func:`make_backend_wheel`)."""
    root.mkdir(parents=True, exist_ok=True)
    system = (
        f"requires = [{backend!r}]\nbuild-backend = {backend!r}\n"
        if backend
        else "requires = []\nbuild-backend = 'backend'\nbackend-path = ['.']\n"
    )
    (root / "pyproject.toml").write_text(
        f"[build-system]\n{system}\n"
        f"[project]\nname = {name!r}\nversion = {version!r}\n"
        f"dependencies = {requires or []!r}\n"
    )
    if backend is None:
        (root / "backend.py").write_text(_backend(name, version, requires or [], scripts or {}))
    for relative, text in files.items():
        path = root / "src" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def make_backend_wheel(backend: str, name: str, version: str, out: Path) -> Path:
    """A wheel of the build backend ``backend`` (one module), which builds project ``name``
    ``version``: for trees whose build requirements must be installed from an index."""
    files = {f"{backend}.py": _backend(name, version, [], {})}
    return WheelMaker(name=backend, version="1.0", files=files).build(out)


def make_sdist(tree: Path, out: Path) -> Path:
    """The sdist of ``tree``, made by pypa/build (no isolation needed: the backend is in-tree);
    a tree declaring an installed backend is packed here, as that backend would."""
    out.mkdir(parents=True, exist_ok=True)
    if not (tree / "backend.py").exists():
        project = tomllib.loads((tree / "pyproject.toml").read_text())["project"]
        dist = f"{project['name'].replace('-', '_')}-{project['version']}"
        sdist = out / f"{dist}.tar.gz"
        with tarfile.open(sdist, "w:gz") as archive:
            archive.add(tree, dist)
            pkg_info = (
                f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
            )
            info = tarfile.TarInfo(f"{dist}/PKG-INFO")
            info.size = len(pkg_info.encode())
            archive.addfile(info, io.BytesIO(pkg_info.encode()))
        return sdist
    before = set(out.iterdir())
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", out, tree],
        check=True,
        capture_output=True,
    )
    (made,) = set(out.iterdir()) - before
    return made


def builds_logged(log: Path) -> list[str]:
    """The ``name version`` lines the backend logged, one per wheel built."""
    return log.read_text().splitlines() if log.exists() else []
