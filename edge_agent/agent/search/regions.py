"""Regions of a frame searched for a range of face sizes, merging them, and what searching them costs.

A region is what :meth:`FaceDetector.detect_regions` takes: ``(left, top, right, bottom,
min_face, max_face)`` in frame pixels. Seats, changed patches and bands are all searched as
regions, so their costs are counted alike and the search can weigh one against another.

Invariants:
- :func:`merge` leaves no two regions that could hold the same face at the same size: regions
  that overlap and share a face size become their bounding box, searched for every size either
  asked. Overlapping regions of sizes apart (a back-row seat beside a large stray box) stay apart:
  merged, the small face's copy would be made of the whole large region (a fine scan enlarges it;
  see docs/face-search.md).
- :func:`region_cost` counts window positions the way OpenCV scans the copy
  :meth:`FaceDetector.detect_regions` makes of a region; it is an estimate used only to compare
  ways of searching one frame, never a time.
"""

from __future__ import annotations

from typing import NamedTuple

from ..faces import CASCADE_WINDOW, Scan


class Region(NamedTuple):
    # A tuple, which FaceDetector.detect_regions takes as it is; a frame builds a few hundred of
    # these, and a tuple is built in a third of a frozen dataclass's time (see docs/face-search.md).
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


def area(regions: list[Region]) -> int:
    """Frame pixels the regions cover, each counted whole (overlaps twice)."""
    return sum((r.right - r.left) * (r.bottom - r.top) for r in regions)
