"""A room's lessons as short summaries, kept current from the newest windows alone.

The dashboard keeps every room's lessons of the last weeks in memory as ``Lesson`` summaries
(totals, the stretch that lost the room, a digest of every minute) rather than their minutes: a
term of 500 rooms is 150,000 lessons. When windows arrive, only the lessons they can touch are
summarised again from the store: the running one, or for a window that arrives late, the lesson
it falls in or next to and everything after it.

A lesson's slot is its weekday and hour in the school's time zone ("Tuesdays 10:00"), read
``SLOT_LEAD_S`` after its first minute with faces, so a lesson whose cameras count from 9:55 or
10:07 is a 10:00 lesson either way. Comparisons on a lesson's page use only the lessons before it,
so a finished lesson's page never changes because of later ones.
"""

import datetime as dt
import hashlib
from dataclasses import dataclass

from ..common.contract import DEFAULT_INTERESTED, interest_ratio
from .sessions import DEFAULT_GAP_S, Session, low_stretch, split_minutes

SLOT_LEAD_S = 10 * 60
WEEKDAYS = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays")


@dataclass(frozen=True)
class Lesson:
    site: str
    room: str
    start: int
    end: int
    slots: int
    minutes: int
    totals: dict
    interest: float | None
    low: tuple[int, int, float] | None
    digest: str
    slot: tuple[int, int]
    week: str
    stem: str  # the lesson's name in file names: its start, UTC, to the minute


def summarise(session: Session, interested=DEFAULT_INTERESTED, tz=dt.UTC) -> Lesson:
    """A lesson's summary; ``digest`` changes whenever anything drawn from its minutes would."""
    minutes = [(m.start, m.window_s, tuple(m.counts.values())) for m in session.minutes]
    digest = hashlib.sha256(repr((session.start, session.end, minutes)).encode()).hexdigest()[:16]
    totals = session.totals()
    return Lesson(session.site, session.room, session.start, session.end, session.slots, len(session.minutes),
                  totals, interest_ratio(totals, interested), low_stretch(session, interested), digest,
                  slot_of(session.start, tz), week_of(session.start, tz),
                  dt.datetime.fromtimestamp(session.start, dt.UTC).strftime("%Y%m%dT%H%M"))


def slot_of(start: float, tz) -> tuple[int, int]:
    """``(weekday, hour)`` of the lesson starting at ``start``: Monday is 0."""
    local = dt.datetime.fromtimestamp(start + SLOT_LEAD_S, tz)
    return local.weekday(), local.hour


def weekly_slot_label(slot: tuple[int, int]) -> str:
    return f"{WEEKDAYS[slot[0]]} {slot[1]:02d}:00"


def week_of(start: float, tz) -> str:
    """The ISO week the lesson starts in, ``2026-W48``: a week page's name."""
    year, week, _ = dt.datetime.fromtimestamp(start, tz).isocalendar()
    return f"{year}-W{week:02d}"


def mean_interest(lessons, interested=DEFAULT_INTERESTED) -> float | None:
    """The lessons' interest taken together (every face counted once), None without faces."""
    totals: dict[str, int] = {}
    for lesson in lessons:
        for label, count in lesson.totals.items():
            totals[label] = totals.get(label, 0) + count
    return interest_ratio(totals, interested) if totals else None


class RoomLessons:
    """One room's lessons from ``horizon`` on, in time order, updated as windows arrive."""

    def __init__(self, site: str, room: str, *, gap_s: float = DEFAULT_GAP_S, interested=DEFAULT_INTERESTED,
                 tz=dt.UTC):
        self.site, self.room = site, room
        self.gap_s = gap_s
        self.interested = tuple(interested)
        self.tz = tz
        self.lessons: list[Lesson] = []

    def refetch_from(self, earliest: int) -> int:
        """Where to read the room's minutes again from, after windows as early as ``earliest`` arrived:
        the start of the first lesson such a window can join, else ``earliest`` itself."""
        for lesson in self.lessons:
            if lesson.end + self.gap_s >= earliest:
                return min(lesson.start, earliest)
        return earliest

    def update(self, start: int, minutes) -> dict[int, Session]:
        """Replace the lessons from ``start`` on by those of ``minutes`` (the room's minutes from ``start``);
        returns the new sessions by start, for drawing while their minutes are at hand."""
        sessions = split_minutes(self.site, self.room, minutes, self.gap_s)
        self.lessons = [lesson for lesson in self.lessons if lesson.start < start] + \
            [summarise(session, self.interested, self.tz) for session in sessions]
        return {session.start: session for session in sessions}

    def forget_before(self, horizon: float) -> bool:
        """Drop lessons that started before ``horizon``; True when any was dropped."""
        kept = [lesson for lesson in self.lessons if lesson.start >= horizon]
        dropped = len(kept) != len(self.lessons)
        self.lessons = kept
        return dropped
