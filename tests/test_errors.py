"""The error tree's promises: one line, credentials never shown."""

from __future__ import annotations

import pytest

from pkgfs.store.errors import FetchError, LockError, redact


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://user:tok@host/simple/", "https://***@host/simple/"),
        ("https://tok@host:8080/x", "https://***@host:8080/x"),
        ("git+https://user:p@ss@host/repo.git", "git+https://***@host/repo.git"),
        ("a http://u:t@h/ and https://v:s@g/x", "a http://***@h/ and https://***@g/x"),
        ("http://host/path@version", "http://host/path@version"),
        ("http://host?q=a@b", "http://host?q=a@b"),
        ("mail me@example.com", "mail me@example.com"),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_errors_are_one_redacted_line() -> None:
    error = FetchError("https://user:tok@host/x: HTTP 500\nInternal\tError")
    assert str(error) == "https://***@host/x: HTTP 500 Internal Error"
    assert str(LockError("uv.lock", "bad\nkey")) == "uv.lock: bad key"
