"""Targets for lockfile tests that do not depend on the machine running them."""

from __future__ import annotations

from pathlib import Path

from packaging.tags import compatible_tags, cpython_tags

from pkgfs.store.lock import Target

__all__ = ["cpython_linux"]

_MANYLINUX = [
    "manylinux_2_28_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "linux_x86_64",
]


def cpython_linux(minor: int = 11, micro: int = 7) -> Target:
    """A CPython 3.minor on x86_64 glibc Linux, as ``sys_tags()`` would describe it."""
    version = (3, minor)
    tags = (
        *cpython_tags(version, platforms=_MANYLINUX),
        *compatible_tags(version, platforms=_MANYLINUX),
    )
    environment = {
        "implementation_name": "cpython",
        "implementation_version": f"3.{minor}.{micro}",
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_release": "6.1.0",
        "platform_system": "Linux",
        "platform_version": "#1 SMP",
        "python_full_version": f"3.{minor}.{micro}",
        "platform_python_implementation": "CPython",
        "python_version": f"3.{minor}",
        "sys_platform": "linux",
    }
    return Target(
        python=Path(f"/opt/python3.{minor}/bin/python3"), tags=tags, environment=environment
    )
