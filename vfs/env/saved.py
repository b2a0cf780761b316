"""Saved views: the shared part of a view, composed once and kept in the store's ``views-v2/``.

One file per (wheels, site-packages layout, bytecode): every environment of those wheels,
wherever it lives, loads it instead of composing again. The file is marshal data behind a
sha256 of itself (``pkgfs.store.sealed``), so a truncated or damaged file is detected and
composed afresh. Its paths are checked again on load (``view.check_shared``), so even a
file whose checksum was recomputed by whoever edited it cannot name a path outside
site-packages, a script outside bin/, or an object outside the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Collection, Sequence

from pkgfs.store.core import Store
from pkgfs.store.layout import make_shared_dir
from pkgfs.store.sealed import seal, unseal

from .view import (
    VIEW_FORMAT,
    Bytecode,
    SharedView,
    View,
    check_shared,
    compose_shared,
    finish_view,
)

__all__ = [
    "forget_views",
    "keep_views",
    "load_or_compose",
    "load_shared",
    "prepare_view",
    "save_shared",
    "view_key",
]

# The shared views this process keeps, by their file in views-v2/ (whose name is a hash of
# what composes them): only in the mount server (``keep_views``), so that every command and
# mount daemon it forks finds the view in memory, shared copy-on-write, and loads nothing.
_kept: dict[str, SharedView] | None = None


def forget_views(keep: Collection[str]) -> None:
    """Stop keeping every view whose file is not in ``keep`` (the server: no environment
    mounted uses them any more)."""
    if _kept is not None:
        for path in set(_kept) - set(keep):
            del _kept[path]


def keep_views() -> None:
    """From now on, keep every shared view this process loads or composes (the server)."""
    global _kept  # noqa: PLW0603 (one switch per process)
    if _kept is None:
        _kept = {}


def view_key(
    store: Store, wheels: Sequence[str], site_packages: str, bytecode: Bytecode | None
) -> str:
    """The saved shared view's name: the wheels, the layout, and which wheels have bytecode
    for the interpreter, so compiling later gives a new view rather than a stale one. Not
    the interpreter's path: every environment of the same wheels shares the file."""
    compiled = (
        [w for w in sorted(wheels) if store.index.bytecode_done(w, bytecode.magic)]
        if bytecode is not None
        else []
    )
    magic = [bytecode.magic, bytecode.cache_tag] if bytecode is not None else []
    text = json.dumps([VIEW_FORMAT, sorted(wheels), site_packages, magic, compiled])
    return hashlib.sha256(text.encode()).hexdigest()


def load_or_compose(
    store: Store,
    wheels: Sequence[str],
    python: str,
    site_packages: str,
    bytecode: Bytecode | None = None,
) -> View:
    """The view for these wheels and this environment: the shared part from its saved file
    (composed and saved if new, damaged or unsafe), finished for ``python``.

    Raises :class:`ViewError` if the wheels cannot be composed (a conflict, a wheel missing
    from the store, an index row naming an unsafe path), :class:`ReadOnlyStoreError` when
    the saved view is missing from a store this process may not write (``pkgfs sync``
    saves it), ``OSError`` if the store cannot be read or the view saved.
    """
    path = store.layout.views / view_key(store, wheels, site_packages, bytecode)
    if _kept is not None and str(path) in _kept:
        return finish_view(store, _kept[str(path)], python, site_packages)
    shared = load_shared(store, path.name)
    if shared is None:
        shared = save_shared(store, wheels, site_packages, bytecode)
    if _kept is not None:
        shared.keep_index()
        _kept[str(path)] = shared
    return finish_view(store, shared, python, site_packages)


def load_shared(store: Store, key: str) -> SharedView | None:
    """The saved shared view named ``key``; None when missing, damaged or unsafe."""
    try:
        shared = SharedView.load(unseal((store.layout.views / key).read_bytes()))
        check_shared(shared)  # a checksum an attacker recomputed still names safe paths only
    except (OSError, ValueError, EOFError, TypeError, AttributeError):
        # Damaged, tampered or from another format (ViewError is a ValueError): a cache,
        # composed again from the index.
        return None
    return shared


def save_shared(
    store: Store, wheels: Sequence[str], site_packages: str, bytecode: Bytecode | None
) -> SharedView:
    """Compose the shared view of ``wheels`` for this layout and bytecode and save it whole
    in ``views-v2/`` (over a damaged one), readable by every user of the store; what
    ``pkgfs sync`` does so that a mount on a read-only store composes nothing. Raises
    :class:`ReadOnlyStoreError` when the store may not be written, and as
    :func:`load_or_compose`."""
    layout = "" if bytecode is None else f", with bytecode for {bytecode.cache_tag}"
    store.require_writable(
        f"it lacks the saved view of these {len(wheels)} wheels for {site_packages}{layout}"
    )
    shared = compose_shared(store, wheels, site_packages, bytecode)
    path = store.layout.views / view_key(store, wheels, site_packages, bytecode)
    make_shared_dir(path.parent)
    # Staged in the store's tmp/, so a crash leaves a leftover verify knows, never a
    # half-written file in views-v2/.
    fd, tmp = tempfile.mkstemp(dir=store.layout.tmp, prefix="view-")
    try:
        os.fchmod(fd, 0o444)  # mkstemp makes it 0600: every user of the store reads it
        with open(fd, "wb") as f:
            f.write(seal(shared.dump()))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return shared


def prepare_view(
    store: Store, wheels: Sequence[str], site_packages: str, bytecode: Bytecode | None
) -> str:
    """Make sure the shared view a mount of ``wheels`` (in this layout, with this bytecode)
    loads is saved, composing and saving it if not, so that mounting from this store,
    read-only too, composes nothing (``pkgfs sync`` calls it). Returns its name. Raises as
    :func:`save_shared`."""
    key = view_key(store, wheels, site_packages, bytecode)
    if load_shared(store, key) is None:
        save_shared(store, wheels, site_packages, bytecode)
    return key
