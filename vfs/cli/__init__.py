"""The ``pkgfs`` command line.

Exit status: 0 success, 1 failure, 2 usage error. Errors are one line on stderr, naming the
file and the problem; a traceback means a bug in pkgfs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from pkgfs.store.errors import PkgfsError
from pkgfs.vfs.fuse.spawn import fork_daemon

from .output import EXIT_FAILURE

__all__ = ["main"]

Command = Callable[[argparse.Namespace, TextIO], int]


def _lazy(module: str, name: str) -> Command:
    """``module.name``, imported when the command runs, not when the CLI starts: a command
    loads only what it uses, and ``mount`` forks its daemon before the slow imports."""

    def run(args: argparse.Namespace, out: TextIO) -> int:
        command: Command = getattr(importlib.import_module(module, __package__), name)
        return command(args, out)

    return run


def add_lock_arguments(parser: argparse.ArgumentParser) -> None:
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
        help="a PEP 503/691 simple index, tried before the lock's own (repeatable)")  # fmt: skip
    add("--find-links", action="append", default=[], metavar="DIR",
        help="a directory of wheel files (repeatable)")  # fmt: skip


class _Version(argparse.Action):
    """--version, reading the version only when asked (importlib.metadata is slow to load)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from importlib.metadata import version  # noqa: PLC0415

        print(f"pkgfs {version('pkgfs')}")  # on stdout, as argparse's own version action
        parser.exit()


def _build_parser() -> argparse.ArgumentParser:
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

    sync = commands.add_parser(
        "sync",
        parents=[store_option],
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

    mount = commands.add_parser(
        "mount",
        parents=[store_option],
        help="mount the lockfile's environment at MOUNTPOINT (a venv's site-packages)",
    )
    mount.add_argument("mountpoint", metavar="MOUNTPOINT")
    add_lock_arguments(mount)
    mount.add_argument(
        "--foreground", action="store_true", help="stay attached; unmount on SIGTERM/SIGINT"
    )
    mount.add_argument("--allow-other", action="store_true", help="let other users see the mount")
    mount.add_argument("--overlay", metavar="DIR", help="keep the copy-on-write layer in DIR")
    mount.add_argument("--no-compile", action="store_true", help="serve no shared bytecode")
    mount.set_defaults(run=_lazy(".mount", "cmd_mount"), fork_daemon=True)

    unmount = commands.add_parser("unmount", help="unmount MOUNTPOINT (a stale mount too)")
    unmount.add_argument("mountpoint", metavar="MOUNTPOINT")
    unmount.add_argument("--lazy", action="store_true", help="detach now, even if busy")
    unmount.set_defaults(run=_lazy(".mount", "cmd_unmount"))

    status = commands.add_parser(
        "status", parents=[json_option], help="every pkgfs mount and its state"
    )
    status.set_defaults(run=_lazy(".overlay", "cmd_status"))

    diff = commands.add_parser(
        "diff", parents=[json_option], help="the paths the overlay added, modified or deleted"
    )
    diff.add_argument("mountpoint", metavar="MOUNTPOINT")
    diff.set_defaults(run=_lazy(".overlay", "cmd_diff"))

    reset = commands.add_parser("reset", help="discard overlay changes, all or under PATHs")
    reset.add_argument("mountpoint", metavar="MOUNTPOINT")
    reset.add_argument("paths", nargs="*", metavar="PATH")
    reset.set_defaults(run=_lazy(".overlay", "cmd_reset"))
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = _build_parser().parse_args(argv)
    run: Command = args.run
    daemon = None
    if getattr(args, "fork_daemon", False) and not args.foreground:
        daemon = args.daemon = fork_daemon()  # first: see fuse/spawn.py
    try:
        return run(args, out or sys.stdout)
    except PkgfsError as exc:
        print(f"pkgfs: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("pkgfs: interrupted", file=sys.stderr)
        return 130
    finally:
        if daemon is not None:
            daemon.cancel()  # unless the mount started it
