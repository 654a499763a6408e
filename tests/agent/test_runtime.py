import subprocess
import sys
import textwrap

import pytest

from edge_agent.agent.runtime import interpreter_class
from edge_agent.common.errors import EdgeAgentError
from support import CASCADE, MODEL, REPO


def test_litert_is_preferred(monkeypatch):
    assert interpreter_class()[1] == "ai_edge_litert"


def test_falls_back_when_litert_is_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    try:
        cls, name = interpreter_class()
    except EdgeAgentError:
        pytest.skip("neither tflite-runtime nor tensorflow is installed to fall back to")
    assert name in ("tflite_runtime", "tensorflow")
    assert callable(cls)


def test_one_clear_message_when_no_runtime_is_installed(monkeypatch):
    for module in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime",
                   "tflite_runtime.interpreter", "tensorflow"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(EdgeAgentError, match="no TFLite runtime is installed.*ai-edge-litert"):
        interpreter_class()


def test_model_and_cascade_load_without_tensorflow_or_network():
    """On a Pi there is no TensorFlow, and a classroom may have no internet."""
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from edge_agent.agent.emotions import EmotionClassifier
        from edge_agent.agent.faces import FaceDetector
        classifier = EmotionClassifier({str(MODEL)!r})
        FaceDetector({str(CASCADE)!r})
        classifier.classify([np.zeros((48, 48), np.uint8)])
        assert "tensorflow" not in sys.modules, "tensorflow was imported"
        print("ok", classifier.runtime)
    """)
    command = [sys.executable, "-c", script]
    # A fresh network namespace has no route anywhere, not even loopback.
    isolated = subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0
    if isolated:
        command = ["unshare", "--net", *command]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok ai_edge_litert"
