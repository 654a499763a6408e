"""Labels per frame in, anonymised per-window counts out, windows aligned to UTC."""

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from ..common.contract import EMOTIONS, SCHEMA_VERSION, EmotionsPayload, format_utc


@dataclass(frozen=True)
class Window:
    """A closed window. When ``suppressed``, ``counts`` are already all zero."""

    start: int
    length_s: int
    frames: int
    faces: int
    median_faces: int
    counts: dict[str, int]
    suppressed: bool

    def payload(self, *, device: str, site: str, room: str, seq: int, model: str) -> EmotionsPayload:
        return EmotionsPayload.model_validate({
            "schema": SCHEMA_VERSION, "device": device, "site": site, "room": room,
            "window_start": format_utc(self.start), "window_s": self.length_s, "seq": seq,
            "frames": self.frames, "faces": self.faces, "faces_per_frame_median": self.median_faces,
            "counts": self.counts, "suppressed": self.suppressed, "model": model,
        })


class WindowTally:
    """Counts labels into windows of ``length_s`` seconds that start at multiples of it since the epoch.

    A window with a median below ``min_group`` faces per frame is suppressed, so one
    student alone is never reported. Windows only move forward: a frame stamped before
    the open window (a clock stepped back) is counted in the open window, and one stamped
    in a window already closed is counted in the next.
    """

    def __init__(self, length_s: int = 60, min_group: int = 3, floor: int | None = None):
        self.length_s = length_s
        self.min_group = min_group
        self.open_start: int | None = None
        # No window may start before this: the end of the last window already closed (and
        # sent), so a restarted agent never makes a second window for the same minute.
        self.floor = floor
        self._faces_per_frame: list[int] = []
        self._counts = dict.fromkeys(EMOTIONS, 0)

    def add(self, t: float, labels: Sequence[str]) -> Window | None:
        """Count one frame's labels; returns the window this frame closed, if it closed one."""
        start = int(t // self.length_s) * self.length_s
        if self.floor is not None:
            start = max(start, self.floor)
        closed = None
        if self.open_start is None:
            self.open_start = start
        elif start > self.open_start:
            closed = self._close(self.open_start)
            self.open_start = start
        self._faces_per_frame.append(len(labels))
        for label in labels:
            self._counts[label] += 1
        return closed

    def close_due(self, now: float) -> Window | None:
        """Close the open window once ``now`` has passed its end, even if no frame came since."""
        if self.open_start is not None and now >= self.open_start + self.length_s:
            return self.flush()
        return None

    def flush(self) -> Window | None:
        """Close the open window now (end of a recording, or shutdown); None when nothing is open."""
        if self.open_start is None:
            return None
        closed = self._close(self.open_start)
        self.open_start = None
        return closed

    def _close(self, start: int) -> Window:
        """The window opened at ``start``, closed."""
        per_frame = self._faces_per_frame
        # The lower median is a face count that was really seen, and errs towards suppressing.
        median = statistics.median_low(per_frame) if per_frame else 0
        suppressed = median < self.min_group
        counts = dict.fromkeys(EMOTIONS, 0) if suppressed else self._counts
        window = Window(start, self.length_s, len(per_frame), sum(per_frame), median,
                        counts, suppressed)
        self.floor = start + self.length_s
        self._faces_per_frame = []
        self._counts = dict.fromkeys(EMOTIONS, 0)
        return window
