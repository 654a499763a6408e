"""Seats: the places where faces were found lately, searched alone between whole-frame searches.

Students keep their seats all lesson, so between whole-frame searches only a small region around
each face found in the last ``keep`` frames is searched, each only for sizes near that face's. A
seat's region costs a few hundred window positions where a band of rows costs tens of thousands.

Invariants:
- A seat is a face found by any search (whole frame, bands or seats); each face found moves the
  nearest seat within half its width (``SAME_SEAT``) to itself, or starts a new seat. A seat whose
  face was not found for ``keep`` frames is dropped, so a student who looks away for a while is
  searched for where they sat and found again when they look back, without a whole-frame search.
- A seat's region is its face widened by ``reach`` face widths on every side (a head moves), and
  is searched for faces ``margin`` times narrower to ``margin`` times wider than that face.
- A box is a seat's face only when centred within ``SAME_SEAT`` widths of it and within ``margin``
  of its width: a stray box around a face (the cascade's head and shoulders) never stands for it,
  and :func:`with_others` never reports one face twice.
- Seats live in memory only: a start searches its first frame whole, which finds them again.
- What searching the seats costs is counted (:func:`region_cost`) the way a band's is, so the
  caller can search the bands instead when the seats would cost more (a crowded room).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..faces import Scan
from .regions import Region, merge, region_cost

# A face found further than this from a seat's centre (in the seat's face widths) is someone else.
SAME_SEAT = 0.5


@dataclass
class Seat:
    x: float  # centre of the face last found here, frame pixels
    y: float
    width: float
    seen: int  # frame number the face was last found in


def reach_for(scan: Scan, asked: float | None = None) -> float:
    """How far beyond its face a seat is searched, in face widths: ``asked`` where set, else room
    for a head's movement between frames and for the windows that find it there.

    A fine scan has twice the windows across a face, and needs less room: it finds the same faces
    at 0.3 as at 0.4, for less. At the coarse step 0.3 loses seated faces 0.4 keeps (see
    docs/face-search.md).
    """
    if asked is not None:
        return asked
    return 0.3 if scan.fine else 0.4


class Seats:
    """The seats of the faces found in the last ``keep`` frames, and the regions to search for them."""

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


def _same_face(points: Sequence[tuple[float, float]] | np.ndarray, widths: Sequence[float] | np.ndarray,
               boxes: np.ndarray, margin: float) -> np.ndarray:
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


def with_others(boxes: np.ndarray, others: np.ndarray, margin: float) -> np.ndarray:
    """``boxes``, then those of ``others`` that are none of their faces (:func:`_same_face`)."""
    others = np.asarray(others).reshape(-1, 4)
    return np.concatenate([boxes, others[~_same_face(_centres(others), others[:, 2], boxes, margin)]])
