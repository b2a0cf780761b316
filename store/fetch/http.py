"""HTTP for indexes and downloads: one place that opens URLs.

``urllib.request`` from the standard library; every failure becomes one :class:`FetchError`
line naming the URL with its credentials redacted.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from importlib.metadata import version as installed_version
from typing import Any
from urllib.parse import urlparse

from pkgfs.store.errors import FetchError, redact

__all__ = ["TIMEOUT", "open_url", "user_agent"]

TIMEOUT = 30.0


def user_agent() -> str:
    return f"pkgfs/{installed_version('pkgfs')}"


def open_url(url: str, accept: str | None = None) -> Any:
    """Open ``url`` (http, https or file) for reading, or raise a one-line :class:`FetchError`."""
    shown = redact(url)
    headers = {"User-Agent": user_agent()}
    if accept:
        headers["Accept"] = accept
    if urlparse(url).scheme not in ("http", "https", "file"):
        raise FetchError(f"{shown}: unsupported URL scheme")
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (http(s) and file only)
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT)  # noqa: S310
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{shown}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"{shown}: cannot connect: {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise FetchError(f"{shown}: {exc}") from None
