"""Project pages of an index that break PEP 691 or PEP 503: one line naming the page.

Each runs the real CLI against tests/indexserver.py serving that page malformed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RunPkgfs, snapshot
from tests.indexserver import IndexServer, PageFault

MALFORMED: dict[PageFault, str] = {
    "not-json": "the index sent JSON that does not parse: ",
    "json-not-an-object": "a PEP 691 project page must be a JSON object",
    "files-not-a-list": "a PEP 691 project page needs a 'files' list",
    "file-without-url": "files[0] has no 'url' string",
    "file-without-filename": "files[0] has no 'filename' string",
    "hashes-not-a-table": "files[0].hashes must be an object",
    "bad-href": "link 'http://[::1/files/alpha-1.0-py3-none-any.whl' is not a URL: ",
}


@pytest.mark.parametrize("fault", MALFORMED)
def test_malformed_project_page_is_one_line(
    pkgfs: RunPkgfs,
    lockproject: Path,
    index_server: IndexServer,
    store_dir: Path,
    fault: PageFault,
) -> None:
    assert pkgfs("store", "stats").code == 0
    before = snapshot(store_dir)
    index_server.page_faults["alpha"] = fault
    lock = lockproject / "requirements.txt"
    result = pkgfs("sync", "--lock", lock, "--index-url", index_server.simple_url)
    assert (result.code, result.out) == (1, ""), result.err
    (line,) = result.err.splitlines()
    page = f"{index_server.simple_url}alpha/"
    assert line.startswith(f"pkgfs: error: {page}: {MALFORMED[fault]}"), line
    assert snapshot(store_dir) == before
