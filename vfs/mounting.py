"""``pkgfs mount``, ``unmount``, ``status``, ``diff`` and ``reset``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from pkgfs.store import PkgfsError, Store
from pkgfs.store.lock import discover_lock
from pkgfs.store.view import DATA_DIR, View

from .early import EarlyDaemon, fork_daemon
from .envs import MountConfig, MountRecord, Venv, mount_dir, read_records, venv_of
from .locking import resolve_lock, stored_wheels, sync_locked
from .tree import MergedTree

__all__ = ["cmd_diff", "cmd_mount", "cmd_reset", "cmd_status", "cmd_unmount", "mount_state"]

READY_TIMEOUT = 60.0


class MountError(PkgfsError, OSError):
    """A mount cannot be made, found or undone. The message names the mountpoint."""


def mount_state(mountpoint: Path) -> str:
    """``ok`` (mounted and answering), ``stale`` (mounted, daemon gone) or ``unmounted``."""
    if not _in_mountinfo(mountpoint):
        return "unmounted"
    try:
        # statfs always reaches the daemon; stat may be answered from the kernel's cache.
        os.statvfs(mountpoint)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            return "stale"
        raise
    return "ok"


def _in_mountinfo(mountpoint: Path) -> bool:
    target = os.path.realpath(mountpoint) if mountpoint.exists() else str(mountpoint)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            # mountinfo escapes spaces and such as octal: \040
            if fields[4].encode().decode("unicode_escape") == target:
                return True
    return False


def _fusermount(mountpoint: Path, lazy: bool) -> None:
    command = ["fusermount3", "-u", *(["-z"] if lazy else []), str(mountpoint)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        raise MountError(f"{mountpoint}: cannot unmount: {reason}")


def _check_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        raise MountError(
            "/dev/fuse is missing: load the fuse module, or give the container --device /dev/fuse"
        )
    if shutil.which("fusermount3") is None:
        raise MountError("fusermount3 is not installed: apt-get install fuse3")


def _prepare_mountpoint(mountpoint: Path, err: TextIO) -> None:
    if not mountpoint.exists():
        if _in_mountinfo(mountpoint):  # a stale mount: stat fails with ENOTCONN
            pass
        else:
            raise MountError(f"{mountpoint}: no such directory")
    state = mount_state(mountpoint)
    if state == "ok":
        raise MountError(f"{mountpoint}: already mounted: pkgfs unmount it first")
    if state == "stale":
        _fusermount(mountpoint, lazy=True)
        print(f"pkgfs: {mountpoint}: cleared a stale mount (its daemon had died)", file=err)
    if not mountpoint.is_dir():
        raise MountError(f"{mountpoint}: not a directory")


def _populate_venv(venv: Venv, view: View, state: Path) -> None:
    """Put the view's scripts into the venv, as pip would, and link its data files there;
    remember what was made, for unmount to remove."""
    made = []
    for name, file in view.scripts.items():
        path = venv.bin / name
        _write_file(path, file.data or b"", 0o755)
        made.append(str(path))
    # Data and headers are served by the mount under DATA_DIR: the venv gets a symlink at
    # the topmost directory of each that it lacks (share -> .../.pkgfs-data/share), so they
    # cost no copy, and writes through the links land in the overlay, never the store.
    linked: set[str] = set()
    for relative in sorted(view.data):
        parts = relative.split("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if prefix in linked:
                break
            link = venv.root / prefix
            if not link.exists() and not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(venv.site_packages / DATA_DIR / prefix)
                linked.add(prefix)
                made.append(str(link))
                break
            if not link.is_dir() or link.is_symlink():
                break  # a file, or someone else's link, is in the way: leave it
    (state / "scripts.json").write_text(json.dumps(made))


def _write_file(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.pkgfs-tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    os.replace(tmp, path)


def _depopulate_venv(state: Path) -> None:
    """Remove the scripts and data links that _populate_venv made (listed in scripts.json)."""
    with contextlib.suppress(OSError, ValueError):
        for path in json.loads((state / "scripts.json").read_text()):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        (state / "scripts.json").unlink()


def _overlay_dirs(
    args: argparse.Namespace, state: Path, store: Store, mountpoint: Path
) -> tuple[Path, Path]:
    base = Path(args.overlay).absolute() if args.overlay else state
    for forbidden, what in ((store.root, "inside the store"), (mountpoint, "below the mountpoint")):
        if base == forbidden or forbidden in base.parents:
            raise MountError(f"{base}: the overlay cannot be {what}")
    return base / "upper", base / "work"


def cmd_mount(args: argparse.Namespace, out: TextIO) -> int:
    mountpoint = Path(args.mountpoint).absolute()
    _check_fuse()
    _prepare_mountpoint(mountpoint, sys.stderr)
    venv = venv_of(mountpoint)
    if args.python is None and venv is not None:
        args.python = str(venv.python)
    if args.lock is None:
        args.lock = discover_lock(venv.project if venv else Path.cwd())
        print(f"pkgfs: using {args.lock}", file=sys.stderr)
    state = mount_dir(mountpoint)
    # On failure, remove every directory this mount created, down from the first new one.
    created = next((p for p in reversed([state, *state.parents]) if not p.exists()), None)
    try:
        with Store.open(getattr(args, "store", None)) as store:
            config, view = _prepare(args, store, mountpoint, venv, state)
        # The store's index is closed here: the daemon needs only the view and the objects.
        if args.foreground:
            from .daemon import serve  # noqa: PLC0415 (trio and pyfuse3 only when serving)

            if venv is not None:
                _populate_venv(venv, view, state)
            print(f"mounted {len(config.wheels)} packages at {mountpoint}", file=out, flush=True)
            try:
                return serve(config, view, _raise_if)
            finally:
                _depopulate_venv(state)
        # The daemon is forked by main() before the slow imports (see early.py); a caller
        # that did not fork one gets one now.
        daemon: EarlyDaemon = getattr(args, "daemon", None) or fork_daemon()
        _raise_if(daemon.start(state))
        os.statvfs(mountpoint)  # the mount answers
        if venv is not None:
            _populate_venv(venv, view, state)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    print(
        f"mounted {len(config.wheels)} packages at {mountpoint}"
        f" (lock {args.lock}, python {config.python})",
        file=out,
    )
    return 0


def _prepare(
    args: argparse.Namespace, store: Store, mountpoint: Path, venv: Venv | None, state: Path
) -> tuple[MountConfig, View]:
    """Resolve, sync, compile and compose: everything a mount needs, before it mounts."""
    resolved = resolve_lock(args, store, sys.stderr)
    _, outcomes = sync_locked(store, resolved, args.offline, mountpoint, not args.no_compile)
    failed = [o.error for o in outcomes if o.error is not None]
    if failed:
        raise failed[0]
    state.mkdir(parents=True, exist_ok=True)
    upper, work = _overlay_dirs(args, state, store, mountpoint)
    config = MountConfig(
        mountpoint=str(mountpoint),
        store=str(store.root),
        lock=str(Path(args.lock).absolute()),
        python=str(venv.python) if venv else str(resolved.target.python),
        site_packages=venv.site_packages_rel if venv else "site-packages",
        wheels=stored_wheels(store, resolved.wheels),
        state=str(state),
        upper=str(upper),
        work=str(work),
        allow_other=args.allow_other,
        magic="" if args.no_compile else resolved.target.magic,
        cache_tag=resolved.target.cache_tag,
    )
    view = config.view(store)  # composed (and saved) now: a conflict fails unmounted
    config.save(state / "config.json")
    return config, view


def _raise_if(error: str | None) -> None:
    if error is not None:
        raise MountError(error)


def cmd_unmount(args: argparse.Namespace, out: TextIO) -> int:
    mountpoint = Path(args.mountpoint).absolute()
    state = mount_state(mountpoint)
    if state == "unmounted":
        raise MountError(f"{mountpoint}: not mounted")
    directory = mount_dir(mountpoint)
    pid = None
    with contextlib.suppress(OSError, ValueError, TypeError):
        pid = MountRecord.load(directory).pid
    _fusermount(mountpoint, lazy=args.lazy or state == "stale")
    if pid is not None:
        _wait_for_exit(pid)
    _depopulate_venv(directory)
    (directory / "mount.json").unlink(missing_ok=True)
    print(f"unmounted {mountpoint}" + (" (it was stale)" if state == "stale" else ""), file=out)
    return 0


def _wait_for_exit(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is not serving.
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", encoding="utf-8") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _tree(directory: Path) -> tuple[MergedTree, MountRecord | None]:
    config = MountConfig.load(directory / "config.json")
    record = None
    with contextlib.suppress(OSError, ValueError, TypeError):
        record = MountRecord.load(directory)
    with Store.open(config.store) as store:
        tree = MergedTree(
            config.view(store), store.layout.objects, Path(config.upper), Path(config.work)
        )
    return tree, record


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    rows = []
    for directory, record in read_records():
        mountpoint = Path(record.mountpoint)
        state = mount_state(mountpoint)
        if state == "ok" and not _alive(record.pid):
            state = "stale"
        if state == "unmounted":
            (directory / "mount.json").unlink(missing_ok=True)  # a daemon killed and cleared
            continue
        changes = len(_tree(directory)[0].changes()) if state == "ok" else None
        rows.append(
            {
                "mountpoint": record.mountpoint,
                "lock": record.lock,
                "packages": record.packages,
                "changes": changes,
                "pid": record.pid,
                "state": state,
            }
        )
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
        return 0
    if not rows:
        print("no pkgfs mounts", file=out)
    for row in rows:
        shown = "?" if row["changes"] is None else row["changes"]
        print(
            f"{row['state']:<6} {row['mountpoint']}  {row['packages']} packages,"
            f" {shown} overlay changes, pid {row['pid']}, lock {row['lock']}",
            file=out,
        )
    return 0


def _known(mountpoint: Path) -> Path:
    directory = mount_dir(mountpoint)
    if not (directory / "config.json").is_file():
        raise MountError(f"{mountpoint}: pkgfs has never mounted it")
    return directory


def cmd_diff(args: argparse.Namespace, out: TextIO) -> int:
    tree, _ = _tree(_known(Path(args.mountpoint).absolute()))
    changes = tree.changes()
    if args.json:
        json.dump([{"path": c.path, "change": c.kind} for c in changes], out, indent=2)
        out.write("\n")
        return 0
    letters = {"added": "A", "modified": "M", "deleted": "D", "replaced": "R"}
    for change in changes:
        print(f"{letters[change.kind]} {change.path}", file=out)
    return 0


def cmd_reset(args: argparse.Namespace, out: TextIO) -> int:
    mountpoint = Path(args.mountpoint).absolute()
    directory = _known(mountpoint)
    paths = [_relative(mountpoint, p) for p in args.paths] or None
    if mount_state(mountpoint) == "ok":
        record = MountRecord.load(directory)
        reply = _ask(record.socket.replace("@", "\0", 1), {"op": "reset", "paths": paths})
        if not reply.get("ok"):
            raise MountError(f"{mountpoint}: reset failed: {reply.get('error')}")
    else:
        tree, _ = _tree(directory)
        tree.reset(paths)
    what = "all changes" if paths is None else ", ".join(paths)
    print(f"reset {what} at {mountpoint}", file=out)
    return 0


def _relative(mountpoint: Path, path: str) -> str:
    """A reset PATH below the mountpoint: absolute as given, relative to the mountpoint."""
    full = Path(os.path.normpath(mountpoint / path))  # an absolute path replaces mountpoint
    try:
        return str(full.relative_to(mountpoint))
    except ValueError:
        raise MountError(f"{path}: not below {mountpoint}") from None


def _ask(control: str, request: dict[str, object]) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(control)
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, object] = json.loads(data)
    return reply
