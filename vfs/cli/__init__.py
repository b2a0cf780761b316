"""The ``pkgfs`` command line.

Exit status: 0 success, 1 failure, 2 usage error, 130 interrupted, 141 when the reader of
stdout went away. Errors are one line on stderr, naming the file and the problem; a traceback
means a bug in pkgfs, and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import logging
import os
import select
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from pkgfs.store.errors import PkgfsError, UsageError, one_line, redact
from pkgfs.vfs.fuse.spawn import fork_daemon

from .output import EXIT_BROKEN_PIPE, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE

__all__ = ["build_parser", "main", "run_command"]

Command = Callable[[argparse.Namespace, TextIO], int]


def _lazy(module: str, name: str) -> Command:
    """``module.name``, imported when the command runs, not when the CLI starts: a command
    loads only what it uses, and ``mount`` forks its daemon before the slow imports."""

    def run(args: argparse.Namespace, out: TextIO) -> int:
        command: Command = getattr(importlib.import_module(module, __package__), name)
        return command(args, out)

    return run


def add_lock_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every command that reads a lock: --lock, --python, --offline,
    --index-url, --no-index and --find-links, and uv sync's group and extra options."""
    add = parser.add_argument
    add("--lock", type=Path, metavar="FILE",
        help="the lockfile (default: pylock.toml, uv.lock or requirements.txt, found in the"
        " current directory in that order)")  # fmt: skip
    add("--python", metavar="PY",
        help="the target interpreter (default: the active venv's, the project's .venv, else"
        " the one running pkgfs)")  # fmt: skip
    add("--offline", action="store_true",
        help="use only the store and local find-links; never the network")  # fmt: skip
    add("--index-url", action="append", default=[], metavar="URL",
        help="a PEP 503/691 simple index, tried before the lock's own; replaces the"
        " configured or default one (repeatable)")  # fmt: skip
    add("--no-index", action="store_true",
        help="ask no index: only the store and find-links")  # fmt: skip
    add("--find-links", "-f", action="append", default=[], metavar="DIR",
        help="a directory of wheel files, or a page of links (repeatable)")  # fmt: skip
    add("-v", "--verbose", action="store_true",
        help="print the whole output of a build that fails (else only its log's path)")  # fmt: skip
    # uv sync's options, with its meanings (pkgfs.store.lock.selection quotes them).
    groups = parser.add_argument_group("dependency groups and extras (as uv sync)")
    add = groups.add_argument
    add("--no-dev", action="store_true",
        help="leave out the dev group (the same as --no-group dev)")  # fmt: skip
    add("--group", action="append", default=[], metavar="NAME",
        help="add this dependency group (repeatable)")  # fmt: skip
    add("--only-group", action="append", default=[], metavar="NAME",
        help="only this group, not the project nor its dependencies (uv.lock)")  # fmt: skip
    add("--no-group", action="append", default=[], metavar="NAME",
        help="leave out this group, even a default one (repeatable)")  # fmt: skip
    add("--no-default-groups", action="store_true",
        help="leave out the default groups (dev, or [tool.uv] default-groups)")  # fmt: skip
    add("--all-groups", action="store_true", help="every dependency group")
    add("--extra", action="append", default=[], metavar="NAME",
        help="add the project's optional dependencies of this extra (repeatable)")  # fmt: skip
    add("--all-extras", action="store_true", help="every extra")


class _Version(argparse.Action):
    """--version, reading the version only when asked (importlib.metadata is slow to load)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from importlib.metadata import version  # noqa: PLC0415

        print(f"pkgfs {version('pkgfs')}")  # on stdout, as argparse's own version action
        parser.exit()


@functools.lru_cache(maxsize=1)  # once per process: the mount server's workers inherit it
def build_parser() -> argparse.ArgumentParser:
    """The ``pkgfs`` argument parser, built once per process (about 20 ms: argparse asks
    gettext for every help string); the mount server's workers inherit it."""
    # --store is accepted before or after the subcommand; SUPPRESS keeps a subcommand's
    # parser from overwriting a value given earlier with its own default.
    store_option = argparse.ArgumentParser(add_help=False)
    store_option.add_argument(
        "--store",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the store directory (default: $PKGFS_STORE, else $XDG_DATA_HOME/pkgfs)",
    )
    jobs_option = argparse.ArgumentParser(add_help=False)
    jobs_option.add_argument(
        "-j", "--jobs", type=int, default=None, metavar="N", help="parallel workers (default: CPUs)"
    )
    json_option = argparse.ArgumentParser(add_help=False)
    json_option.add_argument("--json", action="store_true", help="machine-readable output")

    parser = argparse.ArgumentParser(
        prog="pkgfs",
        description="Python environments that cost nothing to create and nothing to store.",
        parents=[store_option],
    )
    parser.add_argument("--version", action=_Version, help="show pkgfs's version and exit")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    _add_store_commands(commands, store_option, json_option, jobs_option)

    sync = commands.add_parser(
        "sync",
        parents=[store_option, json_option],
        help="get every wheel the lockfile selects for the target interpreter into the store",
    )
    add_lock_arguments(sync)
    sync.add_argument("--no-compile", action="store_true", help="do not compile bytecode")
    sync.set_defaults(run=_lazy(".lock", "cmd_sync"))

    lock = commands.add_parser("lock", help="inspect lockfiles")
    lock_commands = lock.add_subparsers(title="commands", metavar="COMMAND", required=True)
    show = lock_commands.add_parser(
        "show",
        parents=[store_option, json_option],
        help="the packages the lockfile selects for the target, and the wheel chosen for each",
    )
    add_lock_arguments(show)
    show.set_defaults(run=_lazy(".lock", "cmd_lock_show"))

    _add_mount_commands(commands, store_option, json_option)

    _add_run_command(commands, store_option)

    _add_env_commands(commands, json_option)

    status = commands.add_parser(
        "status", parents=[json_option], help="every pkgfs mount and its state"
    )
    status.add_argument("mountpoints", nargs="*", metavar="MOUNTPOINT",
        help="only these mounts (a venv's root names its site-packages)")  # fmt: skip
    status.set_defaults(run=_lazy(".status", "cmd_status"))

    diff = commands.add_parser(
        "diff", parents=[json_option], help="the paths the overlay added, modified or deleted"
    )
    diff.add_argument("mountpoint", metavar="MOUNTPOINT")
    diff.set_defaults(run=_lazy(".overlay", "cmd_diff"))

    reset = commands.add_parser("reset", help="discard overlay changes, all or under PATHs")
    reset.add_argument("mountpoint", metavar="MOUNTPOINT")
    reset.add_argument("paths", nargs="*", metavar="PATH")
    reset.set_defaults(run=_lazy(".overlay", "cmd_reset"))

    server = commands.add_parser("server", help="the per-user mount server: run, status, stop")
    server.add_argument("action", nargs="?", default="run", choices=("run", "status", "stop"))
    server.set_defaults(run=_lazy(".server", "cmd_server"))
    return parser


def _add_mount_commands(
    commands: Any, store_option: argparse.ArgumentParser, json_option: argparse.ArgumentParser
) -> None:
    mount = commands.add_parser(
        "mount",
        parents=[store_option, json_option],
        help="mount the lockfile's environment at MOUNTPOINT (a venv's site-packages)",
    )
    mount.add_argument("mountpoint", metavar="MOUNTPOINT", nargs="?")
    mount.add_argument(
        "--all", action="store_true", help="mount again every environment that is not mounted"
    )
    # The mount server's start: --all, but not the environments unmounted on purpose.
    mount.add_argument("--restore", action="store_true", help=argparse.SUPPRESS)
    add_lock_arguments(mount)
    mount.add_argument(
        "--foreground", action="store_true", help="stay attached; unmount on SIGTERM/SIGINT"
    )
    mount.add_argument("--allow-other", action="store_true", help="let other users see the mount")
    mount.add_argument("--overlay", metavar="DIR", help="keep the copy-on-write layer in DIR")
    mount.add_argument("--no-compile", action="store_true", help="serve no shared bytecode")
    mount.add_argument("--keep-overlay", action="store_true",
        help="when the lock changed: keep packages pip or uv changed in the overlay, even"
        " those the lock pins (they shadow it)")  # fmt: skip
    mount.set_defaults(run=_lazy(".mount", "cmd_mount"), fork_daemon=True)

    materialize = commands.add_parser(
        "materialize",
        parents=[store_option, json_option],
        help="write the lockfile's environment into VENV as real files (where FUSE is absent)",
    )
    materialize.add_argument("target", metavar="VENV", help="a venv, or its site-packages")
    add_lock_arguments(materialize)
    materialize.add_argument(
        "--link-mode",
        choices=["clone", "copy", "hardlink"],
        default="clone",
        help="clone: reflink where the filesystem can, else copy (default); copy; hardlink:"
        " link to the store's read-only objects (an edit then fails rather than change them)",
    )
    materialize.add_argument("--no-compile", action="store_true", help="write no bytecode")
    materialize.set_defaults(run=_lazy(".materialize", "cmd_materialize"))

    rollback = commands.add_parser(
        "rollback",
        parents=[json_option],
        help="switch a mounted environment back to what it was before its lock changed",
    )
    rollback.add_argument("mountpoint", metavar="MOUNTPOINT")
    rollback.add_argument("--keep-overlay", action="store_true",
        help="keep packages pip or uv changed in the overlay, even those it pins")  # fmt: skip
    rollback.set_defaults(run=_lazy(".switch", "cmd_rollback"))

    unmount = commands.add_parser("unmount", help="unmount MOUNTPOINT (a stale mount too)")
    unmount.add_argument("mountpoint", metavar="MOUNTPOINT")
    unmount.add_argument("--lazy", action="store_true", help="detach now, even if busy")
    unmount.set_defaults(run=_lazy(".mount", "cmd_unmount"))


def _add_store_commands(
    commands: Any,
    store_option: argparse.ArgumentParser,
    json_option: argparse.ArgumentParser,
    jobs_option: argparse.ArgumentParser,
) -> None:
    store = commands.add_parser("store", help="the content-addressed store of unpacked wheels")
    store_commands = store.add_subparsers(title="commands", metavar="COMMAND", required=True)

    add = store_commands.add_parser(
        "add", parents=[store_option, jobs_option], help="ingest wheel files into the store"
    )
    add.add_argument("wheels", nargs="+", type=Path, metavar="WHEEL")
    add.set_defaults(run=_lazy(".store", "cmd_store_add"))

    ls = store_commands.add_parser(
        "ls", parents=[store_option, json_option], help="list the ingested wheels"
    )
    ls.set_defaults(run=_lazy(".store", "cmd_store_ls"))

    stats = store_commands.add_parser(
        "stats", parents=[store_option, json_option], help="count wheels, objects and bytes"
    )
    stats.set_defaults(run=_lazy(".store", "cmd_store_stats"))

    verify = store_commands.add_parser(
        "verify",
        parents=[store_option, jobs_option],
        help="re-hash every object and check every manifest; exit 1 on any problem",
    )
    verify.set_defaults(run=_lazy(".store", "cmd_store_verify"))

    gc = store_commands.add_parser(
        "gc",
        parents=[store_option, json_option],
        help="remove the wheels, objects and views no environment of yours uses",
    )
    gc.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    add_lock_arguments(gc)  # --lock: keep what this lock selects too
    gc.set_defaults(run=_lazy(".store", "cmd_store_gc"))

    rm = store_commands.add_parser(
        "rm",
        parents=[store_option],
        help="remove wheels (file name or sha256) and the objects only they use",
    )
    rm.add_argument("wheels", nargs="+", metavar="WHEEL")
    rm.add_argument("--force", action="store_true",
        help="remove a wheel even if an environment uses it (which breaks it)")  # fmt: skip
    rm.set_defaults(run=_lazy(".store", "cmd_store_rm"))


def _add_run_command(commands: Any, store_option: argparse.ArgumentParser) -> None:
    run = commands.add_parser(
        "run",
        parents=[store_option],
        help="mount the lock's environment in a venv, run CMD in it, unmount (an entrypoint)",
        description="Make the venv (without pip) unless it exists, mount the lock's"
        " environment at its site-packages, run CMD with the venv's bin first on PATH,"
        " forward SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to it, unmount when it"
        " exits, and exit with its status. Without CMD, serve until SIGTERM or SIGINT.",
    )
    add_lock_arguments(run)
    run.add_argument(
        "--venv", metavar="DIR",
        help="the venv (made without pip when missing; default: one per lock and python"
        " under $XDG_STATE_HOME/pkgfs/run/)",
    )  # fmt: skip
    run.add_argument("--allow-other", action="store_true", help="let other users see the mount")
    run.add_argument("--no-compile", action="store_true", help="serve no shared bytecode")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD...")
    run.set_defaults(run=_lazy(".run", "cmd_run"), fork_daemon=True, foreground=False)


def _add_env_commands(commands: Any, json_option: argparse.ArgumentParser) -> None:
    env = commands.add_parser("env", help="the environments you have made, mounted or not")
    env_commands = env.add_subparsers(title="commands", metavar="COMMAND", required=True)
    env_list = env_commands.add_parser(
        "list", parents=[json_option], help="every environment: mountpoint, state, lock"
    )
    env_list.set_defaults(run=_lazy(".env", "cmd_env_list"))
    env_rm = env_commands.add_parser(
        "rm", help="forget an unmounted environment and delete its overlay (local edits)"
    )
    env_rm.add_argument("mountpoint", metavar="MOUNTPOINT")
    env_rm.set_defaults(run=_lazy(".env", "cmd_env_rm"))


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one ``pkgfs`` command; its exit status.

    This is the one error boundary: a :class:`PkgfsError`, or an :class:`OSError` that
    escapes a command (EACCES on a store directory, ENOSPC...), is one ``pkgfs: error:``
    line and status 1; Ctrl-C is status 130; a reader that closes our stdout or stderr
    early (``pkgfs store ls | head -1``) ends the command quietly with status 141, as a
    tool killed by SIGPIPE. Anything else is a bug in pkgfs: its traceback is printed below a
    line asking to report it. argparse exits 2 on a usage error.
    """
    _redact_log_records()
    args = build_parser().parse_args(argv)
    run: Command = args.run
    daemon = None
    if getattr(args, "fork_daemon", False) and not args.foreground:
        daemon = args.daemon = fork_daemon()  # first: see fuse/spawn.py
    try:
        # A command started with stdout closed (``pkgfs status >&-``) has no sys.stdout.
        stream = out or sys.stdout or open(os.devnull, "w")  # noqa: SIM115 (lives as the process)
        return run_command(run, args, stream)
    finally:
        if daemon is not None:
            daemon.cancel()  # unless the mount started it


def run_command(run: Command, args: argparse.Namespace, out: TextIO) -> int:
    """``run(args, out)`` inside the error boundary described in :func:`main`."""
    try:
        status = run(args, out)
        out.flush()  # a closed pipe shows here, not as "Exception ignored" at exit
        return status
    except BrokenPipeError as exc:
        gone = [stream for stream in (out, sys.stderr) if _reader_is_gone(stream)]
        if not gone:  # a socket's peer went away, not a reader of ours
            _report(_describe_os_error(exc))
            return EXIT_FAILURE
        for stream in gone:
            _silence(stream)
        return EXIT_BROKEN_PIPE
    except (PkgfsError, OSError) as exc:  # ours are one line; an OSError is made one
        _report(str(exc) if isinstance(exc, PkgfsError) else _describe_os_error(exc))
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILURE
    except KeyboardInterrupt:
        print("pkgfs: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        print(
            f"pkgfs: internal error (a bug in pkgfs {_version()}): please report it, with the"
            " command and this traceback:",
            file=sys.stderr,
        )
        traceback.print_exc()
        return EXIT_FAILURE


def _report(message: str) -> None:
    print(f"pkgfs: error: {one_line(message)}", file=sys.stderr)


def _describe_os_error(exc: OSError) -> str:
    """``path: reason`` for an OSError, as the shell's tools say it."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    if not paths:
        return reason
    return f"{' -> '.join(os.fsdecode(p) for p in paths)}: {reason}"


def _reader_is_gone(stream: TextIO) -> bool:
    """Whether ``stream`` is a pipe whose reader went away (POLLERR on its write end)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        return False  # not a file: it cannot have raised EPIPE
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _silence(stream: TextIO) -> None:
    # The Python docs' "Note on SIGPIPE": point the stream at /dev/null, so that the flush
    # at interpreter exit writes nowhere instead of printing "Exception ignored ...".
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("pkgfs")
    except PackageNotFoundError:
        return "(unknown version)"


def _redact_log_records() -> None:
    """Every log message pkgfs writes (the daemon's log included) with URL credentials
    replaced by ``***``."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacts", False):
        return

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        with contextlib.suppress(Exception):  # a bad format is the handler's to report
            record.msg, record.args = redact(record.getMessage()), None
        return record

    make.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make)
