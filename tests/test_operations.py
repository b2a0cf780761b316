"""The FUSE handlers' error contract: only FUSEError leaves a handler."""

from __future__ import annotations

import errno
import logging

import pyfuse3
import pytest
import trio

from pkgfs.vfs.fuse.base import errors


@errors
async def _raises(exc: BaseException) -> None:
    raise exc


@errors
async def _returns() -> int:
    return 42


def _errno_of(exc: BaseException) -> int:
    with pytest.raises(pyfuse3.FUSEError) as caught:
        trio.run(_raises, exc)
    return caught.value.errno


def test_oserror_becomes_its_errno() -> None:
    assert _errno_of(FileNotFoundError(errno.ENOENT, "gone")) == errno.ENOENT
    assert _errno_of(OSError(errno.EXDEV, "cross-layer rename")) == errno.EXDEV


def test_fuse_errors_pass_through() -> None:
    assert _errno_of(pyfuse3.FUSEError(errno.EPERM)) == errno.EPERM


def test_unexpected_errors_are_logged_and_answered_eio(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="pkgfs.vfs"):
        assert _errno_of(ValueError("a bug")) == errno.EIO
    (record,) = caplog.records
    assert record.getMessage() == "unexpected error in _raises"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)


def test_results_pass_through() -> None:
    assert trio.run(_returns) == 42
