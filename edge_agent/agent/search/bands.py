"""Bands of rows where faces were seen, each for the face sizes seen there, learned from whole-frame searches.

A fixed camera sees small faces at the top of the frame (the back rows) and large ones at the
bottom, never on the ceiling. :func:`plan_bands` fits face width as a straight line in the row (a
flat floor), leaves out detections far off it, and groups the rows into the bands that cost least
to search (:func:`band_cost`, counted as :func:`region_cost` counts any region).

Invariants:
- A plan is a pure function of the observations, the frame size, ``margin`` and the scan: the same
  faces give the same bands, whether just learned or read back from the state file.
- Learned bands do not overlap, are in row order, and cover every row from a strip above the
  highest face kept to a strip below the lowest.
- A band's search reaches ``REACH`` of its largest face widths above and below its rows, so a
  face centred on its edge lies wholly inside what is searched; :meth:`Plan.sizes_for_rows` counts
  a band's rows the same way.
- One span of columns holds for all bands: where faces were seen, the widest face to spare.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..faces import Scan
from .regions import region_cost

# Rows are first cut into this many strips, then grouped into the bands that cost least (band_cost).
STRIPS = 16
# How far above and below its rows a band's search reaches, in its largest face widths: a face
# centred on the band's edge must lie wholly inside what is searched.
REACH = 0.55
# A detection more than this far (as a size ratio) from the fitted size for its row is not a face of the room.
OUTLIER_RATIO = 1.5


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
    """The bands searched between whole frames."""

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

    def sizes_for_rows(self, top: int, bottom: int) -> tuple[int, int] | None:
        """Face sizes the bands search for in rows [top, bottom), or None where no band reaches."""
        near = [band for band in self.bands
                if band.top - band.max_face * REACH < bottom and top < band.bottom + band.max_face * REACH]
        if not near:
            return None
        return min(band.min_face for band in near), max(band.max_face for band in near)


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


def plan_bands(observations: Sequence[Sequence[float]], width: int, height: int, margin: float,
               scan: Scan) -> Plan:
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

    def band(i: int, j: int) -> tuple[float, float, float, float]:
        """Strips i..j-1 as one band: top, bottom, smallest and largest face."""
        return i * strip, j * strip, strip_sizes(i)[0], strip_sizes(j - 1)[1]

    # The cheapest cut of the strips into bands (a few hundred band_cost calls): each band adds
    # its reach above and below, and widens the sizes all its rows are searched for.
    best: dict[int, tuple[float, list[tuple[float, float, float, float]]]] = {first: (0.0, [])}
    for j in range(first + 1, last + 2):
        best[j] = min(((best[i][0] + band_cost(*band(i, j), scan), best[i][1] + [band(i, j)])
                       for i in range(first, j)), key=lambda option: option[0])
    bands = best[last + 1][1]
    # One span of columns for all bands: where faces were seen, the widest face to spare. Per-band
    # spans learned from a minute's faces left out seats nobody had used yet, and lost large faces
    # the whole-frame search finds (see docs/face-search.md).
    widest = side.max() * margin
    left, right = max(0, int(cx.min() - widest)), min(width, int(np.ceil(cx.max() + widest)))
    planned = [Band(round(top), round(bottom), int(low), int(np.ceil(high)), left, right)
               for top, bottom, low, high in bands]
    return Plan(tuple(planned))


def band_region(band: Band, width: int, height: int) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of the frame a band's search covers: its rows and the reach."""
    reach = int(np.ceil(band.max_face * REACH))
    return band.left, max(0, band.top - reach), min(width, band.right), min(height, band.bottom + reach)
