"""The filesystem's handlers called on a trio loop, as pyfuse3 calls them, with a copy-up held
in its worker thread: what goes on meanwhile, and what waits. (The kernel's side of these
requests is tested through real mounts in test_mount.py and tests/posix/.)"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pyfuse3
import pytest
import trio

from pkgfs.store import Store
from pkgfs.vfs.env.view import compose_view
from pkgfs.vfs.fuse.operations import PkgfsOperations
from pkgfs.vfs.overlay import CopyUp, MergedTree

MakeWheel = Callable[..., Path]
CTX = pyfuse3.RequestContext()


@pytest.fixture
def ops(store_dir: Path, make_wheel: MakeWheel, tmp_path: Path) -> Iterator[PkgfsOperations]:
    files = {"pkg/__init__.py": "A = 1\n", "pkg/big.bin": b"\1" * 100_000, "pkg/other.py": "B\n"}
    with Store.open(store_dir) as store:
        view = compose_view(
            store, [store.add(make_wheel(name="pkg", files=files)).sha256], "/py", "lib"
        )
        tree = MergedTree(view, store.layout.objects, tmp_path / "upper", tmp_path / "work")
        yield PkgfsOperations(tree, os.getuid(), os.getgid(), no_open=True)
        tree.close()


class HeldCopy:
    """Makes every copy-up wait, in its worker thread, until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        original = CopyUp.run

        def run(job: CopyUp) -> None:
            self.started.set()
            assert self.release.wait(10), "never released"
            original(job)

        monkeypatch.setattr(CopyUp, "run", run)

    async def wait_started(self) -> None:
        await trio.to_thread.run_sync(self.started.wait, 10)


async def ino(ops: PkgfsOperations, path: str) -> int:
    parent = pyfuse3.ROOT_INODE
    for name in path.split("/"):
        parent = (await ops.lookup(parent, name.encode(), CTX)).st_ino
    return parent


def test_a_copy_up_stalls_only_its_own_file(
    ops: PkgfsOperations, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldCopy(monkeypatch)
    done: list[str] = []

    async def main() -> None:
        big, other = await ino(ops, "pkg/big.bin"), await ino(ops, "pkg/other.py")

        async def write(data: bytes, off: int) -> None:
            await ops.write(0, off, data, inode=big)
            done.append(f"write {data!r}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, b"first", 0)
            await held.wait_started()
            nursery.start_soon(write, b"second", 5)  # the same file: waits for the copy
            # Every other request is answered while the copy is held.
            assert await ops.read(0, 0, 2, inode=other) == b"B\n"
            assert (await ops.getattr(big, CTX)).st_size == 100_000
            assert await ops.read(0, 0, 3, inode=big) == b"\1\1\1"  # the lower file still
            await ops.mkdir(pyfuse3.ROOT_INODE, b"fresh", 0o755, CTX)
            await trio.sleep(0.05)
            assert done == []
            done.append("others answered")
            held.release.set()
        assert await ops.read(0, 0, 12, inode=big) == b"firstsecond\1"

    trio.run(main)
    assert done == ["others answered", "write b'first'", "write b'second'"]
    assert [c.path for c in ops.tree.changes()] == ["fresh", "pkg/big.bin"]
    assert os.listdir(ops.tree.work) == []


def test_reset_waits_for_a_copy_up_in_flight(
    ops: PkgfsOperations, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldCopy(monkeypatch)
    order: list[str] = []

    async def main() -> None:
        big = await ino(ops, "pkg/big.bin")

        async def write() -> None:
            await ops.write(0, 0, b"changed", inode=big)
            order.append("written")

        async def reset() -> None:
            await ops.reset(None)
            order.append("reset")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            await held.wait_started()
            nursery.start_soon(reset)
            await trio.sleep(0.05)
            assert order == []
            held.release.set()

    trio.run(main)
    # The reset came after the write it waited for, so it dropped it: nothing is left.
    assert order == ["written", "reset"]
    assert ops.tree.changes() == []
    assert os.listdir(ops.tree.work) == []


def test_an_unlinked_open_file_lives_until_forget(ops: PkgfsOperations) -> None:
    async def main() -> None:
        info, entry = await ops.create(pyfuse3.ROOT_INODE, b"u", 0o644, os.O_RDWR, CTX)
        node = entry.st_ino
        await ops.write(info.fh, 0, b"hello", inode=node)
        await ops.unlink(pyfuse3.ROOT_INODE, b"u", CTX)
        assert (await ops.getattr(node, CTX)).st_nlink == 0
        assert await ops.read(0, 0, 5, inode=node) == b"hello"
        assert [n for n in os.listdir(ops.tree.work) if n.startswith("orphan-")]
        await ops.forget([(node, 1)])
        assert os.listdir(ops.tree.work) == []
        with pytest.raises(pyfuse3.FUSEError) as caught:
            await ops.getattr(node, CTX)
        assert caught.value.errno == errno.ESTALE

    trio.run(main)


def test_node_numbers_are_never_reused(ops: PkgfsOperations) -> None:
    async def main() -> None:
        seen = set()
        for _ in range(50):
            entry = await ops.mkdir(pyfuse3.ROOT_INODE, b"d", 0o755, CTX)
            assert entry.st_ino not in seen
            seen.add(entry.st_ino)
            await ops.rmdir(pyfuse3.ROOT_INODE, b"d", CTX)
            await ops.forget([(entry.st_ino, 1)])

    trio.run(main)


def test_fsync_of_a_directory_and_of_a_file(ops: PkgfsOperations) -> None:
    """FSYNCDIR comes with the inode in no-open mode (a missing handler killed the daemon)."""

    async def main() -> None:
        pkg = await ino(ops, "pkg")
        await ops.fsyncdir(0, False, inode=pkg)  # lower only: nothing to flush
        await ops.mkdir(pyfuse3.ROOT_INODE, b"d", 0o755, CTX)
        await ops.fsyncdir(0, True, inode=await ino(ops, "d"))
        info, entry = await ops.create(pyfuse3.ROOT_INODE, b"f", 0o644, os.O_RDWR, CTX)
        await ops.write(info.fh, 0, b"x", inode=entry.st_ino)
        await ops.fsync(0, False, inode=entry.st_ino)

    trio.run(main)
    assert [c.path for c in ops.tree.changes()] == ["d", "f"]
