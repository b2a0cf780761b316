"""HTTP for indexes and downloads: one ``requests`` session per process.

The session reuses connections (a urllib3 pool per host, as many connections as downloads
run at once), retries with exponential backoff (urllib3's ``Retry``: connection errors, and
the statuses 429, 500, 502, 503 and 504, honouring ``Retry-After``), and verifies HTTPS with
the system's certificates through ``truststore`` as pip does, or with requests' own bundle
(certifi) where truststore cannot be used. Proxies and ``REQUESTS_CA_BUNDLE`` come from the
environment, as requests reads them.

Credentials are looked up the way pip's ``MultiDomainBasicAuth`` does:

1. ``user:token@`` in an index URL or a lock's URL: taken out of the URL and remembered for
   its scheme, host and port, then sent with every request there (the files an index
   links to included);
2. ``~/.netrc`` (or ``$NETRC``): the entry of the request's host (requests' own lookup);
3. a keyring, only when the ``keyring`` package is importable (it is not a dependency):
   after a 401, ``keyring.get_credential(index URL, then host, username)``, as pip's
   ``--keyring-provider import``.

Credentials go only to the origin they were given for (a redirect elsewhere gets only its
own host's ``~/.netrc`` entry, as requests strips the rest) and are never printed: every
failure is one :class:`FetchError` line naming the URL with its credentials redacted.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import version as installed_version
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
import requests.adapters
import requests.utils
from urllib3.util.retry import Retry

from pkgfs.store.errors import FetchError, NotFoundError, redact

__all__ = [
    "RETRIES",
    "TIMEOUT",
    "get",
    "remember_credentials",
    "session",
    "user_agent",
]

TIMEOUT = 30.0  # seconds to connect, and between two reads
RETRIES = 4  # after the first try: connection errors and the statuses below
_RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
_POOL = 16  # connections kept per host: more than sync's downloads at once

_lock = threading.Lock()
_session: requests.Session | None = None
_indexes: list[str] = []  # URLs given as indexes, without credentials: the keyring's keys


@dataclass(frozen=True)
class _Credentials:
    username: str
    password: str
    source: str  # for a 401's message: where they came from


_remembered: dict[tuple[str, str, int | None], _Credentials] = {}


def user_agent() -> str:
    """``pkgfs/VERSION``, as every request says who it is."""
    return f"pkgfs/{installed_version('pkgfs')}"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def remember_credentials(url: str, index: bool = False) -> str:
    """``url`` without its ``user:password@``, which from now on authenticate every request
    to the same scheme, host and port. ``index``: the URL is an index's (a keyring is asked
    for it first). A URL without credentials, or one that does not parse, is returned as
    it is."""
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
        _origin(url)  # a bad port raises here, not later
    except ValueError:
        return url  # opening it says what is wrong
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    with _lock:
        if index and bare not in _indexes:
            _indexes.append(bare)
        if username is not None:
            _remembered[_origin(url)] = _Credentials(
                unquote(username), unquote(password or ""), "the credentials in the URL"
            )
    return bare


def _known(url: str) -> _Credentials | None:
    """Credentials for ``url`` before asking: remembered from a URL, else ``~/.netrc``."""
    with _lock:
        remembered = _remembered.get(_origin(url))
    if remembered is not None and remembered.password:
        return remembered
    netrc = requests.utils.get_netrc_auth(url)
    if netrc is not None and (remembered is None or netrc[0] == remembered.username):
        return _Credentials(netrc[0], netrc[1], "the credentials from ~/.netrc")
    return remembered


def _from_keyring(url: str, username: str | None) -> _Credentials | None:
    """pip's ``--keyring-provider import``: the index URL is asked first, then the host.
    None when ``keyring`` is not importable or has nothing (its errors are its own: a
    keyring that fails is a keyring that has nothing)."""
    try:
        keyring: Any = import_module("keyring")
    except ImportError:
        return None
    with _lock:
        indexes = [i for i in _indexes if url.startswith(i.rstrip("/"))]
    parts = urlsplit(url)
    for key in [*indexes, parts.netloc]:
        try:
            if username is not None:
                password = keyring.get_password(key, username)
                if password is not None:
                    return _Credentials(username, password, "the keyring's credentials")
            credential = keyring.get_credential(key, username)
        except Exception:  # noqa: S112 (any backend's failure: nothing found here)
            continue
        if credential is not None and credential.password is not None:
            return _Credentials(
                credential.username or "", credential.password, "the keyring's credentials"
            )
    return None


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter with an SSL context of our choosing (truststore's), as pip's
    ``_SSLContextAdapterMixin``."""

    def __init__(self, ssl_context: ssl.SSLContext | None, **kwargs: Any) -> None:
        self._ssl_context = ssl_context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self._ssl_context is not None:
            kwargs["ssl_context"] = self._ssl_context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        if self._ssl_context is not None:
            kwargs["ssl_context"] = self._ssl_context
        return super().proxy_manager_for(*args, **kwargs)


def _system_certificates() -> ssl.SSLContext | None:
    """truststore's context (the system's trust store), or None to let requests use its
    own bundle: when truststore is missing or cannot build a context here."""
    try:
        truststore: Any = import_module("truststore")
        context: ssl.SSLContext = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    except (ImportError, OSError, ssl.SSLError, AttributeError):
        return None
    return context


def session() -> requests.Session:
    """The process's session, made on first use (thread-safe, as requests' pools are)."""
    global _session  # noqa: PLW0603 (one session per process, made lazily)
    with _lock:
        if _session is None:
            retry = Retry(
                total=RETRIES,
                connect=RETRIES,
                read=RETRIES,
                status=RETRIES,
                other=0,
                backoff_factor=0.25,  # 0, 0.5, 1, 2 s: urllib3 waits nothing before the first
                backoff_max=10,
                status_forcelist=_RETRIED_STATUSES,
                allowed_methods=frozenset({"GET", "HEAD"}),
                raise_on_status=False,  # the last answer is returned, and reported below
                respect_retry_after_header=True,
            )
            adapter = _Adapter(
                _system_certificates(),
                max_retries=retry,
                pool_connections=_POOL,
                pool_maxsize=_POOL,
            )
            made = requests.Session()
            made.mount("http://", adapter)
            made.mount("https://", adapter)
            made.headers["User-Agent"] = user_agent()
            _session = made
        return _session


def _reason(exc: BaseException) -> str:
    """The innermost cause of a connection failure, without urllib3's object names."""
    while True:
        inner = getattr(exc, "reason", None) or (exc.args[0] if exc.args else None)
        if not isinstance(inner, BaseException) or inner is exc:
            break
        exc = inner
    text = str(exc)
    return text.split(">: ", 1)[-1] if text.startswith("<") else text


def _send(
    url: str, shown: str, headers: dict[str, str], credentials: _Credentials | None, stream: bool
) -> requests.Response:
    auth = (credentials.username, credentials.password) if credentials else None
    try:
        return session().get(url, headers=headers, auth=auth, stream=stream, timeout=TIMEOUT)
    except requests.exceptions.Timeout:
        raise FetchError(f"{shown}: no answer in {TIMEOUT:.0f} s") from None
    except requests.exceptions.SSLError as exc:
        raise FetchError(f"{shown}: TLS: {_reason(exc)}") from None
    except requests.exceptions.ConnectionError as exc:
        raise FetchError(f"{shown}: cannot connect: {_reason(exc)}") from None
    except (requests.exceptions.RequestException, ValueError) as exc:
        raise FetchError(f"{shown}: {_reason(exc)}") from None


def _failure(shown: str, response: requests.Response, credentials: _Credentials | None) -> str:
    status = f"{shown}: HTTP {response.status_code} {response.reason}"
    if response.status_code in _RETRIED_STATUSES:
        return f"{status} (tried {RETRIES + 1} times)"
    sent = credentials is not None and "Authorization" in response.request.headers
    if response.status_code in (401, 403) and sent and credentials is not None:
        # 403: what pypiserver, and some proxies, answer to a wrong password.
        return f"{status}: the index refused {credentials.source}"
    if response.status_code != 401:
        return status
    return (
        f"{status}: the index wants credentials: put USER:TOKEN@ before the host in its URL,"
        " or add the host to ~/.netrc"
    )


def get(url: str, accept: str | None = None, stream: bool = False) -> requests.Response:
    """GET ``url`` (http or https), redirects followed; ``stream``: the body is read by the
    caller from ``response.raw``, undecoded (``Accept-Encoding: identity``, as pip asks for
    files). The caller closes the response.

    Raises :class:`NotFoundError` for 404 and 410, and :class:`FetchError` for any other
    error status (after the retries), a connection that fails or times out, or a URL that
    is not http(s) or does not parse: one line naming the URL, its credentials redacted.
    """
    shown = redact(url)
    try:
        scheme = urlsplit(url).scheme
    except ValueError as exc:
        raise FetchError(f"{shown}: not a URL: {exc}") from None
    if scheme not in ("http", "https"):
        raise FetchError(f"{shown}: unsupported URL scheme")
    bare = remember_credentials(url)
    headers = {"Accept": accept} if accept else {}
    if stream:
        headers["Accept-Encoding"] = "identity"
    credentials = _known(bare)
    response = _send(bare, shown, headers, credentials, stream)
    if response.status_code == 401:
        asked = _from_keyring(bare, credentials.username if credentials else None)
        if asked is not None and asked != credentials:
            response.close()
            credentials = asked
            response = _send(bare, shown, headers, credentials, stream)
            if response.ok:
                with _lock:
                    _remembered[_origin(bare)] = asked
    if response.status_code >= 400:
        response.close()
        error = NotFoundError if response.status_code in (404, 410) else FetchError
        raise error(_failure(shown, response, credentials))
    return response
