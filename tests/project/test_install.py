"""Each machine installs only its own side: fresh venvs, real dependency resolution, real commands.

`pip install .` is a Raspberry Pi (the edge-agent distribution); `pip install ./collector` is the
school server (edge-collector). The installed sizes are printed (`pytest -s` shows them).
"""

import json
import os
import re
import subprocess
import sys
import venv

import pytest

from support import source_copy

pytestmark = pytest.mark.install

# Distribution names normalised as PyPI does (lower case, runs of - _ . as one -).
SERVER_ONLY = {"sqlalchemy", "psycopg", "psycopg-binary", "jinja2", "matplotlib", "prometheus-client"}
PI_ONLY = {"opencv-python-headless", "opencv-python", "ai-edge-litert", "tflite-runtime"}
# The installed commands must find what the venv holds, not a checkout on PYTHONPATH.
INSTALLED_ONLY = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return source_copy(tmp_path_factory.mktemp("checkout") / "edge-agent")


def install(target, where):
    """A venv at ``where`` with ``target`` installed by pip, dependencies resolved; its distributions and size."""
    venv.create(where, with_pip=False)
    python = where / "bin" / "python"
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", str(target)],
                            capture_output=True, text=True, timeout=900)
    if result.returncode:
        pytest.skip(f"cannot install (no package index?): {result.stderr.strip()[-500:]}")
    listed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "list", "--format=json"],
                            capture_output=True, text=True, check=True, timeout=120)
    # pip lists a distribution under its own spelling: prometheus_client, not prometheus-client.
    names = {re.sub(r"[-_.]+", "-", entry["name"]).lower() for entry in json.loads(listed.stdout)}
    (site_packages,) = where.glob("lib/python*/site-packages")
    size = subprocess.run(["du", "-sm", str(site_packages)], capture_output=True, text=True, check=True).stdout
    return python, names, int(size.split()[0])


def test_a_pi_installs_the_agent_and_nothing_of_the_collector(source, tmp_path):
    python, names, size_mb = install(source, tmp_path / "pi")
    print(f"\npip install . (a Pi): {size_mb} MB of site-packages, {len(names)} distributions")
    assert "edge-agent" in names and "edge-collector" not in names
    assert not names & SERVER_ONLY
    assert {"opencv-python-headless", "ai-edge-litert", "numpy"} <= names
    for command in (["run", "--help"], ["check", "--help"]):
        result = subprocess.run([python.parent / "edge-agent", *command], capture_output=True, text=True, timeout=60,
                                env=INSTALLED_ONLY)
        assert result.returncode == 0 and result.stdout.startswith("usage: edge-agent"), result.stderr
    assert not (python.parent / "edge-collector").exists()


def test_a_server_installs_the_collector_and_nothing_of_the_agent(source, tmp_path):
    python, names, size_mb = install(source / "collector", tmp_path / "server")
    print(f"\npip install ./collector (a server): {size_mb} MB of site-packages, {len(names)} distributions")
    assert "edge-collector" in names and "edge-agent" not in names
    assert not names & PI_ONLY
    assert SERVER_ONLY - {"psycopg-binary"} <= names
    for command in (["--help"], ["run", "--help"], ["check", "--help"], ["report", "--help"]):
        result = subprocess.run([python.parent / "edge-collector", *command], capture_output=True, text=True,
                                timeout=60, env=INSTALLED_ONLY)
        assert result.returncode == 0 and result.stdout.startswith("usage: edge-collector"), result.stderr
    # Nothing of the agent's side came along.
    probe = subprocess.run([python, "-I", "-c", "import edge_agent.agent"], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
    assert probe.returncode == 1 and "No module named 'edge_agent.agent'" in probe.stderr
