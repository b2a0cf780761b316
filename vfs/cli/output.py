"""What every command shares in how it answers: exit statuses and sizes for people."""

from __future__ import annotations

__all__ = ["EXIT_FAILURE", "EXIT_OK", "human"]

EXIT_OK, EXIT_FAILURE = 0, 1  # argparse exits 2 on a usage error


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
