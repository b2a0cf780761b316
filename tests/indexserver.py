"""A real PEP 503 / PEP 691 simple repository over loopback HTTP, with faults on request.

``IndexServer`` serves wheel and sdist files from disk the way a package index does, so a
test can point uv, pip or pkgfs's own downloader at ``simple_url`` and watch what they fetch::

    with IndexServer([wheel]) as index:
        index.faults[wheel.name] = "truncate"
        ...  # fetch index.simple_url
        assert index.requests == [...]

Layout (file links on the project pages are relative URLs, which clients resolve)::

    /simple/                      the project list (PEP 503 HTML, or PEP 691 JSON on request)
    /simple/<normalized-name>/    one project's files, with their sha256 and Requires-Python
    /files/<filename>             the file's bytes, faults applied

Only the standard library and ``packaging`` are used; the server listens on 127.0.0.1 only.
It can also misbehave the ways real indexes and proxies do: malformed project pages
(``page_faults``), downloads that are slow, cut or mislabelled (``faults``), and HTTP basic
authentication that rejects a client without the right credentials (``auth``).
"""

from __future__ import annotations

import base64
import contextlib
import email.parser
import hashlib
import html
import json
import socket
import socketserver
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote, unquote, urlsplit

from packaging.utils import (
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

__all__ = ["Fault", "IndexServer", "PageFault"]

JSON_V1 = "application/vnd.pypi.simple.v1+json"
JSON_LATEST = "application/vnd.pypi.simple.latest+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
API_VERSION = "1.1"  # PEP 700: "versions" and per-file "size" are required from 1.1 on

Fault = Literal["truncate", "corrupt", "missing", "slow", "bad-length"]
PageFault = Literal[
    "not-json",
    "json-not-an-object",
    "files-not-a-list",
    "file-without-url",
    "file-without-filename",
    "hashes-not-a-table",
    "bad-href",
]


@dataclass(frozen=True)
class _Dist:
    """One served file, described as it was when ``IndexServer.add`` saw it."""

    path: Path
    filename: str
    project: NormalizedName
    version: Version
    sha256: str
    size: int
    requires_python: str | None


def _metadata_member(names: Iterable[str], wheel: bool) -> str | None:
    for name in names:
        top, _, rest = name.partition("/")
        # PEP 427: a wheel's metadata is {name}-{version}.dist-info/METADATA.
        if wheel and top.endswith(".dist-info") and rest == "METADATA":
            return name
        # The sdist format: {name}-{version}/PKG-INFO at the top of the archive.
        if not wheel and rest == "PKG-INFO":
            return name
    return None


def _read_metadata(path: Path) -> str | None:
    """The core metadata text inside a wheel (METADATA) or sdist (PKG-INFO), if it has one."""
    wheel = path.name.endswith(".whl")
    data: bytes | None = None
    try:
        if wheel or path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                member = _metadata_member(archive.namelist(), wheel)
                data = None if member is None else archive.read(member)
        else:
            with tarfile.open(path) as archive:
                member = _metadata_member(archive.getnames(), wheel)
                extracted = None if member is None else archive.extractfile(member)
                data = None if extracted is None else extracted.read()
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, tarfile.TarError):
        # Tests serve deliberately broken files too; those simply have no Requires-Python.
        return None
    return None if data is None else data.decode("utf-8", "replace")


def _describe(path: Path) -> _Dist:
    """Name, version, hash and Requires-Python of ``path``; raises ValueError for a bad name."""
    filename = path.name
    if filename.endswith(".whl"):
        project, version, _, _ = parse_wheel_filename(filename)
    else:
        project, version = parse_sdist_filename(filename)
    data = path.read_bytes()
    metadata = _read_metadata(path)
    requires_python = None
    if metadata is not None:
        requires_python = email.parser.HeaderParser().parsestr(metadata).get("Requires-Python")
    return _Dist(
        path=path,
        filename=filename,
        project=project,
        version=version,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        requires_python=None if requires_python is None else str(requires_python).strip(),
    )


class IndexServer:
    """A PEP 503 / PEP 691 simple index on ``http://127.0.0.1:<free port>``.

    Use it as a context manager: entering binds the port and starts serving from a daemon
    thread; leaving stops the server, drops any kept-alive client connections and joins the
    request threads, so nothing is left running. ``url`` and ``simple_url`` are valid only
    while entered.

    A caller may rely on:

    * ``add(path)`` serving ``path`` under ``/files/<its name>`` and listing it under its
      normalized project name, with the sha256 and size of the bytes as they were when added
      (the file is re-read on every download). Adding a file with the same name replaces it.
    * ``faults[filename]`` changing how that file downloads from the next request on:
      ``"truncate"`` announces the full Content-Length, sends half the bytes and closes the
      connection; ``"corrupt"`` sends the full length with bytes flipped, so the sha256 no
      longer matches; ``"missing"`` answers 404 (the listing still links to it); ``"slow"``
      sends the right bytes at ``slow_bytes_per_second``; ``"bad-length"`` sends the right
      bytes under a Content-Length that is not a number.
    * ``page_faults[project]`` (a normalized name) serving that project's page malformed:
      ``"not-json"``, ``"json-not-an-object"``, ``"files-not-a-list"``,
      ``"file-without-url"``, ``"file-without-filename"`` and ``"hashes-not-a-table"``
      break the PEP 691 JSON (sent whatever the client accepts); ``"bad-href"`` sends
      PEP 503 HTML whose link is not a URL.
    * ``auth=(user, password)`` requiring HTTP basic authentication on every request; a
      request without those credentials is answered 401 (and still recorded).
    * ``requests`` holding the path (with any query) of every request received, in arrival
      order, so a test can assert which files were fetched, or that none were.
    * ``hashes_in_html`` switching the PEP 503 ``#sha256=`` link fragments on and off; the
      PEP 691 JSON always carries the hashes.
    """

    def __init__(self, wheels: Iterable[Path] = (), *, auth: tuple[str, str] | None = None) -> None:
        self.faults: dict[str, Fault] = {}
        self.page_faults: dict[str, PageFault] = {}
        self.slow_bytes_per_second = 100
        self.auth = auth
        self.requests: list[str] = []
        self.hashes_in_html: bool = True
        self._lock = threading.Lock()
        self._dists: dict[str, _Dist] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for path in wheels:
            self.add(path)

    def add(self, path: Path) -> None:
        """Serve ``path`` (a wheel, or an sdist ``.tar.gz``/``.zip``) from now on.

        Raises ValueError (packaging's InvalidWheelFilename / InvalidSdistFilename) when the
        file name does not name a project and version.
        """
        dist = _describe(Path(path).absolute())  # still found if the cwd changes
        with self._lock:
            self._dists[dist.filename] = dist

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, with no trailing slash."""
        if self._server is None:
            raise RuntimeError("IndexServer is not running; use it as a context manager")
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def simple_url(self) -> str:
        """The index URL to hand to installers: ``url + "/simple/"``."""
        return self.url + "/simple/"

    def __enter__(self) -> Self:
        if self._server is not None:
            raise RuntimeError("IndexServer is already running")
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"IndexServer:{self._server.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()  # serve_forever returns: no more connections are accepted
        server.drop_connections()
        server.server_close()  # closes the listening socket and joins the request threads
        thread.join()
        self._server = self._thread = None

    # -- used by the request handler ---------------------------------------------------

    def _record(self, path: str) -> None:
        with self._lock:
            self.requests.append(path)

    def _projects(self) -> dict[NormalizedName, list[_Dist]]:
        with self._lock:
            dists = sorted(self._dists.values(), key=lambda d: d.filename)
        projects: dict[NormalizedName, list[_Dist]] = {}
        for dist in dists:
            projects.setdefault(dist.project, []).append(dist)
        return dict(sorted(projects.items()))

    def _file(self, filename: str) -> tuple[_Dist | None, Fault | None]:
        with self._lock:
            return self._dists.get(filename), self.faults.get(filename)


class _Server(ThreadingHTTPServer):
    # Request threads are joined by server_close(); drop_connections() first unblocks any
    # that wait on an idle kept-alive connection, and the handler timeout bounds the rest.
    daemon_threads = False
    block_on_close = True

    def __init__(self, index: IndexServer) -> None:
        self.index = index
        self._live: set[socket.socket] = set()
        self._live_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() also calls socket.getfqdn(), a reverse DNS lookup: skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = int(self.socket.getsockname()[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        # Runs on the serving thread, so once shutdown() returns every accepted connection
        # is in _live and drop_connections() cannot miss one.
        request, address = super().get_request()
        with self._live_lock:
            self._live.add(request)
        return request, address

    def forget(self, connection: socket.socket) -> None:
        with self._live_lock:
            self._live.discard(connection)

    def drop_connections(self) -> None:
        with self._live_lock:
            live = list(self._live)
            self._live.clear()
        for connection in live:
            with contextlib.suppress(OSError):  # already closed by its handler
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as real indexes and installers use it
    timeout = 10  # an idle kept-alive connection cannot hold up shutdown for longer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read index.requests; stderr stays clean

    def setup(self) -> None:
        super().setup()
        self._head = False

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.forget(self.connection)

    def handle(self) -> None:
        # The client went away mid-response, or the server is shutting down: not an error.
        with contextlib.suppress(ConnectionError, TimeoutError):
            super().handle()

    def do_GET(self) -> None:
        self._head = False
        self._route()

    def do_HEAD(self) -> None:
        # uv sends HEAD to probe for range-request support before reading wheel metadata.
        self._head = True
        self._route()

    # -- routing ------------------------------------------------------------------------

    def _route(self) -> None:
        index = self.server.index
        index._record(self.path)
        if not self._authorized(index):
            return
        path = urlsplit(self.path).path
        if path == "/simple":
            # PEP 503: "the repository SHOULD redirect the URLs without a / to add a /".
            self._redirect("/simple/")
        elif path == "/simple/":
            self._root(index)
        elif path.startswith("/simple/"):
            self._project(index, path.removeprefix("/simple/"))
        elif path.startswith("/files/"):
            self._download(index, unquote(path.removeprefix("/files/")))
        else:
            self._not_found()

    def _authorized(self, index: IndexServer) -> bool:
        if index.auth is None:
            return True
        expected = base64.b64encode(":".join(index.auth).encode()).decode()
        if self.headers.get("Authorization", "") == f"Basic {expected}":
            return True
        # RFC 7617: 401 with a challenge naming the scheme and a realm.
        body = b"401 Unauthorized\n"
        self.send_response(HTTPStatus.UNAUTHORIZED)
        self.send_header("WWW-Authenticate", 'Basic realm="indexserver"')
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self._head:
            self.wfile.write(body)
        return False

    def _wants_json(self) -> bool:
        # PEP 691 content negotiation: the client lists the formats it accepts; we answer
        # JSON whenever it accepts the v1 (or "latest") JSON form, else PEP 503 HTML.
        accept = self.headers.get("Accept", "")
        return JSON_V1 in accept or JSON_LATEST in accept

    def _root(self, index: IndexServer) -> None:
        names = list(index._projects())
        if self._wants_json():
            body = {"meta": {"api-version": API_VERSION}, "projects": [{"name": n} for n in names]}
            self._send_json(body)
            return
        # PEP 503: "the text of the anchor tag MUST match the name of the project and the
        # href attribute MUST link to the URL for that particular project".
        links = "".join(f'<a href="{quote(n)}/">{html.escape(n)}</a><br/>\n' for n in names)
        self._send_html("Simple index", links)

    def _project(self, index: IndexServer, rest: str) -> None:
        name = unquote(rest.removesuffix("/"))
        if not name or "/" in name:
            self._not_found()
            return
        normalized = canonicalize_name(name)
        dists = index._projects().get(normalized)
        if dists is None:
            self._not_found()
            return
        if name != normalized or not rest.endswith("/"):
            # PEP 503: the project URL is /<normalized name>/; "repositories MAY redirect
            # unnormalized URLs to the canonical normalized URL", and SHOULD add the "/".
            self._redirect(f"/simple/{normalized}/")
            return
        page_fault = index.page_faults.get(normalized)
        if page_fault is not None:
            self._malformed_page(page_fault, dists)
            return
        if self._wants_json():
            self._send_json(
                {
                    "meta": {"api-version": API_VERSION},
                    "name": normalized,
                    "versions": sorted({str(d.version) for d in dists}, key=Version),
                    "files": [_json_file(dist) for dist in dists],
                }
            )
            return
        links = "".join(self._html_link(dist) for dist in dists)
        self._send_html(f"Links for {normalized}", links)

    def _malformed_page(self, fault: PageFault, dists: list[_Dist]) -> None:
        if fault == "not-json":
            self._send(HTTPStatus.OK, JSON_V1, b'{"meta": {"api-version": "1.1"}, "files": [')
            return
        if fault == "bad-href":
            # urljoin() refuses this: an IPv6 literal whose bracket never closes.
            link = f'<a href="http://[::1/files/{html.escape(dists[0].filename)}">x</a>\n'
            self._send_html("Links", link)
            return
        files: Any = [_json_file(dist) for dist in dists]
        if fault == "json-not-an-object":
            self._send(HTTPStatus.OK, JSON_V1, json.dumps(files).encode())
            return
        if fault == "files-not-a-list":
            files = {dist.filename: _json_file(dist) for dist in dists}
        else:
            key = {"file-without-url": "url", "file-without-filename": "filename"}.get(fault)
            for file in files:
                if key is not None:
                    del file[key]
                else:  # hashes-not-a-table
                    file["hashes"] = [file["hashes"]["sha256"]]
        self._send_json({"meta": {"api-version": API_VERSION}, "name": "x", "files": files})

    def _html_link(self, dist: _Dist) -> str:
        # PEP 503: the URL MAY carry "#<hashname>=<hashvalue>"; data-requires-python holds
        # the Requires-Python specifier, HTML-escaped ("<" and ">" as &lt; and &gt;).
        href = _file_href(dist)
        if self.server.index.hashes_in_html:
            href += f"#sha256={dist.sha256}"
        attributes = f'href="{html.escape(href)}"'
        if dist.requires_python is not None:
            attributes += f' data-requires-python="{html.escape(dist.requires_python)}"'
        return f"<a {attributes}>{html.escape(dist.filename)}</a><br/>\n"

    def _download(self, index: IndexServer, filename: str) -> None:
        dist, fault = index._file(filename)
        if dist is None or fault == "missing":
            self._not_found()
            return
        try:
            data = dist.path.read_bytes()
        except FileNotFoundError:
            self._not_found()
            return
        if fault == "corrupt":
            # Same length, different bytes: the size still matches, the sha256 does not.
            middle = len(data) // 2
            data = (
                data[:middle]
                + bytes(b ^ 0xFF for b in data[middle : middle + 16])
                + data[middle + 16 :]
            )
        elif fault not in (None, "truncate", "slow", "bad-length"):
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR, f"unknown fault {fault!r}")
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header(
            "Content-Length", f"{len(data)} bytes" if fault == "bad-length" else str(len(data))
        )
        if fault in ("truncate", "bad-length"):
            self.send_header("Connection", "close")  # the body ends when the connection does
            self.close_connection = True
        self.end_headers()
        if self._head:
            return
        if fault == "slow":
            self._send_slowly(data, self.server.index.slow_bytes_per_second)
            return
        if fault == "truncate":
            # Promise len(data) bytes, deliver half, hang up: the client sees a short body.
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        self.wfile.write(data)

    def _send_slowly(self, data: bytes, rate: int) -> None:
        # Ten writes a second, each flushed: the client sees a trickle, never a stall.
        step = max(1, rate // 10)
        for start in range(0, len(data), step):
            self.wfile.write(data[start : start + step])
            self.wfile.flush()
            time.sleep(0.1)

    # -- responses ------------------------------------------------------------------------

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Vary", "Accept")  # the same URL answers HTML or JSON
        self.end_headers()
        if not self._head:
            self.wfile.write(body)

    def _send_json(self, document: dict[str, Any]) -> None:
        self._send(HTTPStatus.OK, JSON_V1, json.dumps(document, indent=1).encode())

    def _send_html(self, title: str, links: str) -> None:
        # PEP 691: an HTML answer is text/html, or the versioned v1+html when asked for it.
        accept = self.headers.get("Accept", "")
        content_type = HTML_V1 if HTML_V1 in accept else "text/html; charset=utf-8"
        page = (
            "<!DOCTYPE html>\n<html>\n<head>\n"
            # PEP 629: the page states the API version it follows.
            f'<meta name="pypi:repository-version" content="{API_VERSION}">\n'
            f"<title>{html.escape(title)}</title>\n</head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n{links}</body>\n</html>\n"
        )
        self._send(HTTPStatus.OK, content_type, page.encode())

    def _redirect(self, location: str) -> None:
        self.send_response(HTTPStatus.MOVED_PERMANENTLY)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _not_found(self) -> None:
        self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"404 Not Found\n")


def _file_href(dist: _Dist) -> str:
    # Relative to /simple/<project>/, as PyPI's links are: clients must resolve them
    # against the page URL (PEP 503 and PEP 691 both allow relative URLs).
    return f"../../files/{quote(dist.filename)}"


def _json_file(dist: _Dist) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "filename": dist.filename,
        "url": _file_href(dist),
        "hashes": {"sha256": dist.sha256},
        "size": dist.size,  # PEP 700: required from api-version 1.1
    }
    if dist.requires_python is not None:
        entry["requires-python"] = dist.requires_python
    return entry
