"""Saved views: the shared part of a view, composed once and kept in the store's ``views-v1/``.

One file per (wheels, site-packages layout, bytecode): every environment of those wheels,
wherever it lives, loads it instead of composing again. The file is marshal data behind a
sha256 of itself, so a truncated or tampered file is detected and composed afresh; its
paths are checked again on load, so even a file that passes the checksum cannot name a
path outside site-packages.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence

from pkgfs.store.core import Store

from .view import (
    VIEW_FORMAT,
    Bytecode,
    SharedView,
    View,
    compose_shared,
    finish_view,
)

__all__ = ["load_or_compose", "seal", "unseal", "view_key"]

_MAGIC = b"pkgfs-view-v1\n"


def seal(blob: bytes) -> bytes:
    """``blob`` behind a header naming its sha256: what a saved view file holds."""
    return _MAGIC + hashlib.sha256(blob).hexdigest().encode() + b"\n" + blob


def unseal(data: bytes) -> bytes:
    """The blob of a sealed file; ``ValueError`` if it is truncated, tampered or foreign."""
    if not data.startswith(_MAGIC):
        raise ValueError("not a saved view")
    digest, blob = data[len(_MAGIC) : len(_MAGIC) + 64], data[len(_MAGIC) + 65 :]
    if hashlib.sha256(blob).hexdigest().encode() != digest:
        raise ValueError("saved view does not match its checksum")
    return blob


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
    (composed and saved if new), finished for ``python``."""
    path = store.layout.views / view_key(store, wheels, site_packages, bytecode)
    try:
        shared = SharedView.load(unseal(path.read_bytes()))
    except (OSError, ValueError, EOFError, TypeError, AttributeError):
        shared = compose_shared(store, wheels, site_packages, bytecode)
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent)
        with open(fd, "wb") as f:
            f.write(seal(shared.dump()))
        os.replace(tmp, path)
    return finish_view(store, shared, python, site_packages)
