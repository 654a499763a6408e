"""Where the bundled model files are, from a source checkout or an installed copy."""

import sys
from pathlib import Path


def models_dir():
    """The checkout's models/ when run from source, else where setup.py installs them."""
    checkout = Path(__file__).resolve().parents[2] / "models"
    return checkout if checkout.is_dir() else Path(sys.prefix) / "share" / "edge-agent" / "models"


# The model the agent labels faces with, trained here (models/MODEL_CARD.md).
DEFAULT_MODEL = models_dir() / "emotion_fer_gap9_fear_int8.tflite"
# The FER-2013 mini-Xception the product shipped before: the benches' baseline row.
BASELINE_MODEL = models_dir() / "emotion_mini_xception_int8.tflite"
DEFAULT_CASCADE = models_dir() / "haarcascade_frontalface_default.xml"
