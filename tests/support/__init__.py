"""What many tests share: where the repository and its data are, and small helpers.

Tests import these (``from support import REPO, run_cli``); fixtures live in ``tests/conftest.py``.
``support.broker``, ``support.postgres``, ``support.container``, ``support.browser`` and
``support.ansible_lab`` start the real services the system tests run against.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "edge_agent" / "samples"
SHARED = REPO.parent / "shared"
PUBLICTEST = SHARED / "data" / "fer2013_publictest.npz"
TRAINING = SHARED / "data" / "fer2013_training.npz"
# The baseline mini-Xception: a plain model (no read-out in its record) for the classifier's mechanics.
MODEL = REPO / "models" / "emotion_mini_xception_int8.tflite"
# The model the agent ships with, read-out and all.
SHIPPED = REPO / "models" / "emotion_fer_gap9_fear_int8.tflite"
CASCADE = REPO / "models" / "haarcascade_frontalface_default.xml"
# What a copy of the checkout to build from leaves out: pip builds in place, and would take a
# stale build/ (modules long moved or deleted) into the wheel.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                    ".hypothesis", "demo-output", "tests")


def needs(path):
    return pytest.mark.skipif(not path.is_file(), reason=f"{path} is absent (../shared not beside the repo)")


def run_cli(*args, env=None):
    """Run ``edge-agent`` as a user would: a fresh process, its exit status and output."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.agent.cli", *map(str, args)],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})}, timeout=600,
    )


def source_copy(destination):
    """The checkout's sources copied to ``destination``, to build both distributions from."""
    shutil.copytree(REPO, destination, ignore=NOT_SOURCE)
    return destination


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port, timeout=0.2):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout=15):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
