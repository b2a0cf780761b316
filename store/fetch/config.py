"""Which indexes and find-links the user's pip and uv settings name, when the lock does not.

Read the way pip and uv read them:

- pip's configuration files ("Configuration" in pip's documentation), later overriding
  earlier: the global ones (``$XDG_CONFIG_DIRS/pip/pip.conf``, ``/etc/pip.conf``), the user's
  (``~/.pip/pip.conf``, ``$XDG_CONFIG_HOME/pip/pip.conf``), the site's
  (``$VIRTUAL_ENV/pip.conf``), then ``$PIP_CONFIG_FILE``; "If [PIP_CONFIG_FILE] is set to
  os.devnull, loading of all configuration files is disabled". In each, ``[global]`` then
  ``[install]`` (the command pkgfs stands in for): ``index-url``, ``extra-index-url``,
  ``find-links`` (whitespace-separated lists) and ``no-index``.
- pip's environment variables, each overriding its key in the files: ``PIP_INDEX_URL``,
  ``PIP_EXTRA_INDEX_URL``, ``PIP_FIND_LINKS``, ``PIP_NO_INDEX``.
- uv's: ``UV_DEFAULT_INDEX`` (and the older ``UV_INDEX_URL``) replace the default index;
  ``UV_INDEX`` (space-separated, each ``name=url`` or ``url``) and the older
  ``UV_EXTRA_INDEX_URL`` are tried before it ("indexes are prioritized in the order in
  which they're defined, ... the default index has the lowest priority");
  ``UV_FIND_LINKS`` (comma-separated); ``UV_NO_INDEX``.
- ``PKGFS_INDEX_URL``, pkgfs's own, before any of these.

With none of these set the index is the default one, as with pip and uv.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pkgfs.store.errors import FetchError

__all__ = ["DEFAULT_INDEX", "IndexConfig", "index_config", "pip_config_files"]

DEFAULT_INDEX = "https://pypi.org/simple/"  # pip's and uv's default index

_PRIMARY_ENV = ("PKGFS_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL")
_TRUE = frozenset({"1", "true", "yes", "on", "y", "t"})


@dataclass(frozen=True)
class IndexConfig:
    """Where wheels are looked for when the lock and the command line say nothing.

    ``first`` (uv's ``--index``) come before ``primary`` (None: :data:`DEFAULT_INDEX`),
    ``extra`` (pip's ``--extra-index-url``) after it.
    """

    primary: str | None = None
    first: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False

    def index_urls(self, primary: Sequence[str] = ()) -> list[str]:
        """The indexes in the order they are asked; ``primary`` (the command line's
        ``--index-url``) replaces the configured or default one. Empty with ``no_index``."""
        if self.no_index:
            return []
        main = list(primary) or [self.primary or DEFAULT_INDEX]
        return _unique([*self.first, *main, *self.extra])


def _unique(urls: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    return [u for u in urls if not (u.rstrip("/") in seen or seen.add(u.rstrip("/")))]  # type: ignore[func-returns-value]


def pip_config_files(environ: Mapping[str, str]) -> list[Path]:
    """pip's configuration files in the order pip loads them (later ones win); none when
    ``PIP_CONFIG_FILE`` is os.devnull. Files that do not exist are left out."""
    explicit = environ.get("PIP_CONFIG_FILE")
    if explicit == os.devnull:
        return []
    home = Path(environ.get("HOME") or Path.home())
    xdg_dirs = environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    xdg_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    candidates = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs.split(":") if d]
    candidates += [Path("/etc/pip.conf"), home / ".pip" / "pip.conf", xdg_home / "pip" / "pip.conf"]
    if environ.get("VIRTUAL_ENV"):
        candidates.append(Path(environ["VIRTUAL_ENV"]) / "pip.conf")
    if explicit:
        candidates.append(Path(explicit))
    return [path for path in candidates if path.is_file()]


def _read_pip_files(files: Sequence[Path]) -> dict[str, str]:
    """The keys of ``[global]`` then ``[install]`` of each file, later ones winning."""
    values: dict[str, str] = {}
    for path in files:
        parser = configparser.RawConfigParser()
        try:
            with open(path, encoding="utf-8") as stream:
                parser.read_file(stream)
        except (OSError, UnicodeDecodeError, configparser.Error) as exc:
            reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
            raise FetchError(f"{path}: cannot read this pip configuration file: {reason}") from None
        for section in ("global", "install"):
            if parser.has_section(section):
                for key, value in parser.items(section):
                    values[key.replace("_", "-")] = value  # pip accepts either spelling
    return values


def _uv_index(item: str) -> str:
    # uv: "--index name=url" or "--index url".
    name, sep, url = item.partition("=")
    return url if sep and "://" not in name else item


def index_config(
    environ: Mapping[str, str] = os.environ, files: Sequence[Path] | None = None
) -> IndexConfig:
    """The index settings of pip's files (``files``, else :func:`pip_config_files`) and of
    pip's, uv's and pkgfs's environment variables.

    Raises :class:`FetchError` naming a pip configuration file that cannot be read or
    parsed, as pip refuses it.
    """
    pip = _read_pip_files(pip_config_files(environ) if files is None else files)
    for key in ("index-url", "extra-index-url", "find-links", "no-index"):
        variable = "PIP_" + key.upper().replace("-", "_")
        if environ.get(variable):
            pip[key] = environ[variable]
    primary = next((environ[n] for n in _PRIMARY_ENV if environ.get(n)), pip.get("index-url"))
    first = [_uv_index(u) for u in environ.get("UV_INDEX", "").split()]
    first += environ.get("UV_EXTRA_INDEX_URL", "").split()
    find_links = pip.get("find-links", "").split()
    find_links += [u.strip() for u in environ.get("UV_FIND_LINKS", "").split(",") if u.strip()]
    no_index = any(
        (value or "").strip().lower() in _TRUE
        for value in (pip.get("no-index"), environ.get("UV_NO_INDEX"))
    )
    return IndexConfig(
        primary=primary.strip() if primary else None,
        first=tuple(first),
        extra=tuple(pip.get("extra-index-url", "").split()),
        find_links=tuple(find_links),
        no_index=no_index,
    )
