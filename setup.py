"""pkgfs builds write nothing into the checkout: egg-info and build/ go to a scratch directory.

So any user can install pkgfs from a checkout they cannot write (root's, a read-only mount),
and no stale pkgfs.egg-info is left behind. Everything else is in pyproject.toml.
"""

import atexit
import shutil
import tempfile

from setuptools import setup

scratch = tempfile.mkdtemp(prefix="pkgfs-build-")
atexit.register(shutil.rmtree, scratch, ignore_errors=True)
setup(options={"egg_info": {"egg_base": scratch}, "build": {"build_base": scratch}})
