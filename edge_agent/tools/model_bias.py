"""Choose a model's per-emotion log bias on classroom-like frames of training faces.

A network trained on FER-2013's class balance, with its loss weighted, reads a classroom with its
own priors: the interest ratio an instructor sees drifts from the truth by the classes it over-reads.
A bias on each emotion's log-probability moves those borders without retraining. It is chosen here,
on frames built from the faces the model trained on, never on a split a figure is reported on, and
written into the model's build record (``read_out.log_bias``), where the classifier finds it.

Invariants:
- The frames, the detections and the model's unbiased probabilities are computed once; each
  candidate bias only re-reads them, so the search sees exactly what the product would.
- The criterion is macro recall less the gap between the interest ratio read and the true one:
  macro recall alone lifts the rare classes until the interest ratio drifts the other way.
- Neutral's bias stays 0: adding one number to every bias changes no label.
- The record keeps everything else it had; only ``read_out`` and ``read_out_chosen_on`` change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..agent.config import DetectorConfig
from ..agent.emotions import EmotionClassifier, apply_log_bias, record_path_for
from ..agent.faces import FaceDetector
from ..common.contract import DEFAULT_INTERESTED, EMOTIONS
from ..common.errors import EdgeAgentError
from .classroom import build_scenes, match
from .train import atomic_write

# Every bias the search tries for one emotion, in log units: e^1 is a 2.7x change in its odds.
STEPS = tuple(round(x, 1) for x in np.arange(-1.0, 1.01, 0.1))
FIXED = EMOTIONS.index("neutral")


@dataclass(frozen=True)
class Readings:
    """A model's probabilities on every detection of some frames, and the truth of those it matched."""

    probs: np.ndarray  # [detections, 7]
    matched: np.ndarray  # indices into probs of the detections matched to a face
    truth: np.ndarray  # the label of the face each matched detection found

    def scores(self, log_bias) -> dict:
        """Macro recall and the interest ratio, read as :func:`classroom.score` reads them."""
        labels = apply_log_bias(self.probs, log_bias).argmax(axis=1)
        picked = labels[self.matched]
        present = [k for k in range(len(EMOTIONS)) if (self.truth == k).any()]
        recall = {EMOTIONS[k]: float((picked[self.truth == k] == k).mean()) for k in present}
        interested = [EMOTIONS.index(e) for e in DEFAULT_INTERESTED]
        return {
            "accuracy": float((picked == self.truth).mean()),
            "macro_recall": float(np.mean(list(recall.values()))),
            "recall": recall,
            "interest_true": float(np.isin(self.truth, interested).mean()),
            "interest_read": float(np.isin(labels, interested).mean()),
        }


def criterion(scores: dict) -> float:
    return scores["macro_recall"] - abs(scores["interest_read"] - scores["interest_true"])


def read_frames(classifier: EmotionClassifier, images: np.ndarray, labels: np.ndarray, frames: int,
                seed: int) -> Readings:
    """Build the frames, detect with the default detector, and read every detection once."""
    scenes = build_scenes(images, labels, frames, seed=seed)
    detector = FaceDetector.from_config(DetectorConfig())
    probs, matched, truth = [], [], []
    offset = 0
    for scene in scenes:
        boxes = detector.detect(scene.image)
        if not len(boxes):
            continue
        probs.append(classifier.probabilities(detector.crops(scene.image, boxes)))
        for i, j in match(scene.faces, boxes):
            matched.append(offset + j)
            truth.append(scene.faces[i].label)
        offset += len(boxes)
    if not matched:
        raise EdgeAgentError("the detector found no face in the frames; nothing to choose a bias on")
    return Readings(np.concatenate(probs), np.asarray(matched), np.asarray(truth))


def choose_bias(readings: Readings, rounds: int = 4) -> tuple[tuple[float, ...], list[dict]]:
    """Coordinate search over :data:`STEPS`, one emotion at a time, until a round changes nothing."""
    bias = [0.0] * len(EMOTIONS)
    best = criterion(readings.scores(bias))
    trail = []
    for round_ in range(rounds):
        changed = False
        for k in range(len(EMOTIONS)):
            if k == FIXED:
                continue
            for step in STEPS:
                trial = bias[:k] + [step] + bias[k + 1:]
                value = criterion(readings.scores(trial))
                if value > best + 1e-9:
                    best, bias, changed = value, trial, True
        trail.append({"round": round_ + 1, "log_bias": list(bias), "criterion": best})
        if not changed:
            break
    return tuple(bias), trail


def write_read_out(model: Path, flip_average: bool, log_bias: tuple[float, ...], chosen_on: dict) -> Path:
    """Put the bias and the mirroring it was chosen with into the model's build record."""
    path = record_path_for(model)
    record = json.loads(path.read_text())
    read_out = dict(record.get("read_out") or {})
    read_out.update(flip_average=flip_average, log_bias=[round(b, 3) for b in log_bias])
    record["read_out"] = read_out
    record["read_out_chosen_on"] = chosen_on
    atomic_write(path, json.dumps(record, indent=2) + "\n")
    return path


def run(model: Path, data: Path, frames: int, seed: int, flip_average: bool | None, progress=print) -> dict:
    """Choose and record ``model``'s bias; returns the scores before and after, and the bias."""
    from .dataset import load_faces

    if not record_path_for(model).is_file():
        raise EdgeAgentError(f"{model} has no build record ({record_path_for(model)}); "
                             "build it with `edge-agent model build` first")
    classifier = EmotionClassifier(model, flip_average=flip_average, unbiased=True)
    images, labels = load_faces(data)
    progress(f"reading {frames} classroom-like frames of {Path(data).name} with {Path(model).name}"
             f" ({'flip-averaged' if classifier.flip_average else 'unflipped'}, inset {classifier.read_out.inset:.4f})")
    readings = read_frames(classifier, images, labels, frames, seed)
    bias, trail = choose_bias(readings)
    before, after = readings.scores([0.0] * len(EMOTIONS)), readings.scores(bias)
    chosen_on = {"data": Path(data).name, "frames": frames, "seed": seed, "faces_matched": int(len(readings.truth)),
                 "detections": int(len(readings.probs)), "criterion": "macro recall - |interest read - true|",
                 "before": before, "after": after, "search": trail}
    path = write_read_out(model, classifier.flip_average, bias, chosen_on)
    return {"log_bias": bias, "before": before, "after": after, "record": str(path),
            "flip_average": classifier.flip_average}


def format_result(result: dict) -> str:
    bias = ", ".join(f"{e} {b:+.1f}" for e, b in zip(EMOTIONS, result["log_bias"], strict=True) if b)
    lines = [f"log bias: {bias or 'none (the plain read-out is best)'}"]
    for name in ("before", "after"):
        s = result[name]
        lines.append(f"  {name:<7} accuracy {100 * s['accuracy']:.1f}%, macro recall {100 * s['macro_recall']:.1f}%, "
                     f"interest read {100 * s['interest_read']:.1f}% (true {100 * s['interest_true']:.1f}%)")
    lines.append(f"wrote read_out to {result['record']}")
    return "\n".join(lines)
