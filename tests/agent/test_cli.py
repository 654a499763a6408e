import json

import numpy as np
import pytest

from edge_agent.common.contract import EMOTIONS
from support import DATA, MODEL, SHIPPED, run_cli


@pytest.fixture
def faces_npz(tmp_path, publictest):
    images, labels = publictest
    path = tmp_path / "faces.npz"
    np.savez(path, images=images[:300], labels=labels[:300])
    return path


def test_evaluate_json_has_every_figure(faces_npz):
    done = run_cli("evaluate", "--model", MODEL, "--data", faces_npz, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["n"] == 300
    assert 0.55 < result["accuracy"] < 0.8
    assert set(result["per_class_recall"]) == set(EMOTIONS)
    confusion = np.array(result["confusion"])
    assert confusion.shape == (7, 7) and confusion.sum() == 300
    assert abs(np.trace(confusion) / 300 - result["accuracy"]) < 1e-9
    assert result["macro_recall"] == pytest.approx(
        np.mean([v for v in result["per_class_recall"].values() if v is not None]))
    assert result["ms_per_face"] > 0


def test_evaluate_report_for_people(faces_npz):
    done = run_cli("evaluate", "--data", faces_npz)
    assert done.returncode == 0, done.stderr
    for heading in ("accuracy", "macro recall", "recall per class", "confusion", "ms per face"):
        assert heading in done.stdout
    assert "surprise" in done.stdout


def test_evaluate_agreement_with_the_float_model(faces_npz, weights):
    done = run_cli("evaluate", "--model", MODEL, "--data", faces_npz, "--reference", weights, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["agreement"] > 0.93
    assert abs(result["reference_accuracy"] - result["accuracy"]) < 0.03
    assert result["disagreements"] == round((1 - result["agreement"]) * 300)
    assert 0 <= result["disagreements_where_reference_unsure"] <= result["disagreements"]


def test_the_shipped_model_agrees_with_its_float_network_read_through_the_same_read_out(faces_npz):
    done = run_cli("evaluate", "--data", faces_npz, "--reference", SHIPPED.with_name("emotion_fer_gap9_fear.h5"),
                   "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["model"] == str(SHIPPED)
    # 99.2% on all of PublicTest; the float network read without the inset, mirror and bias agrees on far fewer.
    assert result["agreement"] > 0.97
    assert abs(result["reference_accuracy"] - result["accuracy"]) < 0.02


@pytest.mark.parametrize("args, message", [
    (["--model", "nowhere.tflite", "--data", "x.npz"], "model file nowhere.tflite does not exist"),
    (["--data", "nowhere.npz"], "data file nowhere.npz does not exist"),
    (["--data", "README.md"], "README.md is not a readable npz"),
    (["--model", "models/haarcascade_frontalface_default.xml", "--data", "x.npz"], "is not a TFLite model"),
])
def test_evaluate_bad_input_exits_2_with_a_message(args, message):
    done = run_cli("evaluate", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_bench_pipeline_prints_each_search_beside_the_baselines_with_faces_found_by_size(weights):
    """The benchmark's wiring and tables, on the bundled photos and clip, a few frames each."""
    done = run_cli("bench", "pipeline", "--reference", weights, "--video", DATA / "test.mp4",
                   "--photo", DATA / "solvay_conference.jpg", "--photo", DATA / "justin.jpg", "--frames", "2",
                   "--learn-frames", "2", "--full-every", "2", "--every", "25", "--repeats", "1")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for frame in ("1280x720", "1920x1080"):
        assert f"random seats {frame}" in out and f"lesson {frame}: the same students in the same seats" in out
    assert "baseline (Haar 1.1/5/30, whole frame), after it" in out and "defaults (seats), after it" in out
    assert "24-31px" in out and ">=32px" in out and "after the first minute the defaults searched:" in out
    assert "coarse scan (seats), after it" in out and "after the first minute the coarse scan searched:" in out
    assert "previous default (width 960), after it" in out
    assert "% resizing copies for the cascade, " in out and "% choosing where to search" in out
    assert "test.mp4" in out and "peak resident memory of `edge-agent analyze`" in out


def test_bench_model_reports_every_way_side_by_side(weights):
    done = run_cli("bench", "model", "--reference", weights, "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)["rows"]}
    assert set(rows) == {
        "baseline: Keras float, predict() per face", "LiteRT float, 1 face per call",
        "LiteRT float, 32 faces per call", "mini_xception_int8, 1 face per call",
        "mini_xception_int8, 8 faces per call", "mini_xception_int8, 32 faces per call",
        "mini_xception_int8, 32 faces per call, flip-averaged",
        "mini_xception_int8, 32 faces per call, as deployed (unflipped)",
        "fer_gap9_fear_int8, 1 face per call", "fer_gap9_fear_int8, 8 faces per call",
        "fer_gap9_fear_int8, 32 faces per call", "fer_gap9_fear_int8, 32 faces per call, flip-averaged",
        "fer_gap9_fear_int8, 32 faces per call, as deployed (flip-averaged, biased)",
    }
    # The shipped model is timed against the baseline, as the agent runs each of them.
    shipped = rows["fer_gap9_fear_int8, 32 faces per call, as deployed (flip-averaged, biased)"]
    baseline = rows["mini_xception_int8, 32 faces per call, as deployed (unflipped)"]
    assert shipped["vs_first_model"] == pytest.approx(shipped["ms_per_face"] / baseline["ms_per_face"])
    assert all(row["ms_per_face"] > 0 for row in rows.values())
    assert all("speedup" in row for row in rows.values())


def test_bench_model_times_each_later_model_against_the_first_way_for_way(tmp_path):
    other = tmp_path / "emotion_candidate_int8.tflite"
    other.write_bytes(MODEL.read_bytes())
    record = json.loads(MODEL.with_suffix(".json").read_text())
    record["read_out"] = {"flip_average": True, "log_bias": [0.2, 0, 0, 0, 0, 0, 0]}
    other.with_suffix(".json").write_text(json.dumps(record))
    done = run_cli("bench", "model", "--model", MODEL, "--model", other, "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)["rows"]}
    first = [row for name, row in rows.items() if name.startswith("mini_xception_int8,")]
    later = {name: row for name, row in rows.items() if name.startswith("candidate_int8,")}
    assert len(first) == len(later) == 5
    assert not any("vs_first_model" in row for row in first)
    # As deployed, each model runs its own read-out: the candidate mirrors and biases, the first does neither.
    deployed = "candidate_int8, 32 faces per call, as deployed (flip-averaged, biased)"
    assert deployed in later
    for name, row in later.items():
        same_way = rows[name.replace("candidate_int8", "mini_xception_int8").replace(
            "(flip-averaged, biased)", "(unflipped)")]
        assert row["vs_first_model"] == pytest.approx(row["ms_per_face"] / same_way["ms_per_face"])
