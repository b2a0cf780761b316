"""pkgfs.vfs.fuse: how the kernel sees an environment.

``operations`` maps FUSE requests onto the overlay, ``daemon`` serves one mount, ``spawn``
forks the daemon early, ``control`` and ``wire`` are the two ends of its control socket, and
``mounts`` reads the kernel's mount table and calls ``fusermount3``. Importing this package
imports neither trio nor pyfuse3: only ``operations``, ``daemon`` and ``control`` do.
"""

__all__: list[str] = []
