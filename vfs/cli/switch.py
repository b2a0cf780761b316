"""Environments follow their lock: ``pkgfs mount`` on a mounted environment whose lock
changed switches it live, ``pkgfs rollback`` switches back, and a mount of a lock changed
since the overlay was made reconciles the overlay first.

A live switch: the command resolves, syncs and composes the new environment as a mount
does (``pkgfs.vfs.cli.mount.prepare``), saving its config as ``next.json``; then asks the
mount's daemon to switch (``pkgfs.vfs.fuse.switch``: the overlay reconciled, the lower
layer swapped under the live mount, the kernel told what to forget); then rewrites the
venv's scripts for the new view. The config switched from is kept as ``previous.json``;
``pkgfs rollback`` switches to it (and the one it leaves becomes the previous).

Killed at any point (``kill -9``), the mount serves one view: the old one if the daemon was
not yet asked, else the new one (the daemon finishes the switch alone). The venv's scripts
are marked due before the daemon is asked, and recorded before they are written
(``populate_due``, ``populate_venv``): the next ``pkgfs mount`` writes those an interrupted
switch left out, and unmount removes every one written.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from pkgfs.store import Store
from pkgfs.store.errors import MountError
from pkgfs.store.hashing import hash_file
from pkgfs.vfs.env.locks import holding
from pkgfs.vfs.env.state import MountConfig, MountRecord, mount_dir
from pkgfs.vfs.env.venv import (
    Venv,
    mountpoint_of,
    populate_due,
    populate_interrupted,
    populate_venv,
    venv_of,
)
from pkgfs.vfs.env.view import View
from pkgfs.vfs.fuse.mounts import mount_state
from pkgfs.vfs.fuse.wire import ask
from pkgfs.vfs.overlay import MergedTree
from pkgfs.vfs.overlay.reconcile import carry_out, plan

from .lock import selection_of
from .output import print_json

__all__ = ["cmd_rollback", "follow_lock", "reconcile_unmounted", "say_behind"]

NEXT = "next.json"  # as pkgfs.vfs.fuse.switch reads it (not imported: no trio here)
PREVIOUS = "previous.json"
SWITCH_TIMEOUT = 600.0  # seconds the daemon has to load and install a view


def _why_switch(args: argparse.Namespace, config: MountConfig) -> str | None:
    """What ``args`` asks that the mounted environment ``config`` is not (another lock, its
    lock's new content, other groups), said for "switched MOUNTPOINT to ...": None when
    it is what is asked."""
    if Path(args.lock).absolute() != Path(config.lock):
        return str(args.lock)
    state = config.lock_state()
    if state in ("changed", "rolled-back"):
        return f"the new {Path(config.lock).name}"
    if selection_of(args).describe() != config.selection:
        return selection_of(args).describe() or "the default groups"
    return None


def _keep_mounted_with(args: argparse.Namespace, config: MountConfig, venv: Venv | None) -> None:
    """A switch keeps what the daemon serves from: its store and its interpreter. Fills
    them into ``args``; ``MountError`` when ``args`` asks for others."""
    given = getattr(args, "store", None)
    if given is not None and Path(given).absolute() != Path(config.store).absolute():
        raise MountError(
            f"{config.mountpoint}: mounted from the store {config.store}: a switch keeps it"
            " (pkgfs unmount it, then mount it with another --store)"
        )
    args.store = config.store
    python = str(venv.python) if venv is not None else config.python
    if args.python is not None and os.path.realpath(args.python) != os.path.realpath(python):
        raise MountError(
            f"{config.mountpoint}: mounted for {python}: a switch keeps it (pkgfs unmount it,"
            " then mount it with another --python)"
        )
    args.python = python


@contextlib.contextmanager
def _switching(state: Path, mountpoint: Path) -> Iterator[None]:
    """One switch of a mount at a time (``flock`` of ``state/switch.lock``). Raises
    ``MountError`` when another is under way."""
    busy = f"{mountpoint}: busy: another pkgfs mount or rollback is switching it"
    with holding(state / "switch.lock", busy, create=True):
        yield


@contextlib.contextmanager
def _next_config(state: Path) -> Iterator[None]:
    """``next.json`` lives only while its command does: once the daemon has switched to it
    (or the switch failed), it goes. A command killed meanwhile leaves it, harmless."""
    try:
        yield
    finally:
        (state / NEXT).unlink(missing_ok=True)


def follow_lock(args: argparse.Namespace, out: TextIO, mountpoint: Path) -> int:
    """``pkgfs mount`` of a mounted environment: switched to its lock (or the lock and
    groups asked) when that changed, live; else nothing to do (said, exit 0). Raises
    ``MountError`` (one line) when the switch fails: the mount serves what it served."""
    from .mount import prepare  # noqa: PLC0415 (mount imports this module)

    state = mount_dir(mountpoint)
    config = MountConfig.load(state / "config.json")
    if args.lock is None:
        args.lock = Path(config.lock)  # its own lock, wherever the command runs
    reason = _why_switch(args, config)
    venv = venv_of(mountpoint)
    if reason is None and venv is not None and populate_interrupted(state):
        with _switching(state, mountpoint), Store.open_to_prepare(config.store) as store:
            _rewrite_scripts(venv, config.view(store), state)
        print(f"wrote the scripts of {venv.root} (a switch was interrupted)", file=out)
        return 0
    if reason is None:  # `uv lock && pkgfs mount .venv` with the lock unchanged: nothing to do
        if getattr(args, "json", False):
            row = {"mountpoint": str(mountpoint), "lock": str(args.lock), "up_to_date": True}
            print_json(row, out)
        else:
            print(f"{mountpoint}: already mounted, up to date with {args.lock}", file=out)
        return 0
    _keep_mounted_with(args, config, venv)
    args.allow_other = config.allow_other  # a switch keeps the mount's options
    args.no_compile = args.no_compile or not config.magic
    with _switching(state, mountpoint), _next_config(state):
        with Store.open_to_prepare(args.store) as store:
            new, view = prepare(
                args,
                store,
                mountpoint=mountpoint,
                venv=venv,
                state=state,
                overlay=Path(config.upper).parent,
                save_as=NEXT,
            )
        reply = _ask_switch(state, mountpoint, getattr(args, "keep_overlay", False))
        _rewrite_scripts(venv, view, state)
    _say(args, out, f"switched {mountpoint} to {reason}", reply=reply, config=new)
    return 0


def _ask_switch(state: Path, mountpoint: Path, keep_overlay: bool) -> dict[str, object]:
    """The daemon switched to ``next.json``: its reply. Before it is asked, the venv's
    scripts are marked due, so that a command killed after the switch and before the
    scripts leaves the next ``pkgfs mount`` to write them. Raises ``MountError`` when the
    daemon does not answer or the switch fails."""
    record = MountRecord.load(state)
    populate_due(state)
    request: dict[str, object] = {"op": "switch", "keep_overlay": keep_overlay}
    try:
        reply = ask(record.socket.replace("@", "\0", 1), request, timeout=SWITCH_TIMEOUT)
    except (OSError, ValueError) as exc:
        raise MountError(
            f"the daemon of {mountpoint} is not answering ({exc.__class__.__name__}: {exc}):"
            f" pkgfs unmount {mountpoint}, then mount it again"
        ) from None
    if not reply.get("ok"):
        (state / "scripts.due").unlink(missing_ok=True)  # it serves what it served
        raise MountError(
            f"{mountpoint}: the switch failed ({reply.get('error')}); it serves what it served"
        )
    for note in _strings(reply.get("notes")):
        print(f"pkgfs: {mountpoint}: {note}", file=sys.stderr)
    for warning in _strings(reply.get("warnings")):
        print(f"pkgfs: WARNING: {mountpoint}: {warning}", file=sys.stderr)
    return reply


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _rewrite_scripts(venv: Venv | None, view: View, state: Path) -> None:
    """The venv's scripts and data links, for the new view (what the old one made goes,
    where unchanged: ``populate_venv`` removes it first)."""
    if venv is None:
        return
    try:
        warnings = populate_venv(venv, view, state)
    except OSError as exc:
        raise MountError(
            f"{venv.root}: switched, but its scripts could not be rewritten: {exc}"
        ) from None
    for warning in warnings:
        print(f"pkgfs: warning: {warning}", file=sys.stderr)


def _say(
    args: argparse.Namespace,
    out: TextIO,
    what: str,
    *,
    reply: dict[str, object],
    config: MountConfig,
) -> None:
    added, removed = _strings(reply.get("added")), _strings(reply.get("removed"))
    changed = _strings(reply.get("changed"))
    if getattr(args, "json", False):
        row = {"mountpoint": config.mountpoint, "lock": config.lock, "packages": len(config.wheels)}
        row |= {"added": added, "removed": removed, "changed": changed}
        row |= {"notes": _strings(reply.get("notes")), "selection": config.selection}
        print_json(row, out)
        return
    detail = ", ".join([*(f"+{a}" for a in added), *(f"-{r}" for r in removed), *changed])
    print(
        f"{what}: +{len(added)} -{len(removed)} ~{len(changed)} packages"
        + (f" ({detail})" if detail else ""),
        file=out,
    )


def cmd_rollback(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs rollback MOUNTPOINT``: switch a mounted environment to its previous config
    (the one it had before its last switch); the one it leaves becomes the previous.
    Raises ``MountError`` (one line) when it is not mounted, has no previous, or the
    switch fails."""
    mountpoint = mountpoint_of(Path(args.mountpoint).absolute())
    state = mount_dir(mountpoint)
    if not (state / "config.json").is_file():
        raise MountError(f"{mountpoint}: pkgfs knows no environment there (pkgfs env list)")
    if not (state / PREVIOUS).is_file():
        raise MountError(f"{mountpoint}: nothing to roll back to: its lock has not changed yet")
    if mount_state(mountpoint) != "ok":
        raise MountError(
            f"{mountpoint}: not mounted: pkgfs mount it (which follows its lock), then roll back"
        )
    previous = MountConfig.load(state / PREVIOUS)
    now = ""
    with contextlib.suppress(OSError):
        now = hash_file(previous.lock)[0]
    # While the lock keeps the content rolled back from, status says "rolled-back", not
    # "changed"; rolling back to the lock's own content is following it again.
    target = dataclasses.replace(
        previous, rolled_back_from="" if previous.lock_sha256 == now else now
    )
    with _switching(state, mountpoint), _next_config(state):
        with Store.open_to_prepare(previous.store) as store:
            view = target.view(store)  # a wheel gone from the store fails here, changing nothing
        target.save(state / NEXT)
        reply = _ask_switch(state, mountpoint, getattr(args, "keep_overlay", False))
        _rewrite_scripts(venv_of(mountpoint), view, state)
    what = f"rolled {mountpoint} back to its previous environment"
    _say(args, out, what, reply=reply, config=target)
    return 0


def reconcile_unmounted(
    args: argparse.Namespace,
    store: Store,
    state: Path,
    before: MountConfig | None,
    new: tuple[MountConfig, View],
) -> None:
    """A mount of an environment whose wheels changed since it was last mounted (its config
    then was ``before``; ``new`` is the config and view it mounts now): its
    overlay is reconciled with the new view as a switch does (notes on stderr), and the
    config it had is kept as ``previous.json``. Raises ``OSError`` when the overlay cannot
    be changed."""
    config, view = new
    if before is None:
        return
    if before.wheels == config.wheels and before.site_packages == config.site_packages:
        return
    try:
        old_view = before.view(store)
    except (OSError, ValueError) as exc:  # its wheels are gone from the store
        print(
            f"pkgfs: warning: {config.mountpoint}: the overlay is not reconciled with the new"
            f" lock (the earlier environment cannot be read: {exc}); pkgfs diff shows it",
            file=sys.stderr,
        )
        return
    keep = getattr(args, "keep_overlay", False)
    tree = MergedTree(old_view, store.layout.objects, Path(config.upper), Path(config.work))
    try:
        reconciled = plan(tree, view, keep)
        carry_out(tree, reconciled, Path(config.upper).parent / "set-aside")
        tree.empty_trash()
    finally:
        tree.close()
    for note in reconciled.notes:
        print(f"pkgfs: {config.mountpoint}: {note}", file=sys.stderr)
    for warning in reconciled.warnings:
        print(f"pkgfs: WARNING: {config.mountpoint}: {warning}", file=sys.stderr)
    before.save(state / PREVIOUS)


def say_behind(lock: Path, err: TextIO) -> None:
    """After ``pkgfs sync``: one line per mounted environment of ``lock`` whose lock
    changed since, with the one command that switches it (sync itself changes no mount)."""
    from pkgfs.vfs.env.registry import Environment, environments  # noqa: PLC0415

    for _directory, env in environments():
        if not isinstance(env, Environment) or Path(env.config.lock) != lock.absolute():
            continue
        mountpoint = env.config.mountpoint
        if env.config.lock_state() == "changed" and mount_state(Path(mountpoint)) == "ok":
            print(
                f"pkgfs: {mountpoint} is mounted with an earlier {lock.name}:"
                f" pkgfs mount {mountpoint} switches it (live, without unmounting)",
                file=err,
            )
