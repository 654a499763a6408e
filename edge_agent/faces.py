"""Find faces in a gray frame with OpenCV's Haar cascade."""

from pathlib import Path

import cv2
import numpy as np

from .errors import EdgeAgentError


class FaceDetector:
    """A loaded Haar cascade; the defaults are those the emotion model was paired with."""

    def __init__(self, cascade_path, scale_factor=1.1, min_neighbors=5, min_size=30):
        self.path = Path(cascade_path)
        if not self.path.is_file():
            raise EdgeAgentError(f"face cascade file {self.path} does not exist")
        # OpenCV prints its own parse errors; an empty cascade is how it reports them to us.
        self._cascade = cv2.CascadeClassifier(str(self.path))
        if self._cascade.empty():
            raise EdgeAgentError(f"face cascade file {self.path} is not an OpenCV cascade XML")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size

    def detect(self, gray):
        """Boxes ``(x, y, w, h)`` of the faces in a 2-D uint8 image, as an int array [N, 4]."""
        boxes = self._cascade.detectMultiScale(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        return np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
