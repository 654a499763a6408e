"""The package's three rooms: the agent and the collector import the common layer and never each other.

Read from the source (every import statement of every module, those inside functions too), and
proven by running each side with the other side's packages made unimportable.
"""

import ast
import subprocess
import sys
import textwrap

import pytest

from support import REPO

PACKAGE = REPO / "edge_agent"
# What only a Pi installs, and what only a server installs (matplotlib: the agent draws a chart
# only when `analyze --chart` asks, so it and the common layer's `pyplot()` may import it inside a
# function).
AGENT_ONLY = ("cv2", "numpy", "ai_edge_litert", "tflite_runtime", "tensorflow", "tf_keras")
COLLECTOR_ONLY = ("sqlalchemy", "psycopg", "jinja2", "matplotlib", "prometheus_client")


def module_name(path):
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path):
    """``(imported module, at module level)`` for every import in the file, relative ones made absolute."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            # `from . import x` may name a submodule: count each name as one.
            found += [(f"{target}.{alias.name}", id(node) in top_level) for alias in node.names]
    return found


def modules(side):
    return sorted((PACKAGE / side).rglob("*.py"))


def within(imported, *packages):
    return any(imported == package or imported.startswith(package + ".") for package in packages)


def test_every_side_has_modules():
    for side in ("common", "agent", "collector", "tools"):
        assert modules(side), side


@pytest.mark.parametrize("side, forbidden", [
    ("common", ("edge_agent.agent", "edge_agent.collector", "edge_agent.tools", *AGENT_ONLY,
                *(package for package in COLLECTOR_ONLY if package != "matplotlib"))),
    ("agent", ("edge_agent.collector", "sqlalchemy", "psycopg", "jinja2", "prometheus_client")),
    ("collector", ("edge_agent.agent", *AGENT_ONLY)),
])
def test_a_side_imports_neither_the_other_side_nor_its_packages(side, forbidden):
    wrong = [f"{path.relative_to(REPO)} imports {imported}"
             for path in modules(side) for imported, _ in imports(path) if within(imported, *forbidden)]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("side", ["agent", "collector"])
def test_developer_tools_are_imported_only_when_their_command_runs(side):
    eager = [f"{path.relative_to(REPO)} imports {imported} at module level" for path in modules(side)
             for imported, top in imports(path) if top and within(imported, "edge_agent.tools")]
    assert not eager, "\n".join(eager)


def test_the_agent_hands_its_developer_tools_over_in_one_place():
    """`edge-agent`'s tool verbs go to edge_agent.tools.cli whole; no other part of the agent imports a tool."""
    found = [f"{path.relative_to(REPO)} imports {imported}" for path in modules("agent")
             for imported, _ in imports(path) if within(imported, "edge_agent.tools")]
    assert found == ["edge_agent/agent/cli.py imports edge_agent.tools.cli.main"], "\n".join(found)
    tree = ast.parse((PACKAGE / "agent" / "cli.py").read_text(encoding="utf-8"))
    main = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main")
    assert any(isinstance(node, ast.ImportFrom) and node.module == "tools.cli" and node.level == 2
               for node in ast.walk(main)), "the agent's import of the tools is not in cli.main"


@pytest.mark.parametrize("side", ["agent", "common"])
def test_the_agent_draws_charts_only_on_request(side):
    """matplotlib is the collector's; the agent's `analyze --chart` imports it when asked, never at load."""
    eager = [f"{path.relative_to(REPO)} imports {imported} at module level"
             for path in modules(side) for imported, top in imports(path) if top and within(imported, "matplotlib")]
    assert not eager, "\n".join(eager)


BLOCKER = """
import sys

BLOCKED = {blocked!r}


class Blocked:
    # Stands for a package this machine does not install: importing it fails as if it were absent.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, Blocked())
"""


def run_without(blocked, code):
    script = BLOCKER.format(blocked=tuple(blocked)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)


IMPORT_ALL = """
import importlib
import pkgutil

for package in {packages!r}:
    module = importlib.import_module(package)
    for found in pkgutil.walk_packages(module.__path__, package + "."):
        importlib.import_module(found.name)
"""

RUN_CLI = """
import contextlib
import io
from {module} import main

for argv in {commands!r}:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit as exit:
            assert exit.code == 0, (argv, exit.code)
    assert out.getvalue().startswith("usage: "), (argv, out.getvalue())
print("ok")
"""


def test_the_collector_runs_without_the_agents_packages():
    """What a school server lacks: OpenCV, LiteRT (or any TFLite runtime), numpy."""
    code = IMPORT_ALL.format(packages=["edge_agent.common", "edge_agent.collector"]) + """
import edge_agent.tools.collector_bench
""" + RUN_CLI.format(module="edge_agent.collector.cli", commands=[
        ["--help"], ["run", "--help"], ["check", "--help"], ["dashboard", "--help"], ["report", "--help"],
        ["serve", "--help"], ["bench", "--help"], ["alert-rules", "--help"]])
    result = run_without(("cv2", "ai_edge_litert", "tflite_runtime", "tensorflow", "numpy"), code)
    assert result.returncode == 0 and result.stdout.endswith("ok\n"), result.stderr


def test_the_agent_runs_without_the_collectors_packages():
    """What a Pi lacks: SQLAlchemy, psycopg, Jinja2, matplotlib, prometheus_client."""
    code = IMPORT_ALL.format(packages=["edge_agent.common", "edge_agent.agent"]) + RUN_CLI.format(
        module="edge_agent.agent.cli", commands=[["--help"], ["run", "--help"], ["check", "--help"],
                                                 ["analyze", "--help"]])
    result = run_without(COLLECTOR_ONLY, code)
    assert result.returncode == 0 and result.stdout.endswith("ok\n"), result.stderr


def test_a_chart_without_matplotlib_says_what_to_install(tmp_path):
    code = f"""
from edge_agent.agent.charts import session_chart
from edge_agent.common.errors import EdgeAgentError

try:
    session_chart([], {str(tmp_path / 'chart.png')!r})
except EdgeAgentError as exc:
    print(exc)
"""
    result = run_without(COLLECTOR_ONLY, code)
    assert result.returncode == 0, result.stderr
    assert "pip install matplotlib" in result.stdout
    assert not (tmp_path / "chart.png").exists()


def test_blocking_works():
    """The blocker itself: a blocked package really cannot be imported."""
    result = run_without(("numpy",), "import numpy\n")
    assert result.returncode == 1 and "blocked by the test" in result.stderr


def test_module_names_are_read_right():
    assert module_name(PACKAGE / "agent" / "__init__.py") == "edge_agent.agent"
    found = dict(imports(PACKAGE / "agent" / "daemon.py"))
    assert found["edge_agent.common.contract.StatsPayload"] is True
    assert found["edge_agent.__version__"] is True
    assert ("edge_agent.tools.cli.main", False) in imports(PACKAGE / "agent" / "cli.py")
