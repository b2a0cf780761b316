"""Credentials in a URL: sent as basic authentication, never printed.

The index of these tests requires basic authentication (401 without it), so the
credentials are real and needed; the token must not appear in anything pkgfs prints.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LOCKPROJECT, PLACEHOLDER, Result, RunPkgfs
from tests.indexserver import IndexServer

TOKEN = "s3cr3t-T0KEN"  # noqa: S105 (the test index's own, made up)


@pytest.fixture
def private_index() -> Iterator[IndexServer]:
    wheels = sorted((LOCKPROJECT / "wheels").glob("*.whl"))
    with IndexServer(wheels, auth=("alice", TOKEN)) as server:
        yield server


def _with_credentials(index: IndexServer, token: str = TOKEN) -> str:
    return index.simple_url.replace("http://", f"http://alice:{token}@")


def _clean(result: Result) -> Result:
    assert TOKEN not in result.out
    assert TOKEN not in result.err
    assert "Traceback" not in result.err
    return result


def test_index_url_credentials_authenticate_and_stay_secret(
    pkgfs: RunPkgfs, lockproject: Path, private_index: IndexServer
) -> None:
    lock = lockproject / "requirements.txt"
    url = _with_credentials(private_index)
    shown = _clean(pkgfs("lock", "show", "--json", "--lock", lock, "--index-url", url))
    assert shown.code == 0, shown.err
    assert {row["name"] for row in json.loads(shown.out)} == {"alpha", "beta", "epsilon", "zeta"}
    synced = _clean(pkgfs("sync", "--lock", lock, "--no-compile", env={"PKGFS_INDEX_URL": url}))
    assert synced.code == 0, synced.err
    assert synced.out == "4 wheels: 0 already in the store, 4 added\n"


def test_failures_name_the_url_without_the_token(
    pkgfs: RunPkgfs, lockproject: Path, private_index: IndexServer
) -> None:
    lock = lockproject / "requirements.txt"
    wrong = _clean(
        pkgfs("sync", "--lock", lock, "--index-url", _with_credentials(private_index, "nope"))
    )
    assert wrong.code == 1
    assert "HTTP 401 Unauthorized: the index refused the credentials in the URL" in wrong.err
    assert "nope" not in wrong.err
    private_index.faults["zeta-1.0-py3-none-any.whl"] = "missing"
    missing = _clean(pkgfs("sync", "--lock", lock, "--index-url", _with_credentials(private_index)))
    assert missing.code == 1
    assert "zeta-1.0-py3-none-any.whl: HTTP 404 Not Found" in missing.err


def test_credentials_in_a_locks_urls(
    pkgfs: RunPkgfs, tmp_path: Path, private_index: IndexServer
) -> None:
    # A uv.lock written by hand (uv itself strips credentials from the URLs it locks).
    lock = tmp_path / "uv.lock"
    text = (LOCKPROJECT / "uv.lock").read_text()
    lock.write_text(text.replace(PLACEHOLDER, f"http://alice:{TOKEN}@{private_index.url[7:]}"))
    shown = _clean(pkgfs("lock", "show", "--json", "--lock", lock, "--python", sys.executable))
    assert shown.code == 0, shown.err
    urls = [row["url"] for row in json.loads(shown.out)]
    assert urls
    assert all(url.startswith("http://***@127.0.0.1:") for url in urls), urls
    synced = _clean(pkgfs("sync", "--lock", lock, "--python", sys.executable, "--no-compile"))
    assert synced.code == 0, synced.err
    assert synced.out == "4 wheels: 0 already in the store, 4 added\n"
