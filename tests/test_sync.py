"""pkgfs sync and lock show against a real index on loopback, with uv-made lockfiles."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pkgfs.store.fetch import Finder
from pkgfs.store.lock import choose_wheels, read_lock
from tests.conftest import LOCKPROJECT, PKGFS, RunPkgfs, expected_wheels, snapshot
from tests.indexserver import IndexServer
from tests.targets import cpython_linux

FORMATS = ("pylock.toml", "uv.lock", "requirements.txt")
CP311 = sys.version_info[:2] == (3, 11)


def _selection(rows: list[dict[str, str]]) -> list[tuple[str, str, str, str]]:
    return sorted((r["name"], r["version"], r["wheel"], r["sha256"]) for r in rows)


@pytest.mark.parametrize("minor", [11, 12])
@pytest.mark.parametrize("lock", FORMATS)
def test_three_formats_choose_the_same_wheels(
    lockproject: Path, index_server: IndexServer, lock: str, minor: int
) -> None:
    target = cpython_linux(minor)
    lockfile = read_lock(lockproject / lock, target)
    finder = Finder(index_urls=[index_server.simple_url])
    chosen = choose_wheels(lockfile, target, finder)
    rows = [
        {"name": w.name, "version": w.version, "wheel": w.filename, "sha256": w.wheel.sha256 or ""}
        for w in chosen
    ]
    assert _selection(rows) == _selection(expected_wheels(f"cp3{minor}"))


@pytest.mark.skipif(not CP311, reason="EXPECTED.json's cp311 selection is for CPython 3.11")
@pytest.mark.parametrize("lock", FORMATS)
def test_lock_show_json(
    pkgfs: RunPkgfs, lockproject: Path, index_server: IndexServer, lock: str
) -> None:
    result = pkgfs(
        "lock",
        "show",
        "--json",
        "--lock",
        lockproject / lock,
        "--index-url",
        index_server.simple_url,
    )
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    assert _selection(rows) == _selection(expected_wheels())
    assert all(row["in_store"] is False for row in rows)


@pytest.mark.skipif(not CP311, reason="EXPECTED.json's cp311 selection is for CPython 3.11")
def test_sync_then_warm_sync_without_network(
    pkgfs: RunPkgfs, lockproject: Path, index_server: IndexServer
) -> None:
    first = pkgfs("sync", "--lock", lockproject / "uv.lock")
    assert first.code == 0, first.err
    assert first.out == "4 wheels: 0 already in the store, 4 added\n"
    stored = json.loads(pkgfs("store", "ls", "--json").out)
    assert sorted(w["sha256"] for w in stored) == sorted(w["sha256"] for w in expected_wheels())
    assert pkgfs("store", "verify").code == 0

    before = list(index_server.requests)
    for lock in FORMATS:
        args = ["sync", "--lock", lockproject / lock]
        again = (
            pkgfs(*args, "--index-url", index_server.simple_url)
            if lock == "requirements.txt"
            else pkgfs(*args)
        )
        assert again.code == 0, again.err
        assert again.out == "4 wheels: 4 already in the store, 0 added\n"
    # pylock.toml and uv.lock name their wheels: present ones need no index at all. Only
    # requirements.txt asks the index which files exist, and downloads nothing.
    assert all("/files/" not in r for r in index_server.requests[len(before) :])
    offline = pkgfs("sync", "--lock", lockproject / "uv.lock", "--offline")
    assert offline.out == "4 wheels: 4 already in the store, 0 added\n"


def test_discovery_says_which_lock(lockproject: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [*PKGFS, "--store", str(tmp_path / "s"), "lock", "show"],
        cwd=lockproject, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == f"pkgfs: using {lockproject / 'pylock.toml'}"


def _refused(pkgfs: RunPkgfs, store_dir: Path, *args: str | Path) -> str:
    """Run a sync that must fail: one error line, exit 1, the store as it was."""
    assert pkgfs("store", "stats").code == 0  # the store exists before
    before = snapshot(store_dir)
    result = pkgfs("sync", *args)
    assert result.code == 1, result
    errors = [line for line in result.err.splitlines() if line.startswith("pkgfs: error: ")]
    assert len(errors) == 1, result.err
    assert "Traceback" not in result.err
    assert snapshot(store_dir) == before
    assert pkgfs("store", "verify").code == 0
    return errors[0]


def test_offline_lists_what_is_missing(pkgfs: RunPkgfs, lockproject: Path, store_dir: Path) -> None:
    error = _refused(pkgfs, store_dir, "--lock", lockproject / "uv.lock", "--offline")
    assert "offline, and 4 wheels are not in the store: alpha-1.0-py3-none-any.whl," in error
    assert error.startswith(f"pkgfs: error: {lockproject / 'uv.lock'}: ")


def test_tampered_lock_hash_is_refused(pkgfs: RunPkgfs, lockproject: Path) -> None:
    lock = lockproject / "uv.lock"
    real = expected_wheels()[0]["sha256"]  # alpha
    lock.write_text(lock.read_text().replace(real, "0" * 64))
    result = pkgfs("sync", "--lock", lock)
    assert result.code == 1
    (line,) = [x for x in result.err.splitlines() if x.startswith("pkgfs: error:")]
    assert (
        "alpha-1.0-py3-none-any.whl: sha256 00e4f21124237e81... is not the lock's (0000000000000000...)"
        in line
    )
    assert line.endswith("nothing of it is stored: lock again if the new file is to be trusted")
    names = {w["name"] for w in json.loads(pkgfs("store", "ls", "--json").out)}
    assert "alpha" not in names
    assert pkgfs("store", "verify").code == 0


@pytest.mark.parametrize(
    ("fault", "message"),
    [("corrupt", "is not the lock's"), ("truncate", "cut off"), ("missing", "HTTP 404")],
)
def test_bad_downloads_store_nothing_of_that_wheel(
    pkgfs: RunPkgfs, lockproject: Path, index_server: IndexServer, fault: str, message: str
) -> None:
    index_server.faults["zeta-1.0-py3-none-any.whl"] = fault  # type: ignore[assignment]
    result = pkgfs("sync", "--lock", lockproject / "pylock.toml")
    assert result.code == 1
    (line,) = [x for x in result.err.splitlines() if x.startswith("pkgfs: error:")]
    assert "zeta-1.0-py3-none-any.whl" in line
    assert message in line
    assert result.out == "4 wheels: 0 already in the store, 3 added, 1 failed\n"
    names = {w["name"] for w in json.loads(pkgfs("store", "ls", "--json").out)}
    assert names == {"alpha", "beta", "epsilon"}
    assert pkgfs("store", "verify").code == 0


def test_unreachable_index(pkgfs: RunPkgfs, lockproject: Path, store_dir: Path) -> None:
    error = _refused(
        pkgfs,
        store_dir,
        "--lock",
        lockproject / "requirements.txt",
        "--index-url",
        "http://127.0.0.1:9/simple/",
    )
    assert "http://127.0.0.1:9/simple/alpha/: cannot connect" in error


def test_requirements_with_no_index(pkgfs: RunPkgfs, lockproject: Path, store_dir: Path) -> None:
    # Without --no-index the default index would be asked (tests/test_indexes.py: config).
    error = _refused(pkgfs, store_dir, "--lock", lockproject / "requirements.txt", "--no-index")
    assert error == (
        f"pkgfs: error: {lockproject / 'requirements.txt'}: package alpha 1.0: no wheel with a"
        " listed hash in the store, (no index: --no-index)"
    )


def test_sdist_only_package(pkgfs: RunPkgfs, lockproject: Path, store_dir: Path) -> None:
    lock = lockproject / "uv.lock"
    text = lock.read_text()
    start = text.index('[[package]]\nname = "zeta"')
    zeta = text[start:]
    wheels = zeta[zeta.index("wheels = [") :]
    sdist = (
        'sdist = { url = "http://127.0.0.1:9/files/zeta-1.0.tar.gz", hash = "sha256:'
        + "1" * 64
        + '", size = 10 }\n'
    )
    lock.write_text(text[:start] + zeta.replace(wheels, sdist))
    # pkgfs builds the sdist (tests/test_builds.py); this one cannot even be downloaded.
    error = _refused(pkgfs, store_dir, "--lock", lock)
    assert error.startswith(
        "pkgfs: error: zeta 1.0: http://127.0.0.1:9/files/zeta-1.0.tar.gz: cannot connect"
    )
    # Done as it says, the stored wheel is used (the lock names no wheel hash to check).
    added = pkgfs("store", "add", LOCKPROJECT / "wheels" / "zeta-1.0-py3-none-any.whl")
    assert added.code == 0, added.err
    shown = pkgfs("lock", "show", "--json", "--lock", lock, "--python", sys.executable)
    assert shown.code == 0, shown.err
    zeta_row = next(r for r in json.loads(shown.out) if r["name"] == "zeta")
    assert (zeta_row["wheel"], zeta_row["in_store"]) == ("zeta-1.0-py3-none-any.whl", True)


def test_missing_lock(pkgfs: RunPkgfs, tmp_path: Path, store_dir: Path) -> None:
    error = _refused(pkgfs, store_dir, "--lock", tmp_path / "uv.lock")
    assert error == f"pkgfs: error: {tmp_path / 'uv.lock'}: no such lockfile"


@pytest.mark.skipif(not CP311, reason="EXPECTED.json's cp311 selection is for CPython 3.11")
def test_offline_from_find_links(
    pkgfs: RunPkgfs, lockproject: Path, index_server: IndexServer
) -> None:
    wheels = LOCKPROJECT / "wheels"
    for lock in ("requirements.txt", "uv.lock"):
        result = pkgfs("sync", "--lock", lockproject / lock, "--offline", "--find-links", wheels)
        assert result.code == 0, result.err
    assert index_server.requests == []  # offline: not one request
    stored = json.loads(pkgfs("store", "ls", "--json").out)
    assert sorted(w["sha256"] for w in stored) == sorted(w["sha256"] for w in expected_wheels())


@pytest.mark.skipif(not CP311, reason="EXPECTED.json's cp311 selection is for CPython 3.11")
def test_requirements_resolve_from_the_store_without_an_index(
    pkgfs: RunPkgfs, lockproject: Path, index_server: IndexServer
) -> None:
    assert pkgfs("sync", "--lock", lockproject / "uv.lock").code == 0
    seen = len(index_server.requests)
    # No --index-url: every package has a stored wheel with a listed hash.
    result = pkgfs("lock", "show", "--json", "--lock", lockproject / "requirements.txt")
    assert result.code == 0, result.err
    assert _selection(json.loads(result.out)) == _selection(expected_wheels())
    assert len(index_server.requests) == seen


def test_content_length_that_is_not_a_number(
    pkgfs: RunPkgfs, lockproject: Path, index_server: IndexServer
) -> None:
    wheel = "zeta-1.0-py3-none-any.whl"
    index_server.faults[wheel] = "bad-length"
    result = pkgfs("sync", "--lock", lockproject / "pylock.toml", "--no-compile")
    assert result.code == 1
    assert "Traceback" not in result.err
    (line,) = [x for x in result.err.splitlines() if x.startswith("pkgfs: error:")]
    assert line == (
        f"pkgfs: error: {index_server.url}/files/{wheel}: the server sent a"
        f" Content-Length that is not a number: '{(LOCKPROJECT / 'wheels' / wheel).stat().st_size} bytes'"
    )
    names = {w["name"] for w in json.loads(pkgfs("store", "ls", "--json").out)}
    assert names == {"alpha", "beta", "epsilon"}


def test_ctrl_c_stops_promptly_and_says_what_was_kept(
    pkgfs: RunPkgfs, lockproject: Path, index_server: IndexServer, store_dir: Path, tmp_path: Path
) -> None:
    # zeta trickles in at 100 bytes a second (about 9 s); the other three arrive at once.
    index_server.faults["zeta-1.0-py3-none-any.whl"] = "slow"
    environ = {**os.environ, "PKGFS_STORE": str(store_dir), "HOME": str(tmp_path / "home")}
    command = [*PKGFS, "sync", "--lock", str(lockproject / "uv.lock"), "--no-compile"]
    # A session of its own, signalled as a group: what Ctrl-C in a terminal does, so the
    # ingest workers get SIGINT too.
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ,
        start_new_session=True,
    ) as proc:  # fmt: skip
        assert proc.stderr is not None
        said: list[str] = []
        while len([line for line in said if line.startswith("added ")]) < 3:
            said.append(proc.stderr.readline())
            assert said[-1], said  # the three fast wheels come before the end
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - started
    assert proc.returncode == 130, err
    assert elapsed < 2.0, f"{elapsed:.1f} s after SIGINT"
    assert out == ""
    assert err == (
        "pkgfs: interrupted; kept 3 wheels ingested before it: alpha 1.0, beta 2.0, epsilon 1.0\n"
    )
    names = {w["name"] for w in json.loads(pkgfs("store", "ls", "--json").out)}
    assert names == {"alpha", "beta", "epsilon"}
    assert pkgfs("store", "verify").code == 0


def _tiny_filesystem_prefix(mountpoint: Path, size: str) -> list[str]:
    """A command prefix that runs the rest with a ``size`` tmpfs at ``mountpoint`` (in a
    mount namespace of its own: nothing outlives the command)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private tmpfs")
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size={size} tmpfs {mountpoint}"],
        capture_output=True, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.decode().strip()}")
    script = f'mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(mountpoint))} && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, "sh"]


def test_a_full_disk_during_a_download_is_one_line(
    tmp_path: Path, make_wheel: Callable[..., Path]
) -> None:
    # 400 KiB that do not compress, on a 256 KiB filesystem holding the store.
    blob = base64.b64encode(os.urandom(300_000)).decode()
    wheel = make_wheel(name="big", files={"big/data.py": f"DATA = {blob!r}\n"})
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    disk = tmp_path / "disk"
    disk.mkdir()
    prefix = _tiny_filesystem_prefix(disk, "256k")
    with IndexServer([wheel]) as index:
        lock = tmp_path / "pylock.toml"
        lock.write_text(
            'lock-version = "1.0"\ncreated-by = "test"\n[[packages]]\nname = "big"\n'
            f'version = "1.0"\nwheels = [{{ url = "{index.url}/files/{wheel.name}",'
            f' hashes = {{ sha256 = "{digest}" }} }}]\n'
        )
        command = [*PKGFS, "--store", disk / "store", "sync", "--lock", lock, "--no-compile"]
        proc = subprocess.run(
            [*prefix, *map(str, command)], capture_output=True, text=True, check=False
        )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("pkgfs: error:")]
    assert line.startswith(f"pkgfs: error: {disk / 'store' / 'tmp'}/download-"), line
    assert line.endswith(f"/{wheel.name}: cannot write the download: No space left on device")


def test_a_local_wheel_that_is_no_regular_file_is_refused(tmp_path: Path) -> None:
    # A lock naming /dev/zero as a wheel's path was hashed forever, deaf to Ctrl-C.
    code = (
        "import sys; from pathlib import Path\n"
        "from pkgfs.store.fetch import download\n"
        "from pkgfs.store.lock import LockedWheel, WheelLink\n"
        "from pkgfs.store.errors import FetchError\n"
        "link = WheelLink('m-1.0-py3-none-any.whl', 'file:///dev/zero', '0' * 64)\n"
        "try:\n"
        "    download(LockedWheel('m', '1.0', link, frozenset({'0' * 64})), Path(sys.argv[1]))\n"
        "except FetchError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout == "/dev/zero: not a regular file: not a wheel\n", proc.stderr
