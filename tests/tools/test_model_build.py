import json

import numpy as np
import pytest

from edge_agent.agent.emotions import EmotionClassifier
from edge_agent.tools.model_build import WEIGHTS_SHA256, cached_weights, stratified_indices
from support import MODEL, TRAINING, needs, run_cli

pytestmark = needs(TRAINING)


@pytest.fixture(scope="module")
def built(tmp_path_factory, weights):
    """Two builds from the same inputs, small enough to be quick."""
    out = tmp_path_factory.mktemp("build")
    paths = []
    for name in ("a", "b"):
        path = out / name / "model.tflite"
        done = run_cli("model", "build", "--weights", weights, "--calibration", TRAINING,
                       "--samples", 70, "--candidates", 2, "--out", path)
        assert done.returncode == 0, done.stderr
        paths.append(path)
    return paths


def test_build_writes_a_full_integer_model_and_its_record(built):
    classifier = EmotionClassifier(built[0])
    assert classifier.input_dtype == np.int8 and classifier.output_dtype == np.int8
    record = json.loads(built[0].with_suffix(".json").read_text())
    assert record["sha256"] == classifier.sha256
    assert record["weights"]["sha256"] == WEIGHTS_SHA256
    assert record["calibration"]["faces"] == 70
    assert len(record["calibration"]["candidates"]) == 2


def test_build_is_reproducible(built):
    assert built[0].read_bytes() == built[1].read_bytes()


def test_built_model_agrees_with_the_shipped_one(built, publictest):
    images, _ = publictest
    fresh = EmotionClassifier(built[0]).probabilities(images).argmax(axis=1)
    shipped = EmotionClassifier(MODEL).probabilities(images).argmax(axis=1)
    assert (fresh == shipped).mean() > 0.93


def test_build_without_calibration_data_says_so(tmp_path, weights):
    done = run_cli("model", "build", "--weights", weights, "--calibration", tmp_path / "none.npz",
                   "--out", tmp_path / "m.tflite")
    assert done.returncode == 2
    assert "none.npz does not exist" in done.stderr
    assert not (tmp_path / "m.tflite").exists()


def test_calibration_faces_are_balanced_and_avoid_the_holdout():
    labels = np.repeat(np.arange(7), 100)
    holdout = np.arange(0, 700, 2)
    picked = stratified_indices(labels, 70, seed=1, exclude=holdout)
    assert np.bincount(labels[picked]).tolist() == [10] * 7
    assert not set(picked) & set(holdout)


def test_a_corrupt_cached_download_is_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "edge-agent").mkdir()
    (tmp_path / "edge-agent" / "emotion_model.hdf5").write_bytes(b"not the weights")
    assert cached_weights() is None
