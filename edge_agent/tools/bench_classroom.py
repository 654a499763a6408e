"""Emotion models compared on the product's real input: faces the detector finds in classroom frames.

Every model (with and without flip averaging) labels the crops of the same detections in the same
frames, so the rows differ only by the model. PublicTest faces are pasted into 1280x720 frames
with a classroom's perspective (see :mod:`edge_agent.tools.classroom`), never the faces a model
trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..agent.config import DetectorConfig
from ..agent.emotions import EmotionClassifier
from ..agent.faces import FaceDetector
from ..common.contract import EMOTIONS
from .classroom import SMALL_FACE_PX, build_scenes, score


def bench_classroom(models: list[Path], images: np.ndarray, labels: np.ndarray, frames: int = 30,
                    seed: int = 0, margins: tuple[float, ...] = (0.0,), flip: bool = True) -> list[dict]:
    """One row per (model, margin, flip): faces found, then accuracy and recall on the faces found.

    Each model is read with its read-out's inset and bias; without ``flip``, only with its own mirroring.
    """
    scenes = build_scenes(images, labels, frames, seed=seed)
    detector = FaceDetector.from_config(DetectorConfig())
    detections = [detector.detect(scene.image) for scene in scenes]
    rows = []
    for path in models:
        deployed_flip = EmotionClassifier(path).flip_average
        for flip_average in ((False, True) if flip else (deployed_flip,)):
            classifier = EmotionClassifier(path, flip_average=flip_average)
            for margin in margins:
                detector.crop_offsets = (margin, margin)
                labelled = [(boxes, [e.label for e in classifier.classify(detector.crops(scene.image, boxes))]
                             if len(boxes) else []) for scene, boxes in zip(scenes, detections, strict=True)]
                result = score(scenes, labelled)
                result.update(model=Path(path).name, flip_average=flip_average, margin=margin,
                              deployed=flip_average == deployed_flip and margin == 0.0)
                rows.append(result)
    return rows


def format_rows(rows: list[dict]) -> str:
    first = rows[0]
    lines = [f"classroom-like frames: {first['frames']} frames of 1280x720, {first['faces']} PublicTest faces "
             f"of 24-120 px; the default detector found {100 * first['found']:.1f}% of them "
             f"({first['labelled']} labelled by each row, {first['false_detections']} false detections)",
             "found by size: " + ", ".join(f"{size} {100 * share:.0f}% of {n}" for size, (share, n)
                                           in first["found_by_size"].items() if n),
             f"accuracy by width: small under {SMALL_FACE_PX} px, large from {SMALL_FACE_PX} px; "
             "interest: happy + surprise + neutral, true on the faces found, read on every detection; "
             "* the model as deployed (its read-out's mirroring, inset and bias; no margin)",
             f"  {'model':<42}{'flip':>5}{'margin':>7}{'acc':>7}{'small':>7}{'large':>7}{'macro':>7}"
             + "".join(f"{e[:5]:>7}" for e in EMOTIONS) + f"{'true':>7}{'read':>7}"]
    for row in rows:
        recall = "".join(f"{100 * row['recall'][e]:7.1f}" if e in row["recall"] else f"{'-':>7}" for e in EMOTIONS)
        widths = "".join(f"{100 * share:7.1f}" if share is not None else f"{'-':>7}"
                         for share, _ in row["accuracy_by_width"].values())
        interest = "".join(f"{100 * ratio:7.1f}" if ratio is not None else f"{'-':>7}"
                           for ratio in (row["interest_true"], row["interest_read"]))
        flip = ('yes' if row['flip_average'] else 'no') + ('*' if row['deployed'] else ' ')
        lines.append(f"  {row['model']:<42}{flip:>5}{row['margin']:>7.2f}"
                     f"{100 * row['accuracy']:7.1f}{widths}{100 * row['macro_recall']:7.1f}{recall}{interest}")
    return "\n".join(lines)
