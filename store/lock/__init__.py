"""pkgfs.store.lock: lockfiles (pylock.toml, uv.lock, hashed requirements.txt) read for a
target interpreter, and the wheels they select."""

from pkgfs.store.errors import LockError, TargetError

from .discover import discover_lock, lock_kind
from .model import EditableProject, LockedPackage, LockedWheel, Lockfile, WheelLink
from .resolve import choose_wheels, read_lock
from .selection import Selection
from .target import Target, default_python, probe_target

__all__ = [
    "EditableProject",
    "LockError",
    "LockedPackage",
    "LockedWheel",
    "Lockfile",
    "Selection",
    "Target",
    "TargetError",
    "WheelLink",
    "choose_wheels",
    "default_python",
    "discover_lock",
    "lock_kind",
    "probe_target",
    "read_lock",
]
