"""Why pkgfs loses where it does, in words, for BENCHMARKS.md.

The report lists a cause only when the run shows the loss it explains, so the page never
explains a loss that did not happen. The texts hold no figures: every number on the page
comes from the run's JSON files.
"""

from __future__ import annotations

from collections.abc import Iterable

MOUNT_FIXED_COST = (
    "**Creating a mount** has a fixed cost that a few hundred hard links do not: the `pkgfs`"
    " command starts, forks the FUSE daemon, which loads the composed view of the lock (saved"
    " in the store by the first environment of that lock), builds the merged tree's listings"
    " and inode table, and mounts; the command returns once the mount answers. Loading the"
    " view and building the tree grow with the number of files, more slowly than one link or"
    " copy per file: the ratio narrows as stacks grow."
)
ROUND_TRIPS = (
    "**Metadata through FUSE.** Every lookup, getattr, open, readdir and release that the"
    " kernel cannot answer from its caches goes to the daemon and back. In earlier profiles,"
    " pyfuse3's own request dispatch took about 40% of the daemon's time and pkgfs's handlers"
    " about 5%. A walk is nothing but such requests, so it shows the largest ratio; imports,"
    " `pip list` and `importlib.metadata` mix them with real work."
)
READS = (
    "**Reading through FUSE.** A read that misses the mount's page cache becomes FUSE read"
    " requests, each answered by a `pread` of the store's object in the daemon; on ext4 the"
    " kernel serves it from the page cache itself."
    " The first read also fills the mount's page cache, which pkgfs asks the kernel to keep"
    " across opens; a warm read comes from there and still takes FUSE's read path."
)
COLD = (
    "**After dropping caches**, the kernel has forgotten the mount's dentries, inodes and"
    " pages as well: every lookup goes to the daemon again, and the daemon's reads of the"
    " store's objects go to the disk one request at a time."
)
DURABLE = (
    "**Filling the store is durable.** pkgfs makes each wheel's objects durable before the"
    " index commit that names them (one `syncfs(2)` per wheel, inside its timed run), so a"
    " crash never leaves an index entry without its files; uv leaves its writes in the page"
    " cache (the `os.sync()` after it is timed apart and not counted). On a loop-mounted"
    " image, each `syncfs` also flushes the image's backing file. On pure CPU (tmpfs), what is"
    " left is Python's per-file cost around `installer` and `zipfile`."
)
COLD_SYNC = (
    "**A cold sync** downloads each wheel whole, checks its sha256 and size against the lock,"
    " and only then ingests it, durably as above, in a worker process; uv unpacks into its"
    " cache as the bytes arrive."
)
PYC_THROUGH_FUSE = (
    "**Shared bytecode is read through the mount**: each `.pyc` costs the round trips of any"
    " file (lookup, open, read, release), where a native venv reads its own `__pycache__`"
    " from ext4."
)
COMPILE_ONCE = (
    "**pkgfs compiles every module of every wheel once**, in the target interpreter, also the"
    " modules an environment never imports; uv compiles per environment, and only when asked."
    " The one-time cost pays off from the break-even number of environments on."
)
SHARED_VIEW = (
    "**pkgfs's largest per-environment disk figure** (the top of its range) is the first"
    " environment of each lock in the run: it also writes the composed view into the store"
    " (`views-v2/`), which every later environment of that lock shares."
)

# Keys: "mount:<measure>" for the mount benchmark's measures, else "<benchmark>:<what>".
CAUSES: dict[str, str] = {
    "mount:create": MOUNT_FIXED_COST,
    "mount:remount": MOUNT_FIXED_COST,
    "mount:walk": ROUND_TRIPS,
    "mount:walk_per_entry": ROUND_TRIPS,
    "mount:pip_list": ROUND_TRIPS,
    "mount:metadata_scan": ROUND_TRIPS,
    "mount:warm_import": ROUND_TRIPS,
    "mount:first_import": ROUND_TRIPS,
    "mount:pyc_import": PYC_THROUGH_FUSE,
    "mount:pyc_write": PYC_THROUGH_FUSE,
    "mount:so_read_first": READS,
    "mount:so_read": READS,
    "mount:cold_import": COLD,
    "mount:cold_so_read": COLD,
    "mount:disk": SHARED_VIEW,
    "ingest:time": DURABLE,
    "sync:cold": COLD_SYNC,
    "bytecode:first": PYC_THROUGH_FUSE,
    "bytecode:warm": PYC_THROUGH_FUSE,
    "bytecode:compile": COMPILE_ONCE,
}


def causes(lost: Iterable[str]) -> list[str]:
    """Markdown bullets, one per distinct cause of the ``lost`` keys, in CAUSES' order."""
    wanted = set(lost)
    seen: list[str] = []
    for key, text in CAUSES.items():
        if key in wanted and text not in seen:
            seen.append(text)
    return [f"- {text}" for text in seen]
