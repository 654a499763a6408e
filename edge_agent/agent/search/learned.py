"""Where to look for faces in a fixed camera's view, frame by frame: the search that runs the detector.

A classroom camera does not move: faces are small at the top of the frame (back rows), large at
the bottom, and never on the ceiling. :class:`LearnedSearch` searches whole frames for its first
``learn_frames`` frames and then one frame in every ``full_every``. In between it searches the
seats (:mod:`.seats`: small regions around the faces found lately, students keep their seats all
lesson) and the patches that changed since the last frame outside them (:mod:`.motion`: someone
sitting down), or, when there are none or they would cost more, horizontal bands of rows
(:mod:`.bands`), each for the face sizes seen there (widened by ``margin``), each on the smallest
copy of its rows that still holds its smallest face (:meth:`FaceDetector.detect_regions`). This is
the package's only module that runs the detector; the others hold geometry and bookkeeping, and
none of them imports this one.

Invariants:
- A whole frame is searched at least every ``full_every`` frames (and first after every start),
  so a face in a new place or of a new size is found within that many frames, and the bands are
  rebuilt to include it.
- A frame is searched one way only, whole, seats or bands, except that a seat search missing
  more than half its seats (and ``SEATS_MISSED`` or more; faces found elsewhere make up for none)
  is followed by the bands, and the seats are forgotten. The frame's faces are then the bands'
  and those of the seat search that are none of them, so no face is reported twice.
- A seat whose face was found in the frame before is searched first for sizes only ``CONFIRM``
  times narrower to wider than that face; the full search is left for the seats where that found
  no face and for the others. A face the full search finds within ``SAME_SEAT`` widths and
  ``margin`` of the size of one the first pass found is that face, and is dropped.
- The bands are a pure function of the observations kept: the last ``MAX_OBSERVATIONS`` faces
  found by whole-frame searches (band searches would only ever confirm their own bands).
- The state file (:mod:`.state`) is read only at a start, written when learning ends, then at most
  every ``SAVE_EVERY_S`` (an SD card wears) and at :meth:`LearnedSearch.close`; seats are never
  written to it (they last a lesson; a start searches whole first).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from pathlib import Path

import numpy as np

from ..faces import FaceDetector
from .bands import Band, Plan, band_region, plan_bands
from .motion import MOTION_SEAT_REACH, Motion, newcomer_regions
from .regions import Region, area, merge
from .seats import Seats, reach_for, with_others
from .state import fingerprint, load_state, write_state

# The package's logger: the search's lines carry one name, whichever of its modules writes them.
log = logging.getLogger(__package__)

MAX_OBSERVATIONS = 2000
SAVE_EVERY_S = 600.0
# Bands and seats ask one neighbour fewer than a whole-frame search. A face on the edge of the
# cascade's threshold flips with the size of the region searched (OpenCV's pyramid rounds each
# copy's size differently): with the whole frame's neighbours, bands found fewer faces than the
# whole frame in some sizes; with one fewer, more in every size (see docs/face-search.md).
BAND_NEIGHBOURS_LESS = 1
# A face found in a band's reach, centred in the next band's rows, is kept when the next band missed
# it and it gathered this many times the neighbours asked: it finds nearly every face lost on a
# band's edge, for a few false detections more than keeping none (see docs/face-search.md).
STRONG_HITS = 2
# A seat search that misses more than half its seats, and at least SEATS_MISSED of them, is
# followed by the bands in the same frame; one student looking away is no reason.
SEATS_MISSED = 3
# A seat whose face was found in the frame before is first searched for faces this many times
# narrower to wider than it: two of the cascade's scales, where the full search takes five. Students
# sit still between two frames, and a face holds most of a seat's cost (the windows on it run deep
# into the cascade, at every scale searched); one scale misses faces near their size, which are
# then searched again in full, and three cost more for the same faces (see docs/face-search.md).
CONFIRM = 1.06


def band_neighbours(detector: FaceDetector) -> int:
    """The neighbours a band or seat search asks for: ``BAND_NEIGHBOURS_LESS`` fewer than a whole frame's."""
    return max(1, detector.min_neighbors - BAND_NEIGHBOURS_LESS)


def search_bands(detector: FaceDetector, gray: np.ndarray, plan: Plan, margin: float) -> np.ndarray:
    """Boxes found by searching each band of ``plan``; each face is kept by the band holding its centre.

    A face near a band's edge is also in the next band's reach, and each band searches its own copy,
    on which a face at the cascade's threshold may be found or not. One found only by the next band
    is kept too when that band's windows gathered ``STRONG_HITS`` times the neighbours asked.
    """
    height, width = gray.shape
    neighbours = band_neighbours(detector)
    found, strong = [np.zeros((0, 4), dtype=np.int64)], [np.zeros((0, 4), dtype=np.int64)]
    for band in plan.bands:
        boxes, hits = detector.detect_regions_with_hits(
            gray, [(*band_region(band, width, height), band.min_face, band.max_face)], neighbours, shrink=True)
        centres = boxes[:, 1] + boxes[:, 3] / 2
        inside = (centres >= band.top) & (centres < band.bottom)
        found.append(boxes[inside])
        strong.append(boxes[~inside & (hits >= STRONG_HITS * neighbours)])
    return with_others(np.concatenate(found), np.concatenate(strong), margin)


def search_seats(detector: FaceDetector, gray: np.ndarray, seats: Seats, last_frame: int,
                 newcomers: list[Region], min_neighbors: int) -> tuple[np.ndarray, int]:
    """Boxes of the faces in the seats and in ``newcomers``, and the frame pixels searched: the seats
    found in frame ``last_frame`` for sizes near their face's first; then the other seats, those
    not found again and the newcomers, in full."""
    height, width = gray.shape
    first = seats.regions(width, height, seats.found_in(last_frame), CONFIRM)
    confirmed = detector.detect_regions(gray, first, min_neighbors)
    rest = [seat for seat, done in zip(seats.seats, seats.held(confirmed), strict=True) if not done]
    second = merge(seats.around(width, height, rest) + newcomers)
    found = detector.detect_regions(gray, second, min_neighbors)
    return with_others(confirmed, found, seats.margin), area(first) + area(second)


class LearnedSearch:
    """Chooses, frame by frame, a whole-frame, seat or banded search, and learns the bands."""

    def __init__(self, detector: FaceDetector, learn_frames: int = 60, full_every: int = 60,
                 margin: float = 1.25, state_path: Path | None = None, camera: str = "",
                 hand_bands: list[tuple[float, float, int, int]] | None = None, seats: bool = True,
                 seat_frames: int = 60, seat_reach: float | None = None):
        self.detector = detector
        self.learn_frames, self.full_every, self.margin = learn_frames, full_every, margin
        # Hand-set bands are searched as given, every frame: no seats.
        self.seats = (Seats(seat_frames, reach_for(detector.scan, seat_reach), margin)
                      if seats and hand_bands is None else None)
        self.motion = Motion() if self.seats is not None else None
        self._changed: np.ndarray | None = None
        self.state_path = Path(state_path) if state_path else None
        self.camera = str(camera)
        # Hand-set bands: fractions of the frame height and sizes in px; used as given, never learned.
        self.hand_bands = hand_bands
        self.observations: deque = deque(maxlen=MAX_OBSERVATIONS)
        self.frame_size: tuple[int, int] | None = None
        self.plan = None
        self.frames = self.full_searches = self.learned_frames = 0
        # What the last frame's search was ("whole", "bands" or "seats") and the frame pixels
        # searched so far (a band or seat counted at its region's size, whatever the scales).
        self.last_search = ""
        self.searched_pixels = 0
        self._saved_at: float | None = None

    @property
    def plan(self) -> Plan | None:
        return self._plan

    @plan.setter
    def plan(self, plan: Plan | None) -> None:
        self._plan = plan
        # Weighed against the seats' cost every frame between whole ones. A plan is made for the
        # frame size _start() recorded.
        self._bands_cost = (plan.cost(self.frame_size[0], self.detector.scan)
                            if plan is not None and self.frame_size is not None else math.inf)

    @property
    def cascade_seconds(self) -> float:
        return self.detector.cascade_seconds

    def fingerprint(self) -> dict:
        return fingerprint(self.frame_size, self.camera, self.detector)

    def learning(self) -> bool:
        return self.hand_bands is None and self.learned_frames < self.learn_frames

    def detect(self, gray: np.ndarray) -> np.ndarray:
        """Boxes ``(x, y, w, h)`` of the faces in a 2-D uint8 frame, as int [N, 4]."""
        height, width = gray.shape
        if self.frame_size != (width, height):
            self._start(width, height)
        self.frames += 1
        if self.motion is not None:
            self._changed = self.motion.update(gray)
        plan = self.plan
        whole = plan is None or self.learning() or (self.frames - 1) % self.full_every == 0
        # Hand-set bands are planned by _start(): a plan is there whenever the search is not whole.
        if plan is not None and (self.hand_bands is not None or not whole):
            boxes = self._between(gray, plan)
        else:
            boxes = self.detector.detect(gray)
            self.last_search = "whole"
            self.searched_pixels += gray.size
            self.full_searches += 1
            self.learned_frames += 1
            self.observations.extend((x + w / 2, y + h / 2, w) for x, y, w, h in boxes.tolist())
            self.plan = plan_bands(self.observations, width, height, self.margin, self.detector.scan)
            self._save(force=self.learned_frames == self.learn_frames)
        if self.seats is not None:
            self.seats.update(boxes, self.frames)
        return boxes

    def _between(self, gray: np.ndarray, plan: Plan) -> np.ndarray:
        """A frame between whole-frame searches: the seats, or the bands when there are none or they cost more."""
        height, width = gray.shape
        neighbours = band_neighbours(self.detector)
        # Seats come with their Motion (__init__).
        if self.seats and self.motion is not None:
            moving_heads = self.seats.around(width, height, reach=max(self.seats.reach, MOTION_SEAT_REACH))
            newcomers = newcomer_regions(self._changed, moving_heads, plan.sizes_for_rows, width, height)
            # Counted region by region, unmerged: an estimate (overlapping seats count twice), where
            # merging them only to count would add to every frame (see docs/face-search.md).
            if self.seats.cost(self.seats.around(width, height) + newcomers, self.detector.scan) < self._bands_cost:
                boxes, pixels = search_seats(self.detector, gray, self.seats, self.frames - 1, newcomers, neighbours)
                self.searched_pixels += pixels
                for region in newcomers:
                    if not any(region.left <= x + w / 2 < region.right and region.top <= y + h / 2 < region.bottom
                               for x, y, w, h in boxes.tolist()):
                        self.motion.searched_in_vain(region)
                missed = self.seats.missed(boxes)
                if missed * 2 <= len(self.seats) or missed < SEATS_MISSED:
                    self.last_search = "seats"
                    return boxes
                # Most seats missed: the students moved (or most look away). Seats
                # left stale would fail every frame; the bands find the faces where they are now,
                # and those become the seats. The seat search's faces are kept too: a newcomer
                # may sit beyond the columns the bands were learned over.
                self.seats.clear()
                return with_others(self._bands(gray, plan), boxes, self.margin)
        return self._bands(gray, plan)

    def _bands(self, gray: np.ndarray, plan: Plan) -> np.ndarray:
        height, width = gray.shape
        self.last_search = "bands"
        for band in plan.bands:
            left, top, right, bottom = band_region(band, width, height)
            self.searched_pixels += (right - left) * (bottom - top)
        return search_bands(self.detector, gray, plan, self.margin)

    def _start(self, width: int, height: int) -> None:
        self.frame_size = (width, height)
        self.observations.clear()
        if self.seats is not None:
            self.seats.clear()
        if self.motion is not None:
            self.motion.reset()
        self.plan, self.learned_frames = None, 0
        if self.hand_bands is not None:
            self.plan = Plan(tuple(Band(round(top * height), round(bottom * height), low, high, 0, width)
                                   for top, bottom, low, high in self.hand_bands))
            return
        state = load_state(self.state_path, self.fingerprint())
        if state is not None:
            self.observations.extend(tuple(o) for o in state["observations"])
            self.learned_frames = int(state["learned_frames"])
            self.plan = plan_bands(self.observations, width, height, self.margin, self.detector.scan)
            log.info("face search: using the bands learned in %s (%s)", self.state_path, self.plan.describe())

    def _save(self, force: bool = False) -> None:
        if self.state_path is None:
            return
        now = time.monotonic()
        if not force and self._saved_at is not None and now - self._saved_at < SAVE_EVERY_S:
            return
        if not force and self.learning():
            return
        self._saved_at = now
        write_state(self.state_path, self.fingerprint(), self.learned_frames, self.observations, self.plan)

    def restart(self) -> None:
        """Learn afresh from the next frame (another source); the state file is left as it is."""
        self.frame_size = None
        self.frames = 0

    def close(self) -> None:
        self._save(force=not self.learning() and self.hand_bands is None)

    def describe(self) -> str:
        if self.hand_bands is not None:
            return f"hand-set bands: {self.plan.describe() if self.plan else 'not started'}"
        if self.learning():
            return f"learning: {self.learned_frames}/{self.learn_frames} whole-frame searches done"
        # learn_frames 0 is done learning before its first frame, with no plan yet.
        return f"learned from {len(self.observations)} faces: {self.plan.describe() if self.plan else 'no bands yet'}"
