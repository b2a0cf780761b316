"""Saved views are a cache anyone who can write the store could edit: a tampered one, even
with its checksum recomputed, is composed again, never followed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pkgfs.store import Store
from pkgfs.store.sealed import seal, unseal
from pkgfs.vfs.env.saved import load_or_compose
from pkgfs.vfs.env.view import SharedView, ViewFile
from tests.test_view import PYTHON, RICH_ENTRY_POINTS, RICH_FILES, SITE

MakeWheel = Callable[..., Path]
DIGEST = "ab" * 32


def _script(shared: SharedView, entry: tuple[str, ...]) -> None:
    shared.parts[0].scripts.append(entry)


TAMPERS: dict[str, Callable[[SharedView], None]] = {
    "entry point leading out of bin/": lambda s: _script(
        s, ("entry", "../../x", "demo.core", "main", "console")
    ),
    "absolute entry point": lambda s: _script(s, ("entry", "/etc/x", "demo.core", "main", "gui")),
    ".data script in a subdirectory": lambda s: _script(s, ("file", "sub/tool", DIGEST)),
    "script object outside the store": lambda s: _script(s, ("file", "tool2", "../" * 8 + "etc")),
    "file leading out of site-packages": lambda s: s.view.files.update(
        {"../../x": ViewFile(1, False, DIGEST)}
    ),
    "absolute data file": lambda s: s.view.data.update({"/etc/x": ViewFile(1, False, DIGEST)}),
    "object outside the store": lambda s: s.view.files.update(
        {"demo/y.py": ViewFile(1, False, "../../../../etc/passwd")}
    ),
    "empty component": lambda s: s.view.dirs.add("demo//x"),
    ".dist-info leading out": lambda s: setattr(s.parts[0], "dist_info", "../demo-1.0.dist-info"),
    "script in the finished view": lambda s: s.view.scripts.update(
        {"../x": ViewFile(1, True, data=b"x")}
    ),
}


@pytest.fixture
def store(store_dir: Path) -> Iterator[Store]:
    with Store.open(store_dir) as opened:
        yield opened


@pytest.fixture
def demo(store: Store, make_wheel: MakeWheel) -> str:
    return store.add(make_wheel(files=RICH_FILES, entry_points=RICH_ENTRY_POINTS)).sha256


@pytest.mark.parametrize("tamper", TAMPERS)
def test_a_tampered_view_with_a_recomputed_checksum_is_composed_again(
    store: Store, demo: str, tamper: str
) -> None:
    view = load_or_compose(store, [demo], PYTHON, SITE)
    (saved,) = (store.root / "views-v2").iterdir()
    good = saved.read_bytes()
    shared = SharedView.load(unseal(good))
    TAMPERS[tamper](shared)
    saved.write_bytes(seal(shared.dump()))  # the attacker recomputes the checksum

    assert load_or_compose(store, [demo], PYTHON, SITE) == view
    assert saved.read_bytes() == good  # composed again from the index, and saved whole
    assert not any(name.startswith(("..", "/")) or "/" in name for name in view.scripts)


def test_a_truncated_view_is_composed_again(store: Store, demo: str) -> None:
    view = load_or_compose(store, [demo], PYTHON, SITE)
    (saved,) = (store.root / "views-v2").iterdir()
    good = saved.read_bytes()
    for length in (0, 10, 40, len(good) // 2, len(good) - 1):
        saved.write_bytes(good[:length])
        assert load_or_compose(store, [demo], PYTHON, SITE) == view
        assert saved.read_bytes() == good
    assert list((store.root / "tmp").iterdir()) == []  # staged in tmp/, renamed into place


def test_seal_detects_any_change() -> None:
    blob = b"some view"
    sealed = seal(blob)
    assert unseal(sealed) == blob
    for damaged in (sealed[:-1], sealed + b"x", sealed.replace(b"view", b"veiw"), blob):
        with pytest.raises(ValueError, match="saved view"):
            unseal(damaged)
