"""uv.lock, selected the way ``uv sync --frozen`` installs it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pkgfs.store.lock import LockError, Selection, choose_wheels, read_lock
from pkgfs.store.lock.model import BuildSource
from tests.conftest import RunPkgfs
from tests.targets import cpython_linux

REG = 'source = { registry = "https://index.example/simple" }'


def _wheel(name: str, version: str, tag: str = "py3-none-any", digest: str = "0") -> str:
    filename = f"{name.replace('-', '_')}-{version}-{tag}.whl"
    return (
        f'{{ url = "https://files.example/{filename}", hash = "sha256:{digest * 64}", size = 100 }}'
    )


LOCK = f"""
version = 1
revision = 3
requires-python = ">=3.10"
resolution-markers = [
    "python_full_version >= '3.12'",
    "python_full_version < '3.12'",
]

[[package]]
name = "app"
version = "0.1.0"
source = {{ virtual = "." }}
dependencies = [
    {{ name = "httpx", extra = ["socks"] }},
    {{ name = "numpy", version = "1.26.4", source = {{ registry = "https://index.example/simple" }}, marker = "python_full_version < '3.12'" }},
    {{ name = "numpy", version = "2.1.0", source = {{ registry = "https://index.example/simple" }}, marker = "python_full_version >= '3.12'" }},
    {{ name = "pywin32", marker = "sys_platform == 'win32'" }},
]

[package.dev-dependencies]
dev = [{{ name = "pytest" }}]
docs = [{{ name = "sphinx" }}]

[[package]]
name = "httpx"
version = "0.28.1"
{REG}
dependencies = [{{ name = "idna" }}]
wheels = [{_wheel("httpx", "0.28.1")}]

[package.optional-dependencies]
socks = [{{ name = "socksio" }}]
brotli = [{{ name = "brotli" }}]

[[package]]
name = "idna"
version = "3.10"
{REG}
wheels = [{_wheel("idna", "3.10")}]

[[package]]
name = "socksio"
version = "1.0.0"
{REG}
wheels = [{_wheel("socksio", "1.0.0")}]

[[package]]
name = "brotli"
version = "1.1.0"
{REG}
wheels = [{_wheel("brotli", "1.1.0")}]

[[package]]
name = "numpy"
version = "1.26.4"
{REG}
resolution-markers = ["python_full_version < '3.12'"]
sdist = {{ url = "https://files.example/numpy-1.26.4.tar.gz", hash = "sha256:{"e" * 64}", size = 1 }}
wheels = [
    {_wheel("numpy", "1.26.4", "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64", "1")},
    {_wheel("numpy", "1.26.4", "cp311-cp311-macosx_11_0_arm64", "2")},
    {_wheel("numpy", "1.26.4", "cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64", "3")},
]

[[package]]
name = "numpy"
version = "2.1.0"
{REG}
resolution-markers = ["python_full_version >= '3.12'"]
wheels = [
    {_wheel("numpy", "2.1.0", "cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64", "4")},
]

[[package]]
name = "pywin32"
version = "306"
{REG}
wheels = [{_wheel("pywin32", "306", "cp311-cp311-win_amd64")}]

[[package]]
name = "pytest"
version = "8.3.0"
{REG}
wheels = [{_wheel("pytest", "8.3.0")}]

[[package]]
name = "sphinx"
version = "8.0.0"
{REG}
wheels = [{_wheel("sphinx", "8.0.0")}]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "uv.lock").write_text(LOCK)
    return tmp_path


def _selected(project: Path, minor: int = 11) -> list[tuple[str, str, str]]:
    target = cpython_linux(minor)
    lock = read_lock(project / "uv.lock", target)
    return [(w.name, w.version, w.filename) for w in choose_wheels(lock, target, None)]


def test_what_uv_sync_installs(project: Path) -> None:
    assert _selected(project) == [
        ("httpx", "0.28.1", "httpx-0.28.1-py3-none-any.whl"),
        ("idna", "3.10", "idna-3.10-py3-none-any.whl"),
        (
            "numpy",
            "1.26.4",
            "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        ),
        ("pytest", "8.3.0", "pytest-8.3.0-py3-none-any.whl"),  # the dev group, by default
        ("socksio", "1.0.0", "socksio-1.0.0-py3-none-any.whl"),  # httpx[socks]
    ]


def test_forked_versions_follow_the_target(project: Path) -> None:
    numpy = [s for s in _selected(project, minor=12) if s[0] == "numpy"]
    assert numpy == [
        ("numpy", "2.1.0", "numpy-2.1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    ]


def test_a_virtual_root_is_not_installed(project: Path) -> None:
    # uv: a virtual project (package = false, or no [build-system]) is not installed, and
    # says nothing about it; its dependencies are.
    lock = read_lock(project / "uv.lock", cpython_linux())
    assert lock.notes == []
    assert lock.editables == []
    assert "app" not in {p.name for p in lock.packages}


def test_an_editable_root_is_built_not_looked_up(project: Path) -> None:
    text = LOCK.replace(
        'source = {{ virtual = "." }}'.replace("{{", "{").replace("}}", "}"),
        'source = { editable = "." }',
    )
    (project / "uv.lock").write_text(text)
    lock = read_lock(project / "uv.lock", cpython_linux())
    assert [(e.name, e.version, e.path) for e in lock.editables] == [
        ("app", "0.1.0", project.absolute())
    ]
    assert "app" not in {p.name for p in lock.packages}


def _names(project: Path, **selection: object) -> set[str]:
    lock = read_lock(project / "uv.lock", cpython_linux(), Selection(**selection))  # type: ignore[arg-type]
    return {p.name for p in lock.packages}


def test_groups_and_extras_select_as_uv_sync(project: Path) -> None:
    base = {"httpx", "idna", "numpy", "socksio"}
    assert _names(project) == base | {"pytest"}  # dev, uv's default group
    assert _names(project, no_groups=("dev",)) == base  # --no-dev
    assert _names(project, groups=("docs",)) == base | {"pytest", "sphinx"}
    assert _names(project, no_default_groups=True, groups=("Docs",)) == base | {"sphinx"}
    assert _names(project, all_groups=True) == base | {"pytest", "sphinx"}
    assert _names(project, all_groups=True, no_groups=("docs",)) == base | {"pytest"}
    # --only-group: "The project and its dependencies will be omitted."
    assert _names(project, only_groups=("docs",)) == {"sphinx"}


def test_an_undefined_group_or_extra_is_refused(project: Path) -> None:
    with pytest.raises(
        LockError, match=r"uv.lock: no dependency group nope in the lock \(it has: dev, docs\)"
    ):
        _names(project, groups=("nope",))
    with pytest.raises(LockError, match=r"uv.lock: no extra cli in the lock \(it has: none\)"):
        _names(project, extras=("cli",))


def test_default_groups_from_the_project(project: Path) -> None:
    (project / "pyproject.toml").write_text('[tool.uv]\ndefault-groups = ["docs"]\n')
    names = [s[0] for s in _selected(project)]
    assert "sphinx" in names
    assert "pytest" not in names
    (project / "pyproject.toml").write_text('[tool.uv]\ndefault-groups = "all"\n')
    assert {"sphinx", "pytest"} <= {s[0] for s in _selected(project)}


def test_requires_python_is_checked(project: Path) -> None:
    (project / "uv.lock").write_text(
        LOCK.replace('requires-python = ">=3.10"', 'requires-python = ">=3.13"')
    )
    with pytest.raises(
        LockError, match=r"requires Python >=3.13; the target .* is 3.11.7: pass --python"
    ):
        read_lock(project / "uv.lock", cpython_linux())


def test_no_wheel_for_the_target_names_package_and_remedy(project: Path) -> None:
    target = cpython_linux(13)
    lock = read_lock(project / "uv.lock", target)
    with pytest.raises(LockError) as info:
        choose_wheels(lock, target, None)
    message = str(info.value)
    assert (
        "package numpy 2.1.0: no wheel for cp313-cp313-manylinux_2_28_x86_64 (Python 3.13.7)"
        in message
    )
    assert "the lock names no source pkgfs can build numpy from" in message


def test_sdist_only_package_is_built(project: Path) -> None:
    text = LOCK.replace(
        f"wheels = [{_wheel('idna', '3.10')}]",
        f'sdist = {{ url = "https://files.example/idna-3.10.tar.gz", hash = "sha256:{"f" * 64}", size = 1 }}',
    )
    (project / "uv.lock").write_text(text)
    target = cpython_linux()
    (idna,) = [
        w for w in choose_wheels(read_lock(project / "uv.lock", target), target, None)
        if w.name == "idna"
    ]  # fmt: skip
    assert idna.build == BuildSource("sdist", "https://files.example/idna-3.10.tar.gz", "f" * 64)
    assert idna.wheel.url is None


def test_git_directory_and_path_sources(project: Path) -> None:
    text = (
        LOCK.replace(
            f'name = "idna"\nversion = "3.10"\n{REG}\nwheels = [{_wheel("idna", "3.10")}]',
            'name = "idna"\nversion = "3.10"\nsource = { git = "https://git.example/idna?rev=main&subdirectory=py#abc" }',
        )
        .replace(
            f'name = "httpx"\nversion = "0.28.1"\n{REG}\n',
            'name = "httpx"\nversion = "0.28.1"\nsource = { directory = "../httpx" }\n',
        )
        .replace(f"wheels = [{_wheel('httpx', '0.28.1')}]", "")
    )
    (project / "uv.lock").write_text(text)
    target = cpython_linux()
    chosen: dict[str, BuildSource | None] = {
        w.name: w.build for w in choose_wheels(read_lock(project / "uv.lock", target), target, None)
    }
    assert chosen["idna"] == BuildSource(
        "git",
        "https://git.example/idna",
        commit="abc",
        requested_revision="main",
        subdirectory="py",
    )
    assert chosen["httpx"] == BuildSource("directory", (project.parent / "httpx").as_uri())


def test_local_wheel_path_is_relative_to_the_lock(project: Path) -> None:
    text = LOCK.replace(
        f'name = "idna"\nversion = "3.10"\n{REG}\nwheels = [{_wheel("idna", "3.10")}]',
        'name = "idna"\nversion = "3.10"\nsource = { path = "dist/idna-3.10-py3-none-any.whl" }\n'
        f'wheels = [{{ filename = "idna-3.10-py3-none-any.whl", hash = "sha256:{"9" * 64}" }}]',
    )
    (project / "uv.lock").write_text(text)
    target = cpython_linux()
    (idna,) = [
        w
        for w in choose_wheels(read_lock(project / "uv.lock", target), target, None)
        if w.name == "idna"
    ]
    assert idna.wheel.url == (project / "dist" / "idna-3.10-py3-none-any.whl").as_uri()
    assert idna.hashes == {"9" * 64}


def test_malformed_lock(project: Path) -> None:
    (project / "uv.lock").write_text("version = [")
    with pytest.raises(LockError, match=r"uv.lock: not valid TOML"):
        read_lock(project / "uv.lock", cpython_linux())
    (project / "uv.lock").write_text("version = 2\n")
    with pytest.raises(LockError, match=r"uv.lock version 2; pkgfs reads version 1"):
        read_lock(project / "uv.lock", cpython_linux())


IDNA = f'name = "idna"\nversion = "3.10"\n{REG}\nwheels = [{_wheel("idna", "3.10")}]'
HTTPX_DEPENDENCIES = 'dependencies = [{ name = "idna" }]'


def _malformed(old: str, new: str) -> str:
    assert old in LOCK
    return LOCK.replace(old, new, 1)


MALFORMED = {
    "wheel not a table": (
        _malformed(IDNA, IDNA.replace(f"[{_wheel('idna', '3.10')}]", '["x"]')),
        "package 'idna': wheels[0] must be a table",
    ),
    "wheels not an array": (
        _malformed(IDNA, IDNA.replace(f"[{_wheel('idna', '3.10')}]", '"x"')),
        "package 'idna': wheels must be an array of tables",
    ),
    "no version": (
        _malformed(IDNA, IDNA.replace('version = "3.10"\n', "")),
        "package 'idna': missing key 'version'",
    ),
    "no name": (
        _malformed(IDNA, IDNA.replace('name = "idna"\n', "")),
        "package[2]: missing key 'name'",
    ),
    "dependencies a string": (
        _malformed(HTTPX_DEPENDENCIES, 'dependencies = "x"'),
        "package 'httpx': dependencies must be an array of tables",
    ),
    "dependency without a name": (
        _malformed(HTTPX_DEPENDENCIES, 'dependencies = [{ version = "3.10" }]'),
        "package 'httpx': dependencies[0]: missing key 'name'",
    ),
    "extra a string": (
        _malformed('{ name = "httpx", extra = ["socks"] }', '{ name = "httpx", extra = "socks" }'),
        "package 'app': dependencies[0].extra must be an array of strings",
    ),
    "source a number": (
        _malformed(IDNA, IDNA.replace(REG, "source = 3")),
        "package 'idna': source must be a table",
    ),
    "source of no known kind": (
        _malformed(IDNA, IDNA.replace(REG, 'source = { ftp = "x" }')),
        "package 'idna': source has none of the keys registry, git, directory, editable,"
        " virtual, path, url",
    ),
    "no source": (
        _malformed(IDNA, IDNA.replace(REG + "\n", "")),
        "package 'idna': missing key 'source'",
    ),
    "hash a number": (
        _malformed(IDNA, IDNA.replace('hash = "sha256:' + "0" * 64 + '"', "hash = 5")),
        "package 'idna': wheels[0].hash must be a string",
    ),
    "size a string": (
        _malformed(IDNA, IDNA.replace("size = 100", 'size = "100"')),
        "package 'idna': wheels[0].size must be an integer",
    ),
    "sdist an array": (
        _malformed(IDNA, IDNA + '\nsdist = ["x"]'),
        "package 'idna': sdist must be a table",
    ),
    "extras not arrays": (
        _malformed('socks = [{ name = "socksio" }]', 'socks = { name = "socksio" }'),
        "package 'httpx': optional-dependencies.socks must be an array of tables",
    ),
    "a group not a table": (
        _malformed('dev = [{ name = "pytest" }]', 'dev = ["pytest"]'),
        "package 'app': dev-dependencies.dev[0] must be a table",
    ),
    "resolution markers a string": (
        _malformed(
            """resolution-markers = ["python_full_version >= '3.12'"]""",
            """resolution-markers = "python_full_version >= '3.12'\"""",
        ),
        "package 'numpy': resolution-markers must be an array of strings",
    ),
    "a marker that cannot be compared": (
        _malformed("marker = \"sys_platform == 'win32'\"", "marker = \"python_version ~= 'x'\""),
        "invalid marker \"python_version ~= 'x'\": Undefined <Op('~=')> on ",
    ),
    "package not a table": (
        'version = 1\nrequires-python = ">=3.10"\npackage = ["x"]\n',
        "package[0] must be a table",
    ),
    "package not an array": (
        'version = 1\nrequires-python = ">=3.10"\npackage = "x"\n',
        "package must be an array of tables",
    ),
    "requires-python a number": (
        _malformed('requires-python = ">=3.10"', "requires-python = 3.10"),
        "requires-python must be a string",
    ),
    "workspace members a string": (
        LOCK.replace('source = {{ virtual = "." }}', 'source = {{ editable = "app" }}')
        + '\n[manifest]\nmembers = "app"\n',
        "manifest.members must be an array of strings",
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_package_is_one_line_naming_the_key(
    pkgfs: RunPkgfs, project: Path, case: str
) -> None:
    text, message = MALFORMED[case]
    lock = project / "uv.lock"
    lock.write_text(text)
    result = pkgfs("lock", "show", "--lock", lock, "--python", sys.executable)
    assert (result.code, result.out) == (1, ""), result.err
    (line,) = result.err.splitlines()
    assert line.startswith(f"pkgfs: error: {lock}: {message}")


def test_default_groups_of_the_wrong_type(pkgfs: RunPkgfs, project: Path) -> None:
    (project / "pyproject.toml").write_text("[tool.uv]\ndefault-groups = 3\n")
    result = pkgfs("lock", "show", "--lock", project / "uv.lock", "--python", sys.executable)
    assert result.code == 1
    assert result.err == (
        f"pkgfs: error: {project / 'pyproject.toml'}:"
        ' tool.uv.default-groups must be "all" or an array of strings\n'
    )
    (project / "pyproject.toml").write_text('tool = "x"\n')  # no [tool.uv]: uv's defaults
    result = pkgfs("lock", "show", "--lock", project / "uv.lock", "--python", sys.executable)
    assert "Traceback" not in result.err


def test_a_virtual_workspace_root_installs_its_members(tmp_path: Path) -> None:
    # No project at the root: uv sync installs every member of [manifest]; an editable one
    # is built, a virtual one (package = false) is not installed, its dependencies are.
    (tmp_path / "uv.lock").write_text(f"""
version = 1
requires-python = ">=3.10"

[manifest]
members = ["lib-a", "tool-b"]

[[package]]
name = "lib-a"
version = "1.0"
source = {{ editable = "packages/lib-a" }}
dependencies = [{{ name = "idna" }}]

[[package]]
name = "tool-b"
version = "2.0"
source = {{ virtual = "packages/tool-b" }}
dependencies = [{{ name = "lib-a" }}, {{ name = "six" }}]

[[package]]
name = "idna"
version = "3.10"
{REG}
wheels = [{_wheel("idna", "3.10")}]

[[package]]
name = "six"
version = "1.0"
{REG}
wheels = [{_wheel("six", "1.0")}]
""")
    lock = read_lock(tmp_path / "uv.lock", cpython_linux())
    assert [(e.name, e.path) for e in lock.editables] == [("lib-a", tmp_path / "packages/lib-a")]
    assert {p.name for p in lock.packages} == {"idna", "six"}
    assert lock.index_urls == ["https://index.example/simple"]
