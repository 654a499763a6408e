"""One frame in, its faces and their emotions out: detection and labelling wired together.

Where faces are searched for is the ``finder``'s call (a :class:`FaceDetector` searching whole
frames, or a :class:`LearnedSearch` over it); cutting them out is always the detector's.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import cv2

from .emotions import EmotionClassifier
from .faces import FaceDetector
from .search import LearnedSearch


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

    def __init__(self, detector: FaceDetector, classifier: EmotionClassifier, finder=None):
        self.detector = detector
        self.classifier = classifier
        self.finder = finder or detector

    @classmethod
    def from_config(cls, config, keep_state: bool = True) -> "FramePipeline":
        """The configured pipeline; ``keep_state=False`` (offline analysis) learns in memory only."""
        detector = FaceDetector.from_config(config.detector)
        return cls(detector, EmotionClassifier(config.classifier.model, num_threads=config.classifier.threads,
                                               flip_average=config.classifier.flip_average),
                   search_from_config(config, detector, keep_state))

    def restart_search(self) -> None:
        """Forget what the search learned in memory (a new source); the state file is not touched."""
        if isinstance(self.finder, LearnedSearch):
            self.finder.restart()

    def close(self) -> None:
        """Keep what the search learned (the state file), once, at the end of a run."""
        if isinstance(self.finder, LearnedSearch):
            self.finder.close()

    def process(self, frame):
        """Faces of a :class:`~edge_agent.agent.capture.Frame` (BGR or gray image, time, index)."""
        image = frame.image
        started = time.perf_counter()
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        boxes = self.finder.detect(gray)
        detected = time.perf_counter()
        faces = ()
        if len(boxes):
            emotions = self.classifier.classify(self.detector.crops(gray, boxes))
            faces = tuple(Face(tuple(int(v) for v in box), e.label, e.p)
                          for box, e in zip(boxes, emotions, strict=True))
        return FrameResult(frame.t, frame.index, faces, detected - started, time.perf_counter() - detected)


def search_state_path(config) -> Path:
    return config.detector.search.state or config.outbox.resolved_path().parent / "face_search.json"


def search_from_config(config, detector: FaceDetector, keep_state: bool = True) -> LearnedSearch | None:
    """The configured search over ``detector``, or None when every frame is searched whole."""
    search = config.detector.search
    if search.mode == "whole":
        return None
    hand = None
    if search.mode == "bands":
        hand = [(b.top, b.bottom, b.min_face, b.max_face) for b in search.bands]
    return LearnedSearch(detector, learn_frames=search.learn_frames, full_every=search.full_every,
                         margin=search.margin, seats=search.seats, seat_frames=search.seat_frames,
                         seat_reach=search.seat_reach,
                         state_path=search_state_path(config) if keep_state and not hand else None,
                         camera=config.camera.source, hand_bands=hand)
