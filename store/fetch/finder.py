"""Where the wheels of ``name==version`` can be found: the store, find-links, simple indexes."""

from __future__ import annotations

import http.client
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urljoin, urlparse

from packaging.utils import (
    InvalidWheelFilename,
    NormalizedName,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from pkgfs.store.errors import FetchError
from pkgfs.store.hashing import hash_file
from pkgfs.store.index import Index
from pkgfs.store.lock.model import WheelLink

from .http import open_url
from .simple import ACCEPT, parse_project_page

__all__ = ["Finder"]


def _is(link: WheelLink, name: NormalizedName, version: Version) -> bool:
    try:
        wheel_name, wheel_version, _, _ = parse_wheel_filename(link.filename)
    except (InvalidWheelFilename, InvalidVersion):
        return False
    return wheel_name == name and wheel_version == version


class Finder:
    """Lists the wheel files of one pinned package, from every configured source."""

    def __init__(
        self,
        *,
        index_urls: Sequence[str],
        find_links: Sequence[str] = (),
        offline: bool = False,
        index: Index | None = None,
    ) -> None:
        self.index_urls = list(index_urls)
        self.find_links = list(find_links)
        self.offline = offline
        self.index = index
        self._pages: dict[str, list[WheelLink]] = {}

    def stored_links(self, name: NormalizedName, version: str) -> list[WheelLink]:
        """The wheels of ``name==version`` the store already holds (none for a version
        that does not parse: no wheel can carry it)."""
        if self.index is None:
            return []
        try:
            wanted = str(Version(version))
        except InvalidVersion:
            return []
        return [
            WheelLink(w.filename, None, w.sha256) for w in self.index.wheels_named(name, wanted)
        ]

    def links(self, name: NormalizedName, version: str) -> list[WheelLink]:
        """Every wheel of ``name==version``: stored, in find-links, and on the indexes.

        Raises :class:`FetchError` (one line naming the directory or the redacted URL) for
        a find-links directory that cannot be listed or read, and for an index page that
        cannot be fetched or is malformed.
        """
        try:
            wanted = Version(version)
        except InvalidVersion:
            return []
        found = self.stored_links(name, version)
        for source in self.find_links:
            if "://" not in source or source.startswith("file:"):
                found += self._directory(
                    Path(urlparse(source).path if "://" in source else source), name, wanted
                )
            elif not self.offline:
                found += [link for link in self._page(source) if _is(link, name, wanted)]
        if not self.offline:
            for index_url in self.index_urls:
                # PEP 503: the project URL is the index URL plus the normalized name and "/".
                page = urljoin(index_url.rstrip("/") + "/", f"{name}/")
                found += [link for link in self._page(page, ACCEPT) if _is(link, name, wanted)]
        return found

    def _page(self, url: str, accept: str | None = None) -> list[WheelLink]:
        if url not in self._pages:
            with open_url(url, accept) as response:
                try:
                    body = response.read()
                except (http.client.HTTPException, OSError) as exc:  # IncompleteRead, resets
                    raise FetchError(f"{url}: the page was cut off: {exc!r}") from None
                content_type = response.headers.get("Content-Type", "")
                self._pages[url] = parse_project_page(body, content_type, response.geturl())
        return self._pages[url]

    def _directory(
        self, directory: Path, name: NormalizedName, version: Version
    ) -> list[WheelLink]:
        links = []
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            raise FetchError(f"{directory}: cannot list find-links: {exc.strerror}") from None
        for entry in entries:
            link = WheelLink(entry.name, Path(entry.path).absolute().as_uri(), None)
            if entry.name.endswith(".whl") and _is(link, name, version):
                try:
                    sha256, size = hash_file(entry.path)
                except OSError as exc:
                    raise FetchError(f"{entry.path}: cannot read it: {exc.strerror}") from None
                links.append(WheelLink(entry.name, link.url, sha256, size))
        return links
