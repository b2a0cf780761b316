"""The merged tree of one environment: an immutable lower view and a copy-on-write upper dir.

Nothing here imports FUSE: the filesystem (``vfs/fuse/``) maps inodes and requests onto these
path operations, which raise ``OSError`` with the errno to answer.

The upper layer is an ordinary directory that mirrors site-packages and holds only what
changed, in the conventions of fuse-overlayfs (and AUFS before it):

- ``.wh.NAME`` in a directory hides the lower ``NAME`` (a whiteout);
- ``.wh..wh..opq`` in a directory hides all of the lower directory's entries (opaque).

Whiteouts are written only for names that exist below. Lower files are copied up before
their first change: the bytes go to a work directory on the upper's filesystem (reflinked
where the filesystem can), get their mode, owner and times, are fsynced, and are renamed into
place, and the parent directory is fsynced, so a crash never leaves a half-copied file
visible. The lower layer is never written: the store stays pristine for every other
environment.

The upper and work directories are opened once; every call below them is relative to those
descriptors and never follows a symlink (``lstat``, ``O_NOFOLLOW``, ``AT_SYMLINK_NOFOLLOW``),
so a symlink in the overlay that points back into the mount is never entered by the daemon
that serves it.

The upper layer's state (which paths exist, whiteouts, opaque directories) is loaded once
when the tree opens and then kept in memory, as this process is its only writer while
mounted; a lookup of an untouched path costs no system call.
"""

from .attributes import Attributes, Change
from .copyup import CopyUp
from .layers import OPAQUE, UPPER_INODES, WHITEOUT
from .tree import MergedTree

__all__ = ["OPAQUE", "UPPER_INODES", "WHITEOUT", "Attributes", "Change", "CopyUp", "MergedTree"]
