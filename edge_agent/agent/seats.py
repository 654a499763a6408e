"""Seats: the places where faces were found lately, searched alone between whole-frame searches.

Students keep their seats all lesson, so between whole-frame searches :class:`Seats` searches only
a small region around each face found in the last ``keep`` frames, each only for sizes near that
face's. A region costs a few hundred window positions where a band of rows costs tens of thousands.

Invariants:
- A seat is a face found by any search (whole frame, bands or seats); each face found moves the
  nearest seat within half its width to itself, or starts a new seat. A seat whose face was not
  found for ``keep`` frames is dropped, so a student who looks away for a while is searched for
  where they sat and found again when they look back, without a whole-frame search.
- A seat's region is its face widened by ``reach`` face widths on every side (a head moves), and
  is searched for faces ``margin`` times narrower to ``margin`` times wider than that face.
- A seat whose face was found in the frame before is searched first for sizes only ``CONFIRM``
  times narrower to wider than that face (two or three of the cascade's scales, where the full
  search takes five). The full search is left for the seats where that found no face and for
  the others. Students sit still between two frames, and a face holds most of a seat's cost:
  the windows on it run deep into the cascade, at every scale searched.
- No two regions searched in one pass hold the same face at the same size: regions that overlap
  and share a face size are merged into their bounding box, searched for every size either asked.
  Overlapping regions of sizes apart (a back-row seat beside a large stray box) stay apart: merged,
  the small face's copy would be made of the whole large region (a fine scan enlarges it; measured
  at 1920x1080, 0.5 such regions a frame cost 54 ms). A face the full search finds within
  ``SAME_SEAT`` widths and ``margin`` of the size of one the first pass found is that face, and
  is dropped: no face is reported twice. A seat counts as found by the first pass on the same
  terms, so a stray box around a face (the cascade's head and shoulders) never stands for it.
- Someone who sits down between whole-frame searches changes the frame where no seat is:
  :class:`Motion` compares each frame with the one before at 1/``MOTION_SCALE`` of its size, and
  each changed patch beyond ``MOTION_SEAT_REACH`` of every seat's face, in rows where faces have
  been seen, is searched as well (for the face sizes of those rows). Motion nearer a seat is its
  head moving and adds nothing; a patch searched without finding a face is left out for
  ``MOTION_QUIET_FRAMES`` frames.
- Seats live in memory only: a start searches its first frame whole, which finds them again.
- What a seat search costs is counted (:func:`region_cost`) the way a band's is, so the caller
  can search the bands instead when the seats would cost more (a crowded room).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from .faces import CASCADE_WINDOW, FaceDetector, Scan

# A face found further than this from a seat's centre (in the seat's face widths) is someone else.
SAME_SEAT = 0.5
# A seat whose face was found in the frame before is first searched for faces this many times
# narrower to wider than it: two of the cascade's scales. On the lesson benchmark at 1280x720 (one
# thread, fine scan, seats reaching 0.3 face widths), paired runs: 1.06 took 100 ms a frame where
# 1.12 (three scales) took 109, and found the same faces; 74 ms where 1.04 (one scale) took 85,
# as more faces were missed near their size and searched again in full.
CONFIRM = 1.06
# Frames are compared at 1/MOTION_SCALE of their size (sensor noise averages out over the 64
# pixels of a cell); a cell that changed by more than MOTION_LEVEL grey levels has moved.
MOTION_HALVINGS = 3
MOTION_SCALE = 2 ** MOTION_HALVINGS
MOTION_LEVEL = 16
# Motion this close to a seat's face, in its widths on each side, is that head moving: a head
# turning changes the hair and shoulders around it, beyond the seat's own search. On the lesson
# benchmark at 1280x720 (fine scan, seats reaching 0.3): within 0.3, moving heads were searched
# again as newcomers (1.6 times a frame, 22-27 ms each) and a frame took 111 ms; within 0.4, 85 ms.
# Within 0.6 took 76 ms, but hid a late arrival sitting down between two seated students until
# the next whole frame (89% of the 48-63 px faces found, against 100%).
MOTION_SEAT_REACH = 0.4
# A changed patch is searched this many of its rows' largest face widths beyond it on each side:
# a face only partly changed (a head turning towards the camera) lies wholly inside.
MOTION_REACH = 0.6
# A patch searched in vain is not searched again for this many frames: students the cascade cannot
# find (too small, turned away) move all lesson, and would be searched in every frame.
MOTION_QUIET_FRAMES = 60


@dataclass
class Seat:
    x: float  # centre of the face last found here, frame pixels
    y: float
    width: float
    seen: int  # frame number the face was last found in


class Region(NamedTuple):
    # A tuple, which FaceDetector.detect_regions takes as it is; a frame builds a few hundred of
    # these, at 0.8 us each where a frozen dataclass took 2.2.
    left: int
    top: int
    right: int
    bottom: int
    min_face: int
    max_face: int

    def overlaps(self, other: Region) -> bool:
        """Whether the two share pixels and face sizes: a face could be found in both."""
        return (self.left < other.right and other.left < self.right
                and self.top < other.bottom and other.top < self.bottom
                and self.min_face <= other.max_face and other.min_face <= self.max_face)

    def union(self, other: Region) -> Region:
        return Region(min(self.left, other.left), min(self.top, other.top), max(self.right, other.right),
                      max(self.bottom, other.bottom), min(self.min_face, other.min_face),
                      max(self.max_face, other.max_face))


def reach_for(scan: Scan, asked: float | None = None) -> float:
    """How far beyond its face a seat is searched, in face widths: ``asked`` where set, else room
    for a head's movement between frames and for the windows that find it there.

    A fine scan has twice the windows across a face, and needs less room: on the lesson benchmark at
    1280x720 (one thread) it found the same 32-47 px faces at 0.3 as at 0.4, in 74 ms a frame where
    0.4 took 109. At the coarse step 0.3 lost a seated face 0.4 kept (in the seat tests' lesson).
    """
    if asked is not None:
        return asked
    return 0.3 if scan.fine else 0.4


def region_cost(width: float, height: float, low: float, high: float, scan: Scan) -> float:
    """Window positions searching a ``width`` x ``height`` region for faces ``low``-``high`` px wide costs.

    Counted the way OpenCV scans the copy :meth:`FaceDetector.detect_regions` makes: every scale
    of the ladder from ``low`` (no less than ``scan.min_face``) to ``high``, 2 px steps below a
    factor of 2 and 1 px above.
    """
    # Rows learned to hold faces narrower than the detector looks for are searched from its
    # smallest face: counted from theirs, a fine scan's copy came out many times too large.
    low = max(low, scan.min_face)
    resize = scan.copy_scale(low)
    cost, factor = 0.0, max(1.0, low * resize / CASCADE_WINDOW)
    while factor * CASCADE_WINDOW <= high * resize:
        step = 1 if factor > 2 else 2
        cost += width * resize * height * resize / factor / factor / (step * step)
        factor *= scan.scale_factor
    return cost


def merge(regions: list[Region]) -> list[Region]:
    """``regions`` with every overlapping pair (:meth:`Region.overlaps`) replaced by its bounding box,
    until none overlap."""
    merged: list[Region] = []  # pairwise non-overlapping throughout
    for region in regions:
        # Each region it takes in widens it, so it may now reach one it missed: look again.
        grew = True
        while grew:
            grew = False
            for k, kept in enumerate(merged):
                if region.overlaps(kept):
                    region = region.union(merged.pop(k))
                    grew = True
                    break
        merged.append(region)
    return merged


class Seats:
    """The seats of the faces found in the last ``keep`` frames, and their search."""

    def __init__(self, keep: int = 60, reach: float = 0.4, margin: float = 1.25):
        self.keep, self.reach, self.margin = keep, reach, margin
        self.seats: list[Seat] = []

    def __len__(self) -> int:
        return len(self.seats)

    def clear(self) -> None:
        self.seats.clear()

    def update(self, boxes: np.ndarray, frame: int) -> None:
        """Move each seat to the face found in it in frame number ``frame``; add new ones, drop stale ones."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        centres = _centres(boxes)
        # Each face takes the nearest seat within reach that no face before it took. Most frames no
        # two faces are nearest the same seat, and each face's nearest is its own: one look for all.
        taken = np.full(len(boxes), -1)
        if self.seats and len(boxes):
            # Distances to the seats as they were: a seat a face moved, or one it started, is no one else's.
            places = np.array([(seat.x, seat.y) for seat in self.seats])
            reach = SAME_SEAT * np.array([seat.width for seat in self.seats])
            distances = np.hypot(*np.moveaxis(centres[:, None, :] - places[None], -1, 0))
            nearest = distances.argmin(axis=1)
            if len(np.unique(nearest)) < len(nearest):
                taken = _in_turn(distances, reach)
            else:
                taken = np.where(distances[np.arange(len(boxes)), nearest] <= reach[nearest], nearest, -1)
        for (cx, cy), w, k in zip(centres.tolist(), boxes[:, 2].tolist(), taken.tolist(), strict=True):
            if k >= 0:
                self.seats[k] = Seat(cx, cy, w, frame)
            else:
                self.seats.append(Seat(cx, cy, w, frame))
        self.seats = [seat for seat in self.seats if frame - seat.seen < self.keep]

    def regions(self, width: int, height: int, seats: list[Seat] | None = None,
                margin: float | None = None) -> list[Region]:
        """The regions to search for ``seats`` (all by default): :meth:`around` them, merged where
        they overlap."""
        return merge(self.around(width, height, seats, margin))

    def around(self, width: int, height: int, seats: list[Seat] | None = None, margin: float | None = None,
               reach: float | None = None) -> list[Region]:
        """A region for each of ``seats`` (all by default), reaching ``reach`` face widths beyond its
        face and for sizes within ``margin`` of it (the seats' own reach and margin by default),
        clipped to a ``width`` x ``height`` frame; they may overlap."""
        margin = margin or self.margin
        reach = self.reach if reach is None else reach
        regions = []
        for seat in self.seats if seats is None else seats:
            half = seat.width * (0.5 + reach)
            regions.append(Region(max(0, int(seat.x - half)), max(0, int(seat.y - half)),
                                  min(width, math.ceil(seat.x + half)), min(height, math.ceil(seat.y + half)),
                                  int(seat.width / margin), math.ceil(seat.width * margin)))
        return regions

    def held(self, boxes: np.ndarray) -> np.ndarray:
        """For each seat, whether one of ``boxes`` is its face (:func:`_same_face`)."""
        return _same_face([(seat.x, seat.y) for seat in self.seats], [seat.width for seat in self.seats], boxes,
                          self.margin)

    def missed(self, boxes: np.ndarray) -> int:
        """How many seats none of ``boxes`` is the face of: faces found elsewhere (newcomers) make up for none."""
        return int((~self.held(boxes)).sum())

    def found_in(self, frame: int) -> list[Seat]:
        """The seats whose face was found in frame number ``frame``."""
        return [seat for seat in self.seats if seat.seen == frame]

    def cost(self, regions: list[Region], scan: Scan) -> float:
        return sum(region_cost(r.right - r.left, r.bottom - r.top, r.min_face, r.max_face, scan)
                   for r in regions)


def _in_turn(distances: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """For each row (a face) in turn, the nearest column (a seat) within that column's ``reach``
    that no row before it took, or -1 where there is none."""
    distances = distances.copy()
    taken = np.full(len(distances), -1)
    for row, near in enumerate(distances):
        k = int(near.argmin())
        if near[k] <= reach[k]:
            taken[row] = k
            distances[:, k] = np.inf
    return taken


def _centres(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return boxes[:, :2] + boxes[:, 2:] / 2


def _same_face(points: np.ndarray, widths: np.ndarray, boxes: np.ndarray, margin: float) -> np.ndarray:
    """For each of ``points`` (x, y) with its face ``widths``, whether one of ``boxes`` is that face:
    centred within ``SAME_SEAT`` widths of it and within ``margin`` of its width. A stray box
    around a face (the cascade's, a head and shoulders) is not the face."""
    if not len(points) or not len(boxes):
        return np.zeros(len(points), dtype=bool)
    widths = np.asarray(widths, dtype=np.float64)[:, None]
    offsets = np.asarray(points, dtype=np.float64)[:, None, :] - _centres(boxes)[None, :, :]
    close = np.hypot(offsets[..., 0], offsets[..., 1]) <= SAME_SEAT * widths
    alike = np.abs(np.log(np.asarray(boxes, dtype=np.float64)[None, :, 2] / widths)) <= np.log(margin)
    return (close & alike).any(axis=1)


def area(regions: list[Region]) -> int:
    return sum((r.right - r.left) * (r.bottom - r.top) for r in regions)


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


def with_others(boxes: np.ndarray, others: np.ndarray, margin: float) -> np.ndarray:
    """``boxes``, then those of ``others`` that are none of their faces (:func:`_same_face`)."""
    others = np.asarray(others).reshape(-1, 4)
    return np.concatenate([boxes, others[~_same_face(_centres(others), others[:, 2], boxes, margin)]])


def _cells(region: Region) -> tuple[slice, slice]:
    """The motion cells that ``region`` covers, in part or whole."""
    return (slice(region.top // MOTION_SCALE, -(-region.bottom // MOTION_SCALE)),
            slice(region.left // MOTION_SCALE, -(-region.right // MOTION_SCALE)))


class Motion:
    """Which cells of each frame differ from the frame before it, at 1/``MOTION_SCALE`` of its size,
    less those searched in vain lately."""

    def __init__(self) -> None:
        self.previous: np.ndarray | None = None
        self.quiet_until: np.ndarray | None = None  # per cell, the frame until which it is not searched
        self.frame = 0

    def reset(self) -> None:
        self.previous = self.quiet_until = None

    def update(self, gray: np.ndarray) -> np.ndarray | None:
        """The changed cells (uint8, 1 where changed), or None for a first frame or a new frame size."""
        small = gray
        # Halved step by step: OpenCV averages 2x2 blocks on a fast path, where one shrink by 8 took
        # 0.3-0.4 ms of a 1280x720 frame (these three, 0.07 ms); the cells differ by one grey level at most.
        for _ in range(MOTION_HALVINGS):
            small = cv2.resize(small, (max(1, small.shape[1] // 2), max(1, small.shape[0] // 2)),
                               interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (3, 3), 0)
        previous, self.previous = self.previous, small
        self.frame += 1
        if previous is None or previous.shape != small.shape:
            self.quiet_until = np.zeros(small.shape, np.int64)
            return None
        return ((cv2.absdiff(small, previous) > MOTION_LEVEL) & (self.quiet_until < self.frame)).astype(np.uint8)

    def searched_in_vain(self, region: Region) -> None:
        """Leave ``region`` unsearched for the next MOTION_QUIET_FRAMES frames."""
        self.quiet_until[_cells(region)] = self.frame + MOTION_QUIET_FRAMES


def newcomer_regions(changed: np.ndarray | None, seats: list[Region], sizes_for_rows,
                     width: int, height: int) -> list[Region]:
    """The patches of ``changed`` cells outside every one of ``seats``, as regions to search.

    Near a seat (``seats`` reach ``MOTION_SEAT_REACH``) a change is a head moving; the seat's own
    search covers it. ``sizes_for_rows(top, bottom)`` gives the face sizes ``(low, high)`` of those
    rows, or None where no face has been seen (a ceiling, a wall): nothing is searched there.
    """
    if changed is None:
        return []
    outside = changed.copy()
    for r in seats:
        outside[_cells(r)] = 0
    count, _, stats, _ = cv2.connectedComponentsWithStats(outside, connectivity=8)
    regions = []
    for x, y, w, h, _ in stats[1:count].tolist():
        left, top, right, bottom = (x * MOTION_SCALE, y * MOTION_SCALE, (x + w) * MOTION_SCALE,
                                    (y + h) * MOTION_SCALE)
        sizes = sizes_for_rows(top, bottom)
        # A face changes a patch about its own size; a thinner one is an edge of something moving.
        if sizes is None or max(right - left, bottom - top) < sizes[0] / 2:
            continue
        low, high = sizes
        pad = int(np.ceil(high * MOTION_REACH))
        regions.append(Region(max(0, left - pad), max(0, top - pad), min(width, right + pad),
                              min(height, bottom + pad), low, high))
    return regions
