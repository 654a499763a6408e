"""Classroom-like frames and `edge-agent bench classroom`, on the bundled MIT photo's face (no ../shared)."""

import json

import cv2
import numpy as np
import pytest

from edge_agent.tools.classroom import PlacedFace, Scene, build_scenes, score
from support import CASCADE, DATA, MODEL, SHIPPED, run_cli


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """Forty copies of the sample photo's face as 48x48 gray faces, all labelled happy."""
    photo = cv2.imread(str(DATA / "justin.jpg"), cv2.IMREAD_GRAYSCALE)
    x, y, w, h = max(cv2.CascadeClassifier(str(CASCADE)).detectMultiScale(photo, 1.1, 5), key=lambda f: f[2])
    face = cv2.resize(photo[y:y + h, x:x + w], (48, 48), interpolation=cv2.INTER_AREA)
    path = tmp_path_factory.mktemp("faces") / "faces.npz"
    np.savez(path, images=np.repeat(face[None], 40, 0), labels=np.full(40, 3, np.uint8))
    return path


def test_scenes_are_the_same_for_a_seed_with_back_rows_smaller(faces):
    with np.load(faces) as data:
        images, labels = data["images"], data["labels"]
    first, again = build_scenes(images, labels, 2, seed=5), build_scenes(images, labels, 2, seed=5)
    other = build_scenes(images, labels, 2, seed=6)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0].image, other[0].image)
    for scene in first:
        assert scene.image.shape == (720, 1280)
        assert 20 <= len(scene.faces) <= 40
        boxes = sorted(face.box for face in scene.faces)
        for i, (x, y, w, h) in enumerate(boxes):
            for bx, by, _, bh in boxes[i + 1:]:
                assert bx >= x + w or by >= y + h or y >= by + bh, "two faces pasted over each other"
        by_row = sorted(scene.faces, key=lambda face: face.box[1])
        top, bottom = by_row[:5], by_row[-5:]
        assert max(f.box[2] for f in top) < min(f.box[2] for f in bottom)


def test_score_counts_a_face_once_and_labels_only_on_faces_found():
    truth = [PlacedFace((100, 100, 40, 40), 3), PlacedFace((300, 100, 40, 40), 4),
             PlacedFace((600, 500, 100, 100), 0)]
    scene = Scene(np.zeros((720, 1280), np.uint8), truth)
    exact = score([scene], [([f.box for f in scene.faces], ["happy", "sad", "angry"])])
    assert exact["found"] == 1.0 and exact["accuracy"] == 1.0 and exact["false_detections"] == 0
    assert exact["recall"] == {"angry": 1.0, "happy": 1.0, "sad": 1.0}
    assert exact["interest_true"] == exact["interest_read"] == pytest.approx(1 / 3)
    assert exact["accuracy_by_width"] == {"small": (1.0, 2), "large": (1.0, 1)}
    # Two boxes on the first face, one nowhere: one match, two false detections, one face missed.
    mixed = score([scene], [([(100, 100, 40, 40), (102, 101, 40, 40), (900, 50, 40, 40), (600, 500, 100, 100)],
                             ["happy", "happy", "happy", "happy"])])
    assert mixed["found"] == pytest.approx(2 / 3) and mixed["false_detections"] == 2
    assert mixed["labelled"] == 2 and mixed["accuracy"] == 0.5
    assert mixed["found_by_size"]["32-47px"] == (0.5, 2) and mixed["found_by_size"]["96-120px"] == (1.0, 1)
    # The product reads every detection, false ones too; the truth is the faces found.
    assert mixed["interest_read"] == 1.0 and mixed["interest_true"] == 0.5
    assert mixed["accuracy_by_width"] == {"small": (1.0, 1), "large": (0.0, 1)}


def test_bench_classroom_labels_the_same_detections_with_each_model_with_and_without_flip(faces):
    done = run_cli("bench", "classroom", "--data", faces, "--frames", "2", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["rows"]
    # The baseline first, then the shipped model, each as deployed (*) and the other way.
    assert [(row["model"], row["flip_average"], row["deployed"]) for row in rows] == [
        (MODEL.name, False, True), (MODEL.name, True, False), (SHIPPED.name, False, False), (SHIPPED.name, True, True)]
    assert len({row["labelled"] for row in rows}) == 1 and rows[0]["labelled"] > 20
    assert rows[0]["found_by_size"]["48-63px"][0] == 1.0 and rows[0]["found_by_size"]["96-120px"][0] == 1.0
    for row in rows:
        assert row["false_detections"] == 0
        # One smiling face at every size: the baseline reads it happy on over 90% of the copies
        # found, the shipped model on 75%.
        assert row["accuracy"] > (0.9 if row["model"] == MODEL.name else 0.65), row["recall"]


def test_bench_classroom_names_missing_data(tmp_path):
    done = run_cli("bench", "classroom", "--data", tmp_path / "absent.npz")
    assert done.returncode == 2
    assert str(tmp_path / "absent.npz") in done.stderr and "does not exist" in done.stderr
