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
is drawn from, recorded in a ``.manifest.json`` beside it (site_files.py), so neither a refresh
nor a restart draws a page again whose inputs are the same. Each refresh asks the store only
which rooms received windows since the last (and summarises again only the lessons those can
touch, lessons.py); device pages follow their stats every DEVICE_PERIOD_S, each at its own
phase; the indexes are written every time. This module decides what a refresh reads and which
pages are due; room_pages.py, device_pages.py and index_pages.py draw them (with pages.py), and
site_files.py writes them, each file whole.
"""

import datetime as dt
import hashlib
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from .device_pages import draw_device, drop_gone_devices
from .fleet import Health, Thresholds, fleet_health
from .index_pages import draw_group_indexes, draw_index, drop_gone_groups
from .lessons import RoomLessons
from .pages import Pages, Settings, room_folder
from .room_pages import Room, RoomMemory, draw_lessons, draw_room, draw_weeks, drop_gone_rooms
from .site_files import DashboardError as DashboardError  # what a refresh raises, for its callers to catch
from .site_files import SiteFiles
from .store import Store

# Windows are stamped on arrival and committed a moment later: ask again for this far back.
ARRIVAL_MARGIN_S = 120
# A device's page follows its stats this often (each device at its own phase, so they spread out).
DEVICE_PERIOD_S = 600
# Every module whose code decides what a page shows, down to the lesson splitting (sessions) and the
# colours (common/charts): a change to any of them draws every page again.
DRAWING_CODE = ("svg.py", "dashboard.py", "pages.py", "room_pages.py", "device_pages.py", "index_pages.py",
                "lessons.py", "sessions.py", "fleet.py", "charts.py", "exports.py", "../common/charts.py")


@dataclass(frozen=True)
class BuildResult:
    rooms: int
    lessons: int
    pages: int
    charts_drawn: int
    seconds: float
    cpu_seconds: float


def _code_version():
    """Changes with the templates and drawing code, so an upgrade draws every page again."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted([*here.glob("templates/*.html"), *(here / name for name in DRAWING_CODE)]):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class _Refresh:
    """What one refresh read, the same for every room."""

    store: Store
    now: float
    horizon: float
    first: bool
    changed: dict  # {(site, room): earliest window start, or None for all}: the rooms with new windows


class Dashboard:
    """One output directory's pages, kept current by ``build``, and the rooms' lessons between builds."""

    def __init__(self, output_dir: str | Path, **settings):
        """``settings`` are ``pages.Settings``' fields: ``gap_s``, ``history_weeks``, ``tz``, ``access``..."""
        chosen = Settings(**settings)
        templates = Environment(loader=PackageLoader("edge_agent.collector"), autoescape=select_autoescape(),
                                trim_blocks=True, lstrip_blocks=True)
        drawn_with = (_code_version(), str(chosen.tz), chosen.interested, chosen.gap_s, chosen.refresh_s)
        self.pages = Pages(chosen, templates, SiteFiles(output_dir), drawn_with)
        self._rooms: dict[tuple[str, str], RoomMemory] = {}
        self._checked: float | None = None

    @classmethod
    def from_config(cls, config) -> "Dashboard":
        return cls(config.dashboard.resolved_output_dir(), gap_s=config.sessions.gap_min * 60,
                   interested=config.sessions.interested, sessions_per_room=config.dashboard.sessions_per_room,
                   history_weeks=config.dashboard.history_weeks, refresh_s=config.dashboard.refresh_s,
                   tz=config.dashboard.resolved_timezone(), limits=Thresholds.from_config(config.fleet),
                   stats_retention_days=config.store.stats_retention_days, access=config.dashboard.access)

    @property
    def output_dir(self) -> Path:
        return self.pages.files.root

    @output_dir.setter
    def output_dir(self, path: str | Path) -> None:
        # `edge-collector dashboard --out` sends a dashboard made from the config elsewhere, before it builds.
        self.pages = replace(self.pages, files=SiteFiles(path))

    def check_writable(self) -> None:
        """Fail early, naming the directory, instead of on the first regeneration."""
        self.pages.files.check_writable()

    def build(self, store: Store, now: float | None = None) -> BuildResult:
        """Bring every page up to date with ``store``; returns what was done."""
        began, cpu = time.monotonic(), time.process_time()
        now = time.time() if now is None else now
        first = self._checked is None
        asked = time.time()
        # The first build reads every room from the history horizon on; later ones only rooms with new windows.
        changed = (dict.fromkeys(store.rooms()) if self._checked is None
                   else store.rooms_changed(self._checked - ARRIVAL_MARGIN_S))
        self._checked = asked
        devices = store.devices()
        health = fleet_health(devices, store.fleet_stats(now), now, self.pages.settings.limits)
        refresh = _Refresh(store, now, self._horizon(now), first, changed)
        keys = sorted(set(self._rooms) | set(changed) | {(d.site, d.room) for d in devices})
        by_room: dict[tuple[str, str], list[Health]] = {}
        for item in health:
            by_room.setdefault((item.device.site, item.device.room), []).append(item)
        files = self.pages.files
        files.written.clear()
        rows = [self._room(refresh, key, by_room.get(key, [])) for key in keys]
        for item in health:
            self._device(refresh, item)
        if first:
            self._remove_gone(keys, {item.device.device for item in health})
        draw_index(self.pages, rows, health, now)
        draw_group_indexes(self.pages, rows, now)
        files.save_manifests()
        lessons = sum(len(memory.lessons.lessons) for memory in self._rooms.values())
        pages = files.written[".html"] + 1 + len(self.pages.settings.access)
        return BuildResult(len(keys), lessons, pages, files.written[".svg"], time.monotonic() - began,
                           time.process_time() - cpu)

    def _horizon(self, now):
        """Local midnight ``history_weeks`` ago: the history moves a day at a time, not every refresh."""
        today = self.pages.local(now).replace(hour=0, minute=0, second=0, microsecond=0)
        return (today - dt.timedelta(weeks=self.pages.settings.history_weeks)).timestamp()

    def _room(self, refresh, key, health):
        """Bring the room's lessons up to date and draw its pages that changed; returns its row on the indexes."""
        memory = self._rooms.get(key)
        if memory is None:
            settings = self.pages.settings
            memory = self._rooms[key] = RoomMemory(RoomLessons(*key, gap_s=settings.gap_s,
                                                               interested=settings.interested, tz=settings.tz))
        lessons = memory.lessons
        sessions, redo_from = {}, None
        if key in refresh.changed:
            memory.has_windows = True
            earliest = refresh.changed[key]
            start = refresh.horizon if earliest is None else max(refresh.horizon, lessons.refetch_from(earliest))
            sessions = lessons.update(start, refresh.store.room_minutes(*key, start=start))
            redo_from = start
        if lessons.forget_before(refresh.horizon):
            redo_from = refresh.horizon
        room = Room(self.pages, key, self.pages.files.manifest(room_folder(key)))
        if refresh.first or redo_from is not None:
            # A lesson's page shows its neighbours: the one before the first redone changes too.
            index = next((i for i, lesson in enumerate(lessons.lessons) if lesson.start >= redo_from),
                         len(lessons.lessons))
            draw_lessons(room, refresh.store, lessons.lessons, 0 if refresh.first else max(0, index - 1), sessions)
            draw_weeks(room, lessons.lessons)
        return draw_room(room, memory, health, refresh.now, refresh.horizon)

    def _device(self, refresh, item):
        name = item.device.device
        phase = int(hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8], 16) % DEVICE_PERIOD_S
        draw_device(self.pages, refresh.store, item, refresh.now, math.floor((refresh.now + phase) / DEVICE_PERIOD_S))

    def _remove_gone(self, rooms, devices):
        """Pages of rooms and devices the store no longer has (retention deleted them), of groups no
        longer configured, and leftovers."""
        drop_gone_rooms(self.pages, rooms)
        drop_gone_devices(self.pages, devices)
        self.pages.files.remove_leftovers()
        drop_gone_groups(self.pages)
