"""The store's SQLite index: which wheels exist, which object backs each file, and which
wheel each build from a source gave (pkgfs.store.build).

One wheel is one transaction: its row, its files and its entry points appear together or
not at all, so a reader never sees half a wheel, whatever happens to the writer. WAL mode
lets readers go on while an ingest commits.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Set
from contextlib import contextmanager
from pathlib import Path

from .errors import StoreError
from .layout import FILE_MODE
from .records import EntryPoint, FileEntry, StoreStats, WheelInfo, WheelRecord

__all__ = ["Index"]

SCHEMA_VERSION = 3
READABLE_VERSIONS = (2, 3)  # read-only: schema 2 differs only in lacking ``builds``

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    digest TEXT PRIMARY KEY,           -- sha256, lowercase hex
    size INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS wheels (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,       -- of the wheel file: its identity
    filename TEXT NOT NULL,
    name TEXT NOT NULL,                -- canonical (PEP 503 normalized)
    version TEXT NOT NULL,
    tags TEXT NOT NULL,                -- compressed tag set, as in the file name
    root_is_purelib INTEGER NOT NULL,
    dist_info TEXT NOT NULL,           -- the .dist-info directory name inside the wheel
    wheel_size INTEGER NOT NULL,
    added REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS wheels_by_name ON wheels (name, version);

CREATE TABLE IF NOT EXISTS files (
    wheel_id INTEGER NOT NULL REFERENCES wheels (id),
    scheme TEXT NOT NULL,              -- purelib, platlib, scripts, headers or data
    path TEXT NOT NULL,                -- relative to the scheme's directory
    digest TEXT NOT NULL REFERENCES objects (digest),
    size INTEGER NOT NULL,
    executable INTEGER NOT NULL,
    PRIMARY KEY (wheel_id, scheme, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_by_digest ON files (digest);

CREATE TABLE IF NOT EXISTS bytecode (   -- schema 2: compiled once per interpreter magic
    wheel_id INTEGER NOT NULL REFERENCES wheels (id),
    magic TEXT NOT NULL,               -- importlib.util.MAGIC_NUMBER, hex
    path TEXT NOT NULL,                -- the .py source, relative to site-packages
    digest TEXT NOT NULL REFERENCES objects (digest),
    size INTEGER NOT NULL,
    PRIMARY KEY (wheel_id, magic, path)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS bytecode_done (
    wheel_id INTEGER NOT NULL REFERENCES wheels (id),
    magic TEXT NOT NULL,
    compiled INTEGER NOT NULL,
    failed INTEGER NOT NULL,           -- sources that do not compile (Python 2, newer syntax)
    PRIMARY KEY (wheel_id, magic)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS builds (     -- schema 3: wheels pkgfs built from a source
    source TEXT NOT NULL,              -- the source's key: sdist sha256, git URL and commit, ...
    wheel_sha256 TEXT NOT NULL,        -- the built wheel, ingested before this row
    built REAL NOT NULL,
    PRIMARY KEY (source, wheel_sha256)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS entry_points (
    wheel_id INTEGER NOT NULL REFERENCES wheels (id),
    section TEXT NOT NULL,             -- console or gui
    name TEXT NOT NULL,
    module TEXT NOT NULL,
    attr TEXT NOT NULL,
    PRIMARY KEY (wheel_id, section, name)
) WITHOUT ROWID;
"""


def _if_full(path: Path) -> str:
    """What to do when the filesystem holding ``path`` has no space left (SQLite says only
    "disk I/O error" when it cannot grow its WAL files), else nothing."""
    try:
        full = os.statvfs(path.parent).f_bavail == 0
    except OSError:
        return ""
    return " (the filesystem holding the store is full: free some space there)" if full else ""


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """The index opened without writing anything into the store, not even SQLite's files.

    When a ``-wal`` file exists, a writer is at work (or one left it): ``mode=ro`` reads
    through SQLite's locks and its ``-shm`` file, so it sees every commit, and needs no
    write (a read-only ``-shm`` is read as it is). Without one, no writer is at work and
    the main file holds every commit (a writer checkpoints into it and removes its
    ``-wal`` when it closes): the index is opened ``immutable=1``, read as the file is,
    without locks, which ``mode=ro`` would need a ``-shm`` for, made in the store. A
    writer that starts during such a read works in its own ``-wal`` and is seen by the
    next command. ``immutable=1`` is also the fallback when ``mode=ro`` cannot open it.
    Raises ``sqlite3.Error``.
    """
    uri = path.absolute().as_uri()
    wal = path.with_name(path.name + "-wal")
    tries = ["mode=ro", "immutable=1"] if wal.exists() else ["immutable=1"]
    for query in tries:
        db = sqlite3.connect(
            f"{uri}?{query}", uri=True, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute("PRAGMA user_version").fetchone()
        except sqlite3.Error:
            db.close()
            if query == tries[-1]:
                raise
            continue
        return db
    raise AssertionError("unreachable")


OPEN_BUSY_TIMEOUT = 30.0  # seconds an open tries again while SQLite says SQLITE_BUSY


def _open_writer(path: Path) -> sqlite3.Connection:
    """The index opened (created, upgraded) for writing. Raises ``sqlite3.Error``, and
    :class:`StoreError` for an index of a newer pkgfs.

    SQLite's busy timeout covers waiting for another writer's transaction, not opening a
    WAL database while another connection, its last, is closing it (a checkpoint, the
    ``-shm`` removed) or recovering it after a crash: then the open itself fails with
    SQLITE_BUSY ("Sometimes Queries Return SQLITE_BUSY In WAL Mode", sqlite.org/wal.html).
    Two commands at once hit that window: the open is tried again for up to
    :data:`OPEN_BUSY_TIMEOUT` seconds.
    """
    deadline = time.monotonic() + OPEN_BUSY_TIMEOUT
    while True:
        try:
            return _try_open_writer(path)
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorname", "").startswith("SQLITE_BUSY")
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _try_open_writer(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN ourselves, so a write transaction takes
    # its lock up front (BEGIN IMMEDIATE) instead of failing on upgrade.
    new = not path.exists()
    db = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
    try:
        if new:  # readable by every user of the store, whatever the umask
            os.chmod(path, FILE_MODE)
        db.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL never corrupts; a power cut may only lose the last commits,
        # whose objects then stay behind unreferenced, which verify accepts.
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{path}: index schema {version} is newer than this pkgfs")
        if version < SCHEMA_VERSION:
            # executescript() runs its own statements outside Python's transaction
            # handling, so the script carries its own; IF NOT EXISTS lets two processes
            # creating one store at once both succeed. Schemas 2 and 3 only add tables,
            # so the same script upgrades a schema-1 or schema-2 index.
            try:
                db.executescript(
                    f"BEGIN IMMEDIATE; {_SCHEMA}; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                )
            except sqlite3.Error:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
    except BaseException:
        db.close()
        raise
    return db


class Index:
    """A connection to the store's index, safe to share between threads."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        """Open (and create or upgrade) the index at ``path``; with ``read_only``, open an
        existing one without writing anything, not even SQLite's WAL files.

        Raises :class:`StoreError` when it cannot be opened, is from a newer pkgfs, or,
        read-only, needs an upgrade.
        """
        self.path = path
        self._lock = threading.RLock()
        try:
            if read_only:
                self._db = _connect_read_only(path)
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version not in READABLE_VERSIONS:
                    raise StoreError(
                        f"{path}: index schema {version}, and this pkgfs reads"
                        f" {SCHEMA_VERSION} without writing: open it once with write access"
                    )
                return
            self._db = _open_writer(path)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the store index: {exc}{_if_full(path)}") from exc

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed on success, rolled back on any exception."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[object] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            return list(self._db.execute(sql, tuple(params)))

    def has_wheel(self, sha256: str) -> bool:
        """Whether the store holds the wheel whose file has this sha256 (a key lookup)."""
        return bool(self._query("SELECT 1 FROM wheels WHERE sha256 = ?", (sha256,)))

    def find_wheel(self, sha256: str) -> WheelInfo | None:
        """The wheel whose file has this sha256, if the store holds it."""
        found = self._wheel_infos(sha256)
        return found[0] if found else None

    def add_wheel(self, record: WheelRecord) -> bool:
        """Commit a wheel and its objects; False if a concurrent ingest committed it first.

        Every object the wheel uses gets a row. Rows for objects already stored are kept, and
        an object that an interrupted ingest left unreferenced is adopted.
        """
        objects = {f.digest: f.size for f in record.files}
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM wheels WHERE sha256 = ?", (record.sha256,)).fetchone():
                return False
            db.executemany("INSERT OR IGNORE INTO objects VALUES (?, ?)", objects.items())
            cursor = db.execute(
                "INSERT INTO wheels (sha256, filename, name, version, tags, root_is_purelib,"
                " dist_info, wheel_size, added) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.sha256,
                    record.filename,
                    record.name,
                    record.version,
                    record.tags,
                    int(record.root_is_purelib),
                    record.dist_info,
                    record.wheel_size,
                    time.time(),
                ),
            )
            wheel_id = cursor.lastrowid
            db.executemany(
                "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (wheel_id, f.scheme, f.path, f.digest, f.size, int(f.executable))
                    for f in record.files
                ),
            )
            db.executemany(
                "INSERT INTO entry_points VALUES (?, ?, ?, ?, ?)",
                ((wheel_id, e.section, e.name, e.module, e.attr) for e in record.entry_points),
            )
        return True

    def wheels(self) -> list[WheelInfo]:
        return self._wheel_infos()

    def add_build(self, source: str, wheel_sha256: str) -> None:
        """Remember that building ``source`` (a key of pkgfs.store.build) gave the stored
        wheel ``wheel_sha256``. Commit it only after the wheel's own ingest committed."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO builds VALUES (?, ?, ?)", (source, wheel_sha256, time.time())
            )

    def built_from(self, source: str) -> list[str]:
        """The sha256 of every stored wheel built from ``source``, newest first."""
        return [str(s) for s, _ in self._builds("WHERE source = ?", (source,))]

    def builds(self) -> list[tuple[str, str]]:
        """Every remembered build: (source key, wheel sha256)."""
        return [(str(k), str(s)) for s, k in self._builds("", ())]

    def _builds(self, where: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        try:
            return self._query(
                f"SELECT wheel_sha256, source FROM builds {where} ORDER BY built DESC",  # noqa: S608
                params,
            )
        except sqlite3.OperationalError:  # a schema-2 index opened read-only: no builds
            if self._db.execute("PRAGMA user_version").fetchone()[0] >= 3:
                raise
            return []

    def wheels_named(self, name: str, version: str) -> list[WheelInfo]:
        """The stored wheels of a canonical name and a normalized version."""
        return self._wheel_infos(name=name, version=version)

    def _wheel_infos(
        self, sha256: str | None = None, name: str | None = None, version: str | None = None
    ) -> list[WheelInfo]:
        """Every wheel, or those matching the given sha256, name and version."""
        rows = self._query(
            "SELECT w.sha256, w.filename, w.name, w.version, w.tags,"
            " COUNT(f.path), COALESCE(SUM(f.size), 0)"
            " FROM wheels w LEFT JOIN files f ON f.wheel_id = w.id"
            " WHERE (?1 IS NULL OR w.sha256 = ?1) AND (?2 IS NULL OR w.name = ?2)"
            " AND (?3 IS NULL OR w.version = ?3)"
            " GROUP BY w.id ORDER BY w.name, w.version, w.filename",
            (sha256, name, version),
        )
        return [
            WheelInfo(str(s), str(fn), str(n), str(v), str(t), int(c), int(b))  # type: ignore[call-overload]
            for s, fn, n, v, t, c, b in rows
        ]

    def dist_info(self, sha256: str) -> str:
        """The ``.dist-info`` directory name inside the wheel with this sha256."""
        ((name,),) = self._query("SELECT dist_info FROM wheels WHERE sha256 = ?", (sha256,))
        return str(name)

    def files(self, sha256: str) -> list[FileEntry]:
        rows = self._query(
            "SELECT f.scheme, f.path, f.digest, f.size, f.executable FROM files f"
            " JOIN wheels w ON w.id = f.wheel_id WHERE w.sha256 = ? ORDER BY f.scheme, f.path",
            (sha256,),
        )
        return [FileEntry(str(s), str(p), str(d), int(n), bool(x)) for s, p, d, n, x in rows]  # type: ignore[call-overload]

    def entry_points(self, sha256: str) -> list[EntryPoint]:
        rows = self._query(
            "SELECT e.section, e.name, e.module, e.attr FROM entry_points e"
            " JOIN wheels w ON w.id = e.wheel_id WHERE w.sha256 = ? ORDER BY e.section, e.name",
            (sha256,),
        )
        return [EntryPoint(*map(str, row)) for row in rows]

    def unreferenced_objects(self, without: Set[str] = frozenset()) -> dict[str, int]:
        """The objects (digest -> size) that no wheel's files nor bytecode would use once
        the wheels whose sha256 is in ``without`` are gone."""
        used: set[str] = set()
        for sha256, digest in self._query(
            "SELECT w.sha256, f.digest FROM files f JOIN wheels w ON w.id = f.wheel_id"
            " UNION ALL SELECT w.sha256, b.digest FROM bytecode b JOIN wheels w"
            " ON w.id = b.wheel_id"
        ):
            if sha256 not in without:
                used.add(str(digest))
        return {d: s for d, s in self.objects().items() if d not in used}

    def remove_wheels(self, sha256s: list[str]) -> None:
        """Forget these wheels (manifests, entry points, bytecode, build records) and every
        object row no other wheel uses, in one transaction. Their files are the caller's
        to unlink, after this returns (``pkgfs.store.gc``)."""
        with self.transaction() as db:
            for sha256 in sha256s:
                row = db.execute("SELECT id FROM wheels WHERE sha256 = ?", (sha256,)).fetchone()
                if row is None:
                    continue
                for table in ("files", "bytecode", "bytecode_done", "entry_points"):
                    db.execute(f"DELETE FROM {table} WHERE wheel_id = ?", row)  # noqa: S608
                db.execute("DELETE FROM builds WHERE wheel_sha256 = ?", (sha256,))
                db.execute("DELETE FROM wheels WHERE id = ?", row)
            db.execute(
                "DELETE FROM objects WHERE digest NOT IN (SELECT digest FROM files)"
                " AND digest NOT IN (SELECT digest FROM bytecode)"
            )

    def objects(self) -> dict[str, int]:
        return {str(d): int(s) for d, s in self._query("SELECT digest, size FROM objects")}  # type: ignore[call-overload]

    def bytecode_done(self, sha256: str, magic: str) -> bool:
        rows = self._query(
            "SELECT 1 FROM bytecode_done b JOIN wheels w ON w.id = b.wheel_id"
            " WHERE w.sha256 = ? AND b.magic = ?",
            (sha256, magic),
        )
        return bool(rows)

    def add_bytecode(
        self, sha256: str, magic: str, compiled: Iterable[tuple[str, str, int]], failed: int
    ) -> None:
        """Record one wheel's bytecode for one interpreter magic, in one transaction:
        (source path, object digest, size) for each compiled module."""
        rows = list(compiled)
        with self.transaction() as db:
            ((wheel_id,),) = db.execute("SELECT id FROM wheels WHERE sha256 = ?", (sha256,))
            if db.execute(
                "SELECT 1 FROM bytecode_done WHERE wheel_id = ? AND magic = ?", (wheel_id, magic)
            ).fetchone():
                return  # a concurrent compile recorded it first
            db.executemany(
                "INSERT OR IGNORE INTO objects VALUES (?, ?)", ((d, n) for _, d, n in rows)
            )
            db.executemany(
                "INSERT INTO bytecode VALUES (?, ?, ?, ?, ?)",
                ((wheel_id, magic, path, d, n) for path, d, n in rows),
            )
            db.execute(
                "INSERT INTO bytecode_done VALUES (?, ?, ?, ?)",
                (wheel_id, magic, len(rows), failed),
            )

    def bytecode(self, sha256: str, magic: str) -> list[tuple[str, str, int]]:
        """(source path, digest, size) of a wheel's modules compiled for ``magic``."""
        rows = self._query(
            "SELECT b.path, b.digest, b.size FROM bytecode b JOIN wheels w ON w.id = b.wheel_id"
            " WHERE w.sha256 = ? AND b.magic = ? ORDER BY b.path",
            (sha256, magic),
        )
        return [(str(p), str(d), int(n)) for p, d, n in rows]  # type: ignore[call-overload]

    def dangling_files(self) -> list[tuple[str, str, str, str]]:
        """Files whose object row is missing or has another size: (wheel, scheme, path, digest)."""
        rows = self._query(
            "SELECT w.filename, f.scheme, f.path, f.digest FROM files f"
            " JOIN wheels w ON w.id = f.wheel_id"
            " LEFT JOIN objects o ON o.digest = f.digest"
            " WHERE o.digest IS NULL OR o.size != f.size"
            " UNION ALL SELECT w.filename, 'bytecode ' || b.magic, b.path, b.digest FROM bytecode b"
            " JOIN wheels w ON w.id = b.wheel_id LEFT JOIN objects o ON o.digest = b.digest"
            " WHERE o.digest IS NULL OR o.size != b.size"
        )
        return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]

    def stats(self) -> StoreStats:
        ((wheels,),) = self._query("SELECT COUNT(*) FROM wheels")
        ((files, logical),) = self._query("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files")
        ((objects, stored),) = self._query("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM objects")
        ((wheel_objects, wheel_bytes),) = self._query(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM objects"
            " WHERE digest IN (SELECT digest FROM files)"
        )
        ((modules, magics),) = self._query("SELECT COUNT(*), COUNT(DISTINCT magic) FROM bytecode")
        ((pyc_objects, pyc_bytes),) = self._query(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM objects"
            " WHERE digest IN (SELECT digest FROM bytecode)"
            " AND digest NOT IN (SELECT digest FROM files)"
        )
        counts = [wheels, files, objects, logical, stored, wheel_objects, wheel_bytes]
        counts += [modules, magics, pyc_objects, pyc_bytes]
        return StoreStats(*(int(n) for n in counts))  # type: ignore[call-overload]
