"""The project itself, its workspace members and every editable source: built editable
(PEP 660) once per state of their metadata, ingested like any wheel, remembered.

``uv sync`` and ``pip install -e`` install a local project by asking its build backend for
an *editable wheel* (PEP 660: "build_editable ... must build a .whl file ... the wheel
... may contain a .pth file or a finder" that points at the source tree) and installing
it, with PEP 610's ``direct_url.json``. pkgfs does the same: pypa/build builds the wheel
in an isolated environment (``build.env.DefaultIsolatedEnv``, its build requirements
from the lock's indexes and find-links), and the store ingests it like any wheel, adding

    {"url": "file:///abs/path", "dir_info": {"editable": true}}

as the dist-info's ``direct_url.json`` (PEP 610: "When the requested URL points to a
local directory ... dir_info MUST be present ... editable ... true if the distribution
was/is to be installed in editable mode"). Its scripts then reach ``bin/`` the way every
wheel's do, and the view's RECORD lists ``direct_url.json``. The source is never copied:
the wheel's ``.pth`` (or finder) names the directory, so an edit to a ``.py`` file is
seen at once.

What the build depends on besides the sources is the project's metadata, so the wheel is
remembered under (the absolute directory, the sha256 of the files that define it:
pyproject.toml, setup.cfg, setup.py). The next environment of the project takes the
stored wheel and builds nothing; an edit to those files (a new script, a new dependency)
makes a new key, and the next environment builds again. The record is one small JSON
file per key in ``editables-v1/``, written as every store write is (staged in ``tmp/``,
fsynced, renamed), apart from the index, so an older pkgfs reads the store unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from pkgfs.store.core import Store
from pkgfs.store.errors import BuildError
from pkgfs.store.layout import make_shared_dir
from pkgfs.store.lock.model import EditableProject, LockedWheel, WheelLink

__all__ = [
    "METADATA_FILES",
    "BuildSources",
    "build_editables",
    "direct_url",
    "editable_wheels",
    "metadata_digest",
    "remembered",
    "remembered_for",
    "uv_cache_info",
]

# The files a build backend reads metadata from; any other file is source, seen through
# the .pth without a rebuild.
METADATA_FILES = ("pyproject.toml", "setup.cfg", "setup.py")
RECORDS = "editables-v1"


@dataclass(frozen=True)
class BuildSources:
    """Where an isolated build environment's requirements come from: the lock's indexes
    and find-links, as for its wheels; ``offline`` allows find-links only."""

    index_urls: Sequence[str] = ()
    find_links: Sequence[str] = ()
    offline: bool = False


def metadata_digest(directory: Path) -> str:
    """sha256 (hex) over the name and bytes of each of :data:`METADATA_FILES` in
    ``directory`` that exists. Raises ``OSError`` when one exists but cannot be read."""
    digest = hashlib.sha256()
    for name in METADATA_FILES:
        path = directory / name
        if path.is_file():
            data = path.read_bytes()
            digest.update(f"{name}\0{len(data)}\0".encode())
            digest.update(data)
    return digest.hexdigest()


def direct_url(directory: Path) -> bytes:
    """PEP 610's ``direct_url.json`` for an editable install of ``directory``."""
    record = {"url": directory.absolute().as_uri(), "dir_info": {"editable": True}}
    return json.dumps(record, separators=(",", ":")).encode()


def uv_cache_info(directory: Path) -> bytes | None:
    """uv's ``uv_cache.json`` for an editable install of ``directory``, or None when the
    project configures its own ``[tool.uv] cache-keys`` (then uv reinstalls it on its next
    sync, as it does any install it cannot vouch for).

    uv writes this file into the dist-info of every local project it installs, and reinstalls
    one whose file is missing or no longer matches (``uv sync``, and so ``uv run``, would
    otherwise rebuild every mounted editable into the overlay). uv's documentation (Caching,
    "Dynamic metadata"): "By default, uv will rebuild a local directory dependency if its
    pyproject.toml, setup.py, or setup.cfg file changes, or if a src directory is added or
    removed." The file holds what uv serialises of its ``CacheInfo``: the newest modification
    time of those files as ``timestamp``, and, when there is a ``src`` directory, the same
    time under ``directories`` (so uv 0.13 writes it, and compares it to what it finds).
    Raises ``OSError`` when a file exists but cannot be stat'ed.
    """
    try:
        project = tomllib.loads((directory / "pyproject.toml").read_text())
    except (OSError, ValueError):
        project = {}
    if "cache-keys" in project.get("tool", {}).get("uv", {}):
        return None

    def stamp(mtime_ns: int) -> dict[str, int]:
        return {"secs_since_epoch": mtime_ns // 10**9, "nanos_since_epoch": mtime_ns % 10**9}

    times = [
        (directory / name).stat().st_mtime_ns
        for name in METADATA_FILES
        if (directory / name).is_file()
    ]
    source = directory / "src"
    newest = stamp(max(times)) if times else None
    info = {
        "timestamp": newest,
        "commit": None,
        "tags": None,
        "env": {},
        "directories": {"src": newest} if source.is_dir() else {},
    }
    return json.dumps(info, separators=(",", ":")).encode()


def _record_path(store: Store, directory: Path, digest: str) -> Path:
    key = hashlib.sha256(json.dumps([str(directory), digest]).encode()).hexdigest()
    return store.root / RECORDS / key


def remembered(store: Store, directory: Path, digest: str) -> LockedWheel | None:
    """The stored editable wheel built from ``directory`` when its metadata had ``digest``,
    or None: never built, its record unreadable, or its wheel no longer stored."""
    try:
        record = json.loads(_record_path(store, directory, digest).read_bytes())
        sha256, path = str(record["wheel"]), str(record["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    info = store.index.find_wheel(sha256)
    if info is None or path != str(directory):
        return None
    link = WheelLink(info.filename, None, sha256)
    return LockedWheel(canonicalize_name(info.name), info.version, link, frozenset({sha256}))


def remembered_for(store: Store, project: EditableProject) -> LockedWheel | None:
    """:func:`remembered` for ``project`` as its metadata is now; None as well when its
    directory or metadata cannot be read (building it would say why)."""
    try:
        return remembered(store, project.path, metadata_digest(project.path))
    except OSError:
        return None


def _remember(store: Store, directory: Path, digest: str, sha256: str) -> None:
    """Write the record atomically and durably: staged in tmp/, fsynced, renamed."""
    final = _record_path(store, directory, digest)
    make_shared_dir(final.parent)
    record = {"path": str(directory), "metadata": digest, "wheel": sha256}
    fd, tmp = tempfile.mkstemp(dir=store.layout.tmp, prefix="editable-")
    try:
        os.fchmod(fd, 0o444)  # every user of a shared store reads it (mkstemp makes 0600)
        with open(fd, "wb") as f:
            f.write(json.dumps(record).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    directory_fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


@contextlib.contextmanager
def _pip_settings(sources: BuildSources) -> Iterator[None]:
    """pip reads its index and find-links from the environment (pip's "Environment
    Variables": ``PIP_<OPTION>``); the isolated environment's ``pip install`` inherits
    ours, so these are set for the build's duration only, and restored."""
    settings: dict[str, str] = {}
    if sources.index_urls:
        settings["PIP_INDEX_URL"] = sources.index_urls[0]
    if len(sources.index_urls) > 1:
        settings["PIP_EXTRA_INDEX_URL"] = " ".join(sources.index_urls[1:])
    if sources.find_links:
        settings["PIP_FIND_LINKS"] = " ".join(sources.find_links)
    if sources.offline:
        settings["PIP_NO_INDEX"] = "1"
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _quiet_runner(
    cmd: Sequence[str], cwd: str | None = None, extra_environ: Mapping[str, str] | None = None
) -> None:
    """A pyproject_hooks runner that keeps the backend's output (for the error message,
    through the ``CalledProcessError`` it raises) instead of printing it over pkgfs's."""
    env = {**os.environ, **(extra_environ or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)


def _last_line(*texts: object, marks: tuple[str, ...] = ("ERROR:",)) -> str:
    """The last line of output worth showing: the last line starting with one of ``marks``
    (pip's ``ERROR:``) if any, else the last non-empty one."""
    lines = []
    for text in texts:
        decoded = text.decode(errors="replace") if isinstance(text, bytes) else text
        if decoded:
            lines += [line.strip() for line in str(decoded).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(marks)]
    return (errors or lines or ["no output"])[-1]


@contextlib.contextmanager
def _build_errors(where: Path) -> Iterator[None]:
    """pypa/build's and the backend's failures as one :class:`BuildError` naming ``where``
    and the last line of output; a BuildError raised within passes as it is."""
    import build  # noqa: PLC0415 (pypa/build is needed only when a project is built)

    try:
        yield
    except BuildError:
        raise
    except build.BuildBackendException as exc:
        # The backend's own words say why (uv_build: "Error: failed to open file ...",
        # then a backtrace; setuptools: "error: ..."); pypa/build's ("Backend subprocess
        # exited when trying to invoke build_editable") only when it said nothing.
        cause = exc.exception
        output = (getattr(cause, "stdout", None), getattr(cause, "stderr", None))
        detail = _last_line(*output, marks=("ERROR:", "Error:", "error:"))
        if detail == "no output":
            detail = _last_line(exc)
        raise BuildError(f"{where}: its build backend failed: {detail}") from None
    except build.FailedProcessError as exc:
        detail = _last_line(exc.exception.stderr, exc.exception.stdout, exc)
        raise BuildError(f"{where}: cannot install its build requirements: {detail}") from None
    except subprocess.CalledProcessError as exc:
        # pypa/build installing the build requirements (pip install -r ...): its last words
        # (e.g. "No matching distribution found for ...") say why, the command line does not.
        detail = _last_line(exc.stderr, exc.output)
        if detail == "no output":
            detail = (
                f"{Path(str(exc.cmd[0])).name if exc.cmd else 'a command'} exited {exc.returncode}"
            )
        raise BuildError(f"{where}: cannot install its build requirements: {detail}") from None
    except (build.BuildException, OSError) as exc:
        raise BuildError(f"{where}: cannot build it editable: {exc}") from None


def build_editables(
    projects: Sequence[EditableProject],
    out: Path,
    sources: BuildSources,
    say: Callable[[str], None] = lambda _: None,
) -> list[Path]:
    """The PEP 660 editable wheel of each of ``projects``, in order, built below ``out`` by
    pypa/build in isolated environments (made with the interpreter running pkgfs). The
    projects whose ``[build-system] requires`` are the same share one environment, as a
    workspace's members usually do. ``say`` hears one line per project built.

    Raises :class:`BuildError` naming the directory and the backend's last line of output
    for a project without pyproject.toml or setup.py, whose build requirements cannot be
    installed, or whose backend fails or has no ``build_editable`` hook.
    """
    import build  # noqa: PLC0415
    import build.env  # noqa: PLC0415

    shared: dict[frozenset[str], list[int]] = {}
    for index, project in enumerate(projects):
        where = project.path
        if not any((where / name).is_file() for name in ("pyproject.toml", "setup.py")):
            raise BuildError(f"{where}: no pyproject.toml or setup.py: not a project to install")
        with _build_errors(where):
            requires = frozenset(build.ProjectBuilder(where).build_system_requires)
        shared.setdefault(requires, []).append(index)
    wheels: dict[int, Path] = {}
    with _pip_settings(sources):
        for requires, indexes in shared.items():
            first = projects[indexes[0]].path
            with _build_errors(first), build.env.DefaultIsolatedEnv() as env:
                env.install(requires)
                for index in indexes:
                    project = projects[index]
                    say(f"building {project.name} editable from {project.path}")
                    with _build_errors(project.path):
                        builder = build.ProjectBuilder.from_isolated_env(
                            env, project.path, runner=_quiet_runner
                        )
                        env.install(builder.get_requires_for_build("editable"))
                        directory = out / str(index)
                        directory.mkdir()
                        wheels[index] = Path(builder.build("editable", directory))
    return [wheels[index] for index in range(len(projects))]


def _check_tags(wheel: Path, where: Path, tags: Sequence[Tag]) -> None:
    try:
        wheel_tags = parse_wheel_filename(wheel.name)[-1]
    except InvalidWheelFilename as exc:
        raise BuildError(f"{where}: its backend built {wheel.name}: {exc}") from None
    if not wheel_tags & set(tags):
        raise BuildError(
            f"{where}: its editable wheel {wheel.name} (built with {sys.executable}) does not"
            " suit the target interpreter: install pkgfs with the target's Python"
        )


def editable_wheels(
    store: Store,
    projects: Sequence[EditableProject],
    sources: BuildSources,
    tags: Sequence[Tag],
    say: Callable[[str], None] = lambda _: None,
) -> list[LockedWheel]:
    """One stored editable wheel per project directory: the remembered one where its
    metadata has not changed, else built (:func:`build_editables`), ingested with its
    ``direct_url.json`` and remembered. ``say`` hears one line per build.

    Every missing wheel is built before any is ingested, so a project that cannot be
    built leaves the store as it was. Raises :class:`BuildError` for a project that is
    missing or cannot be built, or whose wheel does not suit ``tags``; :class:`WheelError`
    when a built wheel is refused.
    """
    found: dict[Path, LockedWheel] = {}
    missing: dict[Path, tuple[EditableProject, str]] = {}
    for project in projects:
        where = project.path
        if where in found or where in missing:
            continue
        if not where.is_dir():
            raise BuildError(f"{where}: no such project directory (for {project.name})")
        try:
            digest = metadata_digest(where)
        except OSError as exc:
            raise BuildError(f"{where}: cannot read its metadata: {exc}") from None
        stored = remembered(store, where, digest)
        if stored is None:
            missing[where] = (project, digest)
        else:
            found[where] = stored
    if missing:
        names = ", ".join(str(where) for where in missing)
        store.require_writable(f"it lacks the editable wheel of {names}")
        out = Path(tempfile.mkdtemp(prefix="editable-", dir=store.layout.tmp))
        try:
            todo = [project for project, _ in missing.values()]
            built = build_editables(todo, out, sources, say)
            for where, wheel in zip(missing, built, strict=True):
                _check_tags(wheel, where, tags)
            for (where, (_, digest)), wheel in zip(missing.items(), built, strict=True):
                cache_info = uv_cache_info(where)
                metadata = {} if cache_info is None else {"uv_cache.json": cache_info}
                result = store.add(wheel, direct_url=direct_url(where), metadata=metadata)
                _remember(store, where, digest, result.sha256)
                stored = remembered(store, where, digest)
                if stored is None:  # just written: only a store changed under us gets here
                    raise BuildError(f"{where}: built, but the store lost it: pkgfs store verify")
                found[where] = stored
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return [found[path] for path in dict.fromkeys(p.path for p in projects)]
