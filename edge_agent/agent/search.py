"""Where to look for faces in a fixed camera's view, learned from the faces found there.

A classroom camera does not move: faces are small at the top of the frame (back rows), large at
the bottom, and never on the ceiling. :class:`LearnedSearch` searches whole frames for its first
``learn_frames`` frames and then one frame in every ``full_every``. In between it searches the
seats (:mod:`edge_agent.agent.seats`: small regions around the faces found lately, students keep
their seats all lesson) and the patches that changed since the last frame outside them (someone
sitting down), or, when there are none or they would cost more, horizontal bands of
rows, each for the face sizes seen there (widened by ``margin``), each on the smallest copy of its
rows that still holds its smallest face (:meth:`FaceDetector.detect_regions`).

Invariants:
- A whole frame is searched at least every ``full_every`` frames (and first after every start),
  so a face in a new place or of a new size is found within that many frames, and the bands are
  rebuilt to include it.
- A frame is searched one way only, whole, seats or bands, except that a seat search missing
  more than half its seats (and ``SEATS_MISSED`` or more; faces found elsewhere make up for none)
  is followed by the bands, and the seats are forgotten. The frame's faces are then the bands'
  and those of the seat search that are none of them, so no face is reported twice.
- The bands are a pure function of the observations kept: the last ``MAX_OBSERVATIONS`` faces
  found by whole-frame searches (band searches would only ever confirm their own bands).
- A state file is used only when it was written in this format, for frames of the same size, by
  the same detector settings and camera source; anything else is discarded with a warning and
  relearned, never trusted. It holds face positions and sizes only, never pixels.
- Seats are never written to the state file (they last a lesson; a start searches whole first).
- The file is replaced atomically and at most every ``SAVE_EVERY_S`` (an SD card wears); a
  failure to write it is logged and the search goes on from memory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .faces import FaceDetector, Scan
from .seats import (
    MOTION_SEAT_REACH,
    Motion,
    Seats,
    newcomer_regions,
    reach_for,
    region_cost,
    search_seats,
    with_others,
)

log = logging.getLogger(__name__)

FORMAT = 1
MAX_OBSERVATIONS = 2000
# Rows are first cut into this many strips, then grouped into the bands that cost least (band_cost).
STRIPS = 16
# How far above and below its rows a band's search reaches, in its largest face widths: a face
# centred on the band's edge must lie wholly inside what is searched.
REACH = 0.55
# A detection more than this far (as a size ratio) from the fitted size for its row is not a face of the room.
OUTLIER_RATIO = 1.5
SAVE_EVERY_S = 600.0
# Bands ask one neighbour fewer than a whole-frame search. A face on the edge of the cascade's
# threshold flips with the size of the region searched (OpenCV's pyramid rounds each copy's
# size differently); measured on 20 classroom-like frames, the seed's 5 neighbours in bands
# found fewer faces than the whole frame in two size buckets, 4 found more in every bucket.
BAND_NEIGHBOURS_LESS = 1
# A face found in a band's reach, centred in the next band's rows, is kept when the next band missed
# it and it gathered this many times the neighbours asked. On random seats at 1920x1080 (edge-agent
# bench pipeline), 6 of the 340 faces 64-95 px wide were missed this way where the seed missed 2;
# twice the neighbours found 339 with 10 more false detections (101; 18 more at 1280x720). Tried
# with bands unshrunk: three times found 337, and keeping every such face 340 with 24 more.
STRONG_HITS = 2
# A seat search that misses more than half its seats, and at least SEATS_MISSED of them, is
# followed by the bands in the same frame; one student looking away is no reason.
SEATS_MISSED = 3


@dataclass(frozen=True)
class Band:
    """Faces whose centres lie in rows [top, bottom) and columns [left, right) are ``min_face``-``max_face`` px wide."""

    top: int
    bottom: int
    min_face: int
    max_face: int
    left: int = 0
    right: int = 1 << 30


@dataclass(frozen=True)
class Plan:
    bands: tuple[Band, ...]

    def describe(self) -> str:
        if not self.bands:
            return "no faces seen yet: whole frames only"
        return "; ".join(f"rows {b.top}-{b.bottom}, columns {b.left}-{b.right}: faces {b.min_face}-{b.max_face} px"
                         for b in self.bands)

    def cost(self, width: int, scan: Scan) -> float:
        """Window positions searching every band costs (:func:`region_cost`)."""
        return sum(band_cost(b.top, b.bottom, b.min_face, b.max_face, scan) * (min(b.right, width) - b.left)
                   for b in self.bands)


def fit_sizes(cy: np.ndarray, side: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face width as a straight line in the row, fitted robustly: (coefficients, inlier mask).

    On a flat floor seen by a fixed camera, a face's width grows linearly with the row it is on.
    Detections far off the line (a poster, a hand, a false detection the size of the frame) are
    dropped and the line refitted, so they never widen the bands.
    """
    keep = np.ones(len(side), dtype=bool)
    coefficients = np.array([0.0, np.median(side)])
    for _ in range(3):
        # A slope needs rows at least a face apart: faces all in one row (a seminar table) fit a
        # line of any slope, and sizes from it are nonsense away from the row.
        if keep.sum() >= 2 and np.ptp(cy[keep]) >= np.median(side[keep]):
            coefficients = np.polyfit(cy[keep], side[keep], 1)
        else:
            coefficients = np.array([0.0, np.median(side[keep])])
        expected = np.maximum(np.polyval(coefficients, cy), 1.0)
        keep = np.abs(np.log(side / expected)) < np.log(OUTLIER_RATIO)
    return coefficients, keep


def band_cost(top: float, bottom: float, low: float, high: float, scan: Scan) -> float:
    """Window positions per frame column that searching a band costs: its rows plus the reach above and below."""
    return region_cost(1, bottom - top + 2 * REACH * high, low, high, scan)


def plan_bands(observations, width: int, height: int, margin: float, scan: Scan) -> Plan:
    """Bands covering the rows where faces were seen, from ``(centre_x, centre_y, width)`` triples."""
    if not len(observations):
        return Plan(())
    cx, cy, side = np.asarray(observations, dtype=np.float64).reshape(-1, 3).T
    coefficients, keep = fit_sizes(cy, side)
    if not keep.any():
        return Plan(())
    cx, cy, side = cx[keep], cy[keep], side[keep]
    ratio = side / np.maximum(np.polyval(coefficients, cy), 1.0)
    # The 5th and 95th percentiles, not the extremes: one stray box must not widen every band.
    low_ratio, high_ratio = np.percentile(ratio, 5) / margin, np.percentile(ratio, 95) * margin
    strip = height / STRIPS
    # A strip of slack above the highest face and below the lowest: a seat no one sat in while
    # learning sits a little further back or forward.
    first = max(0, int(cy.min() // strip) - 1)
    last = min(STRIPS - 1, int(cy.max() // strip) + 1)

    def strip_sizes(k: int) -> tuple[float, float]:
        ends = np.maximum(np.polyval(coefficients, [k * strip, (k + 1) * strip]), 1.0)
        return ends.min() * low_ratio, ends.max() * high_ratio

    def band(i: int, j: int) -> list[float]:
        """Strips i..j-1 as one band."""
        return [i * strip, j * strip, strip_sizes(i)[0], strip_sizes(j - 1)[1]]

    # The cheapest cut of the strips into bands (a few hundred band_cost calls): each band adds
    # its reach above and below, and widens the sizes all its rows are searched for.
    best = {first: (0.0, [])}
    for j in range(first + 1, last + 2):
        best[j] = min(((best[i][0] + band_cost(*band(i, j), scan), best[i][1] + [band(i, j)])
                       for i in range(first, j)), key=lambda option: option[0])
    bands = best[last + 1][1]
    # One span of columns for all bands: where faces were seen, the widest face to spare. Per-band
    # spans learned from a minute's faces left out seats nobody had used yet (measured: 84% of
    # the largest faces found, against 100% by the whole-frame search).
    widest = side.max() * margin
    left, right = max(0, int(cx.min() - widest)), min(width, int(np.ceil(cx.max() + widest)))
    planned = [Band(round(top), round(bottom), int(low), int(np.ceil(high)), left, right)
               for top, bottom, low, high in bands]
    return Plan(tuple(planned))


def band_region(band: Band, width: int, height: int) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of the frame a band's search covers: its rows and the reach."""
    reach = int(np.ceil(band.max_face * REACH))
    return band.left, max(0, band.top - reach), min(width, band.right), min(height, band.bottom + reach)


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
        self._saved_at = None

    @property
    def plan(self) -> Plan | None:
        return self._plan

    @plan.setter
    def plan(self, plan: Plan | None) -> None:
        self._plan = plan
        # Weighed against the seats' cost every frame between whole ones.
        self._bands_cost = plan.cost(self.frame_size[0], self.detector.scan) if plan is not None else math.inf

    @property
    def cascade_seconds(self) -> float:
        return self.detector.cascade_seconds

    def fingerprint(self) -> dict:
        d = self.detector
        return {"format": FORMAT, "frame": list(self.frame_size or ()), "camera": self.camera,
                "detector": {"cascade": d.path.name, "scale_factor": d.scale_factor,
                             "min_neighbors": d.min_neighbors, "min_size": d.min_size}}

    def learning(self) -> bool:
        return self.hand_bands is None and self.learned_frames < self.learn_frames

    def detect(self, gray: np.ndarray) -> np.ndarray:
        """Boxes ``(x, y, w, h)`` of the faces in a 2-D uint8 frame, as int [N, 4]."""
        if self.frame_size != (gray.shape[1], gray.shape[0]):
            self._start(gray.shape[1], gray.shape[0])
        self.frames += 1
        if self.motion is not None:
            self._changed = self.motion.update(gray)
        whole = self.plan is None or self.learning() or (self.frames - 1) % self.full_every == 0
        if self.hand_bands is not None or not whole:
            boxes = self._between(gray)
        else:
            boxes = self.detector.detect(gray)
            self.last_search = "whole"
            self.searched_pixels += gray.size
            self.full_searches += 1
            self.learned_frames += 1
            self.observations.extend((x + w / 2, y + h / 2, w) for x, y, w, h in boxes.tolist())
            self.plan = plan_bands(self.observations, *self.frame_size, self.margin, self.detector.scan)
            self._save(force=self.learned_frames == self.learn_frames)
        if self.seats is not None:
            self.seats.update(boxes, self.frames)
        return boxes

    def _between(self, gray: np.ndarray) -> np.ndarray:
        """A frame between whole-frame searches: the seats, or the bands when there are none or they cost more."""
        height, width = gray.shape
        neighbours = band_neighbours(self.detector)
        if self.seats:
            moving_heads = self.seats.around(width, height, reach=max(self.seats.reach, MOTION_SEAT_REACH))
            newcomers = newcomer_regions(self._changed, moving_heads, self._sizes_for_rows, width, height)
            # Counted region by region, unmerged: an estimate (overlapping seats count twice), where
            # merging them only to count cost 0.3 ms a frame.
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
                return with_others(self._bands(gray), boxes, self.margin)
        return self._bands(gray)

    def _bands(self, gray: np.ndarray) -> np.ndarray:
        height, width = gray.shape
        self.last_search = "bands"
        for band in self.plan.bands:
            left, top, right, bottom = band_region(band, width, height)
            self.searched_pixels += (right - left) * (bottom - top)
        return search_bands(self.detector, gray, self.plan, self.margin)

    def _sizes_for_rows(self, top: int, bottom: int) -> tuple[int, int] | None:
        """Face sizes the bands search for in rows [top, bottom), or None where no band reaches."""
        near = [band for band in self.plan.bands
                if band.top - band.max_face * REACH < bottom and top < band.bottom + band.max_face * REACH]
        if not near:
            return None
        return min(band.min_face for band in near), max(band.max_face for band in near)

    def _start(self, width: int, height: int) -> None:
        self.frame_size = (width, height)
        self.observations.clear()
        if self.seats is not None:
            self.seats.clear()
            self.motion.reset()
        self.plan, self.learned_frames = None, 0
        if self.hand_bands is not None:
            self.plan = Plan(tuple(Band(round(top * height), round(bottom * height), low, high, 0, width)
                                   for top, bottom, low, high in self.hand_bands))
            return
        state = self._load()
        if state is not None:
            self.observations.extend(tuple(o) for o in state["observations"])
            self.learned_frames = int(state["learned_frames"])
            self.plan = plan_bands(self.observations, width, height, self.margin, self.detector.scan)
            log.info("face search: using the bands learned in %s (%s)", self.state_path, self.plan.describe())

    def _load(self) -> dict | None:
        if self.state_path is None or not self.state_path.exists():
            return None
        try:
            state = json.loads(self.state_path.read_text())
            observations = np.asarray(state["observations"], dtype=np.float64)
            if observations.size and (observations.ndim != 2 or observations.shape[1] != 3):
                raise ValueError("observations are not (x, y, width) triples")
            int(state["learned_frames"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("face search: %s is damaged (%s); discarding it and learning again", self.state_path, exc)
            return None
        wanted = self.fingerprint()
        differs = [key for key in wanted if state.get(key) != wanted[key]]
        if differs:
            log.warning("face search: %s was learned with another %s (%s, now %s); discarding it and learning "
                        "again", self.state_path, " and ".join(differs),
                        ", ".join(str(state.get(k)) for k in differs), ", ".join(str(wanted[k]) for k in differs))
            return None
        return state

    def _save(self, force: bool = False) -> None:
        if self.state_path is None:
            return
        now = time.monotonic()
        if not force and self._saved_at is not None and now - self._saved_at < SAVE_EVERY_S:
            return
        if not force and self.learning():
            return
        self._saved_at = now
        state = {**self.fingerprint(), "learned_frames": self.learned_frames,
                 "observations": [[round(v, 1) for v in o] for o in self.observations],
                 "bands": [asdict(b) for b in (self.plan.bands if self.plan else ())]}
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.state_path)
        except OSError as exc:
            log.warning("face search: cannot write %s (%s); the bands stay in memory only", self.state_path,
                        exc.strerror or exc)

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
        return f"learned from {len(self.observations)} faces: {self.plan.describe()}"


def read_state(path: Path) -> tuple[list[int], Plan, int, str]:
    """(frame size, bands, faces learned from, camera) of a state file, read only.

    Raises FileNotFoundError when there is none, ValueError when it is damaged.
    """
    try:
        state = json.loads(Path(path).read_text())
        plan = Plan(tuple(Band(**band) for band in state["bands"]))
        return [int(v) for v in state["frame"]], plan, len(state["observations"]), str(state.get("camera"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is damaged ({exc})") from None


def describe_state(path: Path) -> str:
    """What a state file says, for ``edge-agent check``; read-only, safe beside a running agent."""
    try:
        frame, plan, faces, camera = read_state(path)
    except FileNotFoundError:
        return f"{path}: nothing learned yet (the agent learns its bands in its first minutes)"
    except ValueError as exc:
        return f"{exc}; the agent will discard it and learn again"
    return f"{path}: learned from {faces} faces at {'x'.join(map(str, frame))} from {camera}: {plan.describe()}"
