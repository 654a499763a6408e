"""The instructors' dashboard: static HTML pages and PNG charts written into one directory.

Any web server (or ``edge-collector serve``) can publish the directory; the pages need no
JavaScript and nothing from the internet. A session's charts are named after a fingerprint of
its data, so a regeneration only draws the sessions that changed (the ones still running), and
every file is written under a temporary name and renamed, so a reader never sees half a page.
"""

import datetime as dt
import hashlib
import os
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from ..common.contract import DEFAULT_INTERESTED
from ..common.errors import EdgeAgentError
from . import charts
from .sessions import DEFAULT_GAP_S, split_sessions

# How far back from a room's newest window its latest sessions are looked for.
LOOKBACK_DAYS = 14
CHART_KINDS = ("interest", "shares", "pie")


class DashboardError(EdgeAgentError):
    """The output directory cannot be written; the text names it and says why."""


@dataclass
class SessionView:
    when: str
    length: str
    interest: str
    figures: list
    charts: dict


@dataclass
class RoomView:
    site: str
    room: str
    href: str
    devices: list
    sessions: list = field(default_factory=list)


@dataclass(frozen=True)
class BuildResult:
    rooms: int
    sessions: int
    charts_drawn: int
    seconds: float


@contextmanager
def _writing(path):
    try:
        yield
    except OSError as exc:
        raise DashboardError(f"dashboard output {path} cannot be written: {exc.strerror or exc}") from None


def fingerprint(session, interested, tz):
    """Changes whenever anything drawn would: the data, the interest mapping, the time zone."""
    minutes = [(m.start, m.window_s, sorted(m.counts.items()) if m.counts else None) for m in session.minutes]
    text = repr((session.site, session.room, tuple(interested), str(tz), minutes))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _utc(epoch):
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def duration_text(seconds):
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.0f} min"


def fleet_summary(devices):
    if not devices:
        return "No device has reported yet."
    states = Counter(device.state or "unknown" for device in devices)
    noun = "device" if len(devices) == 1 else "devices"
    return f"{len(devices)} {noun}: " + ", ".join(f"{count} {state}" for state, count in sorted(states.items()))


class Dashboard:
    def __init__(self, output_dir, *, gap_s=DEFAULT_GAP_S, interested=DEFAULT_INTERESTED, sessions_per_room=5,
                 refresh_s=60, tz=dt.UTC):
        self.output_dir = Path(output_dir)
        self.gap_s = gap_s
        self.interested = tuple(interested)
        self.sessions_per_room = sessions_per_room
        self.refresh_s = refresh_s
        self.tz = tz
        self.templates = Environment(loader=PackageLoader("edge_agent.collector"), autoescape=select_autoescape(),
                                     trim_blocks=True, lstrip_blocks=True)

    @classmethod
    def from_config(cls, config):
        return cls(config.dashboard.resolved_output_dir(), gap_s=config.sessions.gap_min * 60,
                   interested=config.sessions.interested, sessions_per_room=config.dashboard.sessions_per_room,
                   refresh_s=config.dashboard.refresh_s, tz=config.dashboard.resolved_timezone())

    def check_writable(self):
        """Fail early, naming the directory, instead of on the first regeneration."""
        probe = self.output_dir / f".write-test-{os.getpid()}"
        with _writing(self.output_dir):
            self.output_dir.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()

    def build(self, store, now=None):
        """Regenerate every page from ``store``; returns what was done."""
        began = time.monotonic()
        now = time.time() if now is None else now
        devices = store.devices()
        rooms = sorted(set(store.rooms()) | {(d.site, d.room) for d in devices})
        keep = set()
        drawn = 0
        views = []
        for site, room in rooms:
            view = RoomView(site, room, f"rooms/{site}/{room}.html",
                            [d for d in devices if (d.site, d.room) == (site, room)])
            for session in self._latest_sessions(store, site, room):
                session_view, paths, new = self._session_view(session)
                view.sessions.append(session_view)
                keep.update(paths)
                drawn += new
            views.append(view)
        fleet = self.output_dir / "fleet.png"
        self._draw(lambda path: charts.fleet_chart(devices, path, now=now, tz=self.tz), fleet)
        keep.add(fleet)
        generated = f"{dt.datetime.fromtimestamp(now, self.tz):%Y-%m-%d %H:%M %Z}"
        for view in views:
            keep.add(self._render(view.href, "room.html", root="../../", room=view, generated=generated))
        self._render("index.html", "index.html", root="", rooms=views, fleet_chart="fleet.png",
                     fleet_summary=fleet_summary(devices), generated=generated)
        self._remove_stale(keep)
        return BuildResult(len(views), sum(len(v.sessions) for v in views), drawn, time.monotonic() - began)

    def _latest_sessions(self, store, site, room):
        last = store.last_window_start(site, room)
        if last is None:
            return []
        windows = store.windows(site, room, start=last - LOOKBACK_DAYS * 86400)
        sessions = split_sessions(windows, gap_s=self.gap_s)
        return sessions[::-1][:self.sessions_per_room]

    def _session_view(self, session):
        stem = f"{_utc(session.start):%Y%m%dT%H%M}-{fingerprint(session, self.interested, self.tz)}"
        folder = self.output_dir / "charts" / session.site / session.room
        paths = {kind: folder / f"{stem}-{kind}.png" for kind in CHART_KINDS}
        when = charts.session_span(session, self.tz)
        drawers = {
            "interest": lambda path: charts.interest_chart(session, path, self.interested, tz=self.tz),
            "shares": lambda path: charts.emotion_shares_chart(session, path, tz=self.tz),
            "pie": lambda path: charts.session_pie(session, path, self.interested, title=when, tz=self.tz),
        }
        new = 0
        for kind, path in paths.items():
            if not path.exists():
                self._draw(drawers[kind], path)
                new += 1
        ratio = session.interest(self.interested)
        view = SessionView(
            when=when,
            length=duration_text(session.end - session.start),
            interest="no data" if ratio is None else f"{ratio:.0%}",
            figures=charts.session_figures(session, self.interested, self.tz),
            charts={kind: f"../../charts/{session.site}/{session.room}/{path.name}" for kind, path in paths.items()},
        )
        return view, set(paths.values()), new

    def _draw(self, draw, path):
        # The suffix stays last: matplotlib picks the format from it.
        temporary = path.with_name(f".tmp-{path.name}")
        with _writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            draw(temporary)
            os.replace(temporary, path)

    def _render(self, relative, template, **values):
        path = self.output_dir / relative
        text = self.templates.get_template(template).render(refresh_s=int(self.refresh_s), **values)
        temporary = path.with_name(f".tmp-{path.name}")
        with _writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(text, encoding="utf-8")
            os.replace(temporary, path)
        return path

    def _remove_stale(self, keep):
        """Charts of sessions that changed since, and pages of rooms whose windows retention deleted."""
        for folder, pattern in (("charts", "*.png"), ("rooms", "*.html")):
            for path in (self.output_dir / folder).rglob(pattern):
                if path not in keep:
                    with _writing(path):
                        path.unlink(missing_ok=True)
