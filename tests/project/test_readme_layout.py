"""The README's layout table and the package tree agree: every module is named, every name exists.

The table's first column holds paths from the repository's root; each must exist. A row for a
folder names what is in it in backticks: every backticked bare name in its second column
(``name`` for a module, ``name/`` for a folder) must be there. Every package under ``edge_agent/``
has a row, and that row names each of its modules and subpackages (``__init__.py`` aside).
"""

import re

import pytest

from support import REPO

README = (REPO / "README.md").read_text()
PACKAGE = REPO / "edge_agent"
BARE_NAME = re.compile(r"^[a-z_][a-z0-9_]*/?$")


def layout_rows():
    """``{path: description}`` for each row of the table under "## Layout" (paths of one cell split apart)."""
    section = README.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first, description = (cell.strip() for cell in line.strip().strip("|").split("|", 1))
        for path in re.findall(r"`([^`]+)`", first):
            rows[path] = description.rstrip("|").strip()
    return rows


ROWS = layout_rows()
FOLDER_ROWS = {path: description for path, description in ROWS.items() if path.endswith("/")}


def named(description):
    """The bare names a row's description gives in backticks: its modules (``x``) and folders (``x/``)."""
    return {name for name in re.findall(r"`([^`]+)`", description) if BARE_NAME.match(name)}


def contents(folder):
    """A package's modules (``x``) and subpackages (``x/``), ``__init__`` aside."""
    found = {path.stem for path in folder.glob("*.py") if path.name != "__init__.py"}
    return found | {f"{path.name}/" for path in folder.iterdir() if (path / "__init__.py").is_file()}


def packages():
    """Every package under edge_agent/, as a path from the repository's root ending in /."""
    return sorted(f"{init.parent.relative_to(REPO).as_posix()}/" for init in PACKAGE.rglob("*/__init__.py"))


def test_the_table_is_found_and_holds_the_sides():
    for side in ("common", "agent", "collector", "tools"):
        assert f"edge_agent/{side}/" in ROWS
    assert named(ROWS["edge_agent/agent/"]) >= {"faces", "outbox", "cli"}


@pytest.mark.parametrize("path", sorted(ROWS))
def test_every_path_in_the_table_exists(path):
    there = (REPO / path).is_dir() if path.endswith("/") else (REPO / path).exists()
    assert there, f"the README's layout names {path}, which is not there"


@pytest.mark.parametrize("path", sorted(FOLDER_ROWS))
def test_every_name_a_row_gives_is_in_its_folder(path):
    folder = REPO / path
    missing = sorted(name for name in named(FOLDER_ROWS[path])
                     if not ((folder / name).is_dir() if name.endswith("/") else (folder / f"{name}.py").is_file()))
    assert not missing, f"the README's layout row for {path} names {', '.join(missing)}, not in {path}"


@pytest.mark.parametrize("path", packages())
def test_every_package_has_a_row_naming_all_its_modules(path):
    assert path in ROWS, f"{path} has no row in the README's layout table"
    unnamed = sorted(contents(REPO / path) - named(ROWS[path]))
    assert not unnamed, f"the README's layout row for {path} does not name {', '.join(unnamed)}"
