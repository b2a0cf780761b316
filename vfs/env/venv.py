"""The venv around a mount: finding it, and the files a mount puts into it.

A mounted site-packages is the view; what an installer writes elsewhere in the venv (the
scripts in ``bin/``, links to ``.data/data`` and ``.data/headers``) is written here, at
mount, through the containment of ``pkgfs.store.contain``, and removed at unmount where
it is still what was written.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pkgfs.store.contain import Made, Root, is_plain_name, is_plain_path
from pkgfs.store.errors import MountError, UnsafePathError
from pkgfs.store.hashing import record_hash_of

from .view import DATA_DIR, View

__all__ = [
    "Venv",
    "depopulate_venv",
    "few",
    "mountpoint_of",
    "populate_interrupted",
    "populate_venv",
    "remove_recorded_scripts",
    "scripts_recorded",
    "site_packages_for",
    "site_packages_of",
    "venv_identity",
    "venv_of",
]

_RECORD = "scripts.json"  # in the mount's state directory: what populate_venv made
_DUE = "scripts.due"  # in the same: the view is about to change, the scripts after it
_FORMAT = 2  # 1 was a bare list of paths, removed whatever they held


@dataclass(frozen=True)
class Venv:
    """A virtual environment whose site-packages pkgfs mounts."""

    root: Path
    site_packages: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def project(self) -> Path:
        """Where the lock is looked for: the directory holding the venv (as uv lays it out)."""
        return self.root.parent

    @property
    def site_packages_rel(self) -> str:
        return str(self.site_packages.relative_to(self.root))


def site_packages_of(path: Path) -> Path | None:
    """The site-packages directory of the venv whose root is ``path`` (it holds
    ``pyvenv.cfg``), or None when ``path`` is no venv root: ``pkgfs mount .venv`` means its
    site-packages, never the whole venv (which would hide ``bin/python``). Raises
    ``MountError`` for a venv root with no single ``lib/pythonX.Y/site-packages``."""
    if path.name == "site-packages" or not os.path.isfile(path / "pyvenv.cfg"):
        return None  # (isfile: a stale mount's ENOTCONN is not a venv either)
    try:
        versions = sorted(e for e in os.listdir(path / "lib") if e.startswith("python"))
    except OSError:
        versions = []
    # Not Path.glob: it stats each candidate, and a stale mount's ENOTCONN escapes it.
    found = [path / "lib" / v / "site-packages" for v in versions]
    found = [p for p in found if _present(p)]
    if len(found) != 1:
        what = "none" if not found else ", ".join(str(f.relative_to(path)) for f in found)
        raise MountError(f"{path}: a venv with {what} as lib/pythonX.Y/site-packages: name one")
    return found[0]


def site_packages_for(python: Path, python_version: str) -> str:
    """The venv-relative site-packages of a venv whose interpreter is ``python``: its own
    when ``python`` is a venv's, else what ``python -m venv`` makes for ``python_version``
    (``X.Y``): ``lib/pythonX.Y/site-packages``."""
    root = python.absolute().parent.parent
    with contextlib.suppress(MountError):
        found = site_packages_of(root)
        if found is not None:
            return str(found.relative_to(root))
    return f"lib/python{python_version}/site-packages"


def _present(path: Path) -> bool:
    """Whether ``path`` exists; a stale mount (its daemon died: ENOTCONN) is there."""
    try:
        os.lstat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return True


MARKER = ".pkgfs-venv"  # in the venv's root: which venv this is, for its environment


def venv_identity(venv: Venv, create: bool = False) -> str | None:
    """The venv's identity: a random id pkgfs wrote into it the first time it mounted it
    (``create``), so that a new venv made at the same path (``rm -rf .venv``, then ``python
    -m venv .venv``) is a new environment and does not inherit the old one's overlay. None
    for a venv pkgfs never marked. Raises ``MountError`` when it cannot be written."""
    path = venv.root / MARKER
    try:
        found = path.read_text().strip()
    except FileNotFoundError:
        found = ""
    if found or not create:
        return found or None
    identity = os.urandom(16).hex()
    fd, tmp = tempfile.mkstemp(dir=venv.root, prefix=MARKER + ".")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(identity + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return identity


def few(names: Sequence[str], most: int = 3) -> str:
    """The first ``most`` of ``names``, and how many more: ``"a, b, c and 4 more"`` (a
    directory's contents in a one-line error)."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def mountpoint_of(path: Path) -> Path:
    """The mountpoint a command's argument names: a venv's root stands for its
    site-packages. Raises ``MountError`` as :func:`site_packages_of`."""
    return site_packages_of(path) or path


def venv_of(mountpoint: Path) -> Venv | None:
    """The venv whose ``lib/pythonX.Y/site-packages`` is ``mountpoint``, if it is one."""
    path = mountpoint.absolute()
    if path.name != "site-packages" or not path.parent.name.startswith("python"):
        return None
    root = path.parent.parent.parent
    if path.parent.parent.name not in ("lib", "lib64") or not (root / "pyvenv.cfg").is_file():
        return None
    return Venv(root=root, site_packages=path)


def populate_venv(venv: Venv, view: View, state: Path) -> list[str]:
    """Put the view's scripts into the venv's ``bin/``, as pip would, and link its data
    files there; record in ``state``'s scripts.json exactly what was made, for unmount.

    Every write goes through :class:`pkgfs.store.contain.Root`: nothing below the venv is
    followed through a symlink, and nothing the venv already has is replaced. A script
    whose name the venv already uses (its own ``python``, ``pip`` or ``activate``) is
    skipped, as installer skips with ``overwrite_existing=False``; so is a name that is
    not one plain file name. Returns one line per thing skipped, for the caller to warn
    with. What an earlier mount of this state left (its daemon killed) is removed first,
    where still unchanged. Raises ``OSError`` if the venv or the state cannot be written.
    """
    warnings = depopulate_venv(state)
    made: list[Made] = []
    try:
        with Root(venv.root) as root:
            # What is about to be made (where nothing is yet) is recorded first: killed half
            # way (kill -9 of a mount, or of a switch), the record still names every file
            # made, and the next depopulate removes each where it holds exactly that.
            planned: list[Made] = []
            _write_scripts(root, venv, view, planned, dry=True)
            _link_data(root, venv, view, planned, dry=True)
            _save_record(state, venv, planned, complete=False)
            warnings += _write_scripts(root, venv, view, made)
            warnings += _link_data(root, venv, view, made)
    finally:
        _save_record(state, venv, made)
    (state / _DUE).unlink(missing_ok=True)  # only once the record is whole
    return warnings


def populate_due(state: Path) -> None:
    """Say, before a mount's view changes under its venv (a switch), that the venv's
    scripts are to be written after it: a command killed between the switch and
    :func:`populate_venv` leaves :func:`populate_interrupted` true, so the next mount
    writes them. Raises ``OSError`` when ``state`` cannot be written."""
    (state / _DUE).touch()


def populate_interrupted(state: Path) -> bool:
    """True when the last :func:`populate_venv` of ``state`` was killed before it was done
    (its record is still the plan), or a switch was killed before it began
    (:func:`populate_due`): the venv's scripts may be missing."""
    if (state / _DUE).exists():
        return True
    try:
        record = json.loads((state / _RECORD).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("complete") is False


def _save_record(state: Path, venv: Venv, made: list[Made], complete: bool = True) -> None:
    record = {"format": _FORMAT, "venv": str(venv.root), "made": [m.to_json() for m in made]}
    record["complete"] = complete
    fd, tmp = tempfile.mkstemp(dir=state, prefix=".scripts-")
    with open(fd, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, state / _RECORD)


def _write_scripts(
    root: Root, venv: Venv, view: View, made: list[Made], dry: bool = False
) -> list[str]:
    """Write the view's scripts into bin/, adding each to ``made``; with ``dry``, write
    nothing and add what would be written."""
    warnings = []
    for name, file in sorted(view.scripts.items()):
        if not is_plain_name(name):  # refused at ingest and at load: only a bug gets here
            warnings.append(f"{venv.bin}: script {name!r} is not a plain file name; skipped")
            continue
        if dry:
            if _kind(root, f"bin/{name}") == "missing":
                made.append(Made(f"bin/{name}", hashlib.sha256(file.data or b"").hexdigest()))
            continue
        try:
            script = root.create_file(f"bin/{name}", file.data or b"", 0o755)
        except OSError as exc:  # bin/ is a symlink or a file: write nothing through it
            return [*warnings, f"{venv.bin}: {exc.strerror}; no scripts written"]
        if script is None:
            warnings.append(f"{venv.bin / name}: exists, kept; the locked script {name} is skipped")
        else:
            made.append(script)
    return warnings


def _link_data(
    root: Root, venv: Venv, view: View, made: list[Made], dry: bool = False
) -> list[str]:
    """Data and headers are served by the mount under DATA_DIR: the venv gets a symlink at
    the topmost directory of each that it lacks (share -> .../.pkgfs-data/share), so they
    cost no copy, and writes through the links land in the overlay, never the store. With
    ``dry``, nothing is linked and ``made`` gets what would be."""
    warnings = []
    done: set[str] = set()  # prefixes linked, or found in the way
    for relative in sorted(view.data):
        parts = relative.split("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if prefix in done:
                break
            if not is_plain_path(prefix):
                done.add(prefix)
                warnings.append(f"{venv.root}: data path {prefix!r} is not plain names; skipped")
                break
            kind = _kind(root, prefix)
            if kind == "missing":
                target = str(venv.site_packages / DATA_DIR / prefix)
                link = Made(prefix, symlink=target) if dry else root.create_symlink(prefix, target)
                if link is not None:
                    made.append(link)
                done.add(prefix)
                break
            if kind != "directory":  # a file or a link is in the way: leave it
                done.add(prefix)
                warnings.append(f"{venv.root / prefix}: exists, kept; {relative} is not linked")
                break
    return warnings


def _kind(root: Root, relative: str) -> str:
    """Whether ``relative`` is missing, a directory, or other: a file, a symlink, or a
    path through one."""
    try:
        info = root.lstat(relative)
    except OSError:
        return "other"
    if info is None:
        return "missing"
    return "directory" if stat.S_ISDIR(info.st_mode) else "other"


def depopulate_venv(state: Path) -> list[str]:
    """Remove what :func:`populate_venv` made (listed in ``state``'s scripts.json) where it
    is still exactly that: a script the user edited or replaced, a file something wrote in
    its place, stays. Never follows a symlink. Returns one line per path left in place;
    raises nothing for a venv or a record that is gone."""
    path = state / _RECORD
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        return [f"{path}: unreadable ({exc}); nothing removed from the venv"]
    warnings = []
    try:
        if not isinstance(record, dict) or record.get("format") != _FORMAT:
            raise ValueError("from another version of pkgfs")
        venv = Path(record["venv"])
        made = [Made.from_json(row) for row in record["made"]]
        with Root(venv) as root:
            for item in reversed(made):
                if not root.remove(item) and _exists(root, item.path):
                    warnings.append(f"{venv / item.path}: changed since mount, left in place")
    except FileNotFoundError:
        pass  # the venv is gone, and what was made with it
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.append(f"{path}: {exc}; nothing removed from the venv")
    path.unlink(missing_ok=True)
    return warnings


def _exists(root: Root, relative: str) -> bool:
    try:
        return root.lstat(relative) is not None
    except (OSError, UnsafePathError):
        return False


def scripts_recorded(venv: Venv, upper: Path, dist_infos: list[str]) -> list[tuple[str, str]]:
    """The scripts pip or uv wrote into the venv's ``bin/`` for distributions they
    installed into the overlay: ``(name, "sha256=...")`` for each file in ``bin/`` that the
    ``RECORD`` of each of ``dist_infos`` (directories of the overlay's ``upper``) lists,
    with the hash it lists (PEP 376/627: a path relative to site-packages, ``sha256=``
    and urlsafe base64). An unreadable RECORD lists nothing."""
    found = []
    for info in dist_infos:
        try:
            text = (upper / info / "RECORD").read_text(errors="replace")
        except OSError:
            continue
        for row in csv.reader(text.splitlines()):
            if len(row) < 2 or not row[1].startswith("sha256="):
                continue
            full = os.path.normpath(venv.site_packages / row[0])
            name = os.path.basename(full)
            if os.path.dirname(full) == str(venv.bin) and is_plain_name(name):
                found.append((name, row[1]))
    return found


def remove_recorded_scripts(venv: Venv, scripts: list[tuple[str, str]]) -> list[str]:
    """Remove each of ``scripts`` (from :func:`scripts_recorded`) from ``bin/`` where it is
    still a plain file with the hash its RECORD lists, as ``pip uninstall`` removes what it
    installed; a script edited since stays. Never follows a symlink. Returns the names
    removed."""
    removed = []
    try:
        bin_fd = os.open(venv.bin, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        for name, digest in scripts:
            try:
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # no FIFO wait
                fd = os.open(name, flags, dir_fd=bin_fd)
            except OSError:
                continue
            with os.fdopen(fd, "rb") as f:
                plain = stat.S_ISREG(os.fstat(f.fileno()).st_mode)
                same = plain and record_hash_of(f.read()) == digest
            if same:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=bin_fd)
                    removed.append(name)
    finally:
        os.close(bin_fd)
    return removed
