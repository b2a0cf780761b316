"""A live switch, inside the daemon: serve another view of the environment without
unmounting (its lock changed, or ``pkgfs rollback``).

``pkgfs mount`` (or ``pkgfs rollback``) prepares the new environment and writes its config
as ``next.json`` in the mount's state directory, then sends ``{"op": "switch"}`` on the
control socket. The daemon, here:

1. loads ``next.json`` and its view, and indexes it (:func:`pkgfs.vfs.overlay.lower.index_view`),
   in a worker thread: the mount serves the old view meanwhile;
2. waits for changes in flight, reconciles the overlay (``pkgfs.vfs.overlay.reconcile``:
   pip-installed packages the new lock pins dropped, edits of changed files set aside),
   makes ``config.json`` the new config and the old one ``previous.json`` (for
   ``pkgfs rollback``), and swaps the lower layer: all between two awaits, so every
   request is answered from one view or the other, never a mix;
3. tells the kernel what to forget (off the event loop, as reset does) and empties the
   overlay's trash.

A client that dies after sending the request (``kill -9`` of ``pkgfs mount``) does not stop
it: the switch is the daemon's. One that dies before leaves ``next.json``, which the next
switch overwrites (only a switch a command asked for reads it). A failure before step 2
changes nothing; the reply says why.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import trio

from pkgfs.store import Store
from pkgfs.vfs.env.state import MountConfig, MountRecord, save_state_file
from pkgfs.vfs.env.view import View
from pkgfs.vfs.overlay.lower import LowerIndex, index_view
from pkgfs.vfs.overlay.reconcile import carry_out, plan

from .control import invalidate
from .operations import PkgfsOperations

__all__ = ["NEXT", "PREVIOUS", "package_changes", "switch"]

log = logging.getLogger("pkgfs.vfs")

NEXT = "next.json"  # the config to switch to, written by the command
PREVIOUS = "previous.json"  # the config switched from: what pkgfs rollback returns to

_one_at_a_time = trio.Lock()


def _load(state: Path, index: LowerIndex) -> tuple[MountConfig, View, LowerIndex]:
    config = MountConfig.load(state / NEXT)
    with Store.open_read_only(config.store) as store:
        view = config.view(store)
    return config, view, index_view(view, index)


def package_changes(old: View, new: View) -> dict[str, list[str]]:
    """``added``, ``removed`` and ``changed`` packages between two views, as
    ``name version`` (``name old -> new`` for changed: another version or wheel)."""
    before = {name: (version, file) for name, version, file in old.wheels}
    after = {name: (version, file) for name, version, file in new.wheels}
    return {
        "added": [f"{n} {after[n][0]}" for n in sorted(after.keys() - before.keys())],
        "removed": [f"{n} {before[n][0]}" for n in sorted(before.keys() - after.keys())],
        "changed": [
            f"{n} {before[n][0]} -> {after[n][0]}"
            for n in sorted(before.keys() & after.keys())
            if before[n] != after[n]
        ],
    }


async def switch(ops: PkgfsOperations, state: Path, keep_overlay: bool) -> dict[str, object]:
    """Switch the mount served by ``ops`` to the config ``state/next.json``, as the module
    says. Returns the reply: the package changes and the reconciliation's notes. Raises
    ``OSError`` (``MountError`` too) or ``ValueError`` (``ViewError``) when the new view or
    the current config cannot be loaded (nothing changed then), or when the overlay cannot
    be reconciled (what was dropped before the failure stays dropped; the view is not
    switched)."""
    async with _one_at_a_time:
        tree = ops.tree
        config, view, index = await trio.to_thread.run_sync(_load, state, tree.index)
        current = MountConfig.load(state / "config.json")  # before anything changes
        await ops.wait_changes()
        # From here to install, no await: requests see the old view, then the new one.
        old_view = tree.view
        reconciled = plan(tree, view, keep_overlay)
        aside = Path(config.upper).parent / "set-aside"
        invalidations = ops.dropped(carry_out(tree, reconciled, aside))
        save_state_file(state / PREVIOUS, dataclasses.asdict(current))
        # What was loaded, not next.json again: another command may have written a newer
        # one meanwhile (its own switch comes next). A stale next.json is harmless.
        save_state_file(state / "config.json", dataclasses.asdict(config))
        invalidations += ops.switch_view(index)
        _record(state, config)
        log.info("switched to %d packages (%d paths changed)", len(view.wheels), len(index.changed))
    # In one worker thread: an upgrade of a large package changes thousands of paths.
    await trio.to_thread.run_sync(_invalidate_all, list(dict.fromkeys(invalidations)))
    await trio.to_thread.run_sync(tree.empty_trash)
    return {
        "ok": True,
        **package_changes(old_view, view),
        "notes": reconciled.notes,
        "warnings": reconciled.warnings,
    }


def _invalidate_all(invalidations: list[tuple[int, bytes | None]]) -> None:
    for inode, name in invalidations:
        invalidate(inode, name)


def _record(state: Path, config: MountConfig) -> None:
    """``mount.json`` says what is served now."""
    try:
        record = MountRecord.load(state)
    except (OSError, ValueError):
        return
    changed = dataclasses.replace(
        record, lock=config.lock, packages=len(config.wheels), selection=config.selection
    )
    changed.save(state)
