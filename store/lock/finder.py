"""Where the wheels of ``name==version`` can be found: the store, find-links, simple indexes.

The index client speaks PEP 691 (JSON) and PEP 503 (HTML) with the standard library:
``urllib.request`` and ``html.parser`` do all that these two formats need, so no HTTP
library is added for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from html.parser import HTMLParser
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlparse

from packaging.utils import (
    InvalidWheelFilename,
    NormalizedName,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from pkgfs.store.errors import PkgfsError
from pkgfs.store.index import Index

from .model import WheelLink

__all__ = ["FetchError", "Finder", "user_agent"]

# PEP 691: "clients SHOULD ... request the JSON form, falling back to HTML".
_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2,"
    " text/html;q=0.01"
)
TIMEOUT = 30.0


class FetchError(PkgfsError, OSError):
    """An index or a download failed. The message names the URL or file."""


def user_agent() -> str:
    return f"pkgfs/{installed_version('pkgfs')}"


def open_url(url: str, accept: str | None = None) -> Any:
    """Open ``url`` for reading, or raise a one-line :class:`FetchError`."""
    headers = {"User-Agent": user_agent()}
    if accept:
        headers["Accept"] = accept
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (http(s) and file only)
    if urlparse(url).scheme not in ("http", "https", "file"):
        raise FetchError(f"{url}: unsupported URL scheme")
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT)  # noqa: S310
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"{url}: cannot connect: {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise FetchError(f"{url}: {exc}") from None


class _Anchors(HTMLParser):
    """The ``<a href>`` links of a PEP 503 page, with their ``data-*`` attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs))


def _hash_from_fragment(url: str) -> tuple[str, str | None]:
    # PEP 503: "The URL SHOULD include a hash in the form of a URL fragment with the
    # following syntax: #<hashname>=<hashvalue>".
    bare, fragment = urldefrag(url)
    name, _, value = fragment.partition("=")
    return bare, (value.lower() if name == "sha256" and value else None)


def _parse_page(body: bytes, content_type: str, base: str) -> list[WheelLink]:
    links = []
    if "json" in content_type:
        # PEP 691: files[] with filename, url (relative to the page), hashes, requires-python.
        for file in json.loads(body).get("files", []):
            url = urljoin(base, file["url"])
            sha256 = file.get("hashes", {}).get("sha256")
            links.append(WheelLink(file["filename"], url, sha256.lower() if sha256 else None))
    else:
        parser = _Anchors()
        parser.feed(body.decode("utf-8", "replace"))
        for anchor in parser.links:
            href = anchor.get("href")
            if not href:
                continue
            url, sha256 = _hash_from_fragment(urljoin(base, href))
            links.append(WheelLink(url.rsplit("/", 1)[-1], url, sha256))
    return [link for link in links if link.filename.endswith(".whl")]


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
        """The wheels of ``name==version`` the store already holds."""
        if self.index is None:
            return []
        wanted = str(Version(version))
        return [
            WheelLink(w.filename, None, w.sha256) for w in self.index.wheels_named(name, wanted)
        ]

    def links(self, name: NormalizedName, version: str) -> list[WheelLink]:
        """Every wheel of ``name==version``: stored, in find-links, and on the indexes."""
        wanted = Version(version)
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
                found += [link for link in self._page(page, _ACCEPT) if _is(link, name, wanted)]
        return found

    def _page(self, url: str, accept: str | None = None) -> list[WheelLink]:
        if url not in self._pages:
            with open_url(url, accept) as response:
                body = response.read()
                content_type = response.headers.get("Content-Type", "")
                self._pages[url] = _parse_page(body, content_type, response.geturl())
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
                with open(entry.path, "rb") as f:
                    sha256 = hashlib.file_digest(f, "sha256").hexdigest()
                links.append(WheelLink(entry.name, link.url, sha256, entry.stat().st_size))
        return links
