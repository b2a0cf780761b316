"""pkgfs.vfs.env: what an environment is, without FUSE.

``view`` composes a lock's wheels into the tree an environment shows, ``saved`` keeps the
shared part of each view in the store, ``venv`` finds the venv around a mount and writes
its scripts and data links, and ``state`` keeps each mount's state directory.
"""

__all__: list[str] = []
