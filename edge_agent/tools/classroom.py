"""Classroom-like test frames built from labelled faces, and how a detect-and-label path does on them.

A fixed classroom camera sees 20-40 faces, small at the top of the frame (back rows) and large at
the bottom (front rows). This module pastes labelled gray faces into such frames with that
perspective (:func:`build_scenes`: new students in random seats every frame; :func:`build_lesson`:
one lesson, the same students in the same seats), then scores what a detect-and-label path found
in them: faces found by size, and labels right on the faces found.

Invariants:
- A scene or lesson is a pure function of its arguments: the same call builds the same frames, so
  two models or two detectors are compared on identical pixels in one run.
- A frame's faces are those visible in it: a student looking away or not yet arrived is no face.
- Frames exist only in memory; nothing here writes them (the faces are research data).
- A truth face counts as found by at most one detection, a detection by at most one face.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..common.contract import DEFAULT_INTERESTED, EMOTIONS, interest_ratio

# Face widths a 1280x720 classroom camera sees, back row to front row.
SIZE_BUCKETS = ((24, 32), (32, 48), (48, 64), (64, 96), (96, 121))
# Faces narrower than this are the back rows: the margin that frames them best may not suit the front.
SMALL_FACE_PX = 48


@dataclass(frozen=True)
class PlacedFace:
    box: tuple[int, int, int, int]  # x, y, w, h in frame pixels
    label: int


@dataclass
class Scene:
    image: np.ndarray  # gray uint8 [H, W]
    faces: list[PlacedFace] = field(default_factory=list)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Walls, desks and light falloff: low-frequency shading with a little texture."""
    coarse = rng.uniform(50, 200, (6, 10)).astype(np.float32)
    shade = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    texture = rng.normal(0, 6, (height, width)).astype(np.float32)
    return np.clip(shade + texture, 0, 255)


def seat_positions(rng: np.random.Generator, width: int, height: int, min_px: int, max_px: int):
    """Every seat of a perspective classroom: (x, y, side), sides growing from top to bottom."""
    seats = []
    y = int(0.03 * height)
    while True:
        side = round(min_px + (max_px - min_px) * min(1.0, y / max(1, height - max_px)))
        if y + side > height:
            return seats
        x = int(rng.uniform(0, side))
        while x + side <= width:
            jitter = int(rng.uniform(-0.1, 0.1) * side)
            seats.append((x, min(max(0, y + jitter), height - side), side))
            x += side + int(side * rng.uniform(0.5, 1.2))
        y += int(side * rng.uniform(1.3, 1.7))


def build_scenes(images: np.ndarray, labels: np.ndarray, count: int, width: int = 1280, height: int = 720,
                 faces_per_frame: tuple[int, int] = (20, 40), face_px: tuple[int, int] = (24, 120),
                 seed: int = 0, face_fraction: float = 1.0) -> list[Scene]:
    """``count`` frames of 20-40 faces each, drawn without repeats from ``images`` while they last.

    Each image is pasted whole; the face is its central square of ``face_fraction`` of its side
    (1.0 for tight crops such as FER's, less for faces cut out with their head and shoulders),
    and ``face_px`` bounds that face's width.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    used = 0
    scenes = []
    for _ in range(count):
        canvas = _background(rng, width, height)
        seats = seat_positions(rng, width, height, *(round(px / face_fraction) for px in face_px))
        wanted = int(rng.integers(faces_per_frame[0], faces_per_frame[1] + 1))
        picked = sorted(rng.choice(len(seats), min(wanted, len(seats)), replace=False))
        scene = Scene(image=canvas)
        for seat in picked:
            x, y, side = seats[seat]
            index = order[used % len(order)]
            used += 1
            _paste(canvas, _sized(images[index], side), x, y)
            scene.faces.append(PlacedFace(_face_box(x, y, side, face_fraction), int(labels[index])))
        scene.image = _camera(canvas)
        scenes.append(scene)
    return scenes


def _sized(face: np.ndarray, side: int) -> np.ndarray:
    shrink = side < face.shape[0]
    return cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def _paste(canvas: np.ndarray, pasted: np.ndarray, x: int, y: int) -> None:
    side = pasted.shape[0]
    # A soft edge, so the square's border is not the strongest feature in view.
    ramp = np.minimum(np.arange(side), np.arange(side)[::-1]) / max(1.0, side * 0.08)
    alpha = np.clip(np.minimum.outer(ramp, ramp), 0, 1).astype(np.float32)
    region = canvas[y:y + side, x:x + side]
    canvas[y:y + side, x:x + side] = alpha * pasted + (1 - alpha) * region


def _face_box(x: int, y: int, side: int, face_fraction: float) -> tuple[int, int, int, int]:
    face_side = round(side * face_fraction)
    inset = (side - face_side) // 2
    return (x + inset, y + inset, face_side, face_side)


def _camera(canvas: np.ndarray) -> np.ndarray:
    """What a camera adds: a little optical blur and its JPEG."""
    blurred = cv2.GaussianBlur(np.clip(canvas, 0, 255).astype(np.uint8), (0, 0), 0.7)
    ok, encoded = cv2.imencode(".jpg", blurred, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)


def build_lesson(images: np.ndarray, labels: np.ndarray, count: int, width: int = 1280, height: int = 720,
                 students: tuple[int, int] = (20, 40), face_px: tuple[int, int] = (24, 120), seed: int = 0,
                 face_fraction: float = 1.0, jitter_px: int = 3, away_chance: float = 0.02,
                 away_frames: tuple[int, int] = (2, 8), late: int = 3) -> list[Scene]:
    """``count`` frames of one lesson: the same students in the same seats of one room all along.

    Each frame every head moves up to ``jitter_px`` px from its seat; a seated student starts to
    look away with ``away_chance`` per frame, for ``away_frames`` frames (their face is then a
    blur of itself, a head turned away); ``late`` students arrive between the first tenth and
    the first half of the lesson. Each student is a different image while ``images`` last. The
    room's shading and texture stay; only the camera's noise changes from frame to frame.
    """
    rng = np.random.default_rng(seed)
    room = _background(rng, width, height)
    seats = seat_positions(rng, width, height, *(round(px / face_fraction) for px in face_px))
    wanted = int(rng.integers(students[0], students[1] + 1))
    taken = sorted(rng.choice(len(seats), min(wanted, len(seats)), replace=False))
    faces = rng.permutation(len(images))
    arrives = np.zeros(len(taken), dtype=np.int64)
    arrives[rng.choice(len(taken), min(late, len(taken)), replace=False)] = rng.integers(
        max(1, count // 10), max(2, count // 2), min(late, len(taken)))
    away_until = np.zeros(len(taken), dtype=np.int64)
    pasted = [_sized(images[faces[k % len(faces)]], seats[seat][2]) for k, seat in enumerate(taken)]
    scenes = []
    for number in range(count):
        canvas = room + rng.normal(0, 2, room.shape).astype(np.float32)
        scene = Scene(image=canvas)
        for k, seat in enumerate(taken):
            x, y, side = seats[seat]
            shift_x, shift_y = rng.integers(-jitter_px, jitter_px + 1, 2)
            x, y = min(max(0, x + shift_x), width - side), min(max(0, y + shift_y), height - side)
            if number < arrives[k]:
                continue
            if number >= away_until[k] and rng.random() < away_chance:
                away_until[k] = number + rng.integers(away_frames[0], away_frames[1] + 1)
            if number < away_until[k]:
                _paste(canvas, cv2.GaussianBlur(pasted[k], (0, 0), side / 8), x, y)
                continue
            _paste(canvas, pasted[k], x, y)
            scene.faces.append(PlacedFace(_face_box(x, y, side, face_fraction), int(labels[faces[k % len(faces)]])))
        scene.image = _camera(canvas)
        scenes.append(scene)
    return scenes


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / (aw * ah + bw * bh - inter) if inter else 0.0


def match(truth: Sequence[PlacedFace], boxes: Sequence[Sequence[float]], min_iou: float = 0.3):
    """Greedy one-to-one pairs (truth index, detection index), best overlap first."""
    pairs = sorted(((_iou(face.box, box), i, j) for i, face in enumerate(truth) for j, box in enumerate(boxes)),
                   reverse=True)
    taken_truth, taken_box, matched = set(), set(), []
    for overlap, i, j in pairs:
        if overlap < min_iou:
            break
        if i not in taken_truth and j not in taken_box:
            taken_truth.add(i)
            taken_box.add(j)
            matched.append((i, j))
    return matched


def score(scenes: Sequence[Scene], results: Sequence[tuple[Sequence, Sequence[str]]],
          interested: Sequence[str] = DEFAULT_INTERESTED) -> dict:
    """Score ``results``, one ``(boxes, labels)`` per scene, against the faces put in the scenes.

    Returns faces found by size bucket, false detections, and on the faces found: label accuracy
    (all, and for faces under and from :data:`SMALL_FACE_PX` wide), macro recall and recall per
    emotion. The interest ratio is read as the product reads it, over every labelled detection
    (false ones included), beside the true ratio of the faces found.
    """
    found = {bucket: [0, 0] for bucket in SIZE_BUCKETS}
    confusion = np.zeros((len(EMOTIONS), len(EMOTIONS)), dtype=np.int64)
    by_width = {"small": [0, 0], "large": [0, 0]}
    extra = 0
    read = Counter()
    for scene, (boxes, labels) in zip(scenes, results, strict=True):
        pairs = match(scene.faces, boxes)
        hit = {i for i, _ in pairs}
        extra += len(boxes) - len(pairs)
        read.update(labels)
        for i, face in enumerate(scene.faces):
            bucket = next(b for b in SIZE_BUCKETS if b[0] <= face.box[2] < b[1])
            found[bucket][0] += i in hit
            found[bucket][1] += 1
        for i, j in pairs:
            face = scene.faces[i]
            right = EMOTIONS.index(labels[j]) == face.label
            confusion[face.label, EMOTIONS.index(labels[j])] += 1
            width = by_width["small" if face.box[2] < SMALL_FACE_PX else "large"]
            width[0] += right
            width[1] += 1
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    present = confusion.sum(axis=1) > 0
    total = sum(n for _, n in found.values())
    true_counts = dict(zip(EMOTIONS, confusion.sum(axis=1).tolist(), strict=True))
    read_counts = {emotion: read[emotion] for emotion in EMOTIONS}
    return {
        "frames": len(scenes),
        "faces": total,
        "found": sum(k for k, _ in found.values()) / max(1, total),
        "found_by_size": {f"{lo}-{hi - 1}px": (k / n if n else None, n) for (lo, hi), (k, n) in found.items()},
        "false_detections": int(extra),
        "labelled": int(confusion.sum()),
        "accuracy": float(confusion.diagonal().sum() / max(1, confusion.sum())),
        "accuracy_by_width": {name: (k / n if n else None, n) for name, (k, n) in by_width.items()},
        "macro_recall": float(per_class[present].mean()) if present.any() else 0.0,
        "recall": {EMOTIONS[k]: float(per_class[k]) for k in range(len(EMOTIONS)) if present[k]},
        "confusion": confusion.tolist(),
        "interest_true": interest_ratio(true_counts, interested),
        "interest_read": interest_ratio(read_counts, interested),
    }


def faces_from_photos(paths: Sequence, cascade_path, context: float = 1.6, side: int = 128) -> np.ndarray:
    """Each face the cascade finds in the photos, cut out with ``context`` times its width around it.

    Returns gray uint8 [N, side, side]; the face is the central ``1 / context`` of each. Faces too
    near a photo's edge to take their surroundings are skipped.
    """
    cascade = cv2.CascadeClassifier(str(cascade_path))
    cut = []
    for path in paths:
        photo = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if photo is None:
            raise FileNotFoundError(path)
        for x, y, w, h in cascade.detectMultiScale(photo, 1.1, 5, minSize=(30, 30)):
            half = w * context / 2
            cx, cy = x + w / 2, y + h / 2
            x0, y0, x1, y1 = round(cx - half), round(cy - half), round(cx + half), round(cy + half)
            if x0 >= 0 and y0 >= 0 and x1 <= photo.shape[1] and y1 <= photo.shape[0]:
                cut.append(cv2.resize(photo[y0:y1, x0:x1], (side, side), interpolation=cv2.INTER_AREA))
    return np.stack(cut) if cut else np.zeros((0, side, side), np.uint8)
