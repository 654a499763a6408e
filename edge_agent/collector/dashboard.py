"""The dashboard: static HTML pages and SVG charts written into one directory, redrawn where the data changed.

Any web server (or ``edge-collector serve``) can publish the directory; the pages need no
JavaScript and nothing from the internet, and print on A4. Pages:

- ``index.html``: every room with its latest lesson, and every device as a row of its latest
  stats, those that need a visit first (fleet.py says which and why);
- ``rooms/SITE/ROOM.html``: the room's latest lesson, the interest of each lesson of the last
  ``history_weeks`` as a dot (those of the latest lesson's weekday and hour marked), the same by
  slot as a table, its recent lessons and a page per week for older ones;
- ``rooms/SITE/ROOM/STAMP.html``: one lesson's figures, compared with the lessons before it,
  and its charts; ``rooms/SITE/ROOM/YYYY-Www.html``: a week's lessons;
- ``rooms/SITE/ROOM/STAMP.csv`` and ``rooms/SITE/ROOM/lessons.csv``: a lesson's minutes and the
  room's lessons for instructors to take away (exports.py), written with the pages they belong
  to and under the room's own folder, so whoever may read the room may read them and no one else;
- ``devices/DEVICE.html``: a device's state and its stats of the last day and month as charts;
- ``groups/GROUP/index.html``: for each access group (``dashboard.access``), the index with only
  the group's rooms and no devices. A web server can grant a group by path: its index, and
  ``rooms/SITE/ROOM.html`` with ``rooms/SITE/ROOM/`` for each of its rooms, where every page and
  image of that room lies and to which a room's pages link (besides the indexes and devices).

Only what changed is drawn. Each page and its charts form a unit with a fingerprint of all it
is drawn from, recorded in a ``.manifest.json`` beside it, so neither a refresh nor a restart
draws a page again whose inputs are the same; chart files carry the fingerprint in their names,
so a browser never shows a stale one. Each refresh asks the store only which rooms received
windows since the last (and summarises again only the lessons those can touch, lessons.py);
device pages follow their stats every DEVICE_PERIOD_S, each at its own phase; the index is
written every time. Every file is written under a temporary name and renamed, so a reader
never sees half a page. Names from the store that are not plain contract names (letters,
digits, ``_ . -``) are hashed for file names and escaped on pages.
"""

import datetime as dt
import fnmatch
import hashlib
import json
import math
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from ..common.contract import DEFAULT_INTERESTED, EMOTIONS, NAME_PATTERN
from ..common.errors import EdgeAgentError
from . import svg
from .charts import session_figures, span_text
from .exports import lesson_csv, lessons_csv
from .fleet import PLAUSIBLE, Thresholds, ago_text, fleet_health, plausible, seen_text
from .lessons import RoomLessons, mean_interest, slot_name
from .sessions import DEFAULT_GAP_S, Session

# Windows are stamped on arrival and committed a moment later: ask again for this far back.
ARRIVAL_MARGIN_S = 120
# A device's page follows its stats this often (each device at its own phase, so they spread out).
DEVICE_PERIOD_S = 600
DAY_BUCKET_S, MONTH_BUCKET_S = 600, 3 * 3600
# The lessons a lesson is compared with: the room's, and those of its weekday and hour.
COMPARE_ROOM, COMPARE_SLOT = 20, 4
MANIFEST = ".manifest.json"
STATS_PANELS = (("fps", "Frames per second", ""), ("detect_ms", "Detection", "ms"),
                ("faces_per_frame", "Faces per frame", ""), ("outbox_depth", "Outbox", "windows"),
                ("cpu_temp_c", "CPU temperature", "°C"), ("rss_mb", "Memory", "MB"))
_NAME = re.compile(NAME_PATTERN)


class DashboardError(EdgeAgentError):
    """The output directory cannot be written; the text names it and says why."""


@dataclass(frozen=True)
class BuildResult:
    rooms: int
    lessons: int
    pages: int
    charts_drawn: int
    seconds: float
    cpu_seconds: float


def file_name(name: str) -> str:
    """``name`` itself when the contract allows it, else a hash: nothing from the store names a path."""
    if _NAME.fullmatch(name):
        return name
    return "~" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def fingerprint(*parts) -> str:
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _code_version():
    """Changes with the templates and drawing code, so an upgrade draws every page again."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted([*here.glob("templates/*.html"), here / "svg.py", here / "dashboard.py", here / "lessons.py",
                        here / "fleet.py", here / "charts.py", here / "exports.py"]):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def duration_text(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.0f} min"


def _percent(ratio):
    return "no data" if ratio is None else f"{ratio:.0%}"


@contextmanager
def _writing(path):
    try:
        yield
    except OSError as exc:
        raise DashboardError(f"dashboard output {path} cannot be written: {exc.strerror or exc}") from None


class Manifest:
    """What each unit (a page and its charts) of one folder was last drawn from: ``{unit: [fingerprint, files]}``."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.units = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.units = {}
        self.dirty = False

    def current(self, unit, print_):
        entry = self.units.get(unit)
        return entry is not None and entry[0] == print_

    def record(self, unit, print_, files):
        """Note the unit's new files; returns its old files that are no longer among them."""
        old = self.units.get(unit, [None, []])[1]
        self.units[unit] = [print_, files]
        self.dirty = True
        return [name for name in old if name not in files]

    def drop(self, unit):
        self.dirty = True
        return self.units.pop(unit, [None, []])[1]


@dataclass
class _Counts:
    pages: int = 0
    charts: int = 0


class Dashboard:
    def __init__(self, output_dir, *, gap_s=DEFAULT_GAP_S, interested=DEFAULT_INTERESTED, sessions_per_room=10,
                 history_weeks=12, refresh_s=60, tz=dt.UTC, limits=None, stats_retention_days=30.0, access=None):
        self.output_dir = Path(output_dir)
        self.gap_s = gap_s
        self.interested = tuple(interested)
        self.sessions_per_room = sessions_per_room
        self.history_weeks = history_weeks
        self.refresh_s = refresh_s
        self.tz = tz
        self.limits = limits or Thresholds()
        self.stats_retention_days = stats_retention_days
        self.access = {name: tuple(patterns) for name, patterns in (access or {}).items()}
        self.templates = Environment(loader=PackageLoader("edge_agent.collector"), autoescape=select_autoescape(),
                                     trim_blocks=True, lstrip_blocks=True)
        self._code = _code_version()
        self._settings = (self._code, str(tz), self.interested, gap_s)
        self._rooms: dict[tuple[str, str], RoomLessons] = {}
        self._manifests: dict[Path, Manifest] = {}
        self._with_windows: set[tuple[str, str]] = set()
        self._histories: dict[tuple[str, str], dict] = {}
        self._checked = None

    @classmethod
    def from_config(cls, config) -> "Dashboard":
        return cls(config.dashboard.resolved_output_dir(), gap_s=config.sessions.gap_min * 60,
                   interested=config.sessions.interested, sessions_per_room=config.dashboard.sessions_per_room,
                   history_weeks=config.dashboard.history_weeks, refresh_s=config.dashboard.refresh_s,
                   tz=config.dashboard.resolved_timezone(), limits=Thresholds.from_config(config.fleet),
                   stats_retention_days=config.store.stats_retention_days, access=config.dashboard.access)

    def check_writable(self):
        """Fail early, naming the directory, instead of on the first regeneration."""
        probe = self.output_dir / f".write-test-{os.getpid()}"
        with _writing(self.output_dir):
            self.output_dir.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()

    # -- the refresh -----------------------------------------------------------------------

    def build(self, store, now: float | None = None) -> BuildResult:
        """Bring every page up to date with ``store``; returns what was done."""
        began, cpu = time.monotonic(), time.process_time()
        now = time.time() if now is None else now
        first = self._checked is None
        asked = time.time()
        # The first build reads every room from the history horizon on; later ones only rooms with new windows.
        changed = dict.fromkeys(store.rooms()) if first else store.rooms_changed(self._checked - ARRIVAL_MARGIN_S)
        self._checked = asked
        devices = store.devices()
        health = fleet_health(devices, store.fleet_stats(now), now, self.limits)
        horizon = self._horizon(now)
        counts = _Counts()
        keys = sorted(set(self._rooms) | set(changed) | {(d.site, d.room) for d in devices})
        by_room = {}
        for item in health:
            by_room.setdefault((item.device.site, item.device.room), []).append(item)
        rows = []
        for key in keys:
            rows.append(self._room(store, key, key in changed, changed.get(key), by_room.get(key, []), now,
                                   horizon, first, counts))
        for item in health:
            self._device(store, item, now, counts)
        if first:
            self._remove_gone(keys, {item.device.device for item in health})
        self._index(rows, health, now)
        self._group_indexes(rows, now, first)
        for manifest in self._manifests.values():
            if manifest.dirty:
                self._write(manifest.path, json.dumps(manifest.units, separators=(",", ":")))
                manifest.dirty = False
        lessons = sum(len(room.lessons) for room in self._rooms.values())
        pages = counts.pages + 1 + len(self.access)
        return BuildResult(len(keys), lessons, pages, counts.charts, time.monotonic() - began,
                           time.process_time() - cpu)

    def _horizon(self, now):
        """Local midnight ``history_weeks`` ago: the history moves a day at a time, not every refresh."""
        today = dt.datetime.fromtimestamp(now, self.tz).replace(hour=0, minute=0, second=0, microsecond=0)
        return (today - dt.timedelta(weeks=self.history_weeks)).timestamp()

    # -- rooms -----------------------------------------------------------------------------

    def _room(self, store, key, changed, earliest, health, now, horizon, first, counts):
        site, room = key
        lessons = self._rooms.get(key)
        if lessons is None:
            lessons = self._rooms[key] = RoomLessons(site, room, gap_s=self.gap_s, interested=self.interested,
                                                     tz=self.tz)
        sessions, redo_from = {}, None
        if changed:
            self._with_windows.add(key)
            start = horizon if earliest is None else max(horizon, lessons.refetch_from(earliest))
            sessions = lessons.update(start, store.room_minutes(site, room, start=start))
            redo_from = start
        if lessons.forget_before(horizon):
            redo_from = horizon
        manifest = self._manifest(self._room_dir(key))
        if first or redo_from is not None:
            # A lesson's page shows its neighbours: the one before the first redone changes too.
            index = next((i for i, lesson in enumerate(lessons.lessons) if lesson.start >= redo_from),
                         len(lessons.lessons))
            self._lessons(store, key, lessons.lessons, 0 if first else max(0, index - 1), sessions, manifest,
                          counts)
            self._weeks(key, lessons.lessons, manifest, counts)
        return self._room_page(key, lessons.lessons, health, now, horizon, manifest, counts)

    def _room_dir(self, key):
        return f"rooms/{file_name(key[0])}/{file_name(key[1])}"

    def _lesson_href(self, key, lesson):
        return f"{self._room_dir(key)}/{lesson.stem}.html"

    def _week_href(self, key, week):
        return f"{self._room_dir(key)}/{week}.html"

    def _when(self, lesson):
        return f"{dt.datetime.fromtimestamp(lesson.start, self.tz):%a} {span_text(lesson.start, lesson.end, self.tz)}"

    def _clock(self, epoch):
        return f"{dt.datetime.fromtimestamp(epoch, self.tz):%H:%M}"

    def _low_text(self, lesson):
        if lesson.low is None:
            return "–"
        start, end, ratio = lesson.low
        return f"{self._clock(start)}–{self._clock(end)}: {ratio:.0%}"

    def _lessons(self, store, key, lessons, first_index, sessions, manifest, counts):
        current = {f"lesson:{lesson.stem}" for lesson in lessons}
        for unit in [unit for unit in manifest.units if unit.startswith("lesson:") and unit not in current]:
            self._remove(manifest.drop(unit))
        by_slot = {}
        for i, lesson in enumerate(lessons):
            earlier = by_slot.setdefault(lesson.slot, [])
            same = earlier[-COMPARE_SLOT:]
            earlier.append(lesson)
            if i < first_index:
                continue
            before = lessons[max(0, i - COMPARE_ROOM):i]
            # Only the neighbour's start: its end moves every minute while it runs.
            neighbours = tuple((other.stem, f"{dt.datetime.fromtimestamp(other.start, self.tz):%a %Y-%m-%d %H:%M}")
                               if other else None
                               for other in (lessons[i - 1] if i else None,
                                             lessons[i + 1] if i + 1 < len(lessons) else None))
            inputs = (self._settings, "lesson", key, lesson.digest, neighbours, slot_name(lesson.slot),
                      [(other.stem, other.interest) for other in same], mean_interest(before, self.interested),
                      len(before))
            print_ = fingerprint(*inputs)
            unit = f"lesson:{lesson.stem}"
            if manifest.current(unit, print_):
                continue
            session = sessions.get(lesson.start)
            if session is None or session.end != lesson.end:
                minutes = store.room_minutes(key[0], key[1], start=lesson.start, end=lesson.end)
                session = Session(key[0], key[1], lesson.start, lesson.end, minutes)
            self._lesson_page(key, lesson, session, print_, neighbours, same, before, manifest, counts)

    def _lesson_page(self, key, lesson, session, print_, neighbours, same, before, manifest, counts):
        page = self._lesson_href(key, lesson)
        when = self._when(lesson)
        low = lesson.low
        gaps = lesson.slots - lesson.minutes
        totals = lesson.totals
        faces = sum(totals.values())
        alts = {
            "interest": f"Interest per minute, {when}: {_percent(lesson.interest)} over the lesson"
                        + (f", lowest 5 minutes {self._low_text(lesson)}" if low else "")
                        + f"; {gaps} minute{'s' if gaps != 1 else ''} without data.",
            "shares": f"Emotion shares per minute, {when}. Over the lesson: "
                      + (", ".join(f"{label} {totals[label] / faces:.0%}" for label in EMOTIONS) if faces
                         else "no faces") + ".",
            "pie": (f"Interested {lesson.interest:.0%}, not interested {1 - lesson.interest:.0%} of {faces:,} faces."
                    if faces else "No faces counted."),
        }
        charts = {
            "interest": svg.interest_svg(session, self.interested, self.tz, low=low, description=alts["interest"]),
            "pie": svg.pie_svg(totals, self.interested, description=alts["pie"]),
            "shares": svg.shares_svg(session, self.tz, description=alts["shares"]),
        }
        files = {f"{self._room_dir(key)}/{lesson.stem}-{print_}-{kind}.svg": text for kind, text in charts.items()}
        figures = session_figures(session, self.interested, self.tz)[1:]
        figures.append(("lowest 5 minutes", self._low_text(lesson) if low else "a lesson shorter than 5 minutes"))
        name = slot_name(lesson.slot)
        if same:
            values = ", ".join(_percent(other.interest) for other in same)
            figures.append((name, f"{_percent(mean_interest(same, self.interested))} over the {len(same)} lesson"
                                  f"{'s' if len(same) > 1 else ''} before this one ({values})"))
        else:
            figures.append((name, f"the first lesson of this slot in the last {self.history_weeks} weeks"))
        if before:
            figures.append(("this room", f"{_percent(mean_interest(before, self.interested))} over the "
                                         f"{len(before)} lesson{'s' if len(before) > 1 else ''} before this one"))
        previous, following = ({"href": f"{n[0]}.html", "when": n[1]} if n else None for n in neighbours)
        week = lesson.week
        view = {
            "room": f"{key[0]}/{key[1]}", "when": when, "figures": figures, "alts": alts,
            "charts": {kind: path.rpartition("/")[2] for kind, path in zip(charts, files, strict=True)},
            "room_href": self._rel(page, f"{self._room_dir(key)}.html"),
            "week": week, "week_href": self._rel(page, self._week_href(key, week)),
            "previous": previous, "next": following, "csv": f"{lesson.stem}.csv",
        }
        files[f"{self._room_dir(key)}/{lesson.stem}.csv"] = lesson_csv(session, self.interested, self.tz)
        files[page] = self._page("lesson.html", page, lesson=view)
        self._unit(manifest, f"lesson:{lesson.stem}", print_, files, counts)

    def _weeks(self, key, lessons, manifest, counts):
        weeks = {}
        for lesson in lessons:
            weeks.setdefault(lesson.week, []).append(lesson)
        names = list(weeks)
        current = {f"week:{name}" for name in names}
        for unit in [unit for unit in manifest.units if unit.startswith("week:") and unit not in current]:
            self._remove(manifest.drop(unit))
        for i, name in enumerate(names):
            older = names[i - 1] if i else None
            newer = names[i + 1] if i + 1 < len(names) else None
            week = weeks[name]
            print_ = fingerprint(self._settings, "week", key, name, [lesson.digest for lesson in week], older, newer)
            if manifest.current(f"week:{name}", print_):
                continue
            page = self._week_href(key, name)
            first = dt.datetime.fromtimestamp(week[0].start, self.tz)
            monday = first.date() - dt.timedelta(days=first.weekday())
            view = {
                "room": f"{key[0]}/{key[1]}", "name": name, "count": len(week),
                "span": f"{monday:%d %b} to {monday + dt.timedelta(days=6):%d %b %Y}",
                "interest": _percent(mean_interest(week, self.interested)),
                "room_href": self._rel(page, f"{self._room_dir(key)}.html"),
                "older": {"name": older, "href": f"{older}.html"} if older else None,
                "newer": {"name": newer, "href": f"{newer}.html"} if newer else None,
            }
            text = self._page("week.html", page, week=view, lessons=self._lesson_rows(page, key, week))
            self._unit(manifest, f"week:{name}", print_, {page: text}, counts)

    def _lesson_rows(self, page, key, lessons):
        return [{"href": self._rel(page, self._lesson_href(key, lesson)), "when": self._when(lesson),
                 "length": duration_text(lesson.end - lesson.start), "interest": _percent(lesson.interest),
                 "low": self._low_text(lesson), "minutes": f"{lesson.minutes} of {lesson.slots}"}
                for lesson in lessons]

    def _room_page(self, key, lessons, health, now, horizon, manifest, counts):
        page = f"{self._room_dir(key)}.html"
        name = f"{key[0]}/{key[1]}"
        devices = [{"name": item.device.device, "state": item.device.state or "unknown",
                    "href": self._rel(page, self._device_href(item.device.device))}
                   for item in sorted(health, key=lambda item: item.device.device)]
        latest = lessons[-1] if lessons else None
        if key not in self._with_windows:
            empty = "no data from this room yet"
            long_empty = "No data from this room yet" + (": its cameras have reported their status but sent no windows."
                                                         if devices else ".")
        else:
            empty = f"no lesson with faces to count in the last {self.history_weeks} weeks"
            long_empty = (f"No lesson in the last {self.history_weeks} weeks: no minute with enough faces to count "
                          "(its windows were suppressed, or it sent none).")
        row = {"key": key, "name": name, "href": page, "lesson": None, "running": False, "empty": empty,
               "devices": ", ".join(f"{d['name']} ({d['state']})" for d in devices) or "none reported"}
        if latest:
            row["lesson"] = {"href": self._lesson_href(key, latest), "when": self._when(latest),
                             "length": duration_text(latest.end - latest.start),
                             "interest": _percent(latest.interest), "low": self._low_text(latest)}
            row["running"] = now - latest.end <= self.gap_s
        # A lesson joins the history once it has ended: until then it changes every minute.
        history = self._history(key, lessons[:-1] if row["running"] else lessons, latest, horizon, manifest, counts)
        # The latest lesson's chart is shown here: its unit's fingerprint names the file.
        latest_unit = manifest.units.get(f"lesson:{latest.stem}") if latest else None
        weeks = self._week_rows(page, key, lessons)
        recent = lessons[::-1][:self.sessions_per_room]
        table = f"{self._room_dir(key)}/lessons.csv"
        table_print = fingerprint(self._settings, "lessons.csv", key, [lesson.digest for lesson in lessons])
        if not lessons:
            if "lessons.csv" in manifest.units:
                self._remove(manifest.drop("lessons.csv"))
        elif not manifest.current("lessons.csv", table_print):
            self._unit(manifest, "lessons.csv", table_print, {table: lessons_csv(lessons, self.tz)}, counts)
        print_ = fingerprint(self._settings, "room", key, [lesson.digest for lesson in recent], row["running"],
                             [(d["name"], d["state"]) for d in devices], latest_unit and latest_unit[0],
                             key in self._with_windows, history and history["print"],
                             [(week["name"], week["count"], week["interest"]) for week in weeks])
        if manifest.current("room", print_):
            return row
        view = {"name": name, "devices": devices, "weeks": self.history_weeks, "latest": None, "empty": long_empty,
                "history": history, "week_list": weeks, "csv": self._rel(page, table),
                "latest_data": f"{dt.datetime.fromtimestamp(latest.end, self.tz):%Y-%m-%d %H:%M %Z}" if latest
                else "none"}
        if latest:
            interest_chart = next(name for name in latest_unit[1] if name.endswith("-interest.svg"))
            view["latest"] = {"href": self._rel(page, self._lesson_href(key, latest)), "when": self._when(latest),
                              "interest": _percent(latest.interest), "length": duration_text(latest.end - latest.start),
                              "low": self._low_text(latest) if latest.low else "",
                              "chart": self._rel(page, interest_chart), "running": row["running"],
                              "alt": f"Interest per minute of the latest lesson, {self._when(latest)}: "
                                     f"{_percent(latest.interest)} over the lesson."}
        text = self._page("room.html", page, room=view, lessons=self._lesson_rows(page, key, recent))
        self._unit(manifest, "room", print_, {page: text}, counts)
        return row

    def _history(self, key, ended, latest, horizon, manifest, counts):
        """The room's ended lessons as a chart (its own unit) and a table by slot; None before the first ends."""
        if not ended:
            return None
        slot = latest.slot
        print_ = fingerprint(self._settings, "history", key, horizon, [lesson.digest for lesson in ended], slot)
        cached = self._histories.get(key)
        if cached and cached["print"] == print_:
            return cached
        page = f"{self._room_dir(key)}.html"
        chart = f"{self._room_dir(key)}/history-{print_}.svg"
        points = [svg.HistoryPoint(lesson.start, lesson.interest, lesson.slot == slot) for lesson in ended]
        average = mean_interest(ended, self.interested)
        marked = [p for p in points if p.marked and p.ratio is not None]
        alt = (f"{len(ended)} lessons since {dt.datetime.fromtimestamp(horizon, self.tz):%Y-%m-%d}, "
               f"average interest {_percent(average)}. {slot_name(slot)}: "
               + (", ".join(f"{p.ratio:.0%}" for p in marked) or "no data") + ".")
        if not manifest.current("history", print_):
            # To the end of today: the chart's span moves with the history's horizon, a day at a time.
            end = horizon + (self.history_weeks * 7 + 1) * 86400
            self._unit(manifest, "history", print_, {chart: svg.history_svg(
                points, horizon, end, self.tz, slot_name(slot), average, description=alt)}, counts)
        self._histories[key] = {"print": print_, "src": self._rel(page, chart), "alt": alt,
                                "slots": self._slot_rows(page, key, ended, slot)}
        return self._histories[key]

    def _slot_rows(self, page, key, lessons, marked):
        by_slot = {}
        for lesson in lessons:
            by_slot.setdefault(lesson.slot, []).append(lesson)
        rows = []
        for slot in sorted(by_slot):
            group = by_slot[slot]
            ratios = [lesson.interest for lesson in group if lesson.interest is not None]
            rows.append({"name": slot_name(slot), "marked": slot == marked, "count": len(group),
                         "interest": _percent(mean_interest(group, self.interested)),
                         "best": _percent(max(ratios, default=None)), "worst": _percent(min(ratios, default=None)),
                         "latest": self._when(group[-1]),
                         "latest_href": self._rel(page, self._lesson_href(key, group[-1]))})
        return rows

    def _week_rows(self, page, key, lessons):
        weeks = {}
        for lesson in lessons:
            weeks.setdefault(lesson.week, []).append(lesson)
        return [{"name": name, "href": self._rel(page, self._week_href(key, name)), "count": len(group),
                 "interest": _percent(mean_interest(group, self.interested))}
                for name, group in reversed(weeks.items())]

    # -- devices ---------------------------------------------------------------------------

    def _device_href(self, device):
        return f"devices/{file_name(device)}.html"

    def _device(self, store, item, now, counts):
        device = item.device
        manifest = self._manifest("devices")
        name = device.device
        phase = int(hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8], 16) % DEVICE_PERIOD_S
        period = math.floor((now + phase) / DEVICE_PERIOD_S)
        print_ = fingerprint(self._settings, "device", name, device.site, device.room, device.state, device.reason,
                             item.camera, device.version, item.problems, item.fps_target, period)
        if manifest.current(f"device:{name}", print_):
            return
        page = self._device_href(name)
        latest = item.latest
        facts = [("room", f"{device.site}/{device.room}"),
                 ("state", (device.state or "unknown") + (f" ({device.reason})" if device.reason else "")),
                 ("camera", item.camera or "unknown"), ("version", device.version or "unknown"),
                 ("last seen", f"{seen_text(device.last_seen, now, self.tz)} ({ago_text(device.last_seen, now)})"),
                 ("target", f"{item.fps_target:g} frames per second")]
        if latest:
            facts += [("last stats", f"{seen_text(latest.at, now, self.tz)} ({ago_text(latest.at, now)})")]
            facts += [(label + (f" ({unit})" if unit else ""), self._figure(field, getattr(latest, field)))
                      for field, label, unit in STATS_PANELS]
            facts += [("windows dropped, last 24 h", "unknown" if item.dropped_day is None else f"{item.dropped_day}"),
                      ("uptime", "unknown" if latest.uptime_s is None else duration_text(latest.uptime_s))]
        files, charts = {}, []
        if latest:
            fields = [field for field, _, _ in STATS_PANELS]
            for period_name, heading, span, bucket in (("day", "Last 24 hours", 86400, DAY_BUCKET_S),
                                                       ("month", f"Last {self.stats_retention_days:g} days",
                                                        self.stats_retention_days * 86400, MONTH_BUCKET_S)):
                # Buckets on round times, so a redraw ten minutes on moves the chart by whole buckets.
                end = int(now) // bucket * bucket + bucket
                start = end - int(span) // bucket * bucket
                series = store.stats_series(name, start, end, bucket, fields)
                panels, table = self._panels(series, item)
                description = f"{heading} of {name}'s stats: " + "; ".join(
                    f"{row[0]} latest {row[1]}, lowest {row[2]}, highest {row[3]}" for row in table) + "."
                chart = f"devices/{file_name(name)}-{print_}-{period_name}.svg"
                files[chart] = svg.panels_svg(panels, start, end, self.tz, f"{heading} ({name})", description)
                charts.append({"heading": heading, "src": self._rel(page, chart), "alt": description,
                               "height": 150 * math.ceil(len(panels) / 2) + 24, "table": table})
        view = {"name": name, "room": f"{device.site}/{device.room}",
                "room_href": self._rel(page, f"{self._room_dir((device.site, device.room))}.html"),
                "facts": facts, "problems": "; ".join(item.problems), "charts": charts,
                "retention": f"{self.stats_retention_days:g} days",
                "as_of": seen_text(now, now, self.tz)}
        files[page] = self._page("device.html", page, device=view)
        self._unit(manifest, f"device:{name}", print_, files, counts)

    def _figure(self, name, value):
        if value is None:
            return "not sent"
        text = number_text(value)
        return text if plausible(name, value) else f"{text} (implausible: stored as sent)"

    def _panels(self, series, item):
        panels, table = [], []
        for name, label, unit in STATS_PANELS:
            points = series[name]
            low, high = PLAUSIBLE[name]
            target = item.fps_target if name == "fps" else self.limits.hot_c if name == "cpu_temp_c" else None
            target_name = "target" if name == "fps" else "hot" if name == "cpu_temp_c" else ""
            panels.append(svg.Panel(label, unit, points, 0.0, float(high), target, target_name))
            values = [v for _, v in points if v is not None]
            off = [v for v in values if not 0 <= v <= high]
            table.append((label + (f" ({unit})" if unit else ""),
                          self._figure(name, values[-1]) if values else "not sent",
                          self._figure(name, min(values)) if values else "–",
                          self._figure(name, max(values)) if values else "–",
                          f"{len(off)}: drawn at the chart's edge" if off else "none"))
        return panels, table

    # -- the index -------------------------------------------------------------------------

    def _index(self, rooms, health, now):
        devices = []
        for item in health:
            device, stats = item.device, item.stats
            state = device.state or "unknown"
            if item.camera and device.state == "online":
                state += f", camera {item.camera}"
            row = {"name": device.device, "href": self._device_href(device.device),
                   "room": f"{device.site}/{device.room}", "state": state,
                   "seen": f"{seen_text(device.last_seen, now, self.tz)} ({ago_text(device.last_seen, now)})",
                   "problems": "; ".join(item.problems), "figures": None,
                   "no_stats": "no stats" if item.last_stats_at is None else
                   f"no stats for {ago_text(item.last_stats_at, now).removesuffix(' ago')}"}
            if stats:
                fps = "–" if stats.fps is None else f"{number_text(stats.fps)}/{item.fps_target:g}"
                temperature = "–" if stats.cpu_temp_c is None else f"{number_text(stats.cpu_temp_c)} °C"
                row["figures"] = [
                    (fps, not plausible("fps", stats.fps)),
                    (_cell(stats.detect_ms), not plausible("detect_ms", stats.detect_ms)),
                    (_cell(stats.faces_per_frame), not plausible("faces_per_frame", stats.faces_per_frame)),
                    (_cell(stats.outbox_depth), not plausible("outbox_depth", stats.outbox_depth)),
                    (_cell(item.dropped_day), False),
                    (temperature, not plausible("cpu_temp_c", stats.cpu_temp_c)),
                ]
            devices.append(row)
        attention = sum(1 for item in health if item.problems)
        running = sum(1 for row in rooms if row["running"])
        summary = (f"{len(rooms)} room{'s' if len(rooms) != 1 else ''}, {running} with a lesson now; "
                   f"{len(health)} device{'s' if len(health) != 1 else ''}.")
        generated = f"{dt.datetime.fromtimestamp(now, self.tz):%Y-%m-%d %H:%M %Z}"
        text = self._page("index.html", "index.html", rooms=rooms, devices=devices, summary=summary,
                          attention=f"{attention} need{'s' if attention == 1 else ''} attention" if attention else "",
                          generated=generated)
        self._write(self.output_dir / "index.html", text)

    def _group_indexes(self, rooms, now, first):
        """Each access group's index: its rooms only, no devices; links by way of the root, two folders up."""
        generated = f"{dt.datetime.fromtimestamp(now, self.tz):%Y-%m-%d %H:%M %Z}"
        for group, patterns in self.access.items():
            page = f"groups/{group}/index.html"
            up = "../" * page.count("/")
            mine = []
            for row in rooms:
                if room_matches(row["key"], patterns):
                    row = dict(row, href=up + row["href"])
                    if row["lesson"]:
                        row["lesson"] = dict(row["lesson"], href=up + row["lesson"]["href"])
                    mine.append(row)
            running = sum(1 for row in mine if row["running"])
            summary = f"{len(mine)} room{'s' if len(mine) != 1 else ''}, {running} with a lesson now."
            text = self._page("index.html", page, rooms=mine, devices=None, fleet=False, summary=summary,
                              attention="", generated=generated, home="index.html", home_text="Your rooms")
            self._write(self.output_dir / page, text)
        if first:
            # Groups no longer configured lose their index (and so their one way in).
            for path in (self.output_dir / "groups").glob("*/index.html"):
                if path.parent.name not in self.access:
                    self._remove([path.relative_to(self.output_dir)])

    # -- files -----------------------------------------------------------------------------

    def _manifest(self, folder):
        path = self.output_dir / folder / MANIFEST
        manifest = self._manifests.get(path)
        if manifest is None:
            manifest = self._manifests[path] = Manifest(path)
        return manifest

    def _rel(self, page, target):
        """``target`` as linked from ``page`` (both from the output root): beside it, or by way of the root."""
        folder = page.rpartition("/")[0]
        if folder and target.startswith(folder + "/"):
            return target[len(folder) + 1:]
        return "../" * page.count("/") + target

    def _page(self, template, page, **values):
        return self.templates.get_template(template).render(refresh_s=int(self.refresh_s),
                                                           root="../" * page.count("/"), **values)

    def _unit(self, manifest, unit, print_, files, counts):
        """Write a unit's files (charts first, its page last), then forget the files it no longer has."""
        for relative, text in files.items():
            self._write(self.output_dir / relative, text)
            if relative.endswith(".html"):
                counts.pages += 1
            elif relative.endswith(".svg"):
                counts.charts += 1
        self._remove(manifest.record(unit, print_, list(files)))

    def _write(self, path, text):
        temporary = path.with_name(f".tmp-{path.name}")
        with _writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(text, encoding="utf-8")
            os.replace(temporary, path)

    def _remove(self, relatives):
        for relative in relatives:
            path = self.output_dir / relative
            with _writing(path):
                path.unlink(missing_ok=True)

    def _remove_gone(self, rooms, devices):
        """Pages of rooms and devices the store no longer has (retention deleted them), and leftovers."""
        wanted = {self._room_dir(key) for key in rooms}
        for path in (self.output_dir / "rooms").glob(f"*/*/{MANIFEST}"):
            folder = path.parent.relative_to(self.output_dir).as_posix()
            if folder not in wanted:
                manifest = self._manifest(folder)
                for unit in list(manifest.units):
                    self._remove(manifest.drop(unit))
                self._remove([f"{folder}.html", f"{folder}/{MANIFEST}"])
                self._manifests.pop(path, None)
        manifest = self._manifest("devices")
        for unit in [unit for unit in manifest.units if unit.removeprefix("device:") not in devices]:
            self._remove(manifest.drop(unit))
        for path in self.output_dir.rglob(".tmp-*"):
            self._remove([path.relative_to(self.output_dir)])


def room_matches(key, patterns) -> bool:
    """Whether room ``key`` (site, room) is one of ``patterns``: ``all``, or ``site/room`` globs.

    Globs match the names the files are written under (``file_name``), as the web server sees them:
    a room whose name needs hashing is reached by ``*`` or ``all`` only.
    """
    path = f"{file_name(key[0])}/{file_name(key[1])}"
    return any(pattern == "all" or fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


def number_text(value) -> str:
    """Two significant digits below 10, whole numbers above: ``0.95``, ``12``, ``10,000``."""
    if isinstance(value, float) and abs(value) < 10:
        return f"{value:.2g}"
    return f"{value:,.0f}"


def _cell(value):
    return "–" if value is None else number_text(value)
