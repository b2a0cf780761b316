"""pkgfs.store.fetch: getting the wheels a lock selects into the store.

``config`` says which indexes and find-links pip's and uv's settings name, ``http`` opens
URLs, ``simple`` reads index pages (PEP 503/691), ``finder`` lists where a pinned
package's wheels are, ``download`` fetches and verifies one wheel, ``sync`` downloads and
ingests many at once, and ``editable`` builds the local projects a lock installs editable.
"""

from pkgfs.store.errors import FetchError

from .config import DEFAULT_INDEX, IndexConfig, index_config
from .download import Cancel, download
from .editable import BuildSources, editable_wheels
from .finder import Finder, Found
from .http import remember_credentials
from .sync import (
    SyncInterrupted,
    SyncOutcome,
    partition_present,
    sync_wheels,
    unreachable_offline,
)

__all__ = [
    "DEFAULT_INDEX",
    "BuildSources",
    "Cancel",
    "FetchError",
    "Finder",
    "Found",
    "IndexConfig",
    "SyncInterrupted",
    "SyncOutcome",
    "download",
    "editable_wheels",
    "index_config",
    "partition_present",
    "remember_credentials",
    "sync_wheels",
    "unreachable_offline",
]
