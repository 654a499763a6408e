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
from edge_agent.agent.faces import FaceDetector, Scan
from edge_agent.agent.search import FORMAT, LearnedSearch, describe_state, plan_bands
from edge_agent.agent.search.learned import CONFIRM, search_seats
from edge_agent.agent.search.regions import Region, merge
from edge_agent.agent.search.seats import Seats
from edge_agent.common.config import ConfigError
from edge_agent.tools.classroom import build_lesson, build_scenes, faces_from_photos, match
from support import CASCADE, DATA, run_cli

CONTEXT = 1.6


@pytest.fixture(scope="module", autouse=True)
def one_opencv_thread():
    """OpenCV as the agent runs it (detector.threads: 1), for the module's frames as well. With more
    threads a frame's candidate boxes are grouped in the order the threads finish, so a face at the
    edge of min_neighbors comes and goes from run to run."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(before)


@pytest.fixture(scope="module")
def scenes():
    faces = faces_from_photos([DATA / "solvay_conference.jpg", DATA / "justin.jpg"], CASCADE, context=CONTEXT)
    return build_scenes(faces, np.zeros(len(faces), int), 6, seed=2, face_px=(34, 110), face_fraction=1 / CONTEXT)


@pytest.fixture(scope="module")
def lesson():
    """One lesson: the same students in the same seats, heads moving, nobody looking away or late."""
    faces = faces_from_photos([DATA / "solvay_conference.jpg", DATA / "justin.jpg"], CASCADE, context=CONTEXT)
    return build_lesson(faces, np.zeros(len(faces), int), 6, seed=2, face_px=(34, 110), face_fraction=1 / CONTEXT,
                        away_chance=0.0, late=0)


def justin(size=None):
    photo = cv2.imread(str(DATA / "justin.jpg"), cv2.IMREAD_GRAYSCALE)
    return cv2.resize(photo, size or (photo.shape[1] // 2, photo.shape[0] // 2), interpolation=cv2.INTER_AREA)


def frame_with(*places, photo=None):
    """A gray 1280x720 frame with the photo (a face) at each (x, y)."""
    photo = justin() if photo is None else photo
    frame = np.full((720, 1280), 128, np.uint8)
    for x, y in places:
        frame[y:y + photo.shape[0], x:x + photo.shape[1]] = photo
    return frame


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
    search = learned(scenes, seats=False)
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
    plain = plan_bands(faces, 1280, 720, 1.25, Scan())
    polluted = plan_bands([*faces, (640, 300, 600)], 1280, 720, 1.25, Scan())
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


def test_a_face_on_a_bands_edge_found_only_by_the_next_band_is_kept_once():
    # The top band cannot find this 99 px face; the bottom band's reach holds it whole, but its centre
    # (y 344) lies in the top band's rows, where each band used to leave it to the other.
    search = LearnedSearch(detector(), hand_bands=[(0.0, 0.5, 30, 60), (0.5, 1.0, 60, 130)])
    boxes = search.detect(frame_with((500, 255)))
    assert len(boxes) == 1 and abs(boxes[0, 1] + boxes[0, 3] / 2 - 344) < 10 and boxes[0, 2] > 90
    # Found by both bands, it is reported once.
    both = LearnedSearch(detector(), hand_bands=[(0.0, 0.5, 30, 130), (0.5, 1.0, 60, 130)])
    assert len(both.detect(frame_with((500, 255)))) == 1


def test_the_seat_settings_of_the_config_reach_the_agents_search():
    from edge_agent.agent.pipeline import FramePipeline

    config = parse_config("detector:\n  search:\n    seat_frames: 7\n    seat_reach: 0.9\n")
    seats = FramePipeline.from_config(config, keep_state=False).finder.seats
    assert (seats.keep, seats.reach) == (7, 0.9)
    off = parse_config("detector:\n  search:\n    seats: false\n")
    assert FramePipeline.from_config(off, keep_state=False).finder.seats is None


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


def test_seated_faces_are_kept_by_seat_searches_at_a_fraction_of_a_whole_frame(lesson):
    search = LearnedSearch(detector(), learn_frames=2, full_every=1000)
    # Nobody looks away or comes late: the n-th face of every frame is the same student.
    seated = set.intersection(*({i for i, _ in match(scene.faces, search.detect(scene.image))}
                                for scene in lesson[:2]))
    assert len(seated) > 10
    whole_pixels = search.searched_pixels / 2
    for scene in lesson[2:]:
        before = search.searched_pixels
        found = {i for i, _ in match(scene.faces, search.detect(scene.image))}
        assert search.last_search == "seats"
        assert seated <= found, "a student found in their seat is found there again"
        # Pixels understate the saving: each seat is searched only for sizes near its face.
        assert search.searched_pixels - before < whole_pixels / 2, "a seat search must look at a small part"
    assert search.full_searches == 2


def test_a_fine_scan_finds_the_small_faces_a_default_scan_misses_and_keeps_them_in_their_seats():
    """Back rows only: 26-40 px faces, which OpenCV scans at every other pixel unless enlarged."""
    faces = faces_from_photos([DATA / "solvay_conference.jpg", DATA / "justin.jpg"], CASCADE, context=CONTEXT)
    small = build_lesson(faces, np.zeros(len(faces), int), 4, seed=2, face_px=(26, 40), face_fraction=1 / CONTEXT,
                         away_chance=0.0, late=0)
    found = {}
    for fine in (False, True):
        search = LearnedSearch(FaceDetector(CASCADE, 1.1, 5, 30, fine_scan=fine), learn_frames=2, full_every=1000)
        found[fine] = [len(match(scene.faces, search.detect(scene.image))) for scene in small]
        assert search.last_search == "seats"
    faces_per_frame = len(small[0].faces)
    assert sum(found[True]) >= 1.2 * sum(found[False]), found
    assert min(found[True]) >= 0.8 * faces_per_frame, (found, faces_per_frame)
    # The seats keep what the fine whole-frame search found: they are searched finely too.
    assert min(found[True][2:]) >= max(found[True][:2]) - 1, found


def test_the_fine_scan_is_the_default_its_seats_reach_less_and_check_says_both():
    from edge_agent.agent.check import _search
    from edge_agent.agent.pipeline import FramePipeline

    default = parse_config("")
    fine = FramePipeline.from_config(default, keep_state=False)
    assert fine.detector.scan.fine and fine.finder.detector.scan.fine and fine.finder.seats.reach == 0.3
    assert _search(default).endswith("faces under 53 px scanned at every pixel (detector.fine_scan)")
    assert "searched 0.3 face widths around it" in _search(default)
    config = parse_config("detector:\n  fine_scan: false\n")
    coarse = FramePipeline.from_config(config, keep_state=False)
    assert not coarse.detector.scan.fine and coarse.finder.seats.reach == 0.4, "a coarse scan needs more room"
    assert "scanned at every other pixel (detector.fine_scan: false)" in _search(config)
    assert "searched 0.4 face widths around it" in _search(config)


def test_a_face_that_looks_away_is_found_again_in_its_seat_and_a_long_gone_seat_is_dropped():
    face = justin()
    away = cv2.GaussianBlur(face, (0, 0), face.shape[0] / 8)
    search = LearnedSearch(detector(), learn_frames=1, full_every=1000, seat_frames=5)
    seated, gone = frame_with((500, 400)), frame_with((500, 400), photo=away)
    assert len(search.detect(seated)) == 1
    assert [len(search.detect(gone)) for _ in range(3)] == [0, 0, 0]
    assert search.last_search == "seats" and len(search.seats) == 1, "looking away keeps the seat"
    before = search.searched_pixels
    back = search.detect(frame_with((503, 398)))
    assert len(back) == 1 and search.last_search == "seats" and search.full_searches == 1
    assert search.searched_pixels - before < 1280 * 720 / 10
    for _ in range(5):
        search.detect(gone)
    assert len(search.seats) == 0, "a seat empty for seat_frames is dropped"
    search.detect(gone)
    assert search.last_search == "bands"


def test_a_new_face_where_no_face_was_ever_seen_is_found_by_the_next_whole_frame_and_then_kept():
    search = LearnedSearch(detector(), learn_frames=1, full_every=4)
    assert len(search.detect(frame_with((100, 450)))) == 1
    # Far above the rows the bands know: the change there is not searched between whole frames.
    both = frame_with((100, 450), (900, 10))
    found = [len(search.detect(both)) for _ in range(6)]
    assert found[:3] == [1, 1, 1] and found[3:] == [2, 2, 2] and search.full_searches == 2
    assert search.last_search == "seats" and len(search.seats) == 2


def test_someone_sitting_down_between_whole_frames_is_found_in_that_frame():
    # Two students at the ends of a row: the bands span the room, the seats are its two ends.
    search = LearnedSearch(detector(), learn_frames=1, full_every=1000)
    assert len(search.detect(frame_with((100, 450), (1000, 450)))) == 2
    search.detect(frame_with((101, 451), (1000, 450)))
    arrived = search.detect(frame_with((100, 450), (1000, 450), (550, 440)))
    assert len(arrived) == 3 and search.last_search == "seats" and search.full_searches == 1
    assert len(search.seats) == 3, "the newcomer has a seat from now on"


def test_seats_most_students_left_are_dropped_for_the_bands_though_newcomers_came_in_the_same_frame():
    small = justin((96, 96))
    search = LearnedSearch(detector(), learn_frames=1, full_every=1000)
    row = [(x, 450) for x in range(0, 1200, 200)]
    assert len(search.detect(frame_with(*row, photo=small))) == 6
    # Four of six seats empty, two new students, one beyond the columns the bands were learned
    # over: as many faces as seats but two, and still most seats missed.
    moved = search.detect(frame_with(*row[:2], (500, 450), (1180, 450), photo=small))
    assert len(moved) == 4, "the bands' faces, and the newcomer only the seat search found"
    assert search.last_search == "bands", "newcomers found elsewhere do not stand for the students who left"
    assert len(search.seats) == 4, "the seats are where the students are now, none left empty"


def test_a_place_that_moves_without_a_face_is_searched_once_then_left_alone():
    search = LearnedSearch(detector(), learn_frames=1, full_every=1000)
    search.detect(frame_with((100, 450), (1000, 450)))
    search.detect(frame_with((100, 450), (1000, 450)))
    seat_only = search.searched_pixels - 1280 * 720
    costs = []
    for shade in (40, 220, 40, 220):
        frame = frame_with((100, 450), (1000, 450))
        frame[450:550, 550:650] = shade  # a bag moved about: no face
        before = search.searched_pixels
        assert len(search.detect(frame)) == 2 and search.last_search == "seats"
        costs.append(search.searched_pixels - before)
    assert costs[0] > seat_only * 1.5, "the first change is searched"
    assert max(costs[1:]) < seat_only * 1.1, "then, searched in vain, it is left alone"


def test_overlapping_seats_are_searched_as_one_region_and_each_face_reported_once():
    face = justin((150, 150))
    side_by_side = frame_with((300, 300), (445, 300), photo=face)
    search = LearnedSearch(detector(), learn_frames=1, full_every=1000, seat_reach=0.5)
    first = search.detect(side_by_side)
    assert len(first) == 2
    regions = search.seats.regions(1280, 720)
    assert len(regions) == 1, "the two seats' regions overlap, so they are searched as one"
    for _ in range(3):
        boxes = search.detect(side_by_side)
        assert search.last_search == "seats" and len(boxes) == 2
        (ax, ay, aw, ah), (bx, by, bw, bh) = boxes.tolist()
        assert ax + aw <= bx or bx + bw <= ax, "the same face twice"


class Recording(FaceDetector):
    """The detector, noting the face sizes each region is searched for."""

    def __init__(self):
        super().__init__(CASCADE, 1.1, 5, 30)
        self.asked = []

    def detect_regions(self, gray, regions, min_neighbors=None):
        self.asked.extend((min_face, max_face) for *_, min_face, max_face in regions)
        return super().detect_regions(gray, regions, min_neighbors)


def test_a_face_found_in_the_frame_before_is_looked_for_near_its_size_and_in_full_only_when_missed():
    face = justin()
    # The face turns away; the head and shoulders around it stay (a blur of the whole photo changed
    # enough around the seat to make the bands as cheap as the seats, and they were searched instead).
    away = face.copy()
    away[40:150, 40:150] = cv2.GaussianBlur(face, (0, 0), face.shape[0] / 8)[40:150, 40:150]
    recorder = Recording()
    search = LearnedSearch(recorder, learn_frames=1, full_every=1000)
    assert len(search.detect(frame_with((500, 400)))) == 1
    width = search.seats.seats[0].width
    recorder.asked.clear()
    assert len(search.detect(frame_with((502, 401)))) == 1 and search.last_search == "seats"
    assert recorder.asked == [(int(width / CONFIRM), int(np.ceil(width * CONFIRM)))], "found at its size: no more"
    width = search.seats.seats[0].width
    recorder.asked.clear()
    assert len(search.detect(frame_with((500, 400), photo=away))) == 0
    low, high = int(width / search.seats.margin), int(np.ceil(width * search.seats.margin))
    # The change where the face was may add a newcomer region to the full search's, for its rows' sizes.
    near, *full = recorder.asked
    assert near == (int(width / CONFIRM), int(np.ceil(width * CONFIRM)))
    assert len(full) == 1 and full[0][0] <= low and full[0][1] >= high, "missed: searched in full"
    recorder.asked.clear()
    assert len(search.detect(frame_with((501, 400)))) == 1
    assert len(recorder.asked) == 1 and recorder.asked[0][0] <= low and recorder.asked[0][1] >= high, \
        "not found in the frame before: the full search alone"


def test_a_face_found_near_its_size_is_not_reported_again_by_a_neighbours_full_search():
    face = justin((150, 150))
    both = frame_with((300, 300), (445, 300), photo=face)
    left, right = sorted(detector().detect(both).tolist())
    seats = Seats(reach=2.5)
    seats.update(np.array([right]), 0)
    seats.update(np.array([left]), 1)
    # The left face, found in frame 1, is searched near its size first and found. The right one
    # looks away: its seat is searched in full, and that region, reaching far, holds the left face.
    one_away = both.copy()
    one_away[300:450, 445:595] = cv2.GaussianBlur(face, (0, 0), 150 / 8)
    boxes, _ = search_seats(detector(), one_away, seats, 1, [], 4)
    assert len(boxes) == 1, f"the left face twice: {boxes.tolist()}"
    assert np.abs(boxes[0] - left).max() <= 3


def test_merged_regions_share_no_face_and_hold_every_region_asked():
    # The last: a large stray box over the first seats, for sizes none of them searches.
    asked = [Region(0, 0, 50, 50, 30, 40), Region(40, 40, 90, 90, 35, 50), Region(85, 0, 120, 45, 30, 36),
             Region(300, 300, 340, 340, 30, 36), Region(0, 0, 200, 200, 80, 120)]
    merged = merge(asked)
    assert len(merged) == 3, "the large box is searched apart: merged, its region would be searched for 30 px faces"
    assert all(not a.overlaps(b) for i, a in enumerate(merged) for b in merged[i + 1:])
    for region in asked:
        holder = [m for m in merged if m.left <= region.left and m.right >= region.right
                  and m.top <= region.top and m.bottom >= region.bottom
                  and m.min_face <= region.min_face <= region.max_face <= m.max_face]
        assert len(holder) == 1


def test_seats_stop_where_the_students_moved_and_the_bands_find_them(scenes):
    search = learned(scenes)
    boxes = search.detect(scenes[3].image)
    assert search.last_search == "bands", "strangers in every seat: the seats find too few, the bands take over"
    assert len(match(scenes[3].faces, boxes)) >= len(match(scenes[3].faces, search.detector.detect(scenes[3].image)))


def test_a_state_file_from_before_the_seats_is_used_and_other_formats_are_discarded(lesson, tmp_path, caplog):
    state = tmp_path / "face_search.json"
    first = LearnedSearch(detector(), learn_frames=2, full_every=1000, state_path=state, seats=False)
    for scene in lesson[:2]:
        first.detect(scene.image)
    first.close()
    written = json.loads(state.read_text())
    assert written["format"] == FORMAT and "seats" not in written, "seats last a lesson, never the file"

    again = LearnedSearch(detector(), learn_frames=2, full_every=1000, state_path=state)
    again.detect(lesson[2].image)
    again.detect(lesson[3].image)
    assert not again.learning() and again.full_searches == 1 and again.last_search == "seats"

    caplog.set_level(logging.WARNING)
    state.write_text(json.dumps({**written, "format": FORMAT - 1}))
    older = LearnedSearch(detector(), learn_frames=2, full_every=1000, state_path=state)
    older.detect(lesson[2].image)
    assert older.learning() and "learned with another format" in caplog.text and str(state) in caplog.text
