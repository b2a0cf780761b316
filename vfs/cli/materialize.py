"""``pkgfs materialize``: a lock's environment written into a venv as real files.

For where FUSE is absent (``pkgfs mount`` names this command then). It prepares exactly as a
mount does (resolve, sync and compile what is missing, compose the view: from a read-only
store, all of it must be there already), writes the view beside the venv's site-packages
(``pkgfs.vfs.env.materialize``), exchanges it into place, writes the scripts and data links
as a mount does, and records the environment in the mount's state directory, marked as
materialized, so that ``pkgfs env list`` shows it and ``pkgfs store gc`` keeps its wheels.

All or nothing: on any failure (Ctrl-C included) the new tree is removed, the old one put
back, and the environment's record restored; the venv is as it was, but for its
``.pkgfs-venv`` identity (written as a mount writes it) and, after a failure writing
``bin/`` itself, the scripts an earlier materialize had made there.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import sys
from pathlib import Path
from typing import TextIO

from pkgfs.store import Store
from pkgfs.store.errors import MountError
from pkgfs.store.lock import discover_lock
from pkgfs.vfs.env.locks import holding
from pkgfs.vfs.env.materialize import (
    PREFIX,
    LinkMode,
    Written,
    exchange_into_place,
    leftovers,
    remove_tree,
    write_tree,
)
from pkgfs.vfs.env.state import MountConfig, mount_dir
from pkgfs.vfs.env.venv import Venv, depopulate_venv, few, mountpoint_of, populate_venv, venv_of
from pkgfs.vfs.fuse.mounts import mount_state

from .mount import _check_python, prepare
from .output import print_json

__all__ = ["cmd_materialize"]


def _venv(given: str) -> Venv:
    site = mountpoint_of(Path(given).absolute())
    venv = venv_of(site)
    if venv is None:
        raise MountError(
            f"{given}: not a venv nor a venv's lib/pythonX.Y/site-packages: make one"
            f" (python3 -m venv --without-pip DIR), then pkgfs materialize DIR"
        )
    if mount_state(site) != "unmounted":
        raise MountError(f"{site}: a pkgfs mount is there: pkgfs unmount it first")
    return venv


def _previous(state: Path) -> tuple[bytes | None, MountConfig | None]:
    """The environment's config as it is before this command (its bytes, to restore)."""
    try:
        data = (state / "config.json").read_bytes()
    except FileNotFoundError:
        return None, None
    try:
        return data, MountConfig.load(state / "config.json")
    except (OSError, MountError):
        return data, None


def _warn_overlay(site: Path, previous: MountConfig | None) -> None:
    """A mount's overlay (local edits, what pip installed) is not carried into the files:
    said in one line, with where it stays."""
    if previous is None or previous.materialized:
        return
    upper = Path(previous.upper)
    changed = sum(len(files) + len(dirs) for _, dirs, files in os.walk(upper))
    if changed:
        print(
            f"pkgfs: warning: {site}: the {changed} entries of its mount's overlay (local edits,"
            f" what pip or uv installed) are not in the materialized files; they stay in"
            f" {upper} until pkgfs env rm",
            file=sys.stderr,
        )


def _check_empty(site: Path, previous: MountConfig | None) -> None:
    """What is replaced must be pkgfs's own: an empty site-packages, or one materialized
    before; anything else (pip, a whole installed environment) is refused, as a mount
    refuses to hide it."""
    if previous is not None and previous.materialized:
        return
    present = sorted(os.listdir(site)) if site.is_dir() else []
    if present:
        shown = few(present)
        raise MountError(
            f"{site}: not empty ({shown}), and not materialized by pkgfs: it would be replaced;"
            " make the venv without packages (python -m venv --without-pip DIR, or uv venv"
            " DIR), or empty it"
        )


def cmd_materialize(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs materialize VENV``. Raises ``PkgfsError`` (one line) when it cannot, having
    left the venv and the environment's record as they were."""
    venv = _venv(args.target)
    site = venv.site_packages
    if args.link_mode == "hardlink" and os.geteuid() == 0:
        raise MountError(
            f"{site}: --link-mode hardlink as root: root writes through the objects' read-only"
            " mode, so an edit would change the store; use --link-mode clone, or materialize"
            " as the user who runs the venv"
        )
    if args.python is not None:
        _check_python(Path(args.python), venv)
    args.python = str(venv.python)
    if args.lock is None:
        args.lock = discover_lock(venv.project)
        print(f"pkgfs: using {args.lock}", file=sys.stderr)
    args.allow_other = False
    state = mount_dir(site)
    created = next((p for p in reversed([state, *state.parents]) if not p.exists()), None)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    with holding(state, f"{site}: busy: another pkgfs command prepares it"):
        previous_bytes, previous = _previous(state)
        try:
            _check_empty(site, previous)
            _warn_overlay(site, previous)
            config, written = _materialize(args, venv, state)
        except BaseException:
            _restore(state, previous_bytes, created)
            raise
    _say(args, config, written, out)
    return 0


def _materialize(args: argparse.Namespace, venv: Venv, state: Path) -> tuple[MountConfig, Written]:
    site = venv.site_packages
    for leftover in leftovers(site):  # of an interrupted materialize
        remove_tree(leftover)
    new = site.parent / f"{PREFIX}{os.urandom(6).hex()}"
    with Store.open_to_prepare(getattr(args, "store", None)) as store:
        config, view = prepare(args, store, mountpoint=site, venv=venv, state=state, overlay=state)
        config = dataclasses.replace(config, materialized=args.link_mode)
        config.save(state / "config.json")  # never a mount's, even after a kill -9 here
        try:
            written = write_tree(view, store.layout.objects, new, LinkMode(args.link_mode))
        except BaseException:
            remove_tree(new)
            raise
    old = exchange_into_place(new, site)
    try:
        for warning in populate_venv(venv, view, state):
            print(f"pkgfs: warning: {warning}", file=sys.stderr)
        config.save(state / "config.json")
    except BaseException:
        depopulate_venv(state)
        if old is not None:
            remove_tree(exchange_into_place(old, site) or old)
        else:
            os.rename(site, new)
            remove_tree(new)
        raise
    if old is not None:
        remove_tree(old)
    return config, written


def _restore(state: Path, previous: bytes | None, created: Path | None) -> None:
    """The environment's record as it was before this command."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    with contextlib.suppress(OSError):
        if previous is None:
            (state / "config.json").unlink(missing_ok=True)
        else:
            (state / "config.json").write_bytes(previous)


def _say(args: argparse.Namespace, config: MountConfig, written: Written, out: TextIO) -> None:
    if getattr(args, "json", False):
        row = {
            "site_packages": config.mountpoint,
            "lock": config.lock,
            "python": config.python,
            "packages": len(config.wheels),
            "selection": config.selection,
            "link_mode": config.materialized,
            "reflinked": written.reflinked,
            "copied": written.copied,
            "hardlinked": written.hardlinked,
            "generated": written.generated,
            "bytes": written.bytes,
        }
        print_json(row, out)
        return
    selected = f", {config.selection}" if config.selection else ""
    print(
        f"materialized {len(config.wheels)} packages into {config.mountpoint}"
        f" ({written.describe()}; lock {config.lock}{selected}, python {config.python})",
        file=out,
    )
