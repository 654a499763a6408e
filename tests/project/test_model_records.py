"""Every model file in models/ has a build record that says what it is, and the record is true."""

import hashlib
import json

import pytest

from edge_agent.agent.emotions import EmotionClassifier
from edge_agent.agent.paths import DEFAULT_MODEL
from edge_agent.common.contract import EMOTIONS
from support import REPO

MODELS = sorted((REPO / "models").glob("*.tflite"))


def test_the_default_model_is_one_of_the_files_with_a_record():
    assert DEFAULT_MODEL in MODELS and DEFAULT_MODEL.with_suffix(".json").is_file()


@pytest.mark.parametrize("model", MODELS, ids=[path.name for path in MODELS])
def test_a_model_files_record_matches_its_bytes_labels_and_input(model):
    record = json.loads(model.with_suffix(".json").read_text())
    data = model.read_bytes()
    assert record["model"] == model.name
    assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["size_bytes"] == len(data)
    assert record["labels"] == list(EMOTIONS)
    classifier = EmotionClassifier(model)
    side = f"{classifier.input_width}x{classifier.input_height}"
    # The resize the classifier does (emotions.resize_face), so a record never promises other pixels.
    assert f"cv2.resize (INTER_LINEAR_EXACT) to {side}," in record["preprocessing"], record["preprocessing"]
