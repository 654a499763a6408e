"""What every page builder of the dashboard shares: its settings, the files' names and links, and the texts.

Builders (room_pages.py, device_pages.py, index_pages.py) draw through a ``Pages``, one per
dashboard: the settings, the templates, and the output's ``SiteFiles``. Invariants:

- nothing from the store names a path: names that are not plain contract names (letters, digits,
  ``_ . -``) are hashed for file names (``file_name``), and the templates escape every text;
- links are relative (``rel``): beside the page, or by way of the root, so the directory can be
  published under any path and a room's pages link only into the room's folder, the indexes and
  devices;
- every unit's fingerprint starts with ``Pages.drawn_with`` (the code's version and the settings
  every page shows), so an upgrade or a change of those draws every page again.
"""

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from jinja2 import Environment

from ..common.contract import DEFAULT_INTERESTED, NAME_PATTERN
from .charts import span_text
from .fleet import Thresholds
from .lessons import Lesson
from .sessions import DEFAULT_GAP_S
from .site_files import SiteFiles

DEVICES = "devices"
_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class Settings:
    """How the dashboard draws: the keywords ``Dashboard`` takes, which ``Dashboard.from_config`` reads."""

    gap_s: float = DEFAULT_GAP_S
    interested: Iterable[str] = DEFAULT_INTERESTED
    sessions_per_room: int = 10
    history_weeks: int = 12
    refresh_s: float = 60
    tz: dt.tzinfo = dt.UTC
    limits: Thresholds = field(default_factory=Thresholds)
    stats_retention_days: float = 30.0
    access: Mapping[str, Iterable[str]] = field(default_factory=dict)

    def __post_init__(self):
        # Any iterables in, tuples kept: ``interested`` is part of every fingerprint, whose repr must not vary.
        object.__setattr__(self, "interested", tuple(self.interested))
        object.__setattr__(self, "access", {name: tuple(patterns) for name, patterns in self.access.items()})


@dataclass(frozen=True)
class Pages:
    """A dashboard's means of drawing: its settings, its templates, its files, and its fingerprints' start."""

    settings: Settings
    templates: Environment
    files: SiteFiles
    drawn_with: tuple

    def render(self, template: str, page: str, **values) -> str:
        """``template`` filled in for ``page`` (a path from the output root), which its links start from."""
        return self.templates.get_template(template).render(refresh_s=int(self.settings.refresh_s),
                                                            root="../" * page.count("/"), **values)

    def local(self, epoch: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(epoch, self.settings.tz)

    def when(self, lesson: Lesson) -> str:
        """``Mon 2026-11-23 10:00–10:50 CET``."""
        return f"{self.local(lesson.start):%a} {span_text(lesson.start, lesson.end, self.settings.tz)}"

    def low_text(self, lesson: Lesson) -> str:
        """The lesson's lowest 5 minutes, ``10:20–10:25: 40%``."""
        if lesson.low is None:
            return "–"
        start, end, ratio = lesson.low
        return f"{self.local(start):%H:%M}–{self.local(end):%H:%M}: {ratio:.0%}"


def file_name(name: str) -> str:
    """``name`` itself when the contract allows it, else a hash: nothing from the store names a path."""
    if _NAME.fullmatch(name):
        return name
    return "~" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def room_folder(key: tuple[str, str]) -> str:
    """The folder of a room's lessons, weeks and charts; its page is the folder's name with ``.html``."""
    return f"rooms/{file_name(key[0])}/{file_name(key[1])}"


def device_href(device: str) -> str:
    return f"{DEVICES}/{file_name(device)}.html"


def rel(page: str, target: str) -> str:
    """``target`` as linked from ``page`` (both from the output root): beside it, or by way of the root."""
    folder = page.rpartition("/")[0]
    if folder and target.startswith(folder + "/"):
        return target[len(folder) + 1:]
    return "../" * page.count("/") + target


def percent_text(ratio: float | None) -> str:
    return "no data" if ratio is None else f"{ratio:.0%}"


def duration_text(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.0f} min"


def number_text(value) -> str:
    """Two significant digits below 10, whole numbers above: ``0.95``, ``12``, ``10,000``."""
    if isinstance(value, float) and abs(value) < 10:
        return f"{value:.2g}"
    return f"{value:,.0f}"
