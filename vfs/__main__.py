"""``python -m pkgfs.vfs``: the same as the ``pkgfs`` command."""

import sys

from .cli import main

sys.exit(main())
