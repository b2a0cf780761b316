"""The interpreter an environment runs, as wheel tags and a marker environment.

Wheels and markers are chosen for the target interpreter, not for the one running pkgfs.
The target is asked once, by running ``packaging.tags.sys_tags()`` and
``packaging.markers.default_environment()`` inside it (pkgfs's own copy of packaging,
put on its path in isolated mode, so the target needs nothing installed). The answer is
cached, keyed by the interpreter's real path (symlinks resolved), size and mtime and
packaging's version.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import packaging
from packaging.tags import Tag, parse_tag

from pkgfs.store.errors import TargetError
from pkgfs.store.xdg import cache_home

__all__ = ["Target", "TargetError", "default_python", "probe_target"]

_PROBE_VERSION = 2  # part of the cache key: bump when the probe answers more
_ANSWERS_KEPT = 16  # interpreters whose answers a process keeps in memory
_answers: dict[str, object] = {}  # a cache file's path: the answer it holds
_PROBE = """
import json, sys
if sys.version_info < (3, 9):
    sys.exit("Python %d.%d is older than 3.9, the oldest that pkgfs targets" % sys.version_info[:2])
sys.path.insert(0, sys.argv[1])
import importlib.util
from packaging import markers, tags
json.dump({
    "tags": [str(t) for t in tags.sys_tags()],
    "environment": markers.default_environment(),
    "magic": importlib.util.MAGIC_NUMBER.hex(),
    "cache_tag": sys.implementation.cache_tag,
}, sys.stdout)
"""


@dataclass(frozen=True)
class Target:
    """A target interpreter: its supported tags, most preferred first, and its markers."""

    python: Path
    tags: tuple[Tag, ...]
    environment: Mapping[str, str]
    magic: str = ""  # importlib.util.MAGIC_NUMBER, hex: which bytecode it runs
    cache_tag: str = ""  # sys.implementation.cache_tag, e.g. cpython-311

    @property
    def python_version(self) -> str:
        return self.environment["python_full_version"]

    @property
    def best_tag(self) -> Tag:
        return self.tags[0]


def default_python(
    project_dir: Path | None = None, environ: Mapping[str, str] = os.environ
) -> Path:
    """The interpreter to target when none is named.

    The active virtual environment's, else the project's ``.venv`` (where uv puts it), else
    the interpreter running pkgfs.
    """
    candidates = []
    if environ.get("VIRTUAL_ENV"):
        candidates.append(Path(environ["VIRTUAL_ENV"]) / "bin" / "python")
    if project_dir is not None:
        candidates.append(project_dir / ".venv" / "bin" / "python")
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    return Path(sys.executable)


def _resolve(python: str | os.PathLike[str]) -> Path:
    text = os.fspath(python)
    found = shutil.which(text) if os.sep not in text else text
    if not found or not os.access(found, os.X_OK) or os.path.isdir(found):
        raise TargetError(f"{text}: no such Python interpreter")
    return Path(found).absolute()


def _cache_dir(environ: Mapping[str, str]) -> Path:
    return cache_home(environ) / "pkgfs" / "interpreters"


def probe_target(python: str | os.PathLike[str], environ: Mapping[str, str] = os.environ) -> Target:
    """Ask ``python`` for its tags and markers, or take the cached answer.

    Raises :class:`TargetError` when ``python`` is not an executable file, cannot be run,
    fails, or does not answer as a Python interpreter with packaging would. A cached
    answer that is damaged is asked again.
    """
    path = _resolve(python)
    # Keyed by the real executable: a venv's python is a symlink to its base, and the answer
    # (tags, markers, magic) is the base's, so every new venv of a base shares one probe.
    real = os.path.realpath(path)
    try:
        info = os.stat(real)
    except OSError as exc:
        raise TargetError(f"{python}: {exc.strerror}") from None
    key = f"{real}\0{info.st_size}\0{info.st_mtime_ns}\0{packaging.__version__}\0{_PROBE_VERSION}"
    cache = _cache_dir(environ) / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")
    if str(cache) in _answers:  # read before in this process (the mount server asks often)
        return _target(path, _answers[str(cache)]) or _unexpected(path)
    try:
        answer = json.loads(cache.read_text())
        target = _target(path, answer)
    except (OSError, ValueError):
        target = None
    if target is None:
        answer = _run_probe(path)
        target = _target(path, answer) or _unexpected(path)
        _write_cache(cache, answer)
    if len(_answers) >= _ANSWERS_KEPT:
        _answers.clear()
    _answers[str(cache)] = answer
    return target


def _unexpected(path: Path) -> Target:
    raise TargetError(f"{path}: did not answer as a Python interpreter does")


def _target(path: Path, answer: object) -> Target | None:
    """The Target a probe's answer describes, or None for an answer of the wrong shape."""
    if not isinstance(answer, dict):
        return None
    tags, environment = answer.get("tags"), answer.get("environment")
    magic, cache_tag = answer.get("magic"), answer.get("cache_tag")
    if not (
        isinstance(tags, list)
        and tags
        and all(isinstance(t, str) for t in tags)
        and isinstance(environment, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in environment.items())
        and "python_full_version" in environment
        and isinstance(magic, str)
        and isinstance(cache_tag, str)
    ):
        return None
    try:
        parsed = _parse_tags(tuple(tags))
    except ValueError:  # not interpreter-abi-platform
        return None
    return Target(
        python=path, tags=parsed, environment=environment, magic=magic, cache_tag=cache_tag
    )


@functools.lru_cache(maxsize=4)
def _parse_tags(tags: tuple[str, ...]) -> tuple[Tag, ...]:
    """The tags of a probe's answer, parsed once per process (the mount server parses
    them once for all its commands)."""
    return tuple(tag for text in tags for tag in parse_tag(text))


def _run_probe(path: Path) -> object:
    here = os.path.dirname(os.path.dirname(os.path.abspath(packaging.__file__)))
    try:
        # -I: ignore the environment and user site; -S: no site-packages at all.
        proc = subprocess.run(
            [path, "-I", "-S", "-c", _PROBE, here],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TargetError(f"{path}: cannot run it: {exc}") from None
    except UnicodeDecodeError:
        raise TargetError(f"{path}: did not answer as a Python interpreter does") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise TargetError(f"{path}: cannot ask it for its tags: {last}")
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise TargetError(f"{path}: did not answer as a Python interpreter does") from None


def _write_cache(cache: Path, answer: object) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".tmp")
        with open(fd, "w") as f:
            json.dump(answer, f)
        os.replace(tmp, cache)
    except OSError:
        pass  # a cache we cannot write only costs a probe next time
