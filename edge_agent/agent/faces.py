"""Find faces in a gray frame with OpenCV's Haar cascade, and cut them out for labelling.

Two ways to search: the whole frame over every face size (:meth:`FaceDetector.detect`), or regions,
each over a band of face sizes (:meth:`FaceDetector.detect_regions`), which
:mod:`edge_agent.agent.search` uses to search each part of a classroom only for the faces it holds.
Boxes are always in the frame's own pixels.
"""

import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from ..common.errors import EdgeAgentError

# The cascade's own window: faces smaller than this at detection scale cannot be found.
CASCADE_WINDOW = 24


@dataclass(frozen=True)
class Scan:
    """How the cascade scans a copy: its ``scale_factor`` ladder, whether small faces are
    enlarged to be scanned at every pixel (``fine``), and the narrowest face it looks for.

    OpenCV scans a copy shrunk by a factor above 2 at every pixel and one shrunk less at every other
    pixel, so a face under two cascade windows wide (48 px) is scanned at every other pixel, where
    too few windows land on it to make ``min_neighbors``; the fine scan enlarges it instead
    (measured in docs/face-search.md, "The cascade's copies").
    """

    scale_factor: float = 1.1
    fine: bool = False
    # The narrowest face searched for (the detector's ``min_size``), whatever a caller asks.
    min_face: int = 30

    @cached_property
    def every_pixel_px(self) -> float:
        """The narrowest face OpenCV scans at every pixel: two windows and a scale step (52.8 px at 1.1)."""
        return 2 * CASCADE_WINDOW * self.scale_factor

    def copy_scale(self, min_face: float, shrink: bool = True) -> float:
        """What a region searched for faces ``min_face`` px and wider is resized by: to the copy that
        scans ``min_face`` at every pixel, enlarged only when ``fine``, shrunk only when ``shrink``."""
        scale = self.every_pixel_px / max(min_face, 1.0)
        if scale > 1.0:
            return scale if self.fine else 1.0
        return scale if shrink else 1.0


class FaceDetector:
    """A loaded Haar cascade; the defaults are those the emotion model was paired with.

    ``detect_width`` shrinks wide frames before detection, the main speed knob:
    detection time grows with the pixel count, and ``min_size`` (in frame pixels)
    is scaled with the frame so the same faces stay in range.
    """

    def __init__(self, cascade_path, scale_factor=1.1, min_neighbors=5, min_size=30,
                 detect_width=0, equalize=False, crop_offsets=(0.0, 0.0), fine_scan=False):
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
        self.scan = Scan(scale_factor, fine_scan, min_size)
        # Time inside detectMultiScale alone, so the pipeline's own overhead can be measured; and
        # resizing copies for it, which OpenCV would otherwise do inside detectMultiScale, slower.
        self.cascade_seconds = 0.0
        self.resize_seconds = 0.0

    @classmethod
    def from_config(cls, detector):
        """A detector for a ``DetectorConfig``; also sets OpenCV's (process-wide) thread count."""
        if detector.threads:
            cv2.setNumThreads(detector.threads)
        return cls(detector.cascade, detector.scale_factor, detector.min_neighbors, detector.min_size,
                   detector.detect_width, detector.equalize, detector.crop_offsets, detector.fine_scan)

    def scale_for(self, width):
        """The factor frames of this width are shrunk by before detection (1.0: not at all)."""
        return self.detect_width / width if 0 < self.detect_width < width else 1.0

    def detect(self, gray):
        """Boxes ``(x, y, w, h)`` of the faces in a 2-D uint8 image, in its own pixels, as int [N, 4]."""
        scale = self.scale_for(gray.shape[1])
        if self.scan.fine:
            scale = max(scale, self.scan.copy_scale(self.min_size))
        small = gray
        if scale != 1.0:
            size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
            started = time.perf_counter()
            small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR_EXACT)
            self.resize_seconds += time.perf_counter() - started
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

    def detect_regions(self, gray: np.ndarray, regions, min_neighbors: int | None = None,
                       shrink: bool = False) -> np.ndarray:
        """Boxes of the faces in ``regions`` (:meth:`detect_regions_with_hits`)."""
        return self.detect_regions_with_hits(gray, regions, min_neighbors, shrink)[0]

    def detect_regions_with_hits(self, gray: np.ndarray, regions, min_neighbors: int | None = None,
                                 shrink: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Boxes, in frame pixels, of the faces in each of ``regions``, in their order, and the
        number of the cascade's windows grouped into each (its neighbours; at least ``min_neighbors``): for each
        ``(left, top, right, bottom, min_face, max_face)``, faces ``min_face``-``max_face`` px wide
        inside ``gray[top:bottom, left:right]``.

        With a fine scan, a region of faces under two cascade windows is first enlarged so that its
        smallest face is scanned at every pixel (:meth:`Scan.copy_scale`). With ``shrink``, a region
        of larger faces is shrunk, but never below that copy, which loses faces the full-frame
        search finds.

        Shrinking is for bands (:mod:`edge_agent.agent.search`), not seats: a seat's region is small
        and OpenCV's pyramid shrinks it anyway, so a resize there is a fixed cost for no saving,
        while a band searched unshrunk misses faces at the cascade's threshold that the baseline
        finds. The measurements behind each rule: docs/face-search.md, "The cascade's copies".
        """
        neighbors = self.min_neighbors if min_neighbors is None else min_neighbors
        # This loop runs forty times a frame between whole ones: what it looks up is looked up once,
        # and the boxes are moved and scaled back to the frame all at once, not region by region.
        cascade, scan, equalize, clock = self._cascade, self.scan, self.equalize, time.perf_counter
        resizing = detecting = 0.0
        found, found_hits, scales, corners = [], [], [], []
        for left, top, right, bottom, min_face, max_face in regions:
            min_face = max(min_face, scan.min_face)
            if max_face < min_face or bottom - top < min_face or right - left < min_face:
                continue
            region = gray[top:bottom, left:right]
            scale = scan.copy_scale(min_face, shrink)
            if scale != 1.0:
                size = (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale)))
                # Bilinear, as the cascade's own pyramid resizes, in OpenCV's fixed-point form, which
                # gives the same pixels on x86 and arm64.
                started = clock()
                region = cv2.resize(region, size, interpolation=cv2.INTER_LINEAR_EXACT)
                resizing += clock() - started
            if equalize:
                region = cv2.equalizeHist(region)
            low = max(CASCADE_WINDOW, int(min_face * scale))
            high = max(low, round(max_face * scale))
            started = clock()
            # detectMultiScale2: the same boxes as detectMultiScale, at the same cost, with their hits.
            boxes, hits = cascade.detectMultiScale2(region, scaleFactor=self.scale_factor, minNeighbors=neighbors,
                                                    minSize=(low, low), maxSize=(high, high))
            detecting += clock() - started
            if len(boxes):
                found.append(boxes)
                found_hits.append(hits)
                scales.append(scale)
                corners.append((left, top))
        self.resize_seconds += resizing
        self.cascade_seconds += detecting
        if not found:
            return np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.int64)
        counts = [len(boxes) for boxes in found]
        boxes = np.concatenate(found).astype(np.float64) / np.repeat(scales, counts)[:, None]
        boxes[:, :2] += np.repeat(corners, counts, axis=0)
        return np.rint(boxes).astype(np.int64), np.concatenate(found_hits).astype(np.int64)

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
