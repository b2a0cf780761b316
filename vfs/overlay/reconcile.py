"""Reconciling the overlay with a new lower view: what an environment's local changes
become when its lock changes (a switch, a rollback, or a mount of a lock changed since).

The rules (README, "Envs follow their lock"):

- A package that pip or uv installed, upgraded, reinstalled or uninstalled in the overlay
  (its ``NAME-VERSION.dist-info`` added, replaced or whited out) and that the new view pins
  is **dropped** from the overlay: its dist-info, the files its RECORDs list (the locked
  one's before and after, and the overlay's own), their bytecode, and the directories that
  hold only those. One note per package says so. With ``keep_overlay`` it is kept (and
  the new view's dist-info of it hidden, so one version shows), the note a warning.
- An edit to a file (its upper copy over a lower file) whose locked content the new view
  leaves unchanged is **carried over**: nothing is done.
- An edit to a file whose locked content changed (or that the new view no longer has),
  not part of a package pip or uv changed, is **set aside**: linked into ``aside`` (below
  the overlay directory), then dropped from the overlay, with one note naming both; the
  new locked file shows.
- A deletion (whiteout) of a name the new view does not have is dropped silently (it hides
  nothing); every other change (new files, deletions) is carried over.

Dropping goes through :meth:`MergedTree.reset`: what goes moves into the work directory
at once (one rename each) and is deleted after, so a crash leaves either the change or
trash that the next mount clears. Nothing here imports FUSE.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name

from pkgfs.vfs.env.view import View

from .tree import MergedTree

__all__ = ["Plan", "carry_out", "plan", "shadowing"]

_DIST_INFO = ".dist-info"


@dataclass
class _Package:
    name: str  # canonical
    dist_infos: set[str] = field(default_factory=set)  # top-level .dist-info dirs, any layer
    overlay_version: str | None = None  # the version the overlay installed (None: removed)
    files: set[str] = field(default_factory=set)  # from every RECORD known


@dataclass
class Plan:
    """What reconciling does: paths to drop from the overlay and files to set aside, with
    one note per package dropped or kept and per file set aside."""

    drop: list[str] = field(default_factory=list)
    aside: list[str] = field(default_factory=list)
    hide: list[str] = field(default_factory=list)  # the new view's dist-infos of kept packages
    notes: list[str] = field(default_factory=list)  # one line each
    warnings: list[str] = field(default_factory=list)  # --keep-overlay: what shadows the lock


def _dist_name(directory: str) -> tuple[str, str] | None:
    """(canonical name, version) of a top-level ``NAME-VERSION.dist-info``, else None.

    PyPA, "Recording installed projects": the directory "is named as
    {name}-{version}.dist-info ... replace dash (-) characters with underscore (_)
    characters, so the .dist-info directory always has exactly one dash (-) character in
    its stem". Older installers did not always; the last dash is taken, as versions have
    none."""
    if "/" in directory or not directory.endswith(_DIST_INFO):
        return None
    stem = directory[: -len(_DIST_INFO)]
    if "-" not in stem:
        return None
    name, version = stem.rsplit("-", 1)
    return str(canonicalize_name(name)), version


def _record_paths(data: bytes) -> set[str]:
    """The site-packages paths a RECORD lists (``../`` paths, outside it, left out).

    PyPA, "Recording installed projects", the RECORD file: a CSV file whose first field is
    each file's path, which "may be either absolute, or relative to the directory
    containing the .dist-info directory (commonly, the site-packages directory)"."""
    found = set()
    for row in csv.reader(io.StringIO(data.decode("utf-8", "replace"))):
        if row and row[0] and not row[0].startswith(("/", "../")):
            found.add(posixpath.normpath(row[0]))
    return found


def _view_record(view: View, dist_info: str) -> set[str]:
    file = view.files.get(f"{dist_info}/RECORD")
    return _record_paths(file.data) if file is not None and file.data is not None else set()


def _upper_record(tree: MergedTree, dist_info: str) -> set[str]:
    path = f"{dist_info}/RECORD"
    if path not in tree.upper_paths:
        return set()
    try:
        fd = tree.open_upper_fd(path, os.O_RDONLY)
    except OSError:
        return set()
    with open(fd, "rb") as f:
        return _record_paths(f.read(1 << 24))


def _source_of(pyc: str) -> str | None:
    """PEP 3147, backwards: ``pkg/__pycache__/mod.TAG.pyc`` -> ``pkg/mod.py``."""
    directory, name = posixpath.split(pyc)
    if posixpath.basename(directory) != "__pycache__" or not name.endswith(".pyc"):
        return None
    return posixpath.join(posixpath.dirname(directory), name.split(".", 1)[0] + ".py")


class _Planner:
    def __init__(self, tree: MergedTree, new: View) -> None:
        self.tree = tree
        self.old = tree.view
        self.new = new
        self.changes = tree.changes()

    def overlay_packages(self) -> dict[str, _Package]:
        """The packages whose dist-info the overlay added, replaced, changed or removed."""
        found: dict[str, _Package] = {}
        for change in self.changes:
            top = change.path.split("/", 1)[0]
            named = _dist_name(top)
            if named is None:
                continue
            package = found.setdefault(named[0], _Package(named[0]))
            package.dist_infos.add(top)
            if top in self.tree.upper_paths and top not in self.old.dirs:
                package.overlay_version = named[1]
            elif top in self.tree.upper_paths and change.kind != "deleted":
                package.overlay_version = package.overlay_version or named[1]
        for package in found.values():
            for view in (self.old, self.new):
                for directory in view.dirs:
                    named = _dist_name(directory)
                    if named is not None and named[0] == package.name:
                        package.dist_infos.add(directory)
            for dist_info in package.dist_infos:
                package.files |= _view_record(self.old, dist_info)
                package.files |= _view_record(self.new, dist_info)
                package.files |= _upper_record(self.tree, dist_info)
        return found

    def _ours(self, path: str, package: _Package) -> bool:
        if path in package.files or path.split("/", 1)[0] in package.dist_infos:
            return True
        source = _source_of(path)
        return source is not None and source in package.files

    def _below(self, directory: str, paths: Iterable[str]) -> list[str]:
        prefix = directory + "/"
        return [p for p in paths if p.startswith(prefix)]

    def belongs(self, path: str, kind: str, package: _Package) -> bool:
        """Whether the overlay change ``kind`` at ``path`` is the package's doing."""
        if self._ours(path, package):
            return True
        prefix = path + "/"
        if not any(f.startswith(prefix) for f in package.files):
            return False  # not a directory of the package
        tree = self.tree
        upper_files = [
            p
            for p in self._below(path, tree.upper_paths)
            if p not in tree.view.dirs and not tree.is_dir(p)
        ]
        if not all(self._ours(p, package) for p in upper_files):
            return False
        if kind in ("replaced", "deleted"):  # it hides the lower directory's files
            return all(self._ours(p, package) for p in self._below(path, self.old.files))
        return True


def plan(tree: MergedTree, new: View, keep_overlay: bool = False) -> Plan:
    """How ``tree``'s overlay is reconciled with ``new`` (``tree.view`` being the view it
    was made over). Reads the upper layer; changes nothing."""
    planner = _Planner(tree, new)
    result = Plan()
    pinned = {str(canonicalize_name(name)): version for name, version, _file in new.wheels}
    dropped: set[str] = set()
    packages: set[str] = set()  # every change that is a package's (pip's or uv's)
    for name, package in sorted(planner.overlay_packages().items()):
        mine = [c.path for c in planner.changes if planner.belongs(c.path, c.kind, package)]
        packages.update(mine)
        if name not in pinned:
            continue  # the lock does not have it: it shadows nothing locked
        what = (
            f"{name} {package.overlay_version} (installed in the overlay)"
            if package.overlay_version
            else f"{name} (uninstalled in the overlay)"
        )
        done = "is dropped from the overlay" if package.overlay_version else "is back"
        if keep_overlay:
            # Kept whole: its locked dist-info must not show beside the overlay's.
            result.hide += sorted(d for d in package.dist_infos if d in new.dirs)
            result.warnings.append(
                f"{what} is KEPT over the locked {name} {pinned[name]} (--keep-overlay): the"
                " environment is not what its lock says; pkgfs diff shows it"
            )
            continue
        dropped.update(mine)
        result.drop += mine
        result.notes.append(f"{what} {done}: the lock pins {name} {pinned[name]}")
    for change in planner.changes:
        if change.path in packages:
            continue  # dropped above, or a package kept whole (never half set aside)
        path = change.path
        old, now = tree.view.files.get(path), new.files.get(path)
        if change.kind == "modified" and old is not None and old != now:
            result.aside.append(path)
        elif change.kind == "deleted" and path not in new.files and path not in new.dirs:
            result.drop.append(path)  # hides nothing any more
    return result


def carry_out(tree: MergedTree, plan: Plan, aside_root: Path) -> list[str]:
    """Do what ``plan`` says: link each file to set aside into a new directory below
    ``aside_root`` (named by the time), then drop it and the plan's paths from the overlay
    (into the work directory's trash; the caller empties it with ``tree.empty_trash()``).
    Returns the paths whose merged view changed, for the caller to invalidate; adds a note
    per file set aside. Raises ``OSError`` when a file cannot be set aside (nothing is
    dropped then)."""
    if plan.aside:
        aside_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ-", time.gmtime())
        aside = Path(tempfile.mkdtemp(prefix=stamp, dir=aside_root))
    for path in plan.aside:
        target = aside / path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target, src_dir_fd=tree.upper_fd, follow_symlinks=False)
        plan.notes.append(
            f"your edit of {path} is set aside in {target}: the lock changed that file"
        )
    for path in plan.hide:
        tree.hide(path)
    if not plan.drop and not plan.aside:
        return list(plan.hide)
    return [*plan.hide, *tree.reset([*plan.drop, *plan.aside], empty_trash=False)]


def shadowing(tree: MergedTree) -> list[str]:
    """One line per package that pip or uv installed, upgraded or uninstalled in the
    overlay: what shadows the lock (``pkgfs diff``)."""
    locked = {str(canonicalize_name(n)): v for n, v, _file in tree.view.wheels}
    lines = []
    for name, package in sorted(_Planner(tree, tree.view).overlay_packages().items()):
        was = f"the locked {name} {locked[name]}" if name in locked else "no locked version"
        if package.overlay_version:
            lines.append(
                f"{name} {package.overlay_version} is installed in the overlay, over {was}"
            )
        else:
            lines.append(f"{name} is uninstalled in the overlay ({was})")
    return lines
