"""HTTP for indexes and downloads: one place that opens URLs.

``urllib.request`` from the standard library; every failure becomes one :class:`FetchError`
line naming the URL with its credentials redacted.

Credentials in a URL (``https://user:token@host/simple/``) are never sent as part of it:
they are taken out, remembered for that scheme, host and port, and sent as HTTP basic
authentication with every request to it, the files an index links to included (as pip
does with an index URL's credentials). A redirect to another host does not carry them.
"""

from __future__ import annotations

import base64
import threading
import urllib.error
import urllib.request
from importlib.metadata import version as installed_version
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from pkgfs.store.errors import FetchError, redact

__all__ = ["TIMEOUT", "open_url", "remember_credentials", "user_agent"]

TIMEOUT = 30.0

_lock = threading.Lock()
_authorization: dict[tuple[str, str], str] = {}  # (scheme, host[:port]) -> header value


def user_agent() -> str:
    """``pkgfs/VERSION``, as every request says who it is."""
    return f"pkgfs/{installed_version('pkgfs')}"


def _origin(scheme: str, netloc: str) -> tuple[str, str]:
    return scheme.lower(), netloc.rpartition("@")[2].lower()


def remember_credentials(url: str) -> str:
    """``url`` without its ``user:password@``, which from now on authenticate every request
    to the same scheme, host and port. A URL without credentials, or one that does not
    parse, is returned as it is."""
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        return url  # opening it says what is wrong
    if username is None:
        return url
    secret = f"{unquote(username)}:{unquote(password or '')}".encode()
    with _lock:
        _authorization[_origin(parts.scheme, parts.netloc)] = (
            f"Basic {base64.b64encode(secret).decode()}"
        )
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class _Credentials(urllib.request.BaseHandler):
    """Adds the remembered basic authentication to each request, redirects included,
    for the request's own origin only."""

    def http_request(self, request: urllib.request.Request) -> urllib.request.Request:
        parts = urlsplit(request.full_url)
        with _lock:
            header = _authorization.get(_origin(parts.scheme, parts.netloc))
        if header is not None:
            # Unredirected: urllib copies a request's ordinary headers onto a redirect,
            # whatever its host; this one is added again only where it belongs.
            request.add_unredirected_header("Authorization", header)
        return request

    https_request = http_request


_opener = urllib.request.build_opener(_Credentials())


def open_url(url: str, accept: str | None = None) -> Any:
    """Open ``url`` (http, https or file) for reading.

    Raises :class:`FetchError`, one line naming the URL with its credentials redacted, for
    an unsupported scheme, an HTTP error status, a connection that fails, or a URL that
    does not parse.
    """
    shown = redact(url)
    headers = {"User-Agent": user_agent()}
    if accept:
        headers["Accept"] = accept
    try:
        scheme = urlsplit(url).scheme
    except ValueError as exc:
        raise FetchError(f"{shown}: not a URL: {exc}") from None
    if scheme not in ("http", "https", "file"):
        raise FetchError(f"{shown}: unsupported URL scheme")
    try:
        request = urllib.request.Request(remember_credentials(url), headers=headers)  # noqa: S310 (http(s) and file only)
    except ValueError as exc:
        raise FetchError(f"{shown}: not a URL: {exc}") from None
    try:
        return _opener.open(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        hint = ""
        if exc.code == 401:
            hint = (
                ": the index refused the credentials in the URL"
                if request.has_header("Authorization")
                else ": the index wants credentials: put USER:TOKEN@ before the host in its URL"
            )
        raise FetchError(f"{shown}: HTTP {exc.code} {exc.reason}{hint}") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"{shown}: cannot connect: {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise FetchError(f"{shown}: {exc}") from None
