"""A lock's source, got into the store's ``tmp/`` and verified before anything is built.

Each source has a key, under which the store remembers the wheel built from it:

- an sdist from an index: ``sdist:<sha256>`` of the file;
- an archive by URL or path: ``archive:<url>:<sha256>`` (the URL goes into direct_url.json);
- git: ``git:<url>@<commit>``;
- a directory: ``directory:<url>:<tree sha256>``, a hash of every file of the tree (its
  path, executable bit and bytes; symlinks by target) leaving out VCS, build and cache
  directories (:data:`EXCLUDED`).

A subdirectory, when the lock names one, is appended as ``#subdirectory=<dir>``. The sha256
and the commit the lock names are checked on the source before it is unpacked or built.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pkgfs.store.contain import is_plain_name, is_safe_path
from pkgfs.store.errors import BuildError, FetchError, redact
from pkgfs.store.fetch.http import get
from pkgfs.store.hashing import hash_file
from pkgfs.store.lock.model import BuildSource

__all__ = ["EXCLUDED", "describe", "directory_hash", "fetch_source", "known_key"]

# Never part of a directory source: VCS metadata, build output and caches (pip and uv copy
# or hash a tree the same way, leaving these out).
EXCLUDED = frozenset(
    {".git", ".hg", ".svn", ".bzr", ".venv", ".tox", ".nox", "__pycache__", "build", "dist"}
    | {".mypy_cache", ".pytest_cache", ".ruff_cache"}
)
_CHUNK = 1 << 20
_COMMIT_LENGTHS = (40, 64)  # git's sha1 and sha256 object names


def describe(source: BuildSource) -> str:
    """The source in a few words, credentials redacted: ``sdist``, ``git URL@commit``..."""
    if source.kind == "sdist":
        return "sdist"
    if source.kind == "git":
        return redact(f"git {source.url}@{(source.commit or '?')[:12]}")
    return redact(f"{source.kind} {source.url}")


def _excluded(name: str) -> bool:
    return name in EXCLUDED or name.endswith(".egg-info")


def _tree(root: Path) -> list[tuple[str, Path]]:
    """Every file and symlink under ``root`` that a directory source is made of, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _excluded(d))
        for name in filenames:
            if not name.endswith((".pyc", ".pyo")):
                path = Path(dirpath, name)
                found.append((path.relative_to(root).as_posix(), path))
        # os.walk does not descend into symlinked directories; they are kept as links.
        found += [
            (Path(dirpath, d).relative_to(root).as_posix(), Path(dirpath, d))
            for d in dirnames
            if Path(dirpath, d).is_symlink()
        ]
    return sorted(found)


def directory_hash(root: Path) -> str:
    """The sha256 of a source tree: each kept file's path, executable bit and bytes.

    Raises :class:`BuildError` when the tree cannot be read.
    """
    total = hashlib.sha256()
    try:
        for relative, path in _tree(root):
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                total.update(f"L {relative}\0{os.readlink(path)}\0".encode())
            elif stat.S_ISREG(info.st_mode):
                digest, _ = hash_file(path)
                mode = "x" if info.st_mode & stat.S_IXUSR else "f"
                total.update(f"{mode} {relative}\0{digest}\0".encode())
    except OSError as exc:
        raise BuildError(f"{root}: cannot read the source tree: {exc.strerror}") from None
    return total.hexdigest()


def _local_path(url: str) -> Path | None:
    parts = urlsplit(url)
    return Path(unquote(parts.path)) if parts.scheme == "file" else None


def _subdirectory(source: BuildSource) -> str:
    return f"#subdirectory={source.subdirectory}" if source.subdirectory else ""


def _file_key(source: BuildSource, sha256: str) -> str:
    if source.kind == "sdist":
        return f"sdist:{sha256}{_subdirectory(source)}"
    return f"archive:{redact(source.url)}:{sha256}{_subdirectory(source)}"


def known_key(source: BuildSource) -> str | None:
    """The source's key when it can be known without downloading: None for a remote sdist
    or archive whose sha256 the lock does not name. Hashes a local directory or file.

    Raises :class:`BuildError` for a directory or local file that cannot be read.
    """
    # Keys are stored: credentials in a URL never are (the commit or sha256 is the identity).
    if source.kind == "git":
        return f"git:{redact(source.url)}@{source.commit}{_subdirectory(source)}"
    local = _local_path(source.url)
    if source.kind == "directory":
        if local is None or not local.is_dir():
            raise BuildError(f"{redact(source.url)}: not a directory")
        return f"directory:{source.url}:{directory_hash(local)}{_subdirectory(source)}"
    if source.sha256 is not None:
        return _file_key(source, source.sha256)
    if local is not None:
        try:
            return _file_key(source, hash_file(local)[0])
        except OSError as exc:
            raise BuildError(f"{local}: {exc.strerror}") from None
    return None


def _checked_file(name: str, source: BuildSource, work: Path) -> tuple[Path, str]:
    """The sdist or archive, downloaded into ``work`` or read in place, and its sha256,
    which must be the lock's when the lock names one."""
    local = _local_path(source.url)
    try:
        if local is None:
            filename = Path(unquote(urlsplit(source.url).path)).name
            filename = filename if is_plain_name(filename) else "source"
            (work / "download").mkdir()
            local = work / "download" / filename
            with (
                contextlib.closing(get(source.url, stream=True)) as response,
                open(local, "wb") as out,
            ):
                shutil.copyfileobj(response.raw, out, _CHUNK)
        digest, _ = hash_file(local)
    except OSError as exc:
        if isinstance(exc, FetchError):
            raise BuildError(f"{name}: {exc}") from None
        raise BuildError(f"{name}: {redact(source.url)}: {exc.strerror}") from None
    if source.sha256 is not None and digest != source.sha256:
        raise BuildError(
            f"{name}: {redact(source.url)} has sha256 {digest[:16]}..., the lock says"
            f" {source.sha256[:16]}...: refusing to build it"
        )
    return local, digest


def _unpack(name: str, archive: Path, into: Path) -> Path:
    """Unpack an sdist or source archive; its project directory (the one top directory)."""
    into.mkdir()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                for member in zipped.namelist():
                    if not is_safe_path(member.rstrip("/")):
                        raise BuildError(f"{name}: {archive.name}: unsafe member {member!r}")
                zipped.extractall(into)
        else:
            with tarfile.open(archive) as tarred:
                # Python's "data" filter refuses absolute paths, "..", links out of the tree
                # and device files (PEP 706).
                tarred.extractall(into, filter="data")
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise BuildError(f"{name}: {archive.name}: not a readable sdist or archive ({exc})") from None
    entries = list(into.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else into


def _git(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    try:
        return subprocess.run(
            ["git", "-c", "advice.detachedHead=false", *args],
            cwd=cwd,
            env=environ,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise BuildError(f"{name}: cannot run git: {exc.strerror}") from None


def _checkout(name: str, source: BuildSource, into: Path) -> Path:
    """A checkout of exactly the lock's commit: fetched by its id where the server allows,
    else with every branch and tag, then checked to be that commit."""
    commit = (source.commit or "").lower()
    shown = redact(source.url)
    if len(commit) not in _COMMIT_LENGTHS or any(c not in "0123456789abcdef" for c in commit):
        raise BuildError(f"{name}: git {shown}: the lock pins no full commit id ({commit!r})")
    into.mkdir()
    _git(name, ["init", "-q"], into)
    fetched = _git(name, ["fetch", "-q", "--depth", "1", source.url, commit], into)
    if fetched.returncode != 0:
        refs = ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"]
        fetched = _git(name, ["fetch", "-q", source.url, *refs], into)
        if fetched.returncode != 0:
            error = " ".join(fetched.stderr.split())
            raise BuildError(f"{name}: cannot fetch git {shown}: {error}")
    if _git(name, ["cat-file", "-e", f"{commit}^{{commit}}"], into).returncode != 0:
        raise BuildError(f"{name}: git {shown} has no commit {commit}: the lock does not match")
    checkout = _git(name, ["checkout", "-q", "--detach", commit], into)
    head = _git(name, ["rev-parse", "HEAD"], into).stdout.strip()
    if checkout.returncode != 0 or head != commit:
        raise BuildError(f"{name}: git {shown}: cannot check out {commit}")
    if (into / ".gitmodules").exists():
        submodules = _git(
            name,
            ["-c", "protocol.file.allow=always", "submodule", "update", "--init", "--recursive"],
            into,
        )
        if submodules.returncode != 0:
            raise BuildError(f"{name}: git {shown}: its submodules cannot be fetched")
    return into


def _copy_tree(name: str, root: Path, into: Path) -> Path:
    """A copy of the directory source's kept files, so the build writes nothing into it."""
    try:
        for relative, path in _tree(root):
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                os.symlink(os.readlink(path), target)
            else:
                shutil.copy2(path, target)
        into.mkdir(exist_ok=True)
    except OSError as exc:
        raise BuildError(f"{name}: cannot copy {root}: {exc.strerror}") from None
    return into


def fetch_source(name: str, source: BuildSource, work: Path) -> tuple[Path, str]:
    """(the project directory to build, the source's key), with everything under ``work``.

    ``name`` (``docopt 0.6.2``) prefixes errors. Raises :class:`BuildError` when the source
    cannot be read, downloaded, unpacked or checked out, or is not what the lock pins (the
    sha256 of an sdist or archive, the commit of a git source).
    """
    if source.kind == "git":
        project = _checkout(name, source, work / "src")
        key = known_key(source)
        assert key is not None
    elif source.kind == "directory":
        key = known_key(source)
        assert key is not None
        local = _local_path(source.url)
        assert local is not None
        project = _copy_tree(name, local, work / "src")
    else:
        archive, digest = _checked_file(name, source, work)
        key = _file_key(source, digest)
        project = _unpack(name, archive, work / "src")
    if source.subdirectory:
        if not is_safe_path(source.subdirectory) or not (project / source.subdirectory).is_dir():
            raise BuildError(f"{name}: no subdirectory {source.subdirectory!r} in the source")
        project = project / source.subdirectory
    return project, key
