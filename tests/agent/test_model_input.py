"""What the model is fed: pixels mapped to [-1, 1] as it was trained, checked without ../shared.

A wrong mapping (``x / 255`` instead of ``(x / 255 - 0.5) * 2``) still labels an obvious smile
happy, so these pin the mapping against the model's own input quantization, and run seven
committed faces (tests/data/faces, from the bundled samples) against the float network's calls:
the baseline mini-Xception's, and the shipped model's through its read-out.
"""

import json

import cv2
import numpy as np

from edge_agent.agent.emotions import EmotionClassifier, pixel_to_model_input
from edge_agent.common.contract import EMOTIONS
from support import REPO, SHIPPED

FACES = REPO / "tests" / "data" / "faces"


def test_pixels_map_linearly_onto_minus_one_to_one():
    pixels = np.array([0, 51, 102, 153, 204, 255])
    np.testing.assert_allclose(pixel_to_model_input(pixels), [-1.0, -0.6, -0.2, 0.2, 0.6, 1.0], atol=1e-6)


def test_the_model_was_calibrated_on_minus_one_to_one_and_black_to_white_spans_its_int8_range(classifier):
    scale, zero_point = classifier.input_quantization
    # The int8 codes the converter chose cover what it saw in calibration: [-1, 1], to a step.
    assert abs((-128 - zero_point) * scale + 1) <= scale
    assert abs((127 - zero_point) * scale - 1) <= scale
    table = classifier._pixel_lut
    assert table[0] == -128 and table[255] >= 126
    assert (np.diff(table.astype(int)) >= 0).all()
    # Every pixel lands within half a code of where training put it (pixel 0 clips: one code).
    trained = np.arange(256) / 127.5 - 1
    restored = (table.astype(np.float64) - zero_point) * scale
    assert np.abs(restored[1:] - trained[1:]).max() <= scale / 2 + 1e-6
    assert abs(restored[0] - trained[0]) <= scale + 1e-6


def load_faces():
    records = json.loads((FACES / "faces.json").read_text())
    crops = [cv2.imread(str(FACES / record["file"]), cv2.IMREAD_GRAYSCALE) for record in records]
    return records, crops


def test_committed_faces_get_the_float_networks_labels_and_probabilities(classifier):
    records, crops = load_faces()
    assert len(records) == 7 and all(crop is not None and crop.shape == (64, 64) for crop in crops)
    probabilities = classifier.probabilities(crops)
    labels = [EMOTIONS[k] for k in probabilities.argmax(axis=1)]
    assert labels == [record["label"] for record in records]
    reference = np.array([[record["reference"][label] for label in EMOTIONS] for record in records])
    # Quantization moves these faces' probabilities by at most 0.03; a wrong mapping, by 0.1 to 0.6.
    np.testing.assert_allclose(probabilities, reference, atol=0.06)



def test_the_shipped_model_reads_the_committed_faces_as_its_float_network_does_through_its_read_out():
    """The shipped int8 model, fed as deployed (inset, mirror, bias), against its float network fed the same way.

    A read-out left out moves these probabilities by 0.04 (the bias) to 0.41 (the mirror); int8
    rounding, by at most 0.014.
    """
    records, crops = load_faces()
    probabilities = EmotionClassifier(SHIPPED).probabilities(crops)
    assert [EMOTIONS[k] for k in probabilities.argmax(axis=1)] == [record["shipped_label"] for record in records]
    reference = np.array([[record["shipped_reference"][label] for label in EMOTIONS] for record in records])
    np.testing.assert_allclose(probabilities, reference, atol=0.025)
