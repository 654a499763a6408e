import subprocess
import sys

import cv2
import numpy as np
import pytest

from edge_agent.agent.emotions import EmotionClassifier, pixel_to_model_input
from edge_agent.agent.faces import FaceDetector
from edge_agent.agent.paths import DEFAULT_MODEL
from edge_agent.common.contract import EMOTIONS
from edge_agent.common.errors import EdgeAgentError
from support import CASCADE, DATA, MODEL, SHIPPED, needs


def test_shipped_model_is_the_default_full_integer_with_one_gray_input_and_its_read_out():
    shipped = EmotionClassifier(SHIPPED)
    assert SHIPPED == DEFAULT_MODEL
    assert shipped.input_dtype == np.int8 and shipped.output_dtype == np.int8
    assert (shipped.input_height, shipped.input_width) == (44, 44)
    assert SHIPPED.stat().st_size < 1_000_000
    # Trained on the centred 44 of 48 px; mirrored and biased as its record says.
    assert shipped.read_out.inset == pytest.approx(2 / 48)
    assert shipped.flip_average and shipped.read_out.biased


def test_baseline_model_is_full_integer_with_one_gray_input(classifier):
    assert classifier.input_dtype == np.int8
    assert classifier.output_dtype == np.int8
    assert (classifier.input_height, classifier.input_width) == (64, 64)
    assert MODEL.stat().st_size < 200_000


def test_accuracy_on_publictest_faces(classifier, publictest):
    images, labels = publictest
    baseline = (classifier.probabilities(images).argmax(axis=1) == labels).mean()
    shipped = (EmotionClassifier(SHIPPED).probabilities(images).argmax(axis=1) == labels).mean()
    # On all of PublicTest: the baseline's float model 65.2%, the shipped model 69.4%; 500 faces
    # vary by a few points.
    assert baseline > 0.60
    assert shipped > 0.64 and shipped > baseline


def test_batch_and_single_calls_give_the_same_answer(classifier):
    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 256, (h, w), dtype=np.uint8) for h, w in rng.integers(30, 200, (40, 2))]
    batched = classifier.probabilities(crops)
    single = np.concatenate([classifier.probabilities([crop]) for crop in crops])
    np.testing.assert_array_equal(batched, single)
    assert [e.label for e in classifier.classify(crops)] == [EMOTIONS[k] for k in batched.argmax(axis=1)]


def test_batches_larger_than_one_call_are_split_and_kept_in_order(classifier):
    rng = np.random.default_rng(4)
    crops = list(rng.integers(0, 256, (150, 48, 48), dtype=np.uint8))
    whole = classifier.probabilities(crops)
    assert whole.shape == (150, len(EMOTIONS))
    np.testing.assert_array_equal(whole[100:], classifier.probabilities(crops[100:]))


# RSS growth (MB) while frames of 1 to 64 faces are labelled, in a fresh process.
GROWTH_AFTER_LOAD = f"""
import sys
import numpy as np
from edge_agent.agent.emotions import EmotionClassifier

def rss_mb():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) / 1024

classifier = EmotionClassifier({str(MODEL)!r})
if sys.argv[1] == "reserve":
    classifier.reserve()
before = rss_mb()
for faces in (1, 3, 7, 12, 30, 41, 64, 150):
    classifier.classify([np.full((60, 60), 90, np.uint8)] * faces)
print(rss_mb() - before)
"""


def growth_mb(mode):
    result = subprocess.run([sys.executable, "-c", GROWTH_AFTER_LOAD, mode], capture_output=True, text=True,
                            timeout=120, check=True)
    return float(result.stdout)


def test_a_reserved_classifier_takes_no_more_memory_when_a_fuller_class_comes_in():
    # Unreserved, the first frame of each face count's batch size makes another interpreter.
    assert growth_mb("lazy") > 10
    assert growth_mb("reserve") < 2


def test_input_quantization_round_trips_every_pixel_value(classifier):
    scale, zero_point = classifier.input_quantization
    quantized = classifier.preprocess([np.arange(256, dtype=np.uint8).reshape(16, 16)])
    # A 16x16 crop is resized, so check the table the resize output goes through instead.
    assert quantized.dtype == np.int8
    table = classifier._pixel_lut
    restored = (table.astype(np.float32) - zero_point) * scale
    # Pixel 0 is the one value that lands outside int8's range: its error is one full step.
    assert np.abs(restored[1:] - pixel_to_model_input(np.arange(1, 256))).max() <= scale / 2 + 1e-6
    assert abs(restored[0] - pixel_to_model_input(0)) <= scale + 1e-6


def test_output_dequantizes_to_probabilities(classifier):
    crops = list(np.random.default_rng(5).integers(0, 256, (10, 48, 48), dtype=np.uint8))
    probabilities = classifier.probabilities(crops)
    assert probabilities.min() >= 0 and probabilities.max() <= 1
    # Each of the seven int8 outputs is within half a step (1/256) of the float softmax.
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=7 / 256)


def test_crop_at_model_size_is_used_as_is_and_others_are_resized(classifier):
    crop64 = np.random.default_rng(6).integers(0, 256, (64, 64), dtype=np.uint8)
    np.testing.assert_array_equal(classifier.preprocess([crop64])[0, :, :, 0], classifier._pixel_lut[crop64])
    wide = cv2.resize(crop64, (128, 96))
    assert classifier.preprocess([wide]).shape == (1, 64, 64, 1)


def test_smiling_face_in_a_photo_is_happy(classifier):
    image = cv2.imread(str(DATA / "justin.jpg"))
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    boxes = FaceDetector(CASCADE).detect(gray)
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    [emotion] = classifier.classify([gray[y:y + h, x:x + w]])
    assert emotion.label == "happy" and emotion.p > 0.5


def test_photo_without_faces_gives_no_boxes():
    gray = cv2.imread(str(DATA / "no-faces.jpg"), cv2.IMREAD_GRAYSCALE)
    assert len(FaceDetector(CASCADE).detect(gray)) == 0


@pytest.mark.parametrize("shape", [(0, 0), (1, 1), (0, 40), (40, 1)])
def test_degenerate_crops_are_refused_with_their_size(classifier, shape):
    with pytest.raises(EdgeAgentError, match=r"face crop 1 is \d+x\d+ pixels"):
        classifier.classify([np.zeros((48, 48), np.uint8), np.zeros(shape, np.uint8)])


def test_color_and_float_crops_are_refused(classifier):
    with pytest.raises(EdgeAgentError, match="expected a 2-D gray image"):
        classifier.classify([np.zeros((48, 48, 3), np.uint8)])
    with pytest.raises(EdgeAgentError, match="expected uint8"):
        classifier.classify([np.zeros((48, 48), np.float32)])


def test_empty_batch_is_refused(classifier):
    with pytest.raises(EdgeAgentError, match="batch is empty"):
        classifier.classify([])


def test_missing_truncated_and_foreign_model_files_are_named(tmp_path):
    with pytest.raises(EdgeAgentError, match=r"nowhere\.tflite does not exist"):
        EmotionClassifier(tmp_path / "nowhere.tflite")
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(MODEL.read_bytes()[:5000])
    with pytest.raises(EdgeAgentError, match=r"truncated\.tflite cannot be loaded"):
        EmotionClassifier(truncated)
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(EdgeAgentError, match=r"empty\.tflite is 0 bytes"):
        EmotionClassifier(empty)
    foreign = tmp_path / "cascade.tflite"
    foreign.write_bytes(CASCADE.read_bytes())
    with pytest.raises(EdgeAgentError, match=r"cascade\.tflite is not a TFLite model"):
        EmotionClassifier(foreign)


def test_cascade_that_is_missing_or_not_a_cascade_is_named(tmp_path):
    with pytest.raises(EdgeAgentError, match=r"nowhere\.xml does not exist"):
        FaceDetector(tmp_path / "nowhere.xml")
    bogus = tmp_path / "bogus.xml"
    bogus.write_text("<?xml version='1.0'?><opencv_storage></opencv_storage>")
    with pytest.raises(EdgeAgentError, match=r"bogus\.xml is not an OpenCV cascade"):
        FaceDetector(bogus)


@needs(MODEL)
def test_model_with_a_color_input_is_refused(tmp_path):
    pytest.importorskip("tensorflow", reason="TensorFlow is needed to make a color-input model")
    from edge_agent.tools.keras_model import import_tensorflow

    tf, tf_keras = import_tensorflow()

    inputs = tf_keras.Input((64, 64, 3))
    outputs = tf_keras.layers.Dense(7, activation="softmax")(tf_keras.layers.GlobalAveragePooling2D()(inputs))
    path = tmp_path / "rgb.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tf_keras.Model(inputs, outputs)).convert())
    with pytest.raises(EdgeAgentError, match=r"rgb\.tflite takes input of shape \[1, 64, 64, 3\].*one gray channel"):
        EmotionClassifier(path)


def test_flip_average_is_the_mean_of_the_face_and_its_mirror_in_one_call():
    rng = np.random.default_rng(5)
    crops = list(rng.integers(0, 256, (40, 48, 48), dtype=np.uint8))
    plain = EmotionClassifier(MODEL)
    flipped = EmotionClassifier(MODEL, flip_average=True)
    expected = (plain.probabilities(crops) + plain.probabilities([crop[:, ::-1] for crop in crops])) / 2
    np.testing.assert_allclose(flipped.probabilities(crops), expected, atol=1e-6)
    # 40 faces and their 40 mirrors: two calls of at most 64 rows, not one per face or per mirror.
    calls = []
    original = flipped._invoke
    flipped._invoke = lambda batch: calls.append(len(batch)) or original(batch)
    flipped.probabilities(crops)
    assert calls == [64, 16]


@pytest.fixture(scope="module")
def model_48(tmp_path_factory):
    """A small int8 model with FER's own 48x48 input, built the way ``model build`` builds one."""
    pytest.importorskip("tensorflow", reason="the [model] extra (TensorFlow) is not installed")
    from edge_agent.tools.keras_model import import_tensorflow
    from edge_agent.tools.model_build import convert_int8
    from edge_agent.tools.train import Recipe, build_network

    _, tf_keras = import_tensorflow()
    network = build_network(Recipe(width=0.25), tf_keras)
    faces = np.random.default_rng(6).uniform(-1, 1, (20, 48, 48, 1)).astype(np.float32)
    path = tmp_path_factory.mktemp("m48") / "emotion_small_int8.tflite"
    path.write_bytes(convert_int8(network, faces))
    return path


def test_the_classifier_loads_48_and_64_pixel_models_and_resizes_crops_to_each(model_48):
    small = EmotionClassifier(model_48)
    assert (small.input_height, small.input_width) == (48, 48) and small.quantized
    crops = [np.full((90, 70), 128, np.uint8), np.zeros((48, 48), np.uint8)]
    assert small.preprocess(crops).shape == (2, 48, 48, 1)
    assert small.probabilities(crops).shape == (2, len(EMOTIONS))
    assert EmotionClassifier(MODEL).preprocess(crops).shape == (2, 64, 64, 1)
