"""Milliseconds per frame of our face finding and pipeline against the seed's, on the same frames in one run.

The seed's pipeline: Haar (1.1, 5, 30) on the full frame, then one Keras ``predict()`` per
face. Ours: the learned search (see :mod:`edge_agent.agent.search`), then every face of the
frame in one int8 interpreter call. Everything runs on one thread. Faces found are compared too:
a faster search that misses faces would be no gain.

Classroom-like frames are built from the faces the cascade finds in real photos, pasted with
their surroundings and a classroom's perspective (:func:`edge_agent.tools.classroom.build_scenes`),
and every search runs on each frame in turn, so a busy machine slows them alike.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from ..agent.capture import Frame, OpenCVSource, sample_frames
from ..agent.emotions import EmotionClassifier
from ..agent.faces import FaceDetector
from ..agent.pipeline import FramePipeline
from ..agent.search import LearnedSearch
from .classroom import build_scenes, faces_from_photos, score
from .keras_model import model_inputs

SEED_DETECTOR = {"scale_factor": 1.1, "min_neighbors": 5, "min_size": 30}
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


class SeedPipeline:
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


def compare(frames, seed, ours, repeats, true_faces=None):
    """Seed and ours on the same frames: ms per frame, faces, and our own overhead share.

    With ``true_faces`` (boxes per frame) both are scored against them; without, against the
    distinct faces the seed found.
    """
    seed_ms, seed_boxes = time_frames(seed.process, frames, repeats)
    ours.detector.cascade_seconds = ours.classifier.invoke_seconds = 0.0
    wall = [0.0]

    def ours_process(image):
        started = time.perf_counter()
        result = ours.process(Frame(image, 0.0, 0))
        wall[0] += time.perf_counter() - started
        return np.array([face.box for face in result.faces], dtype=np.int64).reshape(-1, 4)

    ours_ms, ours_boxes = time_frames(ours_process, frames, repeats)
    inner = ours.detector.cascade_seconds + ours.classifier.invoke_seconds
    reference = true_faces if true_faces is not None else [distinct(boxes) for boxes in seed_boxes]
    return {
        "frames": len(frames),
        "seed_ms": seed_ms, "ours_ms": ours_ms, "speedup": seed_ms / ours_ms,
        "reference": "true faces" if true_faces is not None else "faces the seed found",
        "reference_faces": sum(len(r) for r in reference),
        "seed_found": sum(matched(s, r) for s, r in zip(seed_boxes, reference, strict=True)),
        "ours_found": sum(matched(o, r) for o, r in zip(ours_boxes, reference, strict=True)),
        "seed_detections": sum(len(b) for b in seed_boxes),
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


def classroom_scenes(photos, cascade, frames: int, width: int, height: int, seed: int = 0):
    """``frames`` classroom-like frames of 20-40 faces of 24-120 px cut from ``photos``."""
    faces = faces_from_photos(photos, cascade, context=CONTEXT)
    if not len(faces):
        raise ValueError(f"no face found in {', '.join(map(str, photos))}")
    return build_scenes(faces, np.zeros(len(faces), int), frames, width=width, height=height, seed=seed,
                        face_fraction=1 / CONTEXT)


def bench_search(scenes, cascade, learn_frames: int, full_every: int) -> dict:
    """The seed's search, the previous default and the learned search on the same frames, frame by frame.

    Faces found are scored on the frames after learning; the learned search's learning frames
    (whole-frame searches) are timed apart, and its steady cost counts one whole frame in
    ``full_every``.
    """
    cv2.setNumThreads(1)
    seed = FaceDetector(cascade, detect_width=0, **SEED_DETECTOR)
    before = FaceDetector(cascade, detect_width=BEFORE_WIDTH, **SEED_DETECTOR)
    learned = LearnedSearch(FaceDetector(cascade, detect_width=0, **SEED_DETECTOR), learn_frames=learn_frames,
                            full_every=10 ** 9)
    finders = {"seed": seed.detect, "before": before.detect, "learned": learned.detect}
    ms = {name: [] for name in finders}
    boxes = {name: [] for name in finders}
    learned_wall = 0.0
    for number, scene in enumerate(scenes):
        if number == learn_frames:
            learned.detector.cascade_seconds = learned_wall = 0.0
        for name, detect in finders.items():
            started = time.perf_counter()
            found = detect(scene.image)
            elapsed = time.perf_counter() - started
            ms[name].append(elapsed * 1000)
            boxes[name].append((found, ["neutral"] * len(found)))
            if name == "learned":
                learned_wall += elapsed
    scored = scenes[learn_frames:]
    rows = {}
    for name in finders:
        result = score(scored, boxes[name][learn_frames:])
        rows[name] = {"ms": float(np.mean(ms[name][learn_frames:])), "found": result["found"],
                      "found_by_size": result["found_by_size"], "false_detections": result["false_detections"]}
    learning_ms = float(np.mean(ms["learned"][:learn_frames]))
    rows["learned"].update(
        learning_ms=learning_ms, bands_ms=rows["learned"]["ms"],
        ms=((full_every - 1) * rows["learned"]["ms"] + learning_ms) / full_every,
        bands=learned.plan.describe(),
        overhead_pct=100.0 * (learned_wall - learned.cascade_seconds) / learned_wall if learned_wall else 0.0)
    height, width = scenes[0].image.shape
    return {"frame": f"{width}x{height}", "frames": len(scored), "faces": sum(len(s.faces) for s in scored),
            "learn_frames": learn_frames, "full_every": full_every, **{f"{k}": v for k, v in rows.items()}}


def format_search(result: dict) -> str:
    sizes = list(result["seed"]["found_by_size"])
    lines = [f"classroom {result['frame']}: {result['frames']} frames after {result['learn_frames']} learning "
             f"frames, {result['faces']} faces; faces found by width, one thread",
             f"  {'search':<34}{'ms/frame':>9}{'x seed':>7}{'found':>7}" + "".join(f"{s:>10}" for s in sizes)
             + f"{'false':>7}"]
    seed_ms = result["seed"]["ms"]
    names = {"seed": "seed (Haar 1.1/5/30, whole frame)", "before": f"previous default (width {BEFORE_WIDTH})",
             "learned": f"learned bands (+1 whole in {result['full_every']})"}
    for key, label in names.items():
        row = result[key]
        by_size = "".join(f"{100 * share:9.0f}%" if share is not None else f"{'-':>10}"
                          for share, _ in row["found_by_size"].values())
        lines.append(f"  {label:<34}{row['ms']:9.1f}{seed_ms / row['ms']:6.1f}x{100 * row['found']:6.1f}%"
                     f"{by_size}{row['false_detections']:7d}")
    learned = result["learned"]
    lines.append(f"  learned search: {learned['learning_ms']:.1f} ms per learning frame (whole frames), "
                 f"{learned['bands_ms']:.1f} ms per banded frame; its own work {learned['overhead_pct']:.1f}% "
                 f"of its time; bands: {learned['bands']}")
    return "\n".join(lines)


def bench_pipeline(scenes, cascade, model_path, keras_model, repeats=3, learn_frames=60):
    """Rows of figures, one per scene: (name, frames, true faces per frame or None, search), where search
    is a ``detect_width`` for whole-frame searches or "learned" for the default learned search."""
    cv2.setNumThreads(1)
    seed = SeedPipeline(cascade, keras_model)
    classifier = EmotionClassifier(model_path, num_threads=1)
    rows = []
    for name, frames, true_faces, search in scenes:
        detector = FaceDetector(cascade, detect_width=0 if search == "learned" else search, **SEED_DETECTOR)
        finder = LearnedSearch(detector, learn_frames=learn_frames) if search == "learned" else None
        ours = FramePipeline(detector, classifier, finder)
        rows.append({"scene": name, "search": search, **compare(frames, seed, ours, repeats, true_faces)})
    return rows


def format_rows(rows):
    lines = [f"{'scene':<38} {'frames':>6} {'seed ms':>8} {'ours ms':>8} {'speedup':>7}  "
             f"{'faces found (seed / ours) of':<36} {'detections (seed / ours)':>24} {'overhead':>8}"]
    for row in rows:
        found = f"{row['seed_found']} / {row['ours_found']} of {row['reference_faces']} {row['reference']}"
        detections = f"{row['seed_detections']} / {row['ours_detections']}"
        lines.append(
            f"{row['scene']:<38} {row['frames']:>6} {row['seed_ms']:>8.1f} {row['ours_ms']:>8.1f} "
            f"{row['speedup']:>6.1f}x  {found:<36} {detections:>24} {row['overhead_pct']:>7.1f}%")
    return "\n".join(lines)
