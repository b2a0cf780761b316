"""What the installed pyfuse3 lets a mount do beyond stock pyfuse3.

The no-open mode (issue 11): when a filesystem answers OPEN and OPENDIR with ENOSYS, the kernel
stops sending OPEN/RELEASE and OPENDIR/RELEASEDIR for the whole connection and keeps every file's
pages and every directory's listing cached. Later READ, WRITE, FSYNC and READDIRPLUS requests then
carry fh 0, so the filesystem must be told the inode instead, and FUSE_CAP_ATOMIC_O_TRUNC must be
off, or ``open(O_TRUNC)`` never reaches it. Stock pyfuse3 can do neither;
``.ci/pyfuse3/no-open.patch`` adds both as opt-ins (``Operations.pass_inode_with_fh``,
``Operations.enable_atomic_o_trunc``) and announces them with ``pyfuse3.NO_OPEN_SUPPORT``.

fallocate and lseek: stock pyfuse3 answers FUSE_FALLOCATE and FUSE_LSEEK with ENOSYS, so
``fallocate(2)`` fails with EOPNOTSUPP and ``lseek(SEEK_DATA)`` in a hole finds data (the kernel's
fallback treats the whole file as data). ``.ci/pyfuse3/fallocate-lseek.patch`` passes both to
``Operations.fallocate`` and ``Operations.lseek`` and announces them with
``pyfuse3.FALLOCATE_LSEEK_SUPPORT``.

Importing this module imports nothing from pyfuse3; asking does, once.
"""

from __future__ import annotations

import functools

__all__ = ["fallocate_lseek_support", "no_open_support"]


@functools.cache
def no_open_support() -> bool:
    """True when the installed pyfuse3 can serve the no-open mode: it passes the inode to
    handlers that receive a file handle (``inode=`` keyword, when ``pass_inode_with_fh`` is
    set) and clears FUSE_CAP_ATOMIC_O_TRUNC when ``enable_atomic_o_trunc`` is unset.
    False for stock pyfuse3, and when pyfuse3 cannot be imported at all."""
    try:
        import pyfuse3  # noqa: PLC0415 (the CLI imports this module without paying for pyfuse3)
    except ImportError:
        return False
    return getattr(pyfuse3, "NO_OPEN_SUPPORT", False) is True


@functools.cache
def fallocate_lseek_support() -> bool:
    """True when the installed pyfuse3 passes FUSE_FALLOCATE and FUSE_LSEEK (SEEK_DATA and
    SEEK_HOLE) to ``Operations.fallocate`` and ``Operations.lseek``. False for stock pyfuse3,
    whose ENOSYS makes the kernel fail ``fallocate(2)`` and treat every file as all data, and
    when pyfuse3 cannot be imported at all."""
    try:
        import pyfuse3  # noqa: PLC0415 (as above)
    except ImportError:
        return False
    return getattr(pyfuse3, "FALLOCATE_LSEEK_SUPPORT", False) is True
