"""Find faces in a gray frame with OpenCV's Haar cascade, and cut them out for labelling."""

import time
from pathlib import Path

import cv2
import numpy as np

from ..common.errors import EdgeAgentError

# The cascade's own window: faces smaller than this at detection scale cannot be found.
CASCADE_WINDOW = 24


class FaceDetector:
    """A loaded Haar cascade; the defaults are those the emotion model was paired with.

    ``detect_width`` shrinks wide frames before detection, the main speed knob:
    detection time grows with the pixel count, and ``min_size`` (in frame pixels)
    is scaled with the frame so the same faces stay in range.
    """

    def __init__(self, cascade_path, scale_factor=1.1, min_neighbors=5, min_size=30,
                 detect_width=0, equalize=False, crop_offsets=(0.0, 0.0)):
        self.path = Path(cascade_path)
        if not self.path.is_file():
            raise EdgeAgentError(f"face cascade file {self.path} does not exist")
        # OpenCV reports a bad file by raising, or by leaving the cascade empty, depending on how bad.
        try:
            self._cascade = cv2.CascadeClassifier(str(self.path))
        except (cv2.error, SystemError):
            self._cascade = None
        if self._cascade is None or self._cascade.empty():
            raise EdgeAgentError(f"face cascade file {self.path} is not an OpenCV cascade XML")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.detect_width = detect_width
        self.equalize = equalize
        self.crop_offsets = crop_offsets
        # Time inside detectMultiScale alone, so the pipeline's own overhead can be measured.
        self.cascade_seconds = 0.0

    @classmethod
    def from_config(cls, detector):
        """A detector for a ``DetectorConfig``; also sets OpenCV's (process-wide) thread count."""
        if detector.threads:
            cv2.setNumThreads(detector.threads)
        return cls(detector.cascade, detector.scale_factor, detector.min_neighbors, detector.min_size,
                   detector.detect_width, detector.equalize, detector.crop_offsets)

    def scale_for(self, width):
        """The factor frames of this width are shrunk by before detection (1.0: not at all)."""
        return self.detect_width / width if 0 < self.detect_width < width else 1.0

    def detect(self, gray):
        """Boxes ``(x, y, w, h)`` of the faces in a 2-D uint8 image, in its own pixels, as int [N, 4]."""
        scale = self.scale_for(gray.shape[1])
        small = gray
        if scale != 1.0:
            size = (self.detect_width, max(1, round(gray.shape[0] * scale)))
            small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        if self.equalize:
            small = cv2.equalizeHist(small)
        min_side = max(1, round(self.min_size * scale))
        started = time.perf_counter()
        boxes = self._cascade.detectMultiScale(
            small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side),
        )
        self.cascade_seconds += time.perf_counter() - started
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if scale != 1.0:
            boxes /= scale
        return np.rint(boxes).astype(np.int64)

    def crops(self, gray, boxes):
        """The face regions of ``gray`` (views, not copies), widened by ``crop_offsets`` and clipped."""
        height, width = gray.shape[:2]
        off_x, off_y = self.crop_offsets
        crops = []
        for x, y, w, h in boxes:
            dx, dy = round(w * off_x), round(h * off_y)
            x0, y0 = max(0, x - dx), max(0, y - dy)
            x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
            crops.append(gray[y0:y1, x0:x1])
        return crops
