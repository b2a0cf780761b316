"""Where the wheels of ``name==version`` can be found: the store, find-links, simple indexes.

The order is pip's: what is already here (the store), then every find-links location
(a directory of files, or an HTML page of links), then each index in turn. An index or a
page that answers 404 (or 410) does not have the project: "not here", and the next source
is asked. ``file://`` indexes are read from disk (a project's page is its directory's
``index.html``, as pip reads them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import requests
from packaging.utils import (
    InvalidWheelFilename,
    NormalizedName,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from pkgfs.store.errors import FetchError, NotFoundError, redact
from pkgfs.store.hashing import hash_file
from pkgfs.store.index import Index
from pkgfs.store.lock.model import WheelLink

from .http import get
from .simple import ACCEPT, parse_project_page

__all__ = ["Finder", "Found"]


def _is(link: WheelLink, name: NormalizedName, version: Version) -> bool:
    try:
        wheel_name, wheel_version, _, _ = parse_wheel_filename(link.filename)
    except (InvalidWheelFilename, InvalidVersion):
        return False
    return wheel_name == name and wheel_version == version


def _is_local(source: str) -> bool:
    return "://" not in source or source.startswith("file:")


def _local_path(source: str) -> Path:
    return Path(unquote(urlsplit(source).path)) if "://" in source else Path(source)


@dataclass(frozen=True)
class Found:
    """The wheels of one source: ``where`` names it for a person (credentials redacted)."""

    where: str
    links: list[WheelLink]


class Finder:
    """Lists the wheel files of one pinned package, source by source."""

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

    def search(self, name: NormalizedName, version: str) -> Iterator[Found]:
        """The wheels of ``name==version``, one :class:`Found` per source as it is asked, in
        pip's order: the store, each find-links location, each index (the network ones
        not when offline). A caller that stops early asks no further source.

        Raises :class:`FetchError` (one line naming the directory or the redacted URL) for
        a find-links directory that cannot be listed or read, and for an index or page
        that cannot be fetched or is malformed; a 404 is an empty :class:`Found`.
        """
        try:
            wanted = Version(version)
        except InvalidVersion:
            return
        yield Found("the store", self.stored_links(name, version))
        for source in self.find_links:
            if _is_local(source):
                path = _local_path(source)
                if path.is_file():  # an HTML page of links, on disk
                    links = self._page(path.as_uri())
                    yield Found(str(path), [link for link in links if _is(link, name, wanted)])
                else:
                    yield Found(str(path), self._directory(path, name, wanted))
            elif not self.offline:
                links = self._page(source)
                yield Found(redact(source), [link for link in links if _is(link, name, wanted)])
        for index_url in self.index_urls:
            if self.offline and not _is_local(index_url):
                continue
            # PEP 503: the project URL is the index URL plus the normalized name and "/".
            page = urljoin(index_url.rstrip("/") + "/", f"{name}/")
            links = self._page(page, ACCEPT)
            yield Found(redact(index_url), [link for link in links if _is(link, name, wanted)])

    def links(self, name: NormalizedName, version: str) -> list[WheelLink]:
        """Every wheel of ``name==version`` from every source; raises as :meth:`search`."""
        return [link for found in self.search(name, version) for link in found.links]

    def _page(self, url: str, accept: str | None = None) -> list[WheelLink]:
        if url not in self._pages:
            self._pages[url] = (
                self._read_file_page(url) if _is_local(url) else self._get(url, accept)
            )
        return self._pages[url]

    def _get(self, url: str, accept: str | None) -> list[WheelLink]:
        try:
            response = get(url, accept)
        except NotFoundError:
            return []  # this index or page does not have it: the next source may
        with response:
            try:
                body = response.content
            except requests.exceptions.RequestException as exc:  # cut off, reset
                raise FetchError(f"{redact(url)}: the page was cut off: {exc!r}") from None
            content_type = response.headers.get("Content-Type", "")
            return parse_project_page(body, content_type, response.url)

    def _read_file_page(self, url: str) -> list[WheelLink]:
        path = _local_path(url)
        if path.is_dir():
            path /= "index.html"
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise FetchError(f"{path}: cannot read the index page: {exc.strerror}") from None
        return parse_project_page(body, "text/html", path.as_uri())

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
