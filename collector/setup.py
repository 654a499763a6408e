"""The edge-collector distribution: what the school server installs (`pip install ./collector`).

Built from the same package tree as the agent (../edge_agent), it carries only the common layer,
the collector and its benchmark, and installs only their dependencies: no OpenCV, no numpy, no
LiteRT. Build it from a checkout (pip builds it in place, where ../edge_agent is found).
"""

import runpy
from pathlib import Path

from setuptools import setup

REPO = Path(__file__).resolve().parent.parent
LISTS = runpy.run_path(str(REPO / "requirements" / "lists.py"))

setup(
    name="edge-collector",
    version=LISTS["VERSION"],
    description="Classroom emotion sensing: the school server's collector, store and dashboard",
    python_requires=">=3.11",
    # setuptools wants the package directory relative to this file.
    package_dir={"edge_agent": "../edge_agent"},
    packages=["edge_agent", "edge_agent.common", "edge_agent.collector"],
    # `edge-collector bench` (and `bench dashboard`) are the tools a server may run; the rest stays out.
    py_modules=["edge_agent.tools.collector_bench", "edge_agent.tools.dashboard_bench", "edge_agent.tools.localnet"],
    package_data={"edge_agent.collector": ["templates/*.html"]},
    install_requires=LISTS["requirements"]("common", "collector"),
    entry_points={"console_scripts": ["edge-collector=edge_agent.collector.cli:main"]},
)
