import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# TensorFlow must see this before its first import, whichever test imports it first.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "edge_agent" / "samples"
SHARED = REPO.parent / "shared"
PUBLICTEST = SHARED / "data" / "fer2013_publictest.npz"
TRAINING = SHARED / "data" / "fer2013_training.npz"
MODEL = REPO / "models" / "emotion_mini_xception_int8.tflite"
CASCADE = REPO / "models" / "haarcascade_frontalface_default.xml"


def pytest_configure(config):
    config.addinivalue_line("markers", "system: boots systemd containers and runs Ansible (deselect with -m 'not system')")


def needs(path):
    return pytest.mark.skipif(not path.is_file(), reason=f"{path} is absent (../shared not beside the repo)")


@pytest.fixture(scope="session")
def classifier():
    from edge_agent.emotions import EmotionClassifier

    return EmotionClassifier(MODEL)


@pytest.fixture(scope="session")
def publictest():
    """The first 500 PublicTest faces: enough for stable figures, quick to run."""
    if not PUBLICTEST.is_file():
        pytest.skip(f"{PUBLICTEST} is absent (../shared not beside the repo)")
    with np.load(PUBLICTEST) as data:
        return data["images"][:500], data["labels"][:500].astype(np.int64)


@pytest.fixture(scope="session")
def weights():
    """The float reference weights (fetched once by the setup script, checked by sha256)."""
    pytest.importorskip("tensorflow", reason="the [model] extra (TensorFlow) is not installed")
    from edge_agent.model_build import fetch_weights

    return fetch_weights()


def run_cli(*args, env=None):
    """Run ``edge-agent`` as a user would: a fresh process, its exit status and output."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *map(str, args)],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})}, timeout=600,
    )
