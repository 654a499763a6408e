"""How the int8 model's labels move when dark glasses frames are drawn on the faces.

FER-2013 has few faces with glasses, and the laptop prototype this product started from saw glasses read as angry.
Its faces are roughly aligned, so frames drawn at fixed eye positions sit on the eyes
of most of them. Prints the share of each label before and after, for the model card.

    .venv/bin/python -m edge_agent.tools.glasses_probe --data ../shared/data/fer2013_publictest.npz
"""

import argparse
import json
from pathlib import Path

import cv2

from ..agent.emotions import EmotionClassifier
from ..agent.paths import DEFAULT_MODEL
from ..common.contract import EMOTIONS
from .dataset import load_faces


def with_glasses(face):
    """Two dark rims and a bridge at the eye line of a 48x48 FER-2013 face."""
    scale = face.shape[1] / 48
    drawn = face.copy()
    for x0 in (8, 27):
        top_left = (round(x0 * scale), round(14 * scale))
        bottom_right = (round((x0 + 13) * scale), round(24 * scale))
        cv2.rectangle(drawn, top_left, bottom_right, color=15, thickness=max(1, round(1.5 * scale)))
    cv2.line(drawn, (round(21 * scale), round(18 * scale)), (round(27 * scale), round(18 * scale)),
             color=15, thickness=max(1, round(scale)))
    return drawn


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    args = parser.parse_args()
    images, _ = load_faces(args.data)
    classifier = EmotionClassifier(args.model)
    before = classifier.probabilities(images).argmax(axis=1)
    after = classifier.probabilities([with_glasses(face) for face in images]).argmax(axis=1)
    changed = before != after
    result = {
        "faces": int(len(images)),
        "changed": float(changed.mean()),
        "share_before": {name: float((before == i).mean()) for i, name in enumerate(EMOTIONS)},
        "share_after": {name: float((after == i).mean()) for i, name in enumerate(EMOTIONS)},
        "changed_to": {name: int((after[changed] == i).sum()) for i, name in enumerate(EMOTIONS)},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
