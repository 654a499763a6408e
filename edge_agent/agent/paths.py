"""Where the bundled model files are, from a source checkout or an installed copy."""

import sys
from pathlib import Path


def models_dir():
    """The checkout's models/ when run from source, else where setup.py installs them."""
    checkout = Path(__file__).resolve().parents[2] / "models"
    return checkout if checkout.is_dir() else Path(sys.prefix) / "share" / "edge-agent" / "models"


DEFAULT_MODEL = models_dir() / "emotion_mini_xception_int8.tflite"
DEFAULT_CASCADE = models_dir() / "haarcascade_frontalface_default.xml"
