"""The face search package's modules import one way: each only those its docstring lists before it.

Read from the source (every import, those inside functions too), in the order the package's own
docstring gives, so the docstring cannot drift from the code.
"""

import ast
import re

import edge_agent.agent.search as package
from support import REPO

FOLDER = REPO / "edge_agent" / "agent" / "search"
ORDER = re.findall(r":mod:`\.(\w+)`", package.__doc__)


def imported(name):
    """The package's modules that module ``name`` imports (relatively, as the package does)."""
    tree = ast.parse((FOLDER / f"{name}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            # `from .x import y`, or `from . import x`
            found |= {node.module} if node.module else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            absolute = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            assert not any((m or "").startswith("edge_agent.agent.search") for m in absolute), \
                f"{name} imports its own package absolutely"
    return found


def test_the_docstring_lists_every_module_once():
    modules = sorted(path.stem for path in FOLDER.glob("*.py") if path.name != "__init__.py")
    assert sorted(ORDER) == modules and len(set(ORDER)) == len(ORDER)


def test_each_module_imports_only_those_listed_before_it():
    wrong = [f"{name} imports {other}" for k, name in enumerate(ORDER)
             for other in imported(name) if other not in ORDER[:k]]
    assert not wrong, "\n".join(wrong)
