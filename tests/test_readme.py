"""The README's layout section lists every module of store/ and vfs/, and nothing else.

The section is the map a newcomer reads the pipeline from; a module added, moved or removed
without it fails here, naming the module. Paths the README names anywhere must exist too.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PACKAGES = ("store", "vfs")


def layout_block(text: str) -> list[str]:
    """The lines of the first code block under '### Layout of the repository'."""
    section = text.split("### Layout of the repository\n", 1)[1].split("\n### ", 1)[0]
    return section.split("```\n", 2)[1].splitlines()


def listed_paths(lines: list[str]) -> dict[str, str]:
    """Each listed path (directories end in '/') and its description, from the indentation."""
    listed: dict[str, str] = {}
    parents: list[str] = []
    for line in lines:
        depth, rest = divmod(len(line) - len(line.lstrip(" ")), 2)
        assert rest == 0, f"indent by two spaces: {line!r}"
        name, _, description = line.strip().partition(" ")
        del parents[depth:]
        assert len(parents) == depth, f"no parent directory above {line!r}"
        path = "".join(parents) + name
        assert path not in listed, f"listed twice: {path}"
        listed[path] = description.strip()
        if name.endswith("/"):
            parents.append(name)
    return listed


def modules_on_disk() -> set[str]:
    """Every module of store/ and vfs/; a package stands for its __init__.py."""
    found = set()
    for package in PACKAGES:
        for module in (REPO / package).rglob("*.py"):
            relative = module.relative_to(REPO)
            if module.name == "__init__.py":
                found.add(f"{relative.parent}/")
            else:
                found.add(str(relative))
    return found


def test_the_layout_section_lists_exactly_the_modules() -> None:
    listed = listed_paths(layout_block(README.read_text()))
    on_disk = modules_on_disk()
    missing = sorted(on_disk - listed.keys())
    gone = sorted(listed.keys() - on_disk)
    assert not missing, f"modules the README's layout section does not list: {missing}"
    assert not gone, f"the README's layout section lists what does not exist: {gone}"
    assert all(listed.values()), "every line says what its module holds"


def test_every_path_the_readme_names_exists() -> None:
    named = set(re.findall(r"`((?:store|vfs|tests|bench|\.ci)/[\w./-]*)`", README.read_text()))
    assert named, "the README names some paths"
    assert not sorted(p for p in named if not (REPO / p).exists())


def test_the_checker_sees_a_missing_and_an_unknown_module() -> None:
    lines = layout_block(README.read_text())
    without_index = [line for line in lines if not line.strip().startswith("index.py ")]
    assert "store/index.py" not in listed_paths(without_index)
    extra = [*lines, "  ghost.py              nothing"]
    assert "vfs/ghost.py" in listed_paths(extra).keys() - modules_on_disk()
