"""The figures instructors take away: a lesson's minutes and a room's lessons as CSV, written beside the pages.

A lesson's CSV has one row per time slot from its start to its end, as its interest chart has:
a slot with faces counted (summed over the room's cameras) gives its faces, each emotion's count
and its interest; a slot without (suppressed, no faces, no window) is a row with those cells
empty, never zeros, as the chart draws a gap. Its columns add up to the lesson page's figures.
A room's CSV has one row per lesson, with the same totals as each lesson's page. Times are in
the dashboard's time zone, with their UTC offset. Cells hold numbers and times only, never a
name from the store, so a spreadsheet never reads a formula out of one.
"""

import csv
import datetime as dt
import io

from ..common.contract import DEFAULT_INTERESTED, EMOTIONS, interest_ratio
from .lessons import Lesson
from .sessions import Session

LESSON_COLUMNS = ("start", "faces", *EMOTIONS, "interest")
ROOM_COLUMNS = ("start", "end", "minutes", "minutes_with_faces", "faces", *EMOTIONS, "interest",
                "lowest_5_minutes_start", "lowest_5_minutes_interest")


def _time(epoch, tz):
    return dt.datetime.fromtimestamp(epoch, tz).isoformat(timespec="minutes")


def _ratio(value):
    return "" if value is None else f"{value:.4f}"


def _text(rows, columns):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()


def lesson_csv(session: Session, interested=DEFAULT_INTERESTED, tz=dt.UTC) -> str:
    """One row per slot of the lesson, empty where the chart shows a gap."""
    by_start = {minute.start: minute for minute in session.minutes}
    slots = sorted(set(range(session.start, session.end, session.window_s)) | set(by_start))
    rows = []
    for start in slots:
        minute = by_start.get(start)
        if minute is None:
            rows.append([_time(start, tz), *[""] * (len(LESSON_COLUMNS) - 1)])
            continue
        counts = [minute.counts[label] for label in EMOTIONS]
        rows.append([_time(start, tz), sum(counts), *counts, _ratio(interest_ratio(minute.counts, interested))])
    return _text(rows, LESSON_COLUMNS)


def lessons_csv(lessons: list[Lesson], tz=dt.UTC) -> str:
    """One row per lesson, oldest first."""
    rows = []
    for lesson in lessons:
        low = lesson.low
        rows.append([_time(lesson.start, tz), _time(lesson.end, tz), lesson.slots, lesson.minutes,
                     sum(lesson.totals.values()), *(lesson.totals[label] for label in EMOTIONS),
                     _ratio(lesson.interest), _time(low[0], tz) if low else "", _ratio(low[2]) if low else ""])
    return _text(rows, ROOM_COLUMNS)
