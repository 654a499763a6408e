"""A room's pages: the room's own, one per lesson with its charts and CSV, one per week, and the history.

``rooms/SITE/ROOM.html`` shows the latest lesson, the history of the last ``history_weeks`` as a
chart and as a table by weekly slot, the recent lessons and the weeks; everything else of the
room lies in its folder ``rooms/SITE/ROOM/``. Invariants:

- a room's pages link only into its folder, to its page, to the indexes and to devices, so a web
  server can grant a room by those two paths;
- a lesson is compared only with the lessons before it, and its page names its neighbours by
  their start alone, so a finished lesson's page is not drawn again because a later one runs on;
- a lesson joins the history once it has ended: the running one changes every minute;
- chart files carry their unit's fingerprint in their names, so a browser never shows a stale one.
"""

import datetime as dt
from dataclasses import dataclass

from ..common.contract import EMOTIONS
from . import svg
from .charts import session_figures
from .exports import lesson_csv, lessons_csv
from .fleet import Health
from .lessons import Lesson, RoomLessons, mean_interest, weekly_slot_label
from .pages import Pages, device_href, duration_text, percent_text, rel, room_folder
from .sessions import Session
from .site_files import Manifest, fingerprint_of
from .store import Store

# The lessons a lesson is compared with: the room's, and those of its weekday and hour.
COMPARE_ROOM, COMPARE_SLOT = 20, 4
LESSONS_CSV = "lessons.csv"


@dataclass
class RoomMemory:
    """What the dashboard keeps of a room from one refresh to the next."""

    lessons: RoomLessons
    has_windows: bool = False  # False: the room is known only from its devices' status so far
    history: dict | None = None  # the history's view as last drawn, with the fingerprint it was drawn from


@dataclass(frozen=True)
class Room:
    """One room being drawn: the dashboard's ``Pages``, the room's key, and the manifest of its folder."""

    pages: Pages
    key: tuple[str, str]
    manifest: Manifest

    @property
    def name(self) -> str:
        return f"{self.key[0]}/{self.key[1]}"

    @property
    def folder(self) -> str:
        return room_folder(self.key)

    @property
    def page(self) -> str:
        return f"{self.folder}.html"

    def lesson_href(self, lesson: Lesson) -> str:
        return f"{self.folder}/{lesson.stem}.html"

    def week_href(self, week: str) -> str:
        return f"{self.folder}/{week}.html"

    def fingerprint(self, kind: str, *parts) -> str:
        """The fingerprint of a unit of this room drawn from ``parts``."""
        return fingerprint_of(self.pages.drawn_with, kind, self.key, *parts)


@dataclass(frozen=True)
class _Comparison:
    """What a lesson's page shows of the room's other lessons."""

    neighbours: tuple  # the lessons before and after it as (stem, start), or None
    same_slot: list[Lesson]  # the last COMPARE_SLOT before it of its weekday and hour
    before: list[Lesson]  # the room's last COMPARE_ROOM before it


def drop_gone_rooms(pages: Pages, keys) -> None:
    """Delete the pages and folders of rooms not among ``keys`` (the store's retention deleted them)."""
    wanted = {room_folder(key) for key in keys}
    for folder in pages.files.tracked_folders("rooms/*/*"):
        if folder not in wanted:
            pages.files.drop_folder(folder)
            pages.files.remove([f"{folder}.html"])


# -- lessons ---------------------------------------------------------------------------------


def draw_lessons(room: Room, store: Store, lessons: list[Lesson], first: int, sessions: dict[int, Session]) -> None:
    """Draw the pages of ``lessons[first:]`` whose inputs changed, and delete those of lessons gone.

    ``sessions`` are minutes at hand, by lesson start; the store is asked for the others.
    """
    room.pages.files.drop_units(room.manifest, "lesson:", {f"lesson:{lesson.stem}" for lesson in lessons})
    interested = room.pages.settings.interested
    by_slot: dict[tuple[int, int], list[Lesson]] = {}
    for i, lesson in enumerate(lessons):
        earlier = by_slot.setdefault(lesson.slot, [])
        same_slot = earlier[-COMPARE_SLOT:]
        earlier.append(lesson)
        if i < first:
            continue
        before = lessons[max(0, i - COMPARE_ROOM):i]
        comparison = _Comparison(_neighbours(room.pages, lessons, i), same_slot, before)
        fingerprint = room.fingerprint("lesson", lesson.digest, comparison.neighbours, weekly_slot_label(lesson.slot),
                                       [(other.stem, other.interest) for other in same_slot],
                                       mean_interest(before, interested), len(before))
        if room.manifest.current(f"lesson:{lesson.stem}", fingerprint):
            continue
        session = sessions.get(lesson.start)
        if session is None or session.end != lesson.end:
            minutes = store.room_minutes(*room.key, start=lesson.start, end=lesson.end)
            session = Session(*room.key, lesson.start, lesson.end, minutes)
        _lesson_page(room, lesson, session, fingerprint, comparison)


def _neighbours(pages, lessons, i):
    # Only a neighbour's start: its end moves every minute while it runs.
    return tuple((other.stem, f"{pages.local(other.start):%a %Y-%m-%d %H:%M}") if other else None
                 for other in (lessons[i - 1] if i else None, lessons[i + 1] if i + 1 < len(lessons) else None))


def _lesson_page(room, lesson, session, fingerprint, comparison):
    pages, settings = room.pages, room.pages.settings
    page = room.lesson_href(lesson)
    when = pages.when(lesson)
    alts = _lesson_alts(pages, lesson, when)
    charts = {
        "interest": svg.interest_svg(session, settings.interested, settings.tz, low=lesson.low,
                                     description=alts["interest"]),
        "pie": svg.pie_svg(lesson.totals, settings.interested, description=alts["pie"]),
        "shares": svg.shares_svg(session, settings.tz, description=alts["shares"]),
    }
    files = {f"{room.folder}/{lesson.stem}-{fingerprint}-{kind}.svg": text for kind, text in charts.items()}
    previous, following = ({"href": f"{n[0]}.html", "when": n[1]} if n else None for n in comparison.neighbours)
    view = {
        "room": room.name, "when": when, "figures": _lesson_figures(room, lesson, session, comparison),
        "alts": alts, "charts": {kind: path.rpartition("/")[2] for kind, path in zip(charts, files, strict=True)},
        "room_href": rel(page, room.page),
        "week": lesson.week, "week_href": rel(page, room.week_href(lesson.week)),
        "previous": previous, "next": following, "csv": f"{lesson.stem}.csv",
    }
    files[f"{room.folder}/{lesson.stem}.csv"] = lesson_csv(session, settings.interested, settings.tz)
    files[page] = pages.render("lesson.html", page, lesson=view)
    pages.files.write_unit(room.manifest, f"lesson:{lesson.stem}", fingerprint, files)


def _lesson_alts(pages, lesson, when):
    """The texts of the lesson's charts for those who cannot see them."""
    gaps = lesson.slots - lesson.minutes
    totals = lesson.totals
    faces = sum(totals.values())
    return {
        "interest": f"Interest per minute, {when}: {percent_text(lesson.interest)} over the lesson"
                    + (f", lowest 5 minutes {pages.low_text(lesson)}" if lesson.low else "")
                    + f"; {gaps} minute{'s' if gaps != 1 else ''} without data.",
        "shares": f"Emotion shares per minute, {when}. Over the lesson: "
                  + (", ".join(f"{label} {totals[label] / faces:.0%}" for label in EMOTIONS) if faces
                     else "no faces") + ".",
        "pie": (f"Interested {lesson.interest:.0%}, not interested {1 - lesson.interest:.0%} of {faces:,} faces."
                if faces else "No faces counted."),
    }


def _lesson_figures(room, lesson, session, comparison):
    """The lesson's figures, then how it compares with the lessons of its slot and of the room before it."""
    pages, settings = room.pages, room.pages.settings
    figures = session_figures(session, settings.interested, settings.tz)[1:]
    figures.append(("lowest 5 minutes", pages.low_text(lesson) if lesson.low else "a lesson shorter than 5 minutes"))
    slot = weekly_slot_label(lesson.slot)
    same = comparison.same_slot
    if same:
        values = ", ".join(percent_text(other.interest) for other in same)
        figures.append((slot, f"{percent_text(mean_interest(same, settings.interested))} over the {len(same)} lesson"
                              f"{'s' if len(same) > 1 else ''} before this one ({values})"))
    else:
        figures.append((slot, f"the first lesson of this slot in the last {settings.history_weeks} weeks"))
    before = comparison.before
    if before:
        figures.append(("this room", f"{percent_text(mean_interest(before, settings.interested))} over the "
                                     f"{len(before)} lesson{'s' if len(before) > 1 else ''} before this one"))
    return figures


def _lesson_rows(room, page, lessons):
    pages = room.pages
    return [{"href": rel(page, room.lesson_href(lesson)), "when": pages.when(lesson),
             "length": duration_text(lesson.end - lesson.start), "interest": percent_text(lesson.interest),
             "low": pages.low_text(lesson), "minutes": f"{lesson.minutes} of {lesson.slots}"}
            for lesson in lessons]


# -- weeks -----------------------------------------------------------------------------------


def draw_weeks(room: Room, lessons: list[Lesson]) -> None:
    """Draw the week pages whose lessons or neighbours changed, and delete those of weeks gone."""
    pages = room.pages
    weeks = _by_week(lessons)
    names = list(weeks)
    pages.files.drop_units(room.manifest, "week:", {f"week:{name}" for name in names})
    for i, name in enumerate(names):
        older = names[i - 1] if i else None
        newer = names[i + 1] if i + 1 < len(names) else None
        week = weeks[name]
        fingerprint = room.fingerprint("week", name, [lesson.digest for lesson in week], older, newer)
        if room.manifest.current(f"week:{name}", fingerprint):
            continue
        page = room.week_href(name)
        first = pages.local(week[0].start)
        monday = first.date() - dt.timedelta(days=first.weekday())
        view = {
            "room": room.name, "name": name, "count": len(week),
            "span": f"{monday:%d %b} to {monday + dt.timedelta(days=6):%d %b %Y}",
            "interest": percent_text(mean_interest(week, pages.settings.interested)),
            "room_href": rel(page, room.page),
            "older": {"name": older, "href": f"{older}.html"} if older else None,
            "newer": {"name": newer, "href": f"{newer}.html"} if newer else None,
        }
        text = pages.render("week.html", page, week=view, lessons=_lesson_rows(room, page, week))
        pages.files.write_unit(room.manifest, f"week:{name}", fingerprint, {page: text})


def _by_week(lessons):
    weeks: dict[str, list[Lesson]] = {}
    for lesson in lessons:
        weeks.setdefault(lesson.week, []).append(lesson)
    return weeks


def _week_rows(room, lessons):
    return [{"name": name, "href": rel(room.page, room.week_href(name)), "count": len(group),
             "interest": percent_text(mean_interest(group, room.pages.settings.interested))}
            for name, group in reversed(_by_week(lessons).items())]


# -- the room's page -------------------------------------------------------------------------


def draw_room(room: Room, memory: RoomMemory, health: list[Health], now: float, horizon: float) -> dict:
    """Draw the room's page, history and CSV of lessons where they changed; returns the room's row on the indexes."""
    pages = room.pages
    lessons = memory.lessons.lessons
    devices = [{"name": item.device.device, "state": item.device.state or "unknown",
                "href": rel(room.page, device_href(item.device.device))}
               for item in sorted(health, key=lambda item: item.device.device)]
    row = _index_row(room, memory, devices, now)
    latest = lessons[-1] if lessons else None
    # A lesson joins the history once it has ended: until then it changes every minute.
    history = _history(room, memory, lessons[:-1] if row["running"] else lessons, latest, horizon)
    # The latest lesson's chart is shown here: its unit's fingerprint names the file.
    latest_unit = room.manifest.units.get(f"lesson:{latest.stem}") if latest else None
    weeks = _week_rows(room, lessons)
    recent = lessons[::-1][:pages.settings.sessions_per_room]
    _lessons_csv(room, lessons)
    fingerprint = room.fingerprint("room", [lesson.digest for lesson in recent], row["running"],
                                   [(d["name"], d["state"]) for d in devices], latest_unit and latest_unit[0],
                                   memory.has_windows, history and history["fingerprint"],
                                   [(week["name"], week["count"], week["interest"]) for week in weeks])
    if room.manifest.current("room", fingerprint):
        return row
    view = {"name": room.name, "devices": devices, "weeks": pages.settings.history_weeks, "latest": None,
            "empty": _empty_texts(room, memory, devices)[1], "history": history, "week_list": weeks,
            "csv": rel(room.page, f"{room.folder}/{LESSONS_CSV}"),
            "latest_data": f"{pages.local(latest.end):%Y-%m-%d %H:%M %Z}" if latest else "none"}
    if latest:
        view["latest"] = _latest_view(room, latest, latest_unit, row["running"])
    text = pages.render("room.html", room.page, room=view, lessons=_lesson_rows(room, room.page, recent))
    pages.files.write_unit(room.manifest, "room", fingerprint, {room.page: text})
    return row


def _index_row(room, memory, devices, now):
    """The room as the indexes list it: its latest lesson, whether that runs, its devices."""
    pages = room.pages
    lessons = memory.lessons.lessons
    row = {"key": room.key, "name": room.name, "href": room.page, "lesson": None, "running": False,
           "empty": _empty_texts(room, memory, devices)[0],
           "devices": ", ".join(f"{d['name']} ({d['state']})" for d in devices) or "none reported"}
    if lessons:
        latest = lessons[-1]
        row["lesson"] = {"href": room.lesson_href(latest), "when": pages.when(latest),
                         "length": duration_text(latest.end - latest.start),
                         "interest": percent_text(latest.interest), "low": pages.low_text(latest)}
        row["running"] = now - latest.end <= pages.settings.gap_s
    return row


def _empty_texts(room, memory, devices):
    """What the index (short) and the room's page (long) say of a room without a lesson."""
    if not memory.has_windows:
        return ("no data from this room yet",
                "No data from this room yet" + (": its cameras have reported their status but sent no windows."
                                                if devices else "."))
    weeks = room.pages.settings.history_weeks
    return (f"no lesson with faces to count in the last {weeks} weeks",
            f"No lesson in the last {weeks} weeks: no minute with enough faces to count "
            "(its windows were suppressed, or it sent none).")


def _latest_view(room, latest, latest_unit, running):
    pages = room.pages
    interest_chart = next(name for name in latest_unit[1] if name.endswith("-interest.svg"))
    return {"href": rel(room.page, room.lesson_href(latest)), "when": pages.when(latest),
            "interest": percent_text(latest.interest), "length": duration_text(latest.end - latest.start),
            "low": pages.low_text(latest) if latest.low else "",
            "chart": rel(room.page, interest_chart), "running": running,
            "alt": f"Interest per minute of the latest lesson, {pages.when(latest)}: "
                   f"{percent_text(latest.interest)} over the lesson."}


def _lessons_csv(room, lessons):
    if not lessons:
        room.pages.files.drop_unit(room.manifest, LESSONS_CSV)
        return
    fingerprint = room.fingerprint(LESSONS_CSV, [lesson.digest for lesson in lessons])
    if not room.manifest.current(LESSONS_CSV, fingerprint):
        text = lessons_csv(lessons, room.pages.settings.tz)
        room.pages.files.write_unit(room.manifest, LESSONS_CSV, fingerprint, {f"{room.folder}/{LESSONS_CSV}": text})


def _history(room, memory, ended, latest, horizon):
    """The room's ended lessons as a chart (its own unit) and a table by slot; None before the first ends."""
    if not ended:
        return None
    pages, settings = room.pages, room.pages.settings
    slot = latest.slot
    fingerprint = room.fingerprint("history", horizon, [lesson.digest for lesson in ended], slot)
    if memory.history and memory.history["fingerprint"] == fingerprint:
        return memory.history
    chart = f"{room.folder}/history-{fingerprint}.svg"
    points = [svg.HistoryPoint(lesson.start, lesson.interest, lesson.slot == slot) for lesson in ended]
    average = mean_interest(ended, settings.interested)
    marked = [p for p in points if p.marked and p.ratio is not None]
    alt = (f"{len(ended)} lessons since {pages.local(horizon):%Y-%m-%d}, "
           f"average interest {percent_text(average)}. {weekly_slot_label(slot)}: "
           + (", ".join(f"{p.ratio:.0%}" for p in marked) or "no data") + ".")
    if not room.manifest.current("history", fingerprint):
        # To the end of today: the chart's span moves with the history's horizon, a day at a time.
        end = horizon + (settings.history_weeks * 7 + 1) * 86400
        text = svg.history_svg(points, horizon, end, settings.tz, weekly_slot_label(slot), average, description=alt)
        pages.files.write_unit(room.manifest, "history", fingerprint, {chart: text})
    memory.history = {"fingerprint": fingerprint, "src": rel(room.page, chart), "alt": alt,
                      "slots": _slot_rows(room, ended, slot)}
    return memory.history


def _slot_rows(room, lessons, marked):
    pages = room.pages
    by_slot: dict[tuple[int, int], list[Lesson]] = {}
    for lesson in lessons:
        by_slot.setdefault(lesson.slot, []).append(lesson)
    rows = []
    for slot in sorted(by_slot):
        group = by_slot[slot]
        ratios = [lesson.interest for lesson in group if lesson.interest is not None]
        rows.append({"name": weekly_slot_label(slot), "marked": slot == marked, "count": len(group),
                     "interest": percent_text(mean_interest(group, pages.settings.interested)),
                     "best": percent_text(max(ratios, default=None)),
                     "worst": percent_text(min(ratios, default=None)),
                     "latest": pages.when(group[-1]), "latest_href": rel(room.page, room.lesson_href(group[-1]))})
    return rows
