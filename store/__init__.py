"""pkgfs.store: a content-addressed store holding every distinct file of every wheel once.

The pipeline's first half, in the order a wheel travels: ``layout`` and ``objects`` (where
bytes live), ``index`` (what the store holds), ``wheel`` (checks before unpacking),
``ingest``, ``verify``, ``bytecode``; then ``lock/`` (lockfiles read for a target) and
``fetch/`` (indexes, downloads, sync). Beside them, ``contain`` (which names are safe, and
writes that stay inside their root) and ``sealed`` (the checksummed files of ``views-v2/``).
This layer knows wheels and files only; it never imports trio, pyfuse3 or ``pkgfs.vfs``.
"""

from .core import Store
from .errors import PkgfsError, StoreError, WheelError
from .layout import STORE_ENV, default_store_path, resolve_store_path
from .records import EntryPoint, FileEntry, IngestResult, StoreStats, WheelInfo
from .verify import VerifyReport

__all__ = [
    "STORE_ENV",
    "EntryPoint",
    "FileEntry",
    "IngestResult",
    "PkgfsError",
    "Store",
    "StoreError",
    "StoreStats",
    "VerifyReport",
    "WheelError",
    "WheelInfo",
    "default_store_path",
    "resolve_store_path",
]
