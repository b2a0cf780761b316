"""The XDG Base Directory specification: where per-user data, state and caches live.

The spec: "If $XDG_DATA_HOME is either not set or empty, a default equal to
$HOME/.local/share should be used", and likewise ``$XDG_STATE_HOME`` (``~/.local/state``)
and ``$XDG_CACHE_HOME`` (``~/.cache``). "All paths set in these environment variables must
be absolute. If an implementation encounters a relative path in any of these variables it
should consider the path invalid and ignore it."
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["cache_home", "data_home", "state_home"]


def _base(variable: str, default: tuple[str, ...], environ: Mapping[str, str]) -> Path:
    value = environ.get(variable, "")
    if not value or not os.path.isabs(value):
        value = os.path.join(os.path.expanduser("~"), *default)
    return Path(value)


def data_home(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_DATA_HOME``, else ``~/.local/share``."""
    return _base("XDG_DATA_HOME", (".local", "share"), environ)


def state_home(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_STATE_HOME``, else ``~/.local/state``."""
    return _base("XDG_STATE_HOME", (".local", "state"), environ)


def cache_home(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CACHE_HOME``, else ``~/.cache``."""
    return _base("XDG_CACHE_HOME", (".cache",), environ)
