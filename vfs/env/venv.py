"""The venv around a mount: finding it, and the files a mount puts into it.

A mounted site-packages is the view; what an installer writes elsewhere in the venv (the
scripts in ``bin/``, links to ``.data/data`` and ``.data/headers``) is written here, at
mount, and removed at unmount.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .view import DATA_DIR, View

__all__ = ["Venv", "depopulate_venv", "populate_venv", "venv_of"]


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


def venv_of(mountpoint: Path) -> Venv | None:
    """The venv whose ``lib/pythonX.Y/site-packages`` is ``mountpoint``, if it is one."""
    path = mountpoint.absolute()
    if path.name != "site-packages" or not path.parent.name.startswith("python"):
        return None
    root = path.parent.parent.parent
    if path.parent.parent.name not in ("lib", "lib64") or not (root / "pyvenv.cfg").is_file():
        return None
    return Venv(root=root, site_packages=path)


def populate_venv(venv: Venv, view: View, state: Path) -> None:
    """Put the view's scripts into the venv, as pip would, and link its data files there;
    remember what was made, for unmount to remove."""
    made = []
    for name, file in view.scripts.items():
        path = venv.bin / name
        _write_file(path, file.data or b"", 0o755)
        made.append(str(path))
    # Data and headers are served by the mount under DATA_DIR: the venv gets a symlink at
    # the topmost directory of each that it lacks (share -> .../.pkgfs-data/share), so they
    # cost no copy, and writes through the links land in the overlay, never the store.
    linked: set[str] = set()
    for relative in sorted(view.data):
        parts = relative.split("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if prefix in linked:
                break
            link = venv.root / prefix
            if not link.exists() and not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(venv.site_packages / DATA_DIR / prefix)
                linked.add(prefix)
                made.append(str(link))
                break
            if not link.is_dir() or link.is_symlink():
                break  # a file, or someone else's link, is in the way: leave it
    (state / "scripts.json").write_text(json.dumps(made))


def _write_file(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.pkgfs-tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    os.replace(tmp, path)


def depopulate_venv(state: Path) -> None:
    """Remove the scripts and data links that populate_venv made (listed in scripts.json)."""
    with contextlib.suppress(OSError, ValueError):
        for path in json.loads((state / "scripts.json").read_text()):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        (state / "scripts.json").unlink()
