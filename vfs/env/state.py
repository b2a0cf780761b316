"""Each mount's state directory: what is mounted where, by which daemon.

``$XDG_STATE_HOME/pkgfs/mounts/<id>/`` (``~/.local/state/pkgfs``) holds one mount's
``mount.json`` (what is mounted where, by which daemon), its overlay (``upper/`` and
``work/``, unless ``--overlay DIR`` puts them elsewhere), its ``log`` and its control
socket. The id is derived from the mountpoint's real path, so remounting the same
mountpoint finds the same overlay.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from pkgfs.store import Store
from pkgfs.store.errors import MountError
from pkgfs.store.hashing import hash_file
from pkgfs.store.xdg import state_home as xdg_state_home

from .saved import load_or_compose
from .view import Bytecode, View

T = TypeVar("T")

__all__ = [
    "MADE_BY_RUN",
    "STATE_FORMAT",
    "UNMOUNTED",
    "MountConfig",
    "MountRecord",
    "load_state_file",
    "mount_dir",
    "read_records",
    "save_state_file",
    "state_home",
]

# The format of the JSON files in a mount's state directory (config.json, mount.json,
# scripts.json). Another pkgfs's files are refused in one line, never half-understood.
STATE_FORMAT = 1
# In a mount's state directory while it is unmounted on purpose (``pkgfs unmount``): the
# mount server's start, which mounts every environment again as after a reboot, leaves it
# unmounted; an explicit ``pkgfs mount --all`` or a mount of it mounts it (and removes it).
UNMOUNTED = "unmounted"
# In the state directory of an environment ``pkgfs run`` mounted: it mounts and unmounts it
# itself, so neither ``pkgfs mount --all`` nor a mount server's start mounts it.
MADE_BY_RUN = "made-by-run"


def state_home(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_STATE_HOME/pkgfs`` (``~/.local/state/pkgfs``): every mount's state directory."""
    return xdg_state_home(environ) / "pkgfs"


def mount_dir(mountpoint: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """The state directory of the mount at ``mountpoint`` (which may not exist yet)."""
    key = hashlib.sha256(os.fsencode(os.path.realpath(mountpoint))).hexdigest()[:16]
    return state_home(environ) / "mounts" / key


@dataclass(frozen=True)
class MountConfig:
    """Everything the daemon needs, written by ``pkgfs mount`` as JSON."""

    mountpoint: str
    store: str
    lock: str
    python: str
    site_packages: str  # venv-relative, for RECORD and script paths
    wheels: list[str]  # sha256 of each wheel in the view
    state: str  # this mount's state directory
    upper: str
    work: str
    allow_other: bool = False
    magic: str = ""  # serve the bytecode compiled for this interpreter magic ("": none)
    cache_tag: str = ""
    lock_sha256: str = ""  # the lock's content when mounted: status tells when it changed
    venv_id: str = ""  # the venv's identity (env/venv.py): a new venv is a new environment
    # The groups and extras asked for (uv sync's options, canonical; "" for the default):
    # with the lock, what this environment is.
    selection: str = ""
    # "" for a mount; for an environment ``pkgfs materialize`` wrote as real files, how
    # (its --link-mode: clone, copy or hardlink). Such an environment is never mounted.
    materialized: str = ""
    # Set by pkgfs rollback: the lock's content this environment was rolled back from. While
    # the lock still has that content, the environment is deliberately not its lock.
    rolled_back_from: str = ""

    def save(self, path: Path) -> None:
        """Write the config to ``path`` atomically. Raises ``OSError``."""
        save_state_file(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> MountConfig:
        """Read a config saved by :meth:`save`. Raises ``OSError`` when it cannot be read,
        ``MountError`` when it is damaged or from another version of pkgfs."""
        data = load_state_file(path)
        try:
            return cls(**data)
        except TypeError as exc:
            raise _other_version(path, data) from exc

    def lock_state(self) -> str:
        """``current``, ``changed`` (its content is not what was mounted: ``pkgfs mount``
        follows it), ``rolled-back`` (``pkgfs rollback`` left the lock's current content
        for an earlier one), ``missing``, or ``unknown`` (unreadable, or mounted by an
        earlier pkgfs, which kept no hash)."""
        try:
            now = hash_file(self.lock)[0]
        except FileNotFoundError:
            return "missing"
        except OSError:
            return "unknown"
        if not self.lock_sha256:
            return "unknown"
        if now == self.lock_sha256:
            return "current"
        return "rolled-back" if now == self.rolled_back_from else "changed"

    def view(self, store: Store) -> View:
        bytecode = Bytecode(self.magic, self.cache_tag) if self.magic else None
        return load_or_compose(store, self.wheels, self.python, self.site_packages, bytecode)


@dataclass(frozen=True)
class MountRecord:
    """What ``pkgfs status`` knows of a mount; written by the daemon once it serves."""

    mountpoint: str
    lock: str
    python: str
    packages: int
    pid: int
    upper: str
    work: str
    log: str
    socket: str
    # How the kernel talks to the daemon: "no-open" (no OPEN/OPENDIR round trips, with the
    # patched pyfuse3) or "open" (stock pyfuse3). Records from before it say neither.
    mode: str = "open"
    selection: str = ""  # the groups and extras of the mount (MountConfig.selection)

    def save(self, directory: Path) -> None:
        """Write ``directory/mount.json`` atomically. Raises ``OSError``."""
        save_state_file(directory / "mount.json", asdict(self))

    @classmethod
    def load(cls, directory: Path) -> MountRecord:
        """Read ``directory/mount.json``. Raises ``OSError`` when it cannot be read,
        ``MountError`` when it is damaged or from another version of pkgfs."""
        path = directory / "mount.json"
        data = load_state_file(path)
        try:
            return cls(**data)
        except TypeError as exc:
            raise _other_version(path, data) from exc


def each_state(
    load: Callable[[Path], T], name: str, environ: Mapping[str, str] = os.environ
) -> Iterator[tuple[Path, T | MountError]]:
    """Every mount's state directory holding the file ``name``, with what ``load`` makes of
    the directory, or the ``MountError`` saying why it cannot be read (damaged, from
    another version, unreadable)."""
    mounts = state_home(environ) / "mounts"
    if not mounts.is_dir():
        return
    for directory in sorted(mounts.iterdir()):
        try:
            yield directory, load(directory)
        except (FileNotFoundError, NotADirectoryError):  # no such file, or a stray file
            continue
        except MountError as exc:
            yield directory, exc
        except OSError as exc:
            yield directory, MountError(f"{directory / name}: {exc.strerror or exc}")


def read_records(
    environ: Mapping[str, str] = os.environ,
) -> Iterator[tuple[Path, MountRecord | MountError]]:
    """Every mount's state directory that holds a ``mount.json``, with its record."""
    return each_state(MountRecord.load, "mount.json", environ)


def save_state_file(path: Path, data: Mapping[str, object]) -> None:
    """Write ``data`` as JSON to ``path``, tagged with :data:`STATE_FORMAT`, atomically (a
    temporary file renamed into place). Raises ``OSError`` (a full disk, say)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with open(fd, "w") as f:
            json.dump({"format": STATE_FORMAT, **data}, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_state_file(path: Path) -> dict[str, Any]:
    """The data :func:`save_state_file` wrote to ``path``, without its format tag.

    Raises ``OSError`` when it cannot be read, and ``MountError`` (one line, saying what
    to do) when it is not JSON or was written by a pkgfs of another state format.
    """
    try:
        data = json.loads(path.read_bytes())
    except ValueError as exc:
        raise MountError(
            f"{path}: damaged ({exc}): pkgfs unmount the mountpoint, then mount it again"
        ) from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise _other_version(path, data)
    data.pop("format")
    return data


def _other_version(path: Path, data: object) -> MountError:
    found = data.get("format", "none") if isinstance(data, dict) else "none"
    mountpoint = data.get("mountpoint") if isinstance(data, dict) else None
    where = mountpoint if isinstance(mountpoint, str) else "the mountpoint"
    return MountError(
        f"{path}: written by another version of pkgfs (state format {found}, this pkgfs"
        f" reads {STATE_FORMAT}): pkgfs unmount {where}, then pkgfs mount it again"
    )
