"""Which dependency groups and extras an environment installs: uv sync's options, for any lock.

uv's documentation ("Locking and syncing", ``uv sync --help``) gives the rules followed here:

- "By default, uv includes the ``dev`` dependency group", or the groups that
  ``[tool.uv] default-groups`` lists (``"all"`` meaning every group).
- ``--no-dev``: "Disable the development dependency group" (``--no-group dev``).
- ``--group NAME``: "Include dependencies from the specified dependency group. May be
  provided multiple times." ``--all-groups``: every group. ``--no-default-groups``:
  "Ignore the default dependency groups." ``--no-group`` wins over all of them.
- ``--only-group NAME``: "Only include dependencies from the specified dependency group.
  The project and its dependencies will be omitted."
- ``--extra NAME`` and ``--all-extras``: the project's optional dependencies.
- A group or an extra the project does not define is an error.

PEP 751 gives pylock.toml's: "If not specified, [dependency-groups] default to the lock's
``default-groups``"; ``extras`` default to none. Group and extra names compare normalized
(PEP 735: "normalized ... the same way as package names"; PEP 685 for extras).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import NormalizedName, canonicalize_name

from pkgfs.store.errors import LockError

__all__ = ["Selection"]


def _names(values: Iterable[str]) -> tuple[NormalizedName, ...]:
    return tuple(sorted({canonicalize_name(v) for v in values}))


@dataclass(frozen=True)
class Selection:
    """The groups and extras asked for, as uv sync's options name them.

    The default (no option given) installs the default groups and no extra. Names are
    normalized on construction, so two spellings of one selection compare equal and
    :meth:`describe` the same.
    """

    groups: tuple[str, ...] = ()  # --group
    only_groups: tuple[str, ...] = ()  # --only-group
    no_groups: tuple[str, ...] = ()  # --no-group; --no-dev is --no-group dev
    no_default_groups: bool = False
    all_groups: bool = False
    extras: tuple[str, ...] = ()  # --extra
    all_extras: bool = False

    def __post_init__(self) -> None:
        for name in ("groups", "only_groups", "no_groups", "extras"):
            object.__setattr__(self, name, _names(getattr(self, name)))

    @property
    def only(self) -> bool:
        """Whether the project and its own dependencies are left out (``--only-group``)."""
        return bool(self.only_groups)

    def describe(self) -> str:
        """The options as one canonical line ("" for the default): part of an environment's
        identity beside its lock, and what ``pkgfs status`` can show."""
        parts = [f"--only-group {g}" for g in self.only_groups]
        parts += [f"--group {g}" for g in self.groups]
        parts += [f"--no-group {g}" for g in self.no_groups]
        parts += ["--no-default-groups"] * self.no_default_groups
        parts += ["--all-groups"] * self.all_groups
        parts += [f"--extra {e}" for e in self.extras]
        parts += ["--all-extras"] * self.all_extras
        return " ".join(parts)

    @classmethod
    def parse(cls, described: str) -> Selection:
        """The selection :meth:`describe` gave ``described`` for (an environment's config
        keeps it so). Raises ``ValueError`` for anything :meth:`describe` does not write."""
        words = iter(described.split())
        lists: dict[str, list[str]] = {"groups": [], "only_groups": [], "no_groups": []}
        lists["extras"] = []
        named = {"--group": "groups", "--only-group": "only_groups", "--no-group": "no_groups"}
        named["--extra"] = "extras"
        flags = {"--no-default-groups": False, "--all-groups": False, "--all-extras": False}
        for word in words:
            if word in named:
                value = next(words, None)
                if value is None or value.startswith("--"):
                    raise ValueError(f"{word} without a name in {described!r}")
                lists[named[word]].append(value)
            elif word in flags:
                flags[word] = True
            else:
                raise ValueError(f"{word!r}: not an option of a selection ({described!r})")
        return cls(
            groups=tuple(lists["groups"]),
            only_groups=tuple(lists["only_groups"]),
            no_groups=tuple(lists["no_groups"]),
            no_default_groups=flags["--no-default-groups"],
            all_groups=flags["--all-groups"],
            extras=tuple(lists["extras"]),
            all_extras=flags["--all-extras"],
        )

    def choose_groups(
        self, where: str | Path, defined: Collection[str], defaults: Collection[str] | None
    ) -> set[str]:
        """The groups to install, of the ``defined`` ones; ``defaults`` None meaning all.

        Raises :class:`LockError` naming ``where`` for a group asked for that is not defined.
        """
        known = {canonicalize_name(g) for g in defined}
        unknown = sorted(set(self.groups + self.only_groups + self.no_groups) - known)
        if unknown:
            raise LockError(
                where,
                f"no dependency group {', '.join(unknown)} in the lock"
                f" (it has: {', '.join(sorted(known)) or 'none'})",
            )
        if self.only_groups:
            chosen = set(self.only_groups)
        elif self.all_groups:
            chosen = set(known)
        else:
            base = known if defaults is None else {canonicalize_name(g) for g in defaults}
            chosen = (set() if self.no_default_groups else base & known) | set(self.groups)
        return chosen - set(self.no_groups)

    def choose_extras(self, where: str | Path, defined: Collection[str]) -> set[str]:
        """The extras to install, of the ``defined`` ones. Raises :class:`LockError` naming
        ``where`` for an extra asked for that is not defined."""
        known = {canonicalize_name(e) for e in defined}
        unknown = sorted(set(self.extras) - known)
        if unknown:
            raise LockError(
                where,
                f"no extra {', '.join(unknown)} in the lock"
                f" (it has: {', '.join(sorted(known)) or 'none'})",
            )
        return set(known) if self.all_extras else set(self.extras)
