"""What changed since the frame before, outside the seats: where someone may have just sat down.

Between whole-frame searches only the seats are searched, so a student who sits down where no seat
is would wait for the next whole frame. :class:`Motion` compares each frame with the one before at
1/``MOTION_SCALE`` of its size, and :func:`newcomer_regions` turns the changed patches beyond every
seat, in rows where faces have been seen, into regions to search for those rows' face sizes.

Invariants:
- Motion within ``MOTION_SEAT_REACH`` face widths of a seat's face is that head moving and adds
  nothing: the seat's own search covers it.
- Nothing is searched in rows where no face has been seen (a ceiling, a wall), nor for a patch
  thinner than half its rows' narrowest face (an edge of something moving).
- A patch searched without finding a face is left out for ``MOTION_QUIET_FRAMES`` frames.
- A first frame, or the first of a new size, reports no change: there is nothing to compare it with.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from .regions import Region

# Frames are compared at 1/MOTION_SCALE of their size (sensor noise averages out over the 64
# pixels of a cell); a cell that changed by more than MOTION_LEVEL grey levels has moved.
MOTION_HALVINGS = 3
MOTION_SCALE = 2 ** MOTION_HALVINGS
MOTION_LEVEL = 16
# Motion this close to a seat's face, in its widths on each side, is that head moving: a head
# turning changes the hair and shoulders around it, beyond the seat's own search. Nearer, moving
# heads are searched again as newcomers; further, a late arrival sitting down between two seated
# students is hidden until the next whole frame (see docs/face-search.md).
MOTION_SEAT_REACH = 0.4
# A changed patch is searched this many of its rows' largest face widths beyond it on each side:
# a face only partly changed (a head turning towards the camera) lies wholly inside.
MOTION_REACH = 0.6
# A patch searched in vain is not searched again for this many frames: students the cascade cannot
# find (too small, turned away) move all lesson, and would be searched in every frame.
MOTION_QUIET_FRAMES = 60


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
        # Halved step by step: OpenCV averages 2x2 blocks on a fast path, several times faster than
        # one shrink by 8 (see docs/face-search.md); the cells differ by one grey level at most.
        for _ in range(MOTION_HALVINGS):
            small = cv2.resize(small, (max(1, small.shape[1] // 2), max(1, small.shape[0] // 2)),
                               interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (3, 3), 0)
        previous, self.previous = self.previous, small
        self.frame += 1
        if previous is None or self.quiet_until is None or previous.shape != small.shape:
            self.quiet_until = np.zeros(small.shape, np.int64)
            return None
        return ((cv2.absdiff(small, previous) > MOTION_LEVEL) & (self.quiet_until < self.frame)).astype(np.uint8)

    def searched_in_vain(self, region: Region) -> None:
        """Leave ``region`` unsearched for the next MOTION_QUIET_FRAMES frames."""
        if self.quiet_until is None:  # before the first frame: no cells to quiet
            return
        self.quiet_until[_cells(region)] = self.frame + MOTION_QUIET_FRAMES


def newcomer_regions(changed: np.ndarray | None, seats: list[Region],
                     sizes_for_rows: Callable[[int, int], tuple[int, int] | None],
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
