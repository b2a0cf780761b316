"""Shared bytecode: every module of a wheel compiled once per interpreter, into the store.

The modules are compiled by the target interpreter itself (its magic number, its compiler),
several processes at once, and each ``.pyc`` becomes an ordinary content-addressed object:
the same bytecode from two wheels or two environments is one object.

Why timestamp-based pycs are right here. A pyc records its source's mtime and size
(PEP 552 calls these "timestamp-based"; the alternative records a hash of the source).
Every file of the lower layer has the same fixed mtime (``VIEW_MTIME``) on every mount, so
a pyc compiled with that mtime and the source's size is valid in every environment, and
Python loads it without reading the source twice. When a source is edited in the overlay,
its mtime becomes the time of the edit: the header no longer matches, Python compiles the
edited source and writes its own pyc into the overlay, so an edit is never shadowed by stale
bytecode. (A checked hash-based pyc would hash each source at every import, and an unchecked
one would shadow edits.) The one edit this cannot see is one that restores both the old
mtime and the same size, which no editor does.

Each compiled module's ``co_filename`` is its path relative to site-packages; the import
system rewrites it to the path it loaded the source from (``_imp._fix_co_filename``), so
tracebacks and debuggers show each environment's own paths.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .core import Store
from .errors import BytecodeError
from .hashing import hash_file
from .layout import syncfs
from .objects import OBJECT_MODE, object_file, publish

__all__ = ["VIEW_MTIME", "BytecodeReport", "compile_wheels"]

# Every file and directory of an environment's lower layer has this mtime, on every mount,
# and every pyc is compiled against it: bytecode caches keyed by source mtime stay valid.
# 1980-01-01, the zip epoch, as reproducible builds use.
VIEW_MTIME = 315532800


# Runs inside the target interpreter. importlib's own _code_to_timestamp_pyc writes the
# header (magic, flags, mtime, size) exactly as the import system and py_compile do.
_COMPILER = """
import json, sys
from importlib._bootstrap_external import _code_to_timestamp_pyc
jobs = json.load(sys.stdin)
errors = []
for source, name, output in jobs:
    try:
        with open(source, "rb") as f:
            data = f.read()
        code = compile(data, name, "exec", dont_inherit=True)
        with open(output, "wb") as f:
            f.write(_code_to_timestamp_pyc(code, @MTIME@, len(data)))
        errors.append(None)
    except (SyntaxError, ValueError, UnicodeDecodeError, OverflowError, RecursionError) as exc:
        errors.append(type(exc).__name__ + ": " + str(exc))
json.dump(errors, sys.stdout)
""".replace("@MTIME@", str(VIEW_MTIME))


@dataclass
class BytecodeReport:
    wheels: int = 0  # wheels compiled by this call (not counting those already done)
    modules: int = 0
    failed: int = 0  # modules that do not compile: skipped, like pip does
    objects_added: int = 0


def _sources(store: Store, sha256: str) -> list[tuple[str, str]]:
    """(path relative to site-packages, object digest) of a wheel's importable modules."""
    return [
        (f.path, f.digest)
        for f in store.files(sha256)
        if f.scheme in ("purelib", "platlib") and f.path.endswith(".py")
    ]


def _run_compilers(python: Path, jobs: list[list[str]], workers: int) -> list[str | None]:
    chunks = [jobs[i::workers] for i in range(workers)]
    procs = [
        subprocess.Popen(
            [python, "-I", "-S", "-c", _COMPILER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for chunk in chunks
    ]
    answers: list[list[str | None]] = []
    for proc, chunk in zip(procs, chunks, strict=True):
        out, err = proc.communicate(json.dumps(chunk))
        if proc.returncode != 0:
            last = (err.strip().splitlines() or ["no output"])[-1]
            raise BytecodeError(f"{python}: cannot compile bytecode: {last}")
        answers.append(json.loads(out))
    # Put the answers back in job order: chunk k holds jobs k, k + workers, ...
    results: list[str | None] = [None] * len(jobs)
    for k, answer in enumerate(answers):
        results[k::workers] = answer
    return results


def compile_wheels(
    store: Store,
    wheels: Sequence[str],
    python: Path,
    magic: str,
    *,
    jobs: int | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> BytecodeReport:
    """Compile, with ``python``, every wheel in ``wheels`` (sha256s) that lacks bytecode for
    ``magic``; a no-op for those that have it. Each wheel is recorded in one transaction."""
    report = BytecodeReport()
    todo = [w for w in wheels if not store.index.bytecode_done(w, magic)]
    if not todo:
        return report
    store.require_writable(f"it lacks bytecode for {python} in {len(todo)} of the wheels")
    staging = Path(tempfile.mkdtemp(prefix="bytecode-", dir=store.layout.tmp))
    try:
        job_list: list[list[str]] = []
        owners: list[tuple[str, str]] = []  # (wheel, source path) per job
        for wheel in todo:
            for path, digest in _sources(store, wheel):
                output = str(staging / str(len(job_list)))
                job_list.append([str(store.object_path(digest)), path, output])
                owners.append((wheel, path))
        progress(f"compiling {len(job_list)} modules of {len(todo)} wheels for {python}")
        workers = max(1, min(jobs or os.cpu_count() or 1, len(job_list)))
        results = _run_compilers(python, job_list, workers) if job_list else []
        compiled: dict[str, list[tuple[str, str, int]]] = {w: [] for w in todo}
        failed: dict[str, int] = dict.fromkeys(todo, 0)
        objects = str(store.layout.objects)
        for (wheel, path), job, error in zip(owners, job_list, results, strict=True):
            if error is not None:
                failed[wheel] += 1
                continue
            digest, size = hash_file(Path(job[2]))
            os.chmod(job[2], OBJECT_MODE)
            if publish(job[2], object_file(objects, digest)):
                report.objects_added += 1
            compiled[wheel].append((path, digest, size))
        syncfs(store.layout.objects)  # objects durable before the index refers to them
        for wheel in todo:
            store.index.add_bytecode(wheel, magic, compiled[wheel], failed[wheel])
        report.wheels = len(todo)
        report.modules = sum(len(c) for c in compiled.values())
        report.failed = sum(failed.values())
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)
