"""The test index speaks PEP 503 HTML and PEP 691 JSON, redirects, 404s and breaks on request."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import io
import json
import socket
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest

from tests.indexserver import IndexServer, PageFault
from tests.wheelmaker import WheelMaker

JSON_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)


class _Anchors(HTMLParser):
    """Collects (attributes, text) of every <a> in a page, attribute values unescaped."""

    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open = dict(attrs)

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.anchors.append((self._open, data))
            self._open = None


def _anchors(page: str) -> list[tuple[dict[str, str | None], str]]:
    parser = _Anchors()
    parser.feed(page)
    return parser.anchors


def _get(url: str, accept: str | None = None) -> tuple[str, str, bytes]:
    """(final URL, Content-Type, body) of a GET, following redirects."""
    # Only ever http://127.0.0.1 here, so S310's file:/custom-scheme concern does not apply.
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return response.geturl(), response.headers["Content-Type"], response.read()


@contextlib.contextmanager
def _raw(index: IndexServer, path: str, method: str = "GET") -> Iterator[http.client.HTTPResponse]:
    """One request without redirect handling, on a connection closed afterwards."""
    host, port = index.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path)
        yield connection.getresponse()
    finally:
        connection.close()


@pytest.fixture
def wheels(tmp_path: Path) -> list[Path]:
    return [
        WheelMaker(
            name="Foo_Bar",
            version="1.0",
            requires_python=">=3.8, <4",
            files={"foo_bar/__init__.py": "X = 1\n"},
        ).build(tmp_path),
        WheelMaker(
            name="Foo_Bar",
            version="2.0",
            tag="cp311-cp311-manylinux_2_17_x86_64",
            root_is_purelib=False,
            files={"foo_bar/__init__.py": "X = 2\n"},
        ).build(tmp_path),
        WheelMaker(name="other", files={"other.py": "'x' * 1000\n" * 50}).build(tmp_path),
    ]


@pytest.fixture
def index(wheels: list[Path]) -> Iterator[IndexServer]:
    with IndexServer(wheels) as server:
        yield server


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_root_lists_normalized_projects(index: IndexServer) -> None:
    _, content_type, body = _get(index.simple_url)
    assert "html" in content_type
    assert [(a["href"], text) for a, text in _anchors(body.decode())] == [
        ("foo-bar/", "foo-bar"),
        ("other/", "other"),
    ]
    _, content_type, body = _get(index.simple_url, accept=JSON_ACCEPT)
    assert content_type == "application/vnd.pypi.simple.v1+json"
    assert json.loads(body)["projects"] == [{"name": "foo-bar"}, {"name": "other"}]


def test_project_page_html_has_hashes_and_requires_python(
    index: IndexServer, wheels: list[Path]
) -> None:
    page_url = index.simple_url + "foo-bar/"
    _, content_type, body = _get(page_url)
    assert "html" in content_type
    page = body.decode()
    assert 'data-requires-python="&gt;=3.8, &lt;4"' in page  # escaped in the markup
    anchors = _anchors(page)
    assert [text for _, text in anchors] == [wheels[0].name, wheels[1].name]
    first, second = (attributes for attributes, _ in anchors)
    assert first["href"] == f"../../files/{wheels[0].name}#sha256={_sha256(wheels[0])}"
    assert first["data-requires-python"] == ">=3.8, <4"
    assert "data-requires-python" not in second  # that wheel's METADATA has none

    # The relative link resolves to a download of exactly the listed bytes.
    href = first["href"]
    assert href is not None
    url, fragment = urljoin(page_url, href).split("#")
    _, _, data = _get(url)
    assert fragment == f"sha256={hashlib.sha256(data).hexdigest()}"
    assert data == wheels[0].read_bytes()

    index.hashes_in_html = False
    _, _, body = _get(page_url)
    assert [a["href"] for a, _ in _anchors(body.decode())] == [
        f"../../files/{wheels[0].name}",
        f"../../files/{wheels[1].name}",
    ]


def test_project_page_json_by_accept(index: IndexServer, wheels: list[Path]) -> None:
    page_url = index.simple_url + "foo-bar/"
    _, content_type, body = _get(page_url, accept=JSON_ACCEPT)
    assert content_type == "application/vnd.pypi.simple.v1+json"
    document = json.loads(body)
    assert document["meta"] == {"api-version": "1.1"}
    assert document["name"] == "foo-bar"
    assert document["versions"] == ["1.0", "2.0"]
    assert document["files"] == [
        {
            "filename": wheels[0].name,
            "url": f"../../files/{wheels[0].name}",
            "hashes": {"sha256": _sha256(wheels[0])},
            "requires-python": ">=3.8, <4",
            "size": wheels[0].stat().st_size,
        },
        {
            "filename": wheels[1].name,
            "url": f"../../files/{wheels[1].name}",
            "hashes": {"sha256": _sha256(wheels[1])},
            "size": wheels[1].stat().st_size,
        },
    ]
    # Without the JSON media type in Accept the same URL answers HTML.
    _, content_type, _ = _get(page_url, accept="text/html")
    assert "html" in content_type


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/simple/Foo_Bar/", "/simple/foo-bar/"),
        ("/simple/FOO.bar/", "/simple/foo-bar/"),
        ("/simple/foo-bar", "/simple/foo-bar/"),
        ("/simple", "/simple/"),
    ],
)
def test_unnormalized_urls_redirect(index: IndexServer, path: str, location: str) -> None:
    with _raw(index, path) as response:
        assert response.read() == b""
    assert (response.status, response.headers["Location"]) == (301, location)
    final_url, _, _ = _get(index.url + path)  # and a client following it lands there
    assert final_url == index.url + location


@pytest.mark.parametrize("path", ["/simple/nothing/", "/files/nothing-1.0-py3-none-any.whl", "/"])
def test_unknown_paths_are_404(index: IndexServer, path: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as failure:
        _get(index.url + path)
    failure.value.close()
    assert failure.value.code == 404


def test_missing_fault_is_404_but_still_listed(index: IndexServer, wheels: list[Path]) -> None:
    index.faults[wheels[0].name] = "missing"
    _, _, body = _get(index.simple_url + "foo-bar/")
    assert wheels[0].name in body.decode()
    with pytest.raises(urllib.error.HTTPError) as failure:
        _get(f"{index.url}/files/{wheels[0].name}")
    failure.value.close()
    assert failure.value.code == 404


def test_truncate_fault_gives_a_short_body(index: IndexServer, wheels: list[Path]) -> None:
    wheel = wheels[2]
    index.faults[wheel.name] = "truncate"
    with pytest.raises(http.client.IncompleteRead) as failure:
        _get(f"{index.url}/files/{wheel.name}")
    size = wheel.stat().st_size
    assert (len(failure.value.partial), failure.value.expected) == (size // 2, size - size // 2)
    # The fault is per file and per request: lifting it serves the whole file again.
    del index.faults[wheel.name]
    assert _get(f"{index.url}/files/{wheel.name}")[2] == wheel.read_bytes()


def test_corrupt_fault_keeps_length_but_not_hash(index: IndexServer, wheels: list[Path]) -> None:
    wheel = wheels[2]
    index.faults[wheel.name] = "corrupt"
    _, _, data = _get(f"{index.url}/files/{wheel.name}")
    assert len(data) == wheel.stat().st_size
    assert hashlib.sha256(data).hexdigest() != _sha256(wheel)


def test_head_gives_length_without_body(index: IndexServer, wheels: list[Path]) -> None:
    with _raw(index, f"/files/{wheels[0].name}", method="HEAD") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(wheels[0].stat().st_size)
        assert response.read() == b""


def test_requests_are_recorded_in_order(index: IndexServer, wheels: list[Path]) -> None:
    assert index.requests == []
    _get(index.simple_url + "Foo_Bar/")
    _get(f"{index.url}/files/{wheels[0].name}?x=1")
    assert index.requests == [
        "/simple/Foo_Bar/",
        "/simple/foo-bar/",
        f"/files/{wheels[0].name}?x=1",
    ]


def test_sdist_is_listed_with_its_requires_python(tmp_path: Path) -> None:
    pkg_info = b"Metadata-Version: 2.1\nName: Some.Thing\nVersion: 0.5\nRequires-Python: >=3.10\n"
    sdist = tmp_path / "some_thing-0.5.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        info = tarfile.TarInfo("some_thing-0.5/PKG-INFO")
        info.size = len(pkg_info)
        archive.addfile(info, io.BytesIO(pkg_info))
    with IndexServer() as index:
        index.add(sdist)
        _, _, body = _get(index.simple_url + "some-thing/", accept=JSON_ACCEPT)
    [entry] = json.loads(body)["files"]
    assert (entry["filename"], entry["requires-python"]) == (sdist.name, ">=3.10")


def test_add_refuses_a_file_name_without_project_and_version(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(ValueError, match=r"notes\.txt"):
        IndexServer([path])


def test_exit_stops_promptly_even_with_an_idle_keepalive_connection(
    wheels: list[Path],
) -> None:
    host, port = "", ""
    with contextlib.ExitStack() as client:
        with IndexServer(wheels) as index:
            host, port = index.url.removeprefix("http://").split(":")
            # HTTP/1.1 keep-alive: the client holds the connection open past the server's life.
            response = client.enter_context(_raw(index, "/simple/"))
            response.read()
            started = time.monotonic()
        assert time.monotonic() - started < 5  # well under the handler's 10 s idle timeout
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=5).close()
    with pytest.raises(RuntimeError):
        _ = index.url


def test_slow_fault_trickles_the_right_bytes(index: IndexServer, wheels: list[Path]) -> None:
    wheel = wheels[0]
    index.faults[wheel.name] = "slow"
    index.slow_bytes_per_second = wheel.stat().st_size * 2  # about half a second
    started = time.monotonic()
    assert _get(f"{index.url}/files/{wheel.name}")[2] == wheel.read_bytes()
    assert time.monotonic() - started > 0.3


def test_bad_length_fault_sends_the_bytes_under_a_non_number(
    index: IndexServer, wheels: list[Path]
) -> None:
    wheel = wheels[0]
    index.faults[wheel.name] = "bad-length"
    with _raw(index, f"/files/{wheel.name}") as response:
        assert response.headers["Content-Length"] == f"{wheel.stat().st_size} bytes"
        assert response.read() == wheel.read_bytes()


@pytest.mark.parametrize(
    ("fault", "broken"),
    [
        ("json-not-an-object", lambda page: isinstance(page, list)),
        ("files-not-a-list", lambda page: isinstance(page["files"], dict)),
        ("file-without-url", lambda page: "url" not in page["files"][0]),
        ("file-without-filename", lambda page: "filename" not in page["files"][0]),
        ("hashes-not-a-table", lambda page: isinstance(page["files"][0]["hashes"], list)),
    ],
)
def test_page_faults_break_pep_691(
    index: IndexServer, fault: PageFault, broken: Callable[[Any], bool]
) -> None:
    index.page_faults["foo-bar"] = fault
    _, _, body = _get(index.simple_url + "foo-bar/", JSON_ACCEPT)
    assert broken(json.loads(body))
    assert json.loads(_get(index.simple_url + "other/", JSON_ACCEPT)[2])["files"]  # others fine


def test_page_faults_not_json_and_bad_href(index: IndexServer) -> None:
    index.page_faults["foo-bar"] = "not-json"
    with pytest.raises(ValueError, match="Expecting"):
        json.loads(_get(index.simple_url + "foo-bar/", JSON_ACCEPT)[2])
    index.page_faults["foo-bar"] = "bad-href"
    _, content_type, body = _get(index.simple_url + "foo-bar/", JSON_ACCEPT)
    assert "html" in content_type
    ((attributes, _),) = _anchors(body.decode())
    with pytest.raises(ValueError, match="Invalid IPv6 URL"):
        urljoin(index.simple_url, attributes["href"] or "")


def test_auth_requires_basic_credentials(wheels: list[Path]) -> None:
    with IndexServer(wheels, auth=("alice", "token")) as index:
        with pytest.raises(urllib.error.HTTPError) as failure:
            _get(index.simple_url)
        failure.value.close()
        assert failure.value.code == 401
        assert failure.value.headers["WWW-Authenticate"] == 'Basic realm="indexserver"'
        secret = base64.b64encode(b"alice:token").decode()
        request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1 only)
            index.simple_url, headers={"Authorization": f"Basic {secret}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            assert response.status == 200
        assert index.requests == ["/simple/", "/simple/"]
