"""What every command shares in how it answers: exit statuses, sizes for people, and
``--json`` output."""

from __future__ import annotations

import json
from typing import TextIO

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "human",
    "print_json",
]

EXIT_OK, EXIT_FAILURE = 0, 1
EXIT_USAGE = 2  # as argparse exits on a usage error
EXIT_INTERRUPTED = 128 + 2  # SIGINT, as the shell reports a command Ctrl-C stopped
# SIGPIPE: what `seq 1000000 | head -1` reports under `set -o pipefail`. Not 0: the output
# was cut short, and a script that asked for pipefail asked to hear that.
EXIT_BROKEN_PIPE = 128 + 13


def human(n: float) -> str:
    """``n`` bytes for people: ``512 B``, ``1.5 KiB``... up to GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def print_json(data: object, out: TextIO) -> None:
    """``data`` as the ``--json`` answer of a command: indented JSON, one final newline."""
    json.dump(data, out, indent=2)
    out.write("\n")
