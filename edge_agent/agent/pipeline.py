"""One frame in, its faces and their emotions out: detection and labelling wired together."""

import time
from dataclasses import dataclass

import cv2

from .emotions import EmotionClassifier
from .faces import FaceDetector


@dataclass(frozen=True)
class Face:
    box: tuple  # (x, y, w, h) in frame pixels; never leaves the process in the daemon
    label: str
    p: float


@dataclass(frozen=True)
class FrameResult:
    t: float
    index: int
    faces: tuple
    detect_s: float
    classify_s: float

    @property
    def labels(self):
        return [face.label for face in self.faces]


class FramePipeline:
    """Gray conversion, face detection and one batched labelling call per frame."""

    def __init__(self, detector, classifier):
        self.detector = detector
        self.classifier = classifier

    @classmethod
    def from_config(cls, config):
        return cls(FaceDetector.from_config(config.detector),
                   EmotionClassifier(config.classifier.model, num_threads=config.classifier.threads,
                                     flip_average=config.classifier.flip_average))

    def process(self, frame):
        """Faces of a :class:`~edge_agent.agent.capture.Frame` (BGR or gray image, time, index)."""
        image = frame.image
        started = time.perf_counter()
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        boxes = self.detector.detect(gray)
        detected = time.perf_counter()
        faces = ()
        if len(boxes):
            emotions = self.classifier.classify(self.detector.crops(gray, boxes))
            faces = tuple(Face(tuple(int(v) for v in box), e.label, e.p)
                          for box, e in zip(boxes, emotions, strict=True))
        return FrameResult(frame.t, frame.index, faces, detected - started, time.perf_counter() - detected)
