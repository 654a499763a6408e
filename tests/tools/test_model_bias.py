"""`edge-agent model bias`: a per-emotion bias chosen on classroom-like frames, written where the agent reads it."""

import json
import shutil

import cv2
import numpy as np
import pytest

from edge_agent.agent.config import DetectorConfig
from edge_agent.agent.emotions import EmotionClassifier
from edge_agent.agent.faces import FaceDetector
from edge_agent.common.contract import EMOTIONS
from edge_agent.tools.classroom import build_scenes, score
from edge_agent.tools.model_bias import read_frames
from support import MODEL, REPO, run_cli

FACES = REPO / "tests" / "data" / "faces"


@pytest.fixture(scope="module")
def sad_faces(tmp_path_factory):
    """The bundled test faces at 48x48, six of each, every one labelled sad: a class the model under-reads."""
    files = sorted(FACES.glob("*.png"))
    images = np.stack([cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (48, 48), interpolation=cv2.INTER_AREA)
                       for f in files for _ in range(6)])
    path = tmp_path_factory.mktemp("faces") / "sad.npz"
    np.savez(path, images=images, labels=np.full(len(images), EMOTIONS.index("sad"), np.uint8))
    return path


@pytest.fixture
def model(tmp_path):
    copy = tmp_path / MODEL.name
    shutil.copy(MODEL, copy)
    shutil.copy(MODEL.with_suffix(".json"), copy.with_suffix(".json"))
    return copy


def test_the_readings_score_as_the_classroom_bench_scores(sad_faces):
    with np.load(sad_faces) as data:
        images, labels = data["images"], data["labels"]
    classifier = EmotionClassifier(MODEL)
    readings = read_frames(classifier, images, labels, 2, seed=3)
    scenes = build_scenes(images, labels, 2, seed=3)
    detector = FaceDetector.from_config(DetectorConfig())
    results = []
    for scene in scenes:
        boxes = detector.detect(scene.image)
        results.append((boxes, [e.label for e in classifier.classify(detector.crops(scene.image, boxes))]))
    expected = score(scenes, results)
    got = readings.scores([0.0] * len(EMOTIONS))
    for key in ("accuracy", "macro_recall", "recall", "interest_true", "interest_read"):
        assert got[key] == pytest.approx(expected[key]), key


def test_a_bias_is_chosen_that_reads_the_under_read_emotion_and_the_agent_applies_it(sad_faces, model):
    kept = {k: v for k, v in json.loads(model.with_suffix(".json").read_text()).items() if k != "read_out"}
    done = run_cli("model", "bias", "--model", model, "--data", sad_faces, "--frames", "2", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    before, after = result["before"], result["after"]
    assert after["accuracy"] > before["accuracy"] + 0.15, (before, after)
    assert after["interest_read"] < before["interest_read"]
    assert result["log_bias"][EMOTIONS.index("neutral")] == 0.0
    assert result["log_bias"][EMOTIONS.index("sad")] > 0
    record = json.loads(model.with_suffix(".json").read_text())
    assert record["read_out"] == {"flip_average": False, "log_bias": result["log_bias"]}
    assert record["read_out_chosen_on"]["data"] == "sad.npz"
    assert {k: v for k, v in record.items() if k not in ("read_out", "read_out_chosen_on")} == kept
    # The agent's classifier now reads sad where the plain read-out did not.
    with np.load(sad_faces) as data:
        faces = list(data["images"])
    plain = EmotionClassifier(MODEL).probabilities(faces).argmax(axis=1)
    biased = EmotionClassifier(model).probabilities(faces).argmax(axis=1)
    assert (biased == EMOTIONS.index("sad")).sum() > (plain == EMOTIONS.index("sad")).sum()


def test_a_model_without_a_build_record_is_refused_before_any_work(sad_faces, tmp_path):
    bare = tmp_path / "bare.tflite"
    shutil.copy(MODEL, bare)
    done = run_cli("model", "bias", "--model", bare, "--data", sad_faces, "--frames", "1")
    assert done.returncode == 2
    assert f"{bare} has no build record" in done.stderr and "model build" in done.stderr
    assert not bare.with_suffix(".json").exists()
