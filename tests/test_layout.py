"""Where the store lives: --store, then $PKGFS_STORE, then the XDG data directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from pkgfs.store import default_store_path, resolve_store_path
from pkgfs.store.layout import StoreLayout


def test_explicit_store_wins(tmp_path: Path) -> None:
    env = {"PKGFS_STORE": "/from/env", "XDG_DATA_HOME": "/xdg"}
    assert resolve_store_path(tmp_path / "s", env) == tmp_path / "s"


def test_environment_variable_next() -> None:
    assert resolve_store_path(None, {"PKGFS_STORE": "/from/env", "XDG_DATA_HOME": "/xdg"}) == Path(
        "/from/env"
    )


def test_xdg_data_home_then_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_store_path(None, {"XDG_DATA_HOME": "/xdg"}) == Path("/xdg/pkgfs")
    assert default_store_path({}) == tmp_path / ".local/share/pkgfs"
    # The XDG spec says a relative (invalid) value is to be ignored.
    assert default_store_path({"XDG_DATA_HOME": "relative"}) == tmp_path / ".local/share/pkgfs"


def test_object_paths_fan_out_by_two_hex_digits(tmp_path: Path) -> None:
    digest = "ab" + "0" * 62
    assert StoreLayout(tmp_path).object_path(digest) == tmp_path / "objects-v1" / "ab" / ("0" * 62)
