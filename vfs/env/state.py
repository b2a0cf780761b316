"""Each mount's state directory: what is mounted where, by which daemon.

``$XDG_STATE_HOME/pkgfs/mounts/<id>/`` (``~/.local/state/pkgfs``) holds one mount's
``mount.json`` (what is mounted where, by which daemon), its overlay (``upper/`` and
``work/``, unless ``--overlay DIR`` puts them elsewhere), its ``log`` and its control
socket. The id is derived from the mountpoint's real path, so remounting the same
mountpoint finds the same overlay.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from pkgfs.store import Store
from pkgfs.store.xdg import state_home as xdg_state_home

from .saved import load_or_compose
from .view import Bytecode, View

__all__ = [
    "MountConfig",
    "MountRecord",
    "mount_dir",
    "read_records",
    "state_home",
]


def state_home(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_STATE_HOME/pkgfs`` (``~/.local/state/pkgfs``): every mount's state directory."""
    return xdg_state_home(environ) / "pkgfs"


def mount_dir(mountpoint: Path, environ: Mapping[str, str] = os.environ) -> Path:
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

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> MountConfig:
        return cls(**json.loads(path.read_text()))

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

    def save(self, directory: Path) -> None:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".mount-")
        with open(fd, "w") as f:
            json.dump(asdict(self), f, indent=2)
        os.replace(tmp, directory / "mount.json")

    @classmethod
    def load(cls, directory: Path) -> MountRecord:
        return cls(**json.loads((directory / "mount.json").read_text()))


def read_records(environ: Mapping[str, str] = os.environ) -> Iterator[tuple[Path, MountRecord]]:
    mounts = state_home(environ) / "mounts"
    if not mounts.is_dir():
        return
    for directory in sorted(mounts.iterdir()):
        try:
            yield directory, MountRecord.load(directory)
        except (OSError, ValueError, TypeError):
            continue
