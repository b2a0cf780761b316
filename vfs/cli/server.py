"""``pkgfs server``: run the per-user mount server, ask whether it runs, stop it.

``pkgfs server`` serves in the foreground (a systemd user unit, a container's entrypoint);
the ``pkgfs`` command starts one detached when none runs (``pkgfs.vfs.server``).
``pkgfs server status`` says whether one runs for this installation, and ``pkgfs server
stop`` stops it: commands under way finish, the mounts stay, and the next command that
needs a server starts one.
"""

from __future__ import annotations

import argparse
from typing import TextIO

from pkgfs.vfs.server.address import server_for
from pkgfs.vfs.server.client import connect

__all__ = ["cmd_server"]


def cmd_server(args: argparse.Namespace, out: TextIO) -> int:
    """``pkgfs server [run|status|stop]``. Exit status 1 when ``run`` finds one running, or
    ``status`` finds none."""
    server = server_for()
    if args.action == "run":
        from pkgfs.vfs.server.serve import serve  # noqa: PLC0415 (imports trio, pyfuse3)

        return serve(server)
    if args.action == "stop":
        from pkgfs.vfs.server.serve import stop  # noqa: PLC0415

        pid = stop(server)
        print(
            "no pkgfs server runs" if pid is None else f"stopped the pkgfs server {pid}", file=out
        )
        return 0
    sock = connect(server)
    found = server.read()
    if sock is None or found is None:
        print(f"no pkgfs server runs (its state would be {server.record})", file=out)
        return 1
    sock.close()
    print(f"the pkgfs server {found[0]} runs ({server.record}, log {server.log})", file=out)
    return 0
