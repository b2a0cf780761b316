"""The store's index opened by many commands at once: SQLite answers SQLITE_BUSY to an open
that meets another connection closing the database as its last one (or recovering it), a
window its busy timeout does not cover; pkgfs opens again instead of failing."""

from __future__ import annotations

import os
from pathlib import Path

from pkgfs.store.errors import StoreError
from pkgfs.store.index import Index

OPENS = 1000  # per process: enough for the windows to meet on two CPUs


def _open_and_close(path: Path, read_only: bool) -> int:
    """In a child: open and close the index OPENS times, writing once each (or reading, as
    the mount server does beside the commands); 1 on failure."""
    try:
        for _ in range(OPENS):
            index = Index(path, read_only=read_only)
            if not read_only:
                with index.transaction() as db:
                    db.execute("PRAGMA user_version").fetchone()
            index.close()
    except StoreError as exc:
        print(f"child {os.getpid()}: {exc}", flush=True)
        return 1
    return 0


def test_many_commands_open_the_index_at_once(tmp_path: Path) -> None:
    path = tmp_path / "index-v1.sqlite"
    Index(path).close()  # made: every child opens an existing WAL database
    children = []
    for read_only in (False, False, True):
        pid = os.fork()
        if pid == 0:
            os._exit(_open_and_close(path, read_only))
        children.append(pid)
    statuses = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    assert statuses == [0] * len(children)
