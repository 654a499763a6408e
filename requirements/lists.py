"""Read by setup.py (the agent's distribution) and collector/setup.py (the collector's): what each
side installs, from the lists beside this file, and the version both carry.

Building either distribution must not import edge_agent (its dependencies are not there yet), so
the version is read from the package's __init__.py as text.
"""

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSION = re.search(r'__version__ = "(.+)"', (HERE.parent / "edge_agent" / "__init__.py").read_text()).group(1)


def requirements(*names: str) -> list[str]:
    """The requirement lines of requirements/<name>.txt for each name, without comments."""
    found = []
    for name in names:
        lines = (HERE / f"{name}.txt").read_text(encoding="utf-8").splitlines()
        found += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return found
