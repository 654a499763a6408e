"""From a room's minutes to lessons: stretches of minutes with faces to count, cut where the room
has nothing to count for longer than the gap setting.

A minute (a time slot, summed over the room's devices) exists only where some device counted
faces: a minute every device suppressed, one without faces and one no window arrived for are all
gaps, never zero interest, since an empty or nearly empty room says nothing about how interested
anyone was. Cameras send windows all day, so silence alone would never end a lesson: a lesson
starts at its first minute with faces and ends with its last, and a gap longer than ``gap_s``
between two such minutes starts the next one.
"""

from dataclasses import dataclass

from ..common.contract import DEFAULT_INTERESTED, EMOTIONS, interest_ratio

DEFAULT_GAP_S = 15 * 60
# Minutes averaged to find where a lesson lost the room: one bad minute is noise, five are a stretch.
LOW_STRETCH = 5


@dataclass(frozen=True)
class Minute:
    """One time slot of a room with faces counted, summed over its devices."""

    start: int
    window_s: int
    counts: dict[str, int]

    @property
    def end(self) -> int:
        return self.start + self.window_s


@dataclass(frozen=True)
class Session:
    """A lesson, or a report's period: ``[start, end)`` and the minutes with faces inside it."""

    site: str
    room: str
    start: int
    end: int
    minutes: list[Minute]

    def totals(self) -> dict[str, int]:
        totals = dict.fromkeys(EMOTIONS, 0)
        for minute in self.minutes:
            for label, count in minute.counts.items():
                totals[label] += count
        return totals

    def interest(self, interested=DEFAULT_INTERESTED) -> float | None:
        return interest_ratio(self.totals(), interested)

    @property
    def window_s(self) -> int:
        return self.minutes[0].window_s if self.minutes else 60

    @property
    def slots(self) -> int:
        """Time slots from start to end, gaps included."""
        return max(len(self.minutes), round((self.end - self.start) / self.window_s))


def split_minutes(site: str, room: str, minutes: list[Minute], gap_s: float = DEFAULT_GAP_S) -> list[Session]:
    """The room's lessons in time order; a gap longer than ``gap_s`` between two minutes ends one."""
    sessions: list[Session] = []
    current: list[Minute] = []
    for minute in minutes:
        if current and minute.start - current[-1].end > gap_s:
            sessions.append(_session(site, room, current))
            current = []
        current.append(minute)
    if current:
        sessions.append(_session(site, room, current))
    return sessions


def _session(site, room, minutes):
    return Session(site, room, minutes[0].start, max(m.end for m in minutes), minutes)


def interest_series(session: Session, interested=DEFAULT_INTERESTED) -> list[tuple[int, float | None]]:
    """``(start, ratio)`` per minute; the ratio is None for a minute without faces."""
    return [(m.start, interest_ratio(m.counts, interested)) for m in session.minutes]


def smooth(values, window=5):
    """Centred moving average over ``window`` values (odd), skipping None; None where the whole window is None."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"smoothing window must be a positive odd number, not {window}")
    half = window // 2
    smoothed = []
    for i in range(len(values)):
        near = [v for v in values[max(0, i - half):i + half + 1] if v is not None]
        smoothed.append(sum(near) / len(near) if near else None)
    return smoothed


def low_stretch(session: Session, interested=DEFAULT_INTERESTED) -> tuple[int, int, float] | None:
    """``(start, end, ratio)`` of the LOW_STRETCH consecutive minutes with the least interest, counted
    over their faces together; None for a lesson shorter than that, whose low point would be noise."""
    minutes = session.minutes
    if len(minutes) < LOW_STRETCH:
        return None
    keen = [sum(m.counts[label] for label in interested) for m in minutes]
    faces = [sum(m.counts.values()) for m in minutes]
    lowest = None
    for first in range(len(minutes) - LOW_STRETCH + 1):
        ratio = sum(keen[first:first + LOW_STRETCH]) / sum(faces[first:first + LOW_STRETCH])
        if lowest is None or ratio < lowest[2]:
            lowest = (minutes[first].start, minutes[first + LOW_STRETCH - 1].end, ratio)
    return lowest
