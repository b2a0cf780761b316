"""pkgfs.vfs: the upper layer. Environments mounted from the store, and the ``pkgfs`` CLI."""

__all__: list[str] = []
