"""A view: the merged site-packages of a set of wheels, composed once and reused.

Composing reads every wheel's manifest from the index, merges purelib and platlib into one
tree (directories shipped by several wheels, namespace packages, merge), and generates
what an installer writes per environment: each ``.dist-info/RECORD`` listing the files as
this environment has them, ``INSTALLER`` saying ``pkgfs``, and the console/GUI scripts
and ``.data/scripts`` of every wheel, with a shebang for the environment's interpreter
(through installer's own ``Script`` and ``fix_shebang``).

Composing happens in two parts. The shared part (the tree, and each wheel's RECORD rows
for its files) depends only on the wheels, the site-packages layout and the bytecode the
store has for the interpreter: it is saved as one compact file (``views-v2/<key>``,
marshal, by ``pkgfs.vfs.env.saved``) that every environment of those wheels loads instead
of composing again. The
environment's own part, its scripts and the RECORDs that list them, costs O(wheels +
scripts). A mount's start-up therefore does not grow with the number of files beyond
loading that file.
"""

from __future__ import annotations

import csv
import io
import marshal
import posixpath
import re
from collections import ChainMap
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Literal, NamedTuple, cast

from installer.scripts import InvalidScript, Script
from installer.utils import fix_shebang

from pkgfs.store.bytecode import VIEW_MTIME
from pkgfs.store.contain import is_plain_name, is_safe_path, unsafe_path_in
from pkgfs.store.core import Store
from pkgfs.store.errors import ViewError
from pkgfs.store.hashing import record_hash_of, record_hash_of_hex
from pkgfs.store.objects import all_digests, is_digest

from .lower import LowerPaths, lower_index

__all__ = [
    "DATA_DIR",
    "VIEW_FORMAT",
    "VIEW_MTIME",
    "Bytecode",
    "SharedView",
    "View",
    "ViewError",
    "ViewFile",
    "check_shared",
    "compose_shared",
    "compose_view",
    "finish_view",
    "pyc_path",
]

VIEW_FORMAT = 3
INSTALLER_NAME = b"pkgfs\n"
# Where the mount serves a view's .data/data and .data/headers files (venv-relative paths
# below it); the venv gets symlinks into it, so those files cost no copy per environment.
DATA_DIR = ".pkgfs-data"


class ViewFile(NamedTuple):
    """A file of the view: a store object, or small generated content held inline.

    A tuple rather than a frozen dataclass: a mount builds one per file of the view, and a
    tuple builds several times faster."""

    size: int
    executable: bool
    digest: str | None = None  # the store object holding the bytes
    data: bytes | None = None  # generated: RECORD, INSTALLER, scripts


@dataclass
class View:
    """What an environment shows: site-packages, its scripts, and where they came from."""

    # Relative to site-packages. A mount's view is its own RECORDs over the shared view's
    # files (a ChainMap: the shared files are not copied, nor touched, per environment).
    files: MutableMapping[str, ViewFile] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {""})
    scripts: dict[str, ViewFile] = field(default_factory=dict)  # bin/NAME
    data: dict[str, ViewFile] = field(default_factory=dict)  # data and headers, venv-relative
    wheels: list[tuple[str, str, str]] = field(default_factory=list)  # name, version, filename
    # Files two wheels ship with different bytes: (path, the wheel served, the one shadowed).
    conflicts: list[tuple[str, str, str]] = field(default_factory=list)
    # The lower paths indexed (pkgfs.vfs.env.lower), when the shared view kept one.
    index: LowerPaths | None = field(default=None, repr=False, compare=False)

    def children(self) -> dict[str, list[str]]:
        """Each directory's entries, sorted (``pkgfs.vfs.env.lower``)."""
        return (self.index or lower_index(self.files.keys(), self.dirs)).children

    def dump(self) -> bytes:
        files = {p: (f.size, f.executable, f.digest, f.data) for p, f in self.files.items()}
        scripts = {p: (f.size, f.executable, f.digest, f.data) for p, f in self.scripts.items()}
        data = {p: (f.size, f.executable, f.digest, f.data) for p, f in self.data.items()}
        return marshal.dumps(
            (VIEW_FORMAT, files, sorted(self.dirs), scripts, data, self.wheels, self.conflicts)
        )

    @classmethod
    def load(cls, blob: bytes) -> View:
        version, *rest = marshal.loads(blob)  # noqa: S302 (our own cache)
        if version != VIEW_FORMAT:
            raise ValueError(f"view format {version}")
        files, dirs, scripts, data, wheels, conflicts = rest
        return cls(
            files={p: ViewFile._make(t) for p, t in files.items()},
            dirs=set(dirs),
            scripts={p: ViewFile(*t) for p, t in scripts.items()},
            data={p: ViewFile(*t) for p, t in data.items()},
            wheels=[tuple(w) for w in wheels],
            conflicts=[tuple(c) for c in conflicts],
        )

    def conflict_notes(self) -> list[str]:
        """One line per pair of wheels that ship a path with different bytes: which is
        served, as pip would leave it."""
        pairs: dict[tuple[str, str], list[str]] = {}
        for path, served, shadowed in self.conflicts:
            pairs.setdefault((served, shadowed), []).append(path)
        notes = []
        for (served, shadowed), paths in sorted(pairs.items()):
            more = f" (and {len(paths) - 1} more)" if len(paths) > 1 else ""
            notes.append(
                f"{served} and {shadowed} both ship {sorted(paths)[0]}{more} with different"
                f" bytes: serving {served}'s, as pip would leave it (the later install wins)"
            )
        return notes


def pyc_path(source: str, cache_tag: str) -> str:
    """PEP 3147: ``pkg/mod.py`` -> ``pkg/__pycache__/mod.{cache_tag}.pyc``."""
    directory, name = posixpath.split(source)
    return posixpath.join(directory, "__pycache__", f"{name[:-3]}.{cache_tag}.pyc")


@dataclass(frozen=True)
class Bytecode:
    """Which compiled modules a view serves: those of one interpreter magic."""

    magic: str
    cache_tag: str


@dataclass
class _WheelPart:
    """One wheel's share of a view that does not depend on the environment's interpreter."""

    filename: str
    dist_info: str
    record: bytes  # RECORD's rows for its files (CSV, sorted), relative to site-packages
    # Scripts to make per environment: ("entry", name, module, attr, section) for entry
    # points, ("file", name, digest) for .data/scripts (whose "#!python" is fixed per env).
    scripts: list[tuple[str, ...]]
    # The whole RECORD of a wheel without scripts, the same in every environment: made once
    # per process, so the mount server's daemons share one copy.
    whole: ViewFile | None = field(default=None, repr=False, compare=False)


@dataclass
class SharedView:
    """A view minus its scripts and RECORDs: composed once per (wheels, layout, bytecode),
    saved, and shared by every environment of those wheels, wherever it lives."""

    view: View
    parts: list[_WheelPart]

    def keep_index(self) -> None:
        """Index the lower paths (its files, and each wheel's RECORD that every environment
        adds) once, for every environment finished from it: the mount server does."""
        if self.view.index is None:
            records = [f"{p.dist_info}/RECORD" for p in self.parts]
            self.view.index = lower_index(chain(self.view.files, records), self.view.dirs)

    def dump(self) -> bytes:
        parts = [(p.filename, p.dist_info, p.record, p.scripts) for p in self.parts]
        return marshal.dumps((VIEW_FORMAT, self.view.dump(), parts))

    @classmethod
    def load(cls, blob: bytes) -> SharedView:
        version, view, parts = marshal.loads(blob)  # noqa: S302 (our own cache)
        if version != VIEW_FORMAT:
            raise ValueError(f"view format {version}")
        return cls(
            View.load(view),
            [_WheelPart(f, d, rec, [tuple(x) for x in sc]) for f, d, rec, sc in parts],
        )


def _csv(rows: list[tuple[str, str, str]]) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue().encode()


class _Composer:
    def __init__(self, store: Store, site_packages: str, bytecode: Bytecode | None) -> None:
        self.store = store
        self.bytecode = bytecode
        self.site_packages = site_packages  # venv-relative, e.g. lib/python3.11/site-packages
        self.view = View()
        self.parts: list[_WheelPart] = []
        self.owner: dict[str, str] = {}  # path -> the wheel whose file is served there
        self.rows: dict[str, list[tuple[str, str, str]]] = {}  # wheel -> its RECORD rows

    def _add_dirs(self, path: str, wheel: str) -> None:
        parent = posixpath.dirname(path)
        while parent and parent not in self.view.dirs:
            if parent in self.view.files:
                raise ViewError(
                    f"path conflict: {parent} is a file in {self.owner[parent]} and a directory"
                    f" in {wheel}"
                )
            self.view.dirs.add(parent)
            parent = posixpath.dirname(parent)

    def _place(
        self, table: MutableMapping[str, ViewFile], path: str, file: ViewFile, wheel: str
    ) -> None:
        # The index is a file too: a row edited to "../../x" must not become a view path.
        if not is_safe_path(path) or (file.digest is not None and not is_digest(file.digest)):
            raise ViewError(
                f"{wheel}: unsafe path {path!r} in the store index: run pkgfs store verify"
            )
        existing = table.get(path)
        if existing is not None:
            if (existing.digest, existing.data) == (file.digest, file.data):
                return  # the same bytes (a namespace package's __init__.py, a shared LICENSE)
            self._conflict(table, path, file, wheel)
            return
        if table is self.view.files:
            if path in self.view.dirs:
                raise ViewError(
                    f"path conflict: {path} is a directory in another wheel than {wheel}"
                )
            self._add_dirs(path, wheel)
        table[path] = file
        self.owner.setdefault(path, wheel)

    def _conflict(
        self, table: MutableMapping[str, ViewFile], path: str, file: ViewFile, wheel: str
    ) -> None:
        """Two wheels ship ``path`` with different bytes. pip and uv install both, and the
        later-installed file wins; pkgfs makes "later" deterministic, whatever the lock's
        order: the wheel whose file name sorts last (for a pkgutil-style namespace
        ``__init__.py`` any of them works). Never a refusal: each conflict is said once."""
        owner = self.owner[path]
        served, shadowed = (wheel, owner) if wheel > owner else (owner, wheel)
        if served == wheel:
            table[path] = file
            self.owner[path] = wheel
        if table is self.view.files:
            self.view.conflicts.append((path, served, shadowed))

    def add_wheel(
        self, sha256: str, filename: str, name: str, version: str, dist_info: str
    ) -> None:
        rows: list[tuple[str, str, str]] = []
        scripts: list[tuple[str, ...]] = []
        installer_path = f"{dist_info}/INSTALLER"
        python_dir = posixpath.basename(posixpath.dirname(self.site_packages))
        for f in self.store.files(sha256):
            if f.scheme in ("purelib", "platlib"):
                if f.path == installer_path:
                    continue  # a wheel's own INSTALLER: the one generated below replaces it
                self._place(
                    self.view.files, f.path, ViewFile(f.size, f.executable, f.digest), filename
                )
                rows.append((f.path, record_hash_of_hex(f.digest), str(f.size)))
            elif f.scheme == "scripts":
                _check_script_name(filename, f.path)
                scripts.append(("file", f.path, f.digest))
            else:
                # data -> the venv root; headers -> include/site/pythonX.Y/NAME (as pip does).
                base = "" if f.scheme == "data" else f"include/site/{python_dir}/{name}"
                path = posixpath.join(base, f.path)
                file = ViewFile(f.size, f.executable, f.digest)
                self._place(self.view.data, path, file, filename)
                # Served by the mount too, under DATA_DIR: the venv links there (env/venv.py).
                self._place(self.view.files, f"{DATA_DIR}/{path}", file, filename)
                rows.append(
                    (
                        _relative(path, self.site_packages),
                        record_hash_of_hex(f.digest),
                        str(f.size),
                    )
                )
        if self.bytecode is not None:
            # Compiled once into the store (pkgfs.store.bytecode). A module two wheels ship
            # alike is served with the first one's pyc; one they ship with different bytes,
            # with the pyc of the wheel whose source is served.
            for source, digest, size in self.store.index.bytecode(sha256, self.bytecode.magic):
                path = pyc_path(source, self.bytecode.cache_tag)
                pyc = ViewFile(size, False, digest)
                if path not in self.view.files:
                    self._place(self.view.files, path, pyc, filename)
                elif self.owner.get(source) == filename and self.owner.get(path) != filename:
                    self.view.files[path] = pyc
                    self.owner[path] = filename
        for entry in self.store.entry_points(sha256):
            _check_script_name(filename, entry.name)
            scripts.append(("entry", entry.name, entry.module, entry.attr, entry.section))
        self._place(
            self.view.files,
            installer_path,
            ViewFile(len(INSTALLER_NAME), False, data=INSTALLER_NAME),
            filename,
        )
        rows.append((installer_path, record_hash_of(INSTALLER_NAME), str(len(INSTALLER_NAME))))
        self.rows[filename] = rows
        self.parts.append(_WheelPart(filename, dist_info, b"", scripts))
        self.view.wheels.append((name, version, filename))

    def finish(self) -> SharedView:
        """The shared view, each wheel's RECORD rows written now that every conflict is
        settled: a file another wheel's copy shadows is listed with the hash and size of
        the file served, so RECORD describes what is installed (as after pip installs
        both, and ``pip``/``uv`` uninstalling either removes the file)."""
        for part in self.parts:
            rows = []
            for path, digest, size in self.rows[part.filename]:
                served = self.view.files.get(path)
                if served is None or self.owner.get(path) == part.filename:
                    rows.append((path, digest, size))
                elif served.digest is not None:
                    rows.append((path, record_hash_of_hex(served.digest), str(served.size)))
                else:
                    rows.append((path, record_hash_of(served.data or b""), str(served.size)))
            part.record = _csv(sorted(rows))
        return SharedView(self.view, self.parts)


def _check_script_name(wheel: str, name: str) -> None:
    # Checked at ingest (pkgfs.store.wheel); again here, as the index may have been edited.
    if not is_plain_name(name):
        raise ViewError(
            f"{wheel}: script name {name!r} in the store index is not a plain file name:"
            " run pkgfs store verify"
        )


def check_shared(shared: SharedView) -> None:
    """Raise :class:`ViewError` unless every path of a loaded shared view is a normalized
    relative path, every script and ``.dist-info`` name a plain file name, and every object
    a digest. A saved view's checksum stops damage, not someone who recomputes it: this
    is what keeps such a file from leading a write outside bin/ or a read outside the store.
    """
    view = shared.view
    unsafe = unsafe_path_in(chain(view.files, view.data, view.scripts, view.dirs - {""}))
    if unsafe is not None:
        raise ViewError(f"saved view: unsafe path {unsafe!r}")
    files = chain(view.files.values(), view.data.values(), view.scripts.values())
    digests = [f.digest for f in files if f.digest is not None]
    names = [*view.scripts, *(p.dist_info for p in shared.parts)]
    for part in shared.parts:
        for script in part.scripts:
            names.append(script[1])
            if script[0] == "file":
                digests.append(script[2])
    if not all_digests(digests):
        raise ViewError("saved view: an object name is not a sha256 digest")
    bad = next((name for name in names if not is_plain_name(name)), None)
    if bad is not None:
        raise ViewError(f"saved view: {bad!r} is not a plain file name")


# What ``python -m venv`` puts into bin/: the interpreter and the activation scripts. A
# wheel's script of such a name is never made, and so never listed in its RECORD, so that
# an uninstaller following RECORD (pip, uv) cannot remove the venv's own interpreter.
_VENV_OWNED = re.compile(r"python(w|3(\.\d+)?)?|activate(\.\w+)?|Activate\.ps1")


def _relative(path: str, start: str) -> str:
    """``path`` relative to ``start``, both venv-relative: ``posixpath.relpath`` without
    the working directory it asks for relative paths (gone when it was deleted)."""
    return posixpath.relpath("/" + path, "/" + start)


def finish_view(store: Store, shared: SharedView, python: str, site_packages: str) -> View:
    """The environment's own part: scripts with its interpreter in their shebang, and each
    wheel's RECORD listing them. Costs O(wheels + scripts), not O(files)."""
    view = View(
        files=ChainMap({}, shared.view.files),  # this environment's RECORDs go first
        dirs=shared.view.dirs,
        scripts={},
        data=shared.view.data,
        wheels=shared.view.wheels,
        conflicts=shared.view.conflicts,
        index=shared.view.index,
    )
    relative_bin = _relative("bin", site_packages)
    for part in shared.parts:
        script_rows: list[tuple[str, str, str]] = []
        for script in part.scripts:
            if script[0] == "file":
                _, name, digest = script
                with (
                    open(store.object_path(digest), "rb") as stream,
                    fix_shebang(stream, python) as fixed,
                ):
                    content = fixed.read()
            else:
                _, entry_name, module, attr, section = script
                try:
                    kind = cast(Literal["console", "gui"], section)
                    name, content = Script(entry_name, module, attr, kind).generate(python, "posix")
                except InvalidScript as exc:
                    raise ViewError(f"{part.filename}: entry point {entry_name}: {exc}") from None
            if _VENV_OWNED.fullmatch(name):
                continue  # neither written into bin/ nor listed in RECORD: see _VENV_OWNED
            existing = view.scripts.get(name)
            if existing is not None and existing.data != content:
                raise ViewError(
                    f"path conflict: bin/{name} is made by two wheels ({part.filename})"
                )
            view.scripts[name] = ViewFile(len(content), True, data=content)
            script_rows.append(
                (f"{relative_bin}/{name}", record_hash_of(content), str(len(content)))
            )
        # PEP 376 / the RECORD spec: RECORD lists every installed file, itself without a hash.
        # The files' rows were written once, with the shared part; scripts ("../../../bin/",
        # which sort first) and RECORD's own row are this environment's.
        record_path = f"{part.dist_info}/RECORD"
        if script_rows or part.whole is None:
            record = _csv(sorted(script_rows)) + part.record + _csv([(record_path, "", "")])
            made = ViewFile(len(record), False, data=record)
            if script_rows:
                view.files[record_path] = made
                continue
            part.whole = made
        view.files[record_path] = part.whole
    return view


def compose_shared(
    store: Store, wheels: Sequence[str], site_packages: str, bytecode: Bytecode | None
) -> SharedView:
    composer = _Composer(store, site_packages, bytecode)
    by_sha = {w.sha256: w for w in store.wheels()}
    for sha256 in wheels:
        info = by_sha.get(sha256)
        if info is None:
            raise ViewError(f"wheel {sha256[:16]}... is not in the store: run pkgfs sync")
        dist_info = store.index.dist_info(sha256)
        composer.add_wheel(sha256, info.filename, info.name, info.version, dist_info)
    return composer.finish()


def compose_view(
    store: Store,
    wheels: Sequence[str],
    python: str,
    site_packages: str,
    bytecode: Bytecode | None = None,
) -> View:
    """The view of the stored wheels with these sha256s, for an environment whose
    interpreter is ``python`` and whose site-packages is ``site_packages`` (venv-relative),
    serving the bytecode compiled for ``bytecode.magic`` where the store has it."""
    shared = compose_shared(store, wheels, site_packages, bytecode)
    return finish_view(store, shared, python, site_packages)
