"""Find a TFLite interpreter: LiteRT first, then tflite-runtime, then TensorFlow.

LiteRT is the maintained runtime and the fastest here; tflite-runtime is what
older Raspberry Pi images carry; TensorFlow is only present on build machines.
"""

import importlib

from ..common.errors import EdgeAgentError

# (module, attribute path) in order of preference.
_CANDIDATES = (
    ("ai_edge_litert.interpreter", "Interpreter"),
    ("tflite_runtime.interpreter", "Interpreter"),
    ("tensorflow", "lite.Interpreter"),
)


def interpreter_class():
    """Return the first importable TFLite ``Interpreter`` class and its module name."""
    for module_name, attribute in _CANDIDATES:
        try:
            found = importlib.import_module(module_name)
        except ImportError:
            continue
        for part in attribute.split("."):
            found = getattr(found, part)
        return found, module_name.split(".")[0]
    raise EdgeAgentError(
        "no TFLite runtime is installed: install one of ai-edge-litert (recommended), "
        "tflite-runtime or tensorflow, e.g. `pip install ai-edge-litert`"
    )
