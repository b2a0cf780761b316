"""pylock.toml (PEP 751), selected by packaging.pylock."""

from __future__ import annotations

import itertools
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.pylock import PackageWheel, Pylock
from packaging.tags import create_compatible_tags_selector
from packaging.utils import parse_wheel_filename

from pkgfs.store.lock import LockedWheel, LockError, choose_wheels, read_lock
from pkgfs.store.lock.model import BuildSource, WheelLink
from pkgfs.store.lock.resolve import selector_for
from tests.conftest import RunPkgfs
from tests.targets import cpython_linux

HEAD = """lock-version = "1.0"
created-by = "test"
requires-python = ">=3.10"
"""


def _package(name: str, version: str, *wheels: str, extra: str = "") -> str:
    rows = ",\n".join(
        f'  {{ name = "{w}", url = "https://files.example/{w}", size = 10,'
        f' hashes = {{ sha256 = "{str(i) * 64}" }} }}'
        for i, w in enumerate(wheels, 1)
    )
    return f'[[packages]]\nname = "{name}"\nversion = "{version}"\n{extra}wheels = [\n{rows}\n]\n'


def _select(tmp_path: Path, text: str, minor: int = 11) -> list[tuple[str, str]]:
    (tmp_path / "pylock.toml").write_text(text)
    target = cpython_linux(minor)
    lock = read_lock(tmp_path / "pylock.toml", target)
    return [(w.name, w.filename) for w in choose_wheels(lock, target, None)]


def test_markers_and_tags_choose_the_wheels(tmp_path: Path) -> None:
    text = (
        HEAD
        + _package(
            "numpy",
            "2.1.0",
            "numpy-2.1.0-cp312-cp312-manylinux_2_17_x86_64.whl",
            "numpy-2.1.0-cp311-cp311-manylinux_2_17_x86_64.whl",
            "numpy-2.1.0-cp311-cp311-win_amd64.whl",
        )
        + _package(
            "colorama",
            "0.4.6",
            "colorama-0.4.6-py3-none-any.whl",
            extra="marker = \"sys_platform == 'win32'\"\n",
        )
    )
    assert _select(tmp_path, text) == [
        ("numpy", "numpy-2.1.0-cp311-cp311-manylinux_2_17_x86_64.whl")
    ]
    assert _select(tmp_path, text, minor=12) == [
        ("numpy", "numpy-2.1.0-cp312-cp312-manylinux_2_17_x86_64.whl")
    ]


def test_relative_wheel_path(tmp_path: Path) -> None:
    text = HEAD + (
        '[[packages]]\nname = "six"\nversion = "1.17.0"\n'
        f'wheels = [{{ path = "wheels/six-1.17.0-py3-none-any.whl", hashes = {{ sha256 = "{"a" * 64}" }} }}]\n'
    )
    (tmp_path / "pylock.toml").write_text(text)
    target = cpython_linux()
    (six,) = choose_wheels(read_lock(tmp_path / "pylock.toml", target), target, None)
    assert six.wheel.url == (tmp_path / "wheels" / "six-1.17.0-py3-none-any.whl").as_uri()


def _chosen(tmp_path: Path, text: str) -> list[LockedWheel]:
    (tmp_path / "pylock.toml").write_text(text)
    target = cpython_linux()
    return choose_wheels(read_lock(tmp_path / "pylock.toml", target), target, None)


def test_sdist_only_is_built(tmp_path: Path) -> None:
    text = HEAD + (
        '[[packages]]\nname = "legacy"\nversion = "1.0"\n'
        f'sdist = {{ url = "https://files.example/legacy-1.0.tar.gz", hashes = {{ sha256 = "{"b" * 64}" }} }}\n'
    )
    (legacy,) = _chosen(tmp_path, text)
    assert legacy.build == BuildSource(
        "sdist", "https://files.example/legacy-1.0.tar.gz", sha256="b" * 64
    )
    assert legacy.wheel.url is None
    assert not legacy.hashes


def test_vcs_directory_and_archive_sources(tmp_path: Path) -> None:
    text = HEAD + (
        '[[packages]]\nname = "tool"\nversion = "1.0"\n'
        'vcs = { type = "git", url = "https://git.example/tool", commit-id = "abc", requested-revision = "main", subdirectory = "py" }\n\n'
        '[[packages]]\nname = "local"\n'
        'directory = { path = "src/local" }\n\n'
        '[[packages]]\nname = "packed"\nversion = "2.0"\n'
        f'archive = {{ path = "dist/packed-2.0.tar.gz", hashes = {{ sha256 = "{"c" * 64}" }} }}\n\n'
        '[[packages]]\nname = "mine"\n'
        'directory = { path = "src/mine", editable = true }\n'
    )
    (tmp_path / "pylock.toml").write_text(text)
    target = cpython_linux()
    lock = read_lock(tmp_path / "pylock.toml", target)
    builds = {p.name: p.build for p in lock.packages}
    base = tmp_path.absolute().as_uri()
    assert builds == {
        "tool": BuildSource(
            "git", "https://git.example/tool", commit="abc", requested_revision="main",
            subdirectory="py",
        ),
        "local": BuildSource("directory", f"{base}/src/local"),
        "packed": BuildSource("archive", f"{base}/dist/packed-2.0.tar.gz", sha256="c" * 64),
    }  # fmt: skip
    # The editable directory is installed in place (a PEP 660 wheel), never built from source.
    assert [(e.name, e.path) for e in lock.editables] == [("mine", tmp_path / "src" / "mine")]


def test_vcs_other_than_git_is_refused(tmp_path: Path) -> None:
    text = HEAD + (
        '[[packages]]\nname = "tool"\nversion = "1.0"\n'
        'vcs = { type = "hg", url = "https://hg.example/tool", commit-id = "abc" }\n'
    )
    with pytest.raises(LockError, match=r"package 'tool': vcs type 'hg': pkgfs builds git"):
        _chosen(tmp_path, text)


def test_requires_python(tmp_path: Path) -> None:
    text = HEAD.replace(">=3.10", ">=3.12") + _package(
        "six", "1.17.0", "six-1.17.0-py3-none-any.whl"
    )
    with pytest.raises(
        LockError, match=r"pylock.toml: python_full_version '3.11.7' .* requirement '>=3.12'"
    ):
        _select(tmp_path, text)


def test_wheel_without_sha256(tmp_path: Path) -> None:
    text = HEAD + (
        '[[packages]]\nname = "six"\nversion = "1.17.0"\n'
        'wheels = [{ url = "https://files.example/six-1.17.0-py3-none-any.whl", hashes = { sha512 = "00" } }]\n'
    )
    with pytest.raises(
        LockError, match=r"package 'six': wheel six-1.17.0-py3-none-any.whl has no sha256 hash"
    ):
        _select(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lock-version = [", "not valid TOML"),
        (
            'lock-version = "2.0"\ncreated-by = "x"\npackages = []\n',
            "pylock version 2.0 is not supported",
        ),
        (HEAD + '[[packages]]\nversion = "1"\n', "name"),
    ],
)
def test_malformed(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(LockError, match=message):
        _select(tmp_path, text)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("marker = \"python_version ~= 'x'\"\n", "a marker cannot be evaluated for the target: "),
        ("", "package 'six': wheel six-1.17.0-py3-none-any.whl: 'zz' is not a sha256 digest"),
    ],
)
def test_what_packaging_lets_through_is_one_line(
    pkgfs: RunPkgfs, tmp_path: Path, extra: str, message: str
) -> None:
    wheel = "six-1.17.0-py3-none-any.whl"
    digest = "zz" if not extra else "1" * 64
    text = HEAD + (
        f'[[packages]]\nname = "six"\nversion = "1.17.0"\n{extra}'
        f'wheels = [{{ url = "https://files.example/{wheel}", hashes = {{ sha256 = "{digest}" }} }}]\n'
    )
    lock = tmp_path / "pylock.toml"
    lock.write_text(text)
    result = pkgfs("lock", "show", "--lock", lock, "--python", sys.executable)
    assert (result.code, result.out) == (1, ""), result.err
    (line,) = result.err.splitlines()
    assert line.startswith(f"pkgfs: error: {lock}: {message}"), line


WHEELS = [
    "lib-1.0-py3-none-any.whl",
    "lib-1.0-cp311-abi3-manylinux_2_17_x86_64.whl",
    "lib-1.0-cp39-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "lib-1.0-cp311-cp311-manylinux_2_28_x86_64.whl",
    "lib-1.0-cp311-cp311-musllinux_1_2_x86_64.whl",
    "lib-1.0-cp312-cp312-manylinux_2_17_x86_64.whl",
    "lib-1.0-py2.py3-none-any.whl",
    "lib-1.0-cp311-cp311-win_amd64.whl",
]


@pytest.mark.parametrize("minor", [10, 11, 12])
def test_wheels_are_ranked_as_packaging_ranks_them(tmp_path: Path, minor: int) -> None:
    # pkgfs ranks a release's wheels itself (resolve.selector_for) and hands Pylock.select
    # only the tags the lock's wheels carry: both must choose what packaging's own
    # selector, given every tag of the target, chooses.
    target = cpython_linux(minor)
    theirs = create_compatible_tags_selector(target.tags)
    for count in (1, 2, 3):
        for chosen in itertools.combinations(WHEELS, count):
            links = [WheelLink(name, None, None) for name in chosen]
            tagged = [(link, frozenset(parse_wheel_filename(link.filename)[-1])) for link in links]
            assert list(selector_for(target.tags)(tagged)) == list(theirs(tagged)), chosen
    text = HEAD + _package("lib", "1.0", *WHEELS[:7])
    (tmp_path / "pylock.toml").write_text(text)
    pylock = Pylock.from_dict(tomllib.loads(text))
    environment = dict(target.environment)
    ((_, reference),) = pylock.select(environment=environment, tags=target.tags)  # type: ignore[arg-type]
    assert isinstance(reference, PackageWheel)
    assert _select(tmp_path, text, minor) == [("lib", reference.filename)]
