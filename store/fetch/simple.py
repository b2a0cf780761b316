"""The simple repository API: a project page of an index, as PEP 691 JSON or PEP 503 HTML.

``json`` and ``html.parser`` do all that these two formats need.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin

from pkgfs.store.lock.model import WheelLink

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


def _hash_from_fragment(url: str) -> tuple[str, str | None]:
    # PEP 503: "The URL SHOULD include a hash in the form of a URL fragment with the
    # following syntax: #<hashname>=<hashvalue>".
    bare, fragment = urldefrag(url)
    name, _, value = fragment.partition("=")
    return bare, (value.lower() if name == "sha256" and value else None)


def parse_project_page(body: bytes, content_type: str, base: str) -> list[WheelLink]:
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
