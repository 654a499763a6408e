"""The learned face search: bands where faces are, a full search that notices new places, its state file.

Frames are built from the faces of the bundled MIT photos pasted with a classroom's perspective
(small at the top, large at the bottom), so these tests need no ../shared.
"""

import json
import logging

import cv2
import numpy as np
import pytest

from edge_agent.agent.config import parse_config
from edge_agent.agent.faces import FaceDetector
from edge_agent.agent.search import LearnedSearch, describe_state, plan_bands
from edge_agent.common.config import ConfigError
from edge_agent.tools.classroom import build_scenes, faces_from_photos, match
from support import CASCADE, DATA, run_cli

CONTEXT = 1.6


@pytest.fixture(scope="module")
def scenes():
    faces = faces_from_photos([DATA / "solvay_conference.jpg", DATA / "justin.jpg"], CASCADE, context=CONTEXT)
    return build_scenes(faces, np.zeros(len(faces), int), 6, seed=2, face_px=(34, 110), face_fraction=1 / CONTEXT)


def detector():
    return FaceDetector(CASCADE, 1.1, 5, 30)


def learned(scenes, frames=3, **options):
    search = LearnedSearch(detector(), learn_frames=frames, full_every=1000, **options)
    for scene in scenes[:frames]:
        search.detect(scene.image)
    return search


def band_of(plan, box):
    centre = box[1] + box[3] / 2
    return next((band for band in plan.bands if band.top <= centre < band.bottom), None)


def test_bands_hold_each_face_where_it_was_put_small_at_the_top(scenes):
    search = learned(scenes)
    assert not search.learning() and search.full_searches == 3
    bands = search.plan.bands
    assert len(bands) >= 2
    assert bands[0].min_face < bands[-1].min_face and bands[0].max_face < bands[-1].max_face
    seen = [scene.faces[i] for scene in scenes[:3] for i, _ in match(scene.faces, search.detector.detect(scene.image))]
    for face in seen:
        band = band_of(search.plan, face.box)
        assert band is not None, f"no band holds the face at {face.box}"
        assert band.min_face <= face.box[2] <= band.max_face
        assert band.left <= face.box[0] and face.box[0] + face.box[2] <= band.right
    lowest = max(face.box[1] + face.box[3] for scene in scenes for face in scene.faces)
    assert bands[-1].bottom <= lowest + 720 / 16


def test_banded_search_finds_what_a_whole_frame_search_finds(scenes):
    search = learned(scenes)
    whole = banded = 0
    for scene in scenes[3:]:
        whole += len(match(scene.faces, search.detector.detect(scene.image)))
        boxes = search.detect(scene.image)
        banded += len(match(scene.faces, boxes))
    assert search.full_searches == 3, "the frames after learning must be searched in bands"
    assert banded >= whole > 30


def test_a_face_in_a_new_place_is_found_within_the_full_search_period(scenes):
    photo = cv2.imread(str(DATA / "justin.jpg"), cv2.IMREAD_GRAYSCALE)
    photo = cv2.resize(photo, (photo.shape[1] // 2, photo.shape[0] // 2), interpolation=cv2.INTER_AREA)
    height, width = photo.shape
    bottom_only = np.full((720, 1280), 128, np.uint8)
    bottom_only[450:450 + height, 100:100 + width] = photo
    search = LearnedSearch(detector(), learn_frames=2, full_every=4)
    for _ in range(2):
        assert len(search.detect(bottom_only)) == 1
    assert search.plan.bands[0].top > 300
    moved = np.full((720, 1280), 128, np.uint8)
    moved[20:20 + height, 900:900 + width] = photo
    found_at = [len(search.detect(moved)) for _ in range(4)]
    assert found_at[0] == 0, "the face's rows are outside every band until a full search"
    assert 1 in found_at
    assert found_at[found_at.index(1):] == [1] * (4 - found_at.index(1)), "once seen, the bands hold it"
    assert search.plan.bands[0].top < 50


def test_a_stray_huge_detection_does_not_widen_the_bands():
    faces = [(x, 100 + 20 * row, 30 + 8 * row) for row in range(10) for x in (100, 400, 700)]
    plain = plan_bands(faces, 1280, 720, 1.25)
    polluted = plan_bands([*faces, (640, 300, 600)], 1280, 720, 1.25)
    assert polluted == plain
    assert max(band.max_face for band in plain.bands) < 200


def test_state_survives_a_restart_and_is_discarded_after_a_resolution_change(scenes, tmp_path, caplog):
    state = tmp_path / "face_search.json"
    first = learned(scenes, state_path=state, camera="/dev/video0")
    first.close()
    assert json.loads(state.read_text())["frame"] == [1280, 720]
    assert "rows" in describe_state(state)

    again = LearnedSearch(detector(), learn_frames=3, full_every=1000, state_path=state, camera="/dev/video0")
    again.detect(scenes[3].image)
    again.detect(scenes[4].image)
    assert not again.learning() and again.full_searches == 1, "the second frame must already use the bands"

    caplog.set_level(logging.WARNING)
    wider = LearnedSearch(detector(), learn_frames=3, full_every=1000, state_path=state, camera="/dev/video0")
    wider.detect(cv2.resize(scenes[3].image, (1920, 1080)))
    assert wider.learning() and wider.full_searches == 1
    assert "learned with another frame" in caplog.text and str(state) in caplog.text


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": 1, "frame": [1280, 720]}),
                                     json.dumps({"format": 99, "frame": [1280, 720], "observations": [],
                                                 "learned_frames": 9})])
def test_a_damaged_or_foreign_state_file_is_relearned_with_a_warning(scenes, tmp_path, caplog, content):
    state = tmp_path / "face_search.json"
    state.write_text(content)
    caplog.set_level(logging.WARNING)
    search = LearnedSearch(detector(), learn_frames=3, full_every=1000, state_path=state)
    search.detect(scenes[0].image)
    assert search.learning()
    assert str(state) in caplog.text and "learning again" in caplog.text


def test_hand_set_bands_are_used_as_given(scenes):
    config = parse_config("detector:\n  search:\n    mode: bands\n    bands:\n"
                          "      - {top: 0.0, bottom: 0.5, min_face: 30, max_face: 70}\n"
                          "      - {top: 0.5, bottom: 1.0, min_face: 60, max_face: 130}\n")
    from edge_agent.agent.pipeline import FramePipeline

    search = FramePipeline.from_config(config).finder
    boxes = search.detect(scenes[0].image)
    assert search.full_searches == 0 and len(boxes) > 10
    assert [(b.top, b.bottom) for b in search.plan.bands] == [(0, 360), (360, 720)]


@pytest.mark.parametrize("bands, message", [
    ("[{top: 0.0, bottom: 0.6, min_face: 30, max_face: 70}, {top: 0.5, bottom: 1.0, min_face: 60, max_face: 130}]",
     "band 2 (top 0.5) overlaps band 1"),
    ("[{top: 0.0, bottom: 0.4, min_face: 30, max_face: 70}, {top: 0.5, bottom: 1.0, min_face: 60, max_face: 130}]",
     "leaving a gap after band 1"),
    ("[{top: 0.0, bottom: 1.2, min_face: 30, max_face: 70}]", "less than or equal to 1"),
    ("[{top: 0.0, bottom: 1.0, min_face: 90, max_face: 70}]", "smaller than min_face"),
])
def test_bad_hand_set_bands_are_refused_with_line_and_key(bands, message):
    text = f"device:\n  id: pi\ndetector:\n  search:\n    mode: bands\n    bands: {bands}\n"
    with pytest.raises(ConfigError) as error:
        parse_config(text, source="agent.yaml")
    assert "agent.yaml line 6" in str(error.value) and "detector.search.bands" in str(error.value)
    assert message in str(error.value)


def test_analyze_per_frame_names_each_image(tmp_path):
    for name in ("justin.jpg", "solvay_conference.jpg"):
        (tmp_path / name).write_bytes((DATA / name).read_bytes())
    done = run_cli("analyze", tmp_path, "--per-frame")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(line["source"] for line in lines) == sorted(str(tmp_path / n) for n in ("justin.jpg",
                                                                                          "solvay_conference.jpg"))
    assert {line["source"]: len(line["faces"]) for line in lines}[str(tmp_path / "justin.jpg")] == 1
