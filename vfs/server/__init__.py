"""pkgfs.vfs.server: the per-user mount server and the thin client that asks it.

``client`` is the ``pkgfs`` console script: it imports only the standard library and hands
a command to the server (``serve``), which has pkgfs, trio and pyfuse3 imported already and
runs the command in a forked ``worker``. ``address`` says which server a client may talk to.
Importing this package imports nothing.
"""

__all__: list[str] = []
