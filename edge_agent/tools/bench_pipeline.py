"""Milliseconds per frame of our face finding and pipeline against the baseline's, on the same frames in one run.

The baseline's pipeline: Haar (1.1, 5, 30) on the full frame, then one Keras ``predict()`` per
face. Ours: the learned search (see :mod:`edge_agent.agent.search`), then every face of the
frame in one int8 interpreter call. Everything runs on one thread. Faces found are compared too:
a faster search that misses faces would be no gain.

Classroom-like frames are built from the faces the cascade finds in real photos, pasted with
their surroundings and a classroom's perspective, two ways: random seats (new students in new
seats every frame, :func:`edge_agent.tools.classroom.build_scenes`: what no room does, and the
worst case for a search that remembers where faces were) and a lesson (the same students in the
same seats, heads moving, some looking away, a few late, :func:`edge_agent.tools.classroom.build_lesson`).
Every search runs on each frame in turn, so a busy machine slows them alike.
"""

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..agent.capture import Frame, OpenCVSource, sample_frames
from ..agent.emotions import EmotionClassifier
from ..agent.faces import FaceDetector
from ..agent.pipeline import FramePipeline
from ..agent.search import LearnedSearch
from .classroom import SIZE_BUCKETS, Scene, build_lesson, build_scenes, faces_from_photos, score
from .keras_model import model_inputs

BASELINE_DETECTOR = {"scale_factor": 1.1, "min_neighbors": 5, "min_size": 30}
# The default before the learned search: whole frames shrunk to 960 px wide.
BEFORE_WIDTH = 960
CONTEXT = 1.6


# The six faces of the group photo (solvay_conference.jpg), boxes (x, y, w, h); the photo
# itself marks them with rectangles.
PHOTO_FACES = ((854, 68, 102, 102), (593, 60, 102, 102), (224, 69, 124, 124), (763, 163, 124, 124),
               (359, 176, 139, 139), (39, 177, 111, 111))


def classroom_frame(photo_path, width=1280, height=720, tile_height=360):
    """A 1280x720 frame of a crowded room, the group photo shrunk and tiled (faces ~40 px wide),
    and the boxes of the faces that lie wholly inside it."""
    photo = cv2.imread(str(photo_path))
    if photo is None:
        raise FileNotFoundError(photo_path)
    scale = tile_height / photo.shape[0]
    tile = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    tile_h, tile_w = tile.shape[:2]
    row = np.concatenate([tile] * (width // tile_w + 1), axis=1)[:, :width]
    frame = np.concatenate([row] * (height // tile_h + 1), axis=0)[:height]
    faces = []
    for top in range(0, height, tile_h):
        for left in range(0, width, tile_w):
            for x, y, w, h in PHOTO_FACES:
                box = (left + round(x * scale), top + round(y * scale), round(w * scale), round(h * scale))
                if box[0] + box[2] <= width and box[1] + box[3] <= height:
                    faces.append(box)
    return frame, faces


def video_frames(path, every=1):
    """Decoded frames of a video, every ``every``-th one, and the mean decode time in ms."""
    started = time.perf_counter()
    with OpenCVSource(str(path), realtime=False, start_time=0.0) as source:
        frames = [frame.image for frame in sample_frames(source, 0)]
    decode_ms = (time.perf_counter() - started) / max(1, len(frames)) * 1000
    return frames[::every], decode_ms


class BaselinePipeline:
    """The original project's per-frame work, written the way it did it."""

    def __init__(self, cascade_path, keras_model):
        self.cascade = cv2.CascadeClassifier(str(cascade_path))
        self.model = keras_model

    def process(self, image):
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        boxes = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
        boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
        for x, y, w, h in boxes:
            self.model.predict(model_inputs(self.model, [gray[y:y + h, x:x + w]]), verbose=0).argmax()
        return boxes


def iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def distinct(boxes, threshold=0.2):
    """One box per face: Haar sometimes reports a face twice, as two overlapping boxes."""
    kept = []
    for box in sorted(map(tuple, boxes), key=lambda b: -b[2] * b[3]):
        if all(iou(box, other) < threshold for other in kept):
            kept.append(box)
    return kept


def matched(found, reference, threshold=0.5):
    """How many boxes of ``reference`` have a box in ``found`` overlapping by IoU >= threshold."""
    return sum(any(iou(r, f) >= threshold for f in found) for r in reference)


def time_frames(process, frames, repeats):
    """Median ms per frame over ``repeats`` passes, and the boxes of the last pass."""
    process(frames[0])
    passes, boxes = [], []
    for _ in range(repeats):
        boxes = []
        started = time.perf_counter()
        for image in frames:
            boxes.append(process(image))
        passes.append((time.perf_counter() - started) / len(frames) * 1000)
    return float(np.median(passes)), boxes


def compare(frames, baseline, ours, repeats, true_faces=None):
    """Baseline and ours on the same frames: ms per frame, faces, and our own overhead share.

    With ``true_faces`` (boxes per frame) both are scored against them; without, against the
    distinct faces the baseline found.
    """
    baseline_ms, baseline_boxes = time_frames(baseline.process, frames, repeats)
    ours.detector.cascade_seconds = ours.classifier.invoke_seconds = 0.0
    wall = [0.0]

    def ours_process(image):
        started = time.perf_counter()
        result = ours.process(Frame(image, 0.0, 0))
        wall[0] += time.perf_counter() - started
        return np.array([face.box for face in result.faces], dtype=np.int64).reshape(-1, 4)

    ours_ms, ours_boxes = time_frames(ours_process, frames, repeats)
    inner = ours.detector.cascade_seconds + ours.classifier.invoke_seconds
    reference = true_faces if true_faces is not None else [distinct(boxes) for boxes in baseline_boxes]
    return {
        "frames": len(frames),
        "baseline_ms": baseline_ms, "ours_ms": ours_ms, "speedup": baseline_ms / ours_ms,
        "reference": "true faces" if true_faces is not None else "faces the baseline found",
        "reference_faces": sum(len(r) for r in reference),
        "baseline_found": sum(matched(s, r) for s, r in zip(baseline_boxes, reference, strict=True)),
        "ours_found": sum(matched(o, r) for o, r in zip(ours_boxes, reference, strict=True)),
        "baseline_detections": sum(len(b) for b in baseline_boxes),
        "ours_detections": sum(len(b) for b in ours_boxes),
        "overhead_pct": 100.0 * (wall[0] - inner) / wall[0] if wall[0] else 0.0,
    }


def analyze_rss_mb(video, config_text: str) -> float:
    """Peak resident memory of ``edge-agent analyze`` on a video with this config, in its own process."""
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "agent.yaml"
        config.write_text(config_text)
        child = subprocess.Popen([sys.executable, "-m", "edge_agent.agent.cli", "analyze", str(video),
                                  "--sample-fps", "0", "--json", "--config", str(config)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # wait4 gives this child's own peak, where getrusage(RUSAGE_CHILDREN) keeps the highest of all.
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"edge-agent analyze {video} exited {child.returncode}")
    return usage.ru_maxrss / 1024


@dataclass(frozen=True)
class Classroom:
    """Faces cut from photos, and the size of the frames the benches build from them."""

    faces: np.ndarray
    frames: int
    width: int
    height: int
    seed: int = 0

    def random_seats(self) -> list[Scene]:
        return build_scenes(self.faces, np.zeros(len(self.faces), int), self.frames, width=self.width,
                            height=self.height, seed=self.seed, face_fraction=1 / CONTEXT)

    def lesson(self, frames: int) -> list[Scene]:
        return build_lesson(self.faces, np.zeros(len(self.faces), int), frames, width=self.width,
                            height=self.height, seed=self.seed, face_fraction=1 / CONTEXT)


def classroom_scenes(photos, cascade, frames: int, width: int, height: int, seed: int = 0) -> Classroom:
    """Frames of 20-40 faces of 24-120 px cut from ``photos``: ``frames`` with random seats, and a lesson."""
    # One thread from the start: with more, the cascade's grouping can differ, and so the faces cut.
    cv2.setNumThreads(1)
    faces = faces_from_photos(photos, cascade, context=CONTEXT)
    if not len(faces):
        raise ValueError(f"no face found in {', '.join(map(str, photos))}")
    return Classroom(faces, frames, width, height, seed)


def _found(scenes: list[Scene], boxes: list) -> dict:
    result = score(scenes, [(b, ["neutral"] * len(b)) for b in boxes])
    return {"found": result["found"], "found_by_size": result["found_by_size"],
            "false_detections": result["false_detections"]}


def _own_work(search: LearnedSearch, wall: float) -> dict:
    """A search's own work (all but detectMultiScale) as a share of its ``wall`` seconds, and the part of it
    spent resizing copies for the cascade (work OpenCV would do inside detectMultiScale, slower)."""
    if not wall:
        return {"overhead_pct": 0.0, "resize_pct": 0.0}
    return {"overhead_pct": 100.0 * (wall - search.cascade_seconds) / wall,
            "resize_pct": 100.0 * search.detector.resize_seconds / wall}


def _own_work_split(row: dict) -> str:
    return (f"{row['resize_pct']:.1f}% resizing copies for the cascade, "
            f"{row['overhead_pct'] - row['resize_pct']:.1f}% choosing where to search")


def _time_finders(scenes: list[Scene], finders: dict, searches: dict, learn_frames: int):
    """Each finder on each scene in turn: ms per frame and boxes per finder; per learned search, its
    wall time after learning (its counters restart there too) and the kind of search of each frame."""
    ms = {name: [] for name in finders}
    boxes = {name: [] for name in finders}
    kinds = {name: [] for name in searches}
    walls = dict.fromkeys(searches, 0.0)
    for number, scene in enumerate(scenes):
        if number == learn_frames:
            for name, search in searches.items():
                search.detector.cascade_seconds = search.detector.resize_seconds = walls[name] = 0.0
        for name, detect in finders.items():
            started = time.perf_counter()
            boxes[name].append(detect(scene.image))
            ms[name].append((time.perf_counter() - started) * 1000)
            if name in searches:
                walls[name] += ms[name][-1] / 1000
                kinds[name].append(searches[name].last_search)
    return ms, boxes, walls, kinds


def bench_lesson(scenes: list[Scene], cascade, learn_frames: int, full_every: int) -> dict:
    """The baseline's search, the previous default, the default learned search and the same with a coarse
    scan, frame by frame, through one lesson.

    The learning frames (the agent's first minute, whole frames) are reported apart from the rest,
    which holds one whole-frame search in ``full_every`` as the agent does.
    """
    cv2.setNumThreads(1)
    baseline = FaceDetector(cascade, detect_width=0, **BASELINE_DETECTOR)
    before = FaceDetector(cascade, detect_width=BEFORE_WIDTH, **BASELINE_DETECTOR)
    searches = {name: LearnedSearch(FaceDetector(cascade, detect_width=0, fine_scan=name != "coarse",
                                                 **BASELINE_DETECTOR),
                                    learn_frames=learn_frames, full_every=full_every)
                for name in ("ours", "coarse")}
    finders = {"baseline": baseline.detect, "before": before.detect,
               **{name: search.detect for name, search in searches.items()}}
    ms, boxes, walls, kinds = _time_finders(scenes, finders, searches, learn_frames)
    parts = {"first": slice(0, learn_frames), "rest": slice(learn_frames, None)}
    rows = {name: {part: {"ms": float(np.mean(ms[name][cut])), **_found(scenes[cut], boxes[name][cut])}
                   for part, cut in parts.items()} for name in ms}
    for name, search in searches.items():
        rest = kinds[name][learn_frames:]
        rows[name].update(
            searches={kind: rest.count(kind) for kind in ("whole", "seats", "bands")},
            seats_ms=float(np.mean([m for m, k in zip(ms[name][learn_frames:], rest, strict=True)
                                    if k == "seats"] or [0.0])),
            seats=len(search.seats),
            **_own_work(search, walls[name]))
    height, width = scenes[0].image.shape
    return {"frame": f"{width}x{height}", "frames": len(scenes), "learn_frames": learn_frames,
            "full_every": full_every, "faces": sum(len(s.faces) for s in scenes[learn_frames:]), **rows}


# Faces this wide and wider are the ones a classroom's search must find nearly all of.
MOST_FACES_PX = 32


def _by_size_cells(row: dict) -> str:
    """A row's share of faces found in each size bucket, then of all faces MOST_FACES_PX wide and
    wider, as table cells ("-" where there were none)."""
    buckets = row["found_by_size"].values()  # in SIZE_BUCKETS' order (classroom.score)
    wide = [(share, n) for (low, _), (share, n) in zip(SIZE_BUCKETS, buckets, strict=True)
            if low >= MOST_FACES_PX and n]
    shares = [share for share, _ in buckets]
    shares.append(sum(share * n for share, n in wide) / sum(n for _, n in wide) if wide else None)
    return "".join(f"{100 * share:9.0f}%" if share is not None else f"{'-':>10}" for share in shares)


def _size_headers(sizes) -> str:
    return "".join(f"{s:>10}" for s in [*sizes, f">={MOST_FACES_PX}px"])


def format_lesson(result: dict) -> str:
    sizes = list(result["baseline"]["rest"]["found_by_size"])
    lines = [f"lesson {result['frame']}: the same students in the same seats, {result['frames']} frames, the first "
             f"{result['learn_frames']} (learning: whole frames) apart; one thread",
             f"  {'search':<50}{'frames':>7}{'ms/frame':>9}{'x base':>7}{'found':>7}"
             + _size_headers(sizes) + f"{'false':>7}"]
    labels = {"baseline": "baseline (Haar 1.1/5/30, whole frame)", "before": f"previous default (width {BEFORE_WIDTH})",
              "ours": "defaults (seats)", "coarse": "coarse scan (seats)"}
    for part, title in (("first", "first minute"), ("rest", "after it")):
        baseline_ms = result["baseline"][part]["ms"]
        for key, label in labels.items():
            row = result[key][part]
            by_size = _by_size_cells(row)
            frames = result["learn_frames"] if part == "first" else result["frames"] - result["learn_frames"]
            lines.append(f"  {label + ', ' + title:<50}{frames:7d}{row['ms']:9.1f}{baseline_ms / row['ms']:6.1f}x"
                         f"{100 * row['found']:6.1f}%{by_size}{row['false_detections']:7d}")
    for key in ("ours", "coarse"):
        row = result[key]
        searches = ", ".join(f"{count} {kind}" for kind, count in row["searches"].items())
        lines.append(f"  after the first minute the {labels[key].split(' (')[0]} searched: {searches} "
                     f"({row['seats_ms']:.1f} ms per seat search, {row['seats']} seats at the end); their own work "
                     f"(all but detectMultiScale) {row['overhead_pct']:.1f}% of their time: {_own_work_split(row)}")
    return "\n".join(lines)


def bench_search(classroom: Classroom, cascade, learn_frames: int, full_every: int) -> dict:
    """On random seats: the baseline's search, the previous default, the learned bands, the defaults and the
    defaults with a coarse scan (``fine_scan: false``), frame by frame; then the same through a lesson
    (:func:`bench_lesson`).

    On random seats, faces found are scored on the frames after learning; the learning frames
    (whole-frame searches) are timed apart, and the steady cost counts one whole frame in
    ``full_every``. The lesson runs ``full_every`` frames after learning or more (a multiple).
    """
    cv2.setNumThreads(1)
    scenes = classroom.random_seats()
    baseline = FaceDetector(cascade, detect_width=0, **BASELINE_DETECTOR)
    before = FaceDetector(cascade, detect_width=BEFORE_WIDTH, **BASELINE_DETECTOR)
    searches = {name: LearnedSearch(FaceDetector(cascade, detect_width=0, fine_scan=name != "coarse",
                                                 **BASELINE_DETECTOR),
                                    learn_frames=learn_frames, full_every=10 ** 9, seats=name != "bands")
                for name in ("bands", "learned", "coarse")}
    finders = {"baseline": baseline.detect, "before": before.detect, **{name: s.detect for name, s in searches.items()}}
    ms, boxes, walls, _ = _time_finders(scenes, finders, searches, learn_frames)
    scored = scenes[learn_frames:]
    rows = {name: {"ms": float(np.mean(ms[name][learn_frames:])), **_found(scored, boxes[name][learn_frames:])}
            for name in finders}
    for name, search in searches.items():
        learning_ms = float(np.mean(ms[name][:learn_frames]))
        rows[name].update(
            learning_ms=learning_ms, between_ms=rows[name]["ms"],
            ms=((full_every - 1) * rows[name]["ms"] + learning_ms) / full_every,
            bands=search.plan.describe(),
            **_own_work(search, walls[name]))
    after = -(-max(classroom.frames - learn_frames, full_every) // full_every) * full_every
    lesson = bench_lesson(classroom.lesson(learn_frames + after), cascade, learn_frames, full_every)
    return {"frame": f"{classroom.width}x{classroom.height}", "frames": len(scored),
            "faces": sum(len(s.faces) for s in scored), "learn_frames": learn_frames, "full_every": full_every,
            **rows, "lesson": lesson}


def format_search(result: dict) -> str:
    sizes = list(result["baseline"]["found_by_size"])
    lines = [f"random seats {result['frame']} (new students in new seats every frame): {result['frames']} frames "
             f"after {result['learn_frames']} learning frames, {result['faces']} faces; faces found by width, "
             "one thread",
             f"  {'search':<34}{'ms/frame':>9}{'x base':>7}{'found':>7}" + _size_headers(sizes)
             + f"{'false':>7}"]
    baseline_ms = result["baseline"]["ms"]
    names = {"baseline": "baseline (Haar 1.1/5/30, whole frame)", "before": f"previous default (width {BEFORE_WIDTH})",
             "bands": f"bands only (+1 whole in {result['full_every']})",
             "learned": f"defaults (+1 whole in {result['full_every']})",
             "coarse": f"coarse scan (+1 whole in {result['full_every']})"}
    for key, label in names.items():
        row = result[key]
        by_size = _by_size_cells(row)
        lines.append(f"  {label:<34}{row['ms']:9.1f}{baseline_ms / row['ms']:6.1f}x{100 * row['found']:6.1f}%"
                     f"{by_size}{row['false_detections']:7d}")
    for key, label in (("bands", "bands only"), ("learned", "defaults"), ("coarse", "coarse scan")):
        row = result[key]
        lines.append(f"  {label}: {row['learning_ms']:.1f} ms per learning frame (whole frames), "
                     f"{row['between_ms']:.1f} ms per frame between whole ones; its own work "
                     f"{row['overhead_pct']:.1f}% of its time: {_own_work_split(row)}")
    lines.append(f"  bands: {result['learned']['bands']}")
    lines.append(format_lesson(result["lesson"]))
    return "\n".join(lines)


def bench_pipeline(scenes, cascade, model_path, keras_model, repeats=3, learn_frames=60):
    """Rows of figures, one per scene: (name, frames, true faces per frame or None, search), where search
    is a ``detect_width`` for whole-frame searches or "learned" for the default learned search."""
    cv2.setNumThreads(1)
    baseline = BaselinePipeline(cascade, keras_model)
    classifier = EmotionClassifier(model_path, num_threads=1)
    rows = []
    for name, frames, true_faces, search in scenes:
        detector = FaceDetector(cascade, detect_width=0 if search == "learned" else search, fine_scan=True,
                                **BASELINE_DETECTOR)
        finder = LearnedSearch(detector, learn_frames=learn_frames) if search == "learned" else None
        ours = FramePipeline(detector, classifier, finder)
        rows.append({"scene": name, "search": search, **compare(frames, baseline, ours, repeats, true_faces)})
    return rows


def format_rows(rows):
    lines = [f"{'scene':<38} {'frames':>6} {'base ms':>8} {'ours ms':>8} {'speedup':>7}  "
             f"{'faces found (baseline / ours) of':<36} {'detections (baseline / ours)':>24} {'overhead':>8}"]
    for row in rows:
        found = f"{row['baseline_found']} / {row['ours_found']} of {row['reference_faces']} {row['reference']}"
        detections = f"{row['baseline_detections']} / {row['ours_detections']}"
        lines.append(
            f"{row['scene']:<38} {row['frames']:>6} {row['baseline_ms']:>8.1f} {row['ours_ms']:>8.1f} "
            f"{row['speedup']:>6.1f}x  {found:<36} {detections:>24} {row['overhead_pct']:>7.1f}%")
    return "\n".join(lines)
