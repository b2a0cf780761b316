"""A lock's sources: their keys, the directory hash, and checks against the lock, offline."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from pkgfs.store.build import BuildError, direct_url, directory_hash
from pkgfs.store.build.source import fetch_source, known_key
from pkgfs.store.hashing import hash_file
from pkgfs.store.lock.model import BuildSource
from tests.sdistmaker import make_sdist, make_tree


def _tree(root: Path) -> Path:
    return make_tree(root, "demo", "1.0", {"demo/__init__.py": "X = 1\n"})


def test_directory_hash_is_the_tree_without_vcs_build_and_caches(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "demo")
    before = directory_hash(tree)
    for junk in (".git/HEAD", "build/lib/demo.py", "dist/demo-1.0.tar.gz",
                 "demo.egg-info/PKG-INFO", "src/demo/__pycache__/x.pyc", ".venv/pyvenv.cfg"):  # fmt: skip
        path = tree / junk
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("ignored")
    assert directory_hash(tree) == before
    (tree / "src" / "demo" / "__init__.py").write_text("X = 2\n")
    changed = directory_hash(tree)
    assert changed != before
    (tree / "src" / "demo" / "__init__.py").chmod(0o755)  # the executable bit counts too
    assert directory_hash(tree) != changed


def test_keys_name_the_source(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "demo")
    sdist = make_sdist(tree, tmp_path / "dist")
    digest = hash_file(sdist)[0]
    git = BuildSource("git", "file:///r", commit="a" * 40, subdirectory="py")
    assert known_key(git) == f"git:file:///r@{'a' * 40}#subdirectory=py"
    assert known_key(BuildSource("sdist", sdist.as_uri())) == f"sdist:{digest}"
    assert (
        known_key(BuildSource("sdist", "https://x.invalid/d.tar.gz", digest)) == f"sdist:{digest}"
    )
    assert known_key(BuildSource("sdist", "https://x.invalid/d.tar.gz")) is None  # not yet
    archive = BuildSource("archive", sdist.as_uri(), digest)
    assert known_key(archive) == f"archive:{sdist.as_uri()}:{digest}"
    directory = BuildSource("directory", tree.as_uri())
    assert known_key(directory) == f"directory:{tree.as_uri()}:{directory_hash(tree)}"


def test_direct_url_as_pip_and_uv_write_it() -> None:
    assert direct_url(BuildSource("sdist", "https://x.invalid/d.tar.gz", "b" * 64)) is None
    git = BuildSource("git", "file:///r", commit="a" * 40, requested_revision="main")
    assert direct_url(git) == (
        '{"url": "file:///r", "vcs_info": {"commit_id": "' + "a" * 40
        + '", "requested_revision": "main", "vcs": "git"}}'
    )  # fmt: skip
    assert direct_url(BuildSource("directory", "file:///d")) == (
        '{"dir_info": {"editable": false}, "url": "file:///d"}'
    )
    archive = BuildSource("archive", "https://x.invalid/a.tar.gz", "c" * 64, subdirectory="s")
    assert direct_url(archive) == (
        '{"archive_info": {"hash": "sha256=' + "c" * 64 + '", "hashes": {"sha256": "'
        + "c" * 64 + '"}}, "subdirectory": "s", "url": "https://x.invalid/a.tar.gz"}'
    )  # fmt: skip


def test_fetch_checks_and_unpacks(tmp_path: Path) -> None:
    sdist = make_sdist(_tree(tmp_path / "demo"), tmp_path / "dist")
    digest = hash_file(sdist)[0]
    work = tmp_path / "work"
    work.mkdir()
    project, key = fetch_source("demo 1.0", BuildSource("sdist", sdist.as_uri(), digest), work)
    assert project == work / "src" / "demo-1.0"
    assert (project / "pyproject.toml").is_file()
    assert key == f"sdist:{digest}"
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(BuildError, match=r"^demo 1.0: file://.* has sha256 .*, the lock says"):
        fetch_source("demo 1.0", BuildSource("sdist", sdist.as_uri(), "0" * 64), other)
    assert list(other.iterdir()) == []  # refused before unpacking


def test_an_archive_escaping_its_directory_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil-1.0.tar.gz"
    payload = tmp_path / "payload"
    payload.write_text("x")
    with tarfile.open(evil, "w:gz") as archive:
        archive.add(payload, "../outside")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(BuildError, match=r"evil-1.0.tar.gz: not a readable sdist or archive"):
        fetch_source("evil 1.0", BuildSource("archive", evil.as_uri()), work)
    assert not (tmp_path / "outside").exists()


def test_git_needs_a_full_commit_the_repository_has(tmp_path: Path) -> None:
    repo = _tree(tmp_path / "repo")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=repo, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    work = tmp_path / "w1"
    work.mkdir()
    project, _ = fetch_source("demo 1.0", BuildSource("git", repo.as_uri(), commit=head), work)
    assert (project / "src" / "demo" / "__init__.py").read_text() == "X = 1\n"
    short = tmp_path / "w2"
    short.mkdir()
    with pytest.raises(BuildError, match=r"the lock pins no full commit id \('abc'\)"):
        fetch_source("demo 1.0", BuildSource("git", repo.as_uri(), commit="abc"), short)


def test_credentials_are_never_kept(tmp_path: Path) -> None:
    git = BuildSource("git", "https://user:tok3n@git.example/r", commit="a" * 40)
    assert "tok3n" not in (known_key(git) or "")
    assert direct_url(git) == (
        '{"url": "https://git.example/r", "vcs_info": {"commit_id": "' + "a" * 40
        + '", "vcs": "git"}}'
    )  # fmt: skip
    ssh = BuildSource("git", "ssh://git@git.example/r", commit="a" * 40)
    assert '"url": "ssh://git@git.example/r"' in (direct_url(ssh) or "")
