"""The simple repository API: a project page of an index, as PEP 691 JSON or PEP 503 HTML.

``json`` and ``html.parser`` do all that these two formats need.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin

from pkgfs.store.errors import FetchError
from pkgfs.store.lock.model import WheelLink, sha256_hex

__all__ = ["ACCEPT", "parse_project_page"]

# PEP 691: "clients SHOULD ... request the JSON form, falling back to HTML".
ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2,"
    " text/html;q=0.01"
)


class _Anchors(HTMLParser):
    """The ``<a href>`` links of a PEP 503 page, with their ``data-*`` attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs))


def _join(base: str, href: str, what: str) -> str:
    try:
        return urljoin(base, href)
    except ValueError as exc:  # urlsplit: "Invalid IPv6 URL", a bad port...
        raise FetchError(f"{base}: {what} {href!r} is not a URL: {exc}") from None


def _digest(base: str, value: object, what: str) -> str | None:
    if value is None:
        return None
    digest = sha256_hex(value) if isinstance(value, str) else None
    if digest is None:
        raise FetchError(f"{base}: {what} sha256 {value!r} is not a sha256 digest")
    return digest


def _hash_from_fragment(base: str, url: str) -> tuple[str, str | None]:
    # PEP 503: "The URL SHOULD include a hash in the form of a URL fragment with the
    # following syntax: #<hashname>=<hashvalue>".
    bare, fragment = urldefrag(url)
    name, _, value = fragment.partition("=")
    return bare, (_digest(base, value, f"link {bare!r}:") if name == "sha256" else None)


def _json_links(body: bytes, base: str) -> list[WheelLink]:
    # PEP 691: an object whose "files" is a list of objects, each with "filename", "url"
    # (relative to the page) and "hashes" (an object of hash name to hex digest).
    try:
        page = json.loads(body)
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError on bad bytes
        raise FetchError(f"{base}: the index sent JSON that does not parse: {exc}") from None
    if not isinstance(page, dict):
        raise FetchError(f"{base}: a PEP 691 project page must be a JSON object")
    files = page.get("files")
    if not isinstance(files, list):
        raise FetchError(f"{base}: a PEP 691 project page needs a 'files' list")
    links = []
    for i, file in enumerate(files):
        if not isinstance(file, dict):
            raise FetchError(f"{base}: files[{i}] must be an object")
        for key in ("filename", "url"):
            if not isinstance(file.get(key), str) or not file[key]:
                raise FetchError(f"{base}: files[{i}] has no {key!r} string")
        hashes = file.get("hashes", {})
        if not isinstance(hashes, dict):
            raise FetchError(f"{base}: files[{i}].hashes must be an object")
        url = _join(base, file["url"], f"files[{i}].url")
        sha256 = _digest(base, hashes.get("sha256"), f"files[{i}].hashes:")
        links.append(WheelLink(file["filename"], url, sha256))
    return links


def _html_links(body: bytes, base: str) -> list[WheelLink]:
    parser = _Anchors()
    parser.feed(body.decode("utf-8", "replace"))
    links = []
    for anchor in parser.links:
        href = anchor.get("href")
        if not href:
            continue
        url, sha256 = _hash_from_fragment(base, _join(base, href, "link"))
        links.append(WheelLink(url.rsplit("/", 1)[-1], url, sha256))
    return links


def parse_project_page(body: bytes, content_type: str, base: str) -> list[WheelLink]:
    """The wheel files a project page links to: PEP 691 JSON or PEP 503 HTML, by
    ``content_type``; relative links are resolved against ``base`` (the page's URL).

    Raises :class:`FetchError`, naming ``base`` (redacted), for a page that is not what
    its format requires: JSON that does not parse, ``files`` not a list, a file without
    ``url`` or ``filename``, hashes that are not a table, a link that is not a URL, or a
    sha256 that is not a digest.
    """
    links = _json_links(body, base) if "json" in content_type else _html_links(body, base)
    return [link for link in links if link.filename.endswith(".whl")]
