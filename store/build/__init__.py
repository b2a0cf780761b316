"""pkgfs.store.build: wheels built from a lock's sources, once, and remembered in the store.

``source`` gets a source (an sdist, a git commit, a directory, an archive) into the store's
``tmp/`` and checks it against the lock, ``frontend`` builds it with pypa/build for the
target interpreter, and ``builds`` recalls or builds each locked wheel and records it.
"""

from pkgfs.store.errors import BuildError

from .builds import build_locked, direct_url, recall
from .frontend import installer_environ
from .source import describe, directory_hash

__all__ = [
    "BuildError",
    "build_locked",
    "describe",
    "direct_url",
    "directory_hash",
    "installer_environ",
    "recall",
]
