"""The dashboard's charts as SVG text: a lesson's interest, emotion shares and pie, a room's lessons
over the weeks, a device's stats as small panels.

Written by hand rather than with matplotlib: a chart is a few kilobytes of text made in a
millisecond or two, where matplotlib takes about 0.3 s per PNG, and a school refreshes a hundred
running lessons a minute. Every chart carries a ``<title>`` and ``<desc>`` (the page's ``alt``
says the same), uses the product's colour-blind-safe palette, and scales to the page and to A4.
Gaps are left empty and shaded, never drawn as zero. Values outside a panel's range are drawn at
its edge as triangles and said in its title, never stretched to fit.
"""

import datetime as dt
import math
from dataclasses import dataclass
from html import escape

from ..common.charts import EMOTION_COLORS, INTERESTED_COLOR, NOT_INTERESTED_COLOR
from ..common.contract import DEFAULT_INTERESTED, EMOTIONS
from .charts import GAP_COLOR, NO_DATA, SMOOTHED_COLOR, gap_spans, interest_points, window_label
from .sessions import smooth

FONT = 'font-family="system-ui,sans-serif" font-size="12"'
TEXT_COLOR, GRID_COLOR, AXIS_COLOR = "#222222", "#e6e6e6", "#888888"
OTHER_COLOR = "#8c8c8c"
LOW_COLOR = "#d55e00"
LOW_FILL = "#f6d9c7"  # LOW_COLOR at the opacity the chart draws it with, for the legend's box
OFF_SCALE_COLOR = "#d55e00"
# Candidate distances between time ticks, in seconds: the first giving at most MAX_TICKS is used.
TICK_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400,
              7 * 86400, 14 * 86400, 28 * 86400)
MAX_TICKS = 9


# A coordinate to a tenth, enough for a screen or a printer: a bound format is the quickest way in
# Python, and a chart writes thousands.
_n = "{:.1f}".format


@dataclass(frozen=True)
class Frame:
    """A chart's plotting area: ``[x0, x1)`` (epoch seconds) and ``[y0, y1]`` mapped onto the box."""

    left: float
    top: float
    width: float
    height: float
    x0: float
    x1: float
    y0: float
    y1: float

    def x(self, value):
        span = (self.x1 - self.x0) or 1
        return self.left + (value - self.x0) / span * self.width

    def y(self, value):
        span = (self.y1 - self.y0) or 1
        return self.top + self.height - (value - self.y0) / span * self.height

    @property
    def bottom(self):
        return self.top + self.height

    @property
    def right(self):
        return self.left + self.width


class Drawing:
    """SVG elements collected in order; ``text()`` gives the finished document."""

    def __init__(self, width, height, title, description):
        self.width, self.height = width, height
        self.parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
                      f'height="{height}" role="img" {FONT} fill="{TEXT_COLOR}">',
                      f"<title>{escape(title)}</title><desc>{escape(description)}</desc>",
                      f'<rect width="{width}" height="{height}" fill="#ffffff"/>']

    def add(self, element):
        self.parts.append(element)

    def label(self, x, y, text, anchor="start", size=None, weight=None, color=None):
        extra = (f' font-size="{size}"' if size else "") + (f' font-weight="{weight}"' if weight else "") \
            + (f' fill="{color}"' if color else "")
        self.add(f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}"{extra}>{escape(text)}</text>')

    def rect(self, x, y, width, height, fill, extra=""):
        self.add(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(max(width, 0))}" height="{_n(max(height, 0))}" '
                 f'fill="{fill}"{extra}/>')

    def line(self, x1, y1, x2, y2, color, width=1, dash=None):
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{color}" '
                 f'stroke-width="{width}"{dashes}/>')

    def polylines(self, runs, color, width):
        """One polyline per run of points; a break between runs is a gap."""
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{_n(x)},{_n(y)}" for x, y in run)
                self.add(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="{width}" '
                         'stroke-linejoin="round"/>')

    def dots(self, points, color, radius=2.2, hollow=False):
        if not points:
            return
        # One path of tiny arcs is a fraction of the bytes of one <circle> per point.
        d = "".join(f"M{_n(x - radius)},{_n(y)}a{radius},{radius} 0 1,0 {_n(2 * radius)},0"
                    f"a{radius},{radius} 0 1,0 {_n(-2 * radius)},0" for x, y in points)
        paint = f'fill="#ffffff" stroke="{color}" stroke-width="1.2"' if hollow else f'fill="{color}"'
        self.add(f'<path d="{d}" {paint}/>')

    def legend(self, x, y, entries):
        """``(kind, colour, text)`` entries in a row from ``(x, y)``; kind is box, line, dot, ring or dash."""
        for kind, color, text in entries:
            if kind == "box":
                self.rect(x, y - 9, 12, 10, color, ' stroke="#bbbbbb" stroke-width="0.5"')
            elif kind in ("line", "dash"):
                self.line(x, y - 4, x + 14, y - 4, color, 2.5 if kind == "line" else 1.5,
                          "4 3" if kind == "dash" else None)
            else:
                self.dots([(x + 6, y - 4)], color, 3.2, hollow=kind == "ring")
            self.label(x + 18, y, text, size=11)
            x += 18 + 6.3 * len(text) + 16

    def text(self):
        return "".join(self.parts) + "</svg>"


def _local(epoch, tz):
    return dt.datetime.fromtimestamp(epoch, tz)


def time_ticks(start, end, tz):
    """``(epoch, label)`` ticks on round local times between ``start`` and ``end``, at most MAX_TICKS."""
    span = max(end - start, 1)
    step = next((s for s in TICK_STEPS if span / s <= MAX_TICKS), TICK_STEPS[-1])
    first = _local(start, tz)
    if step < 86400:
        midnight = first.replace(hour=0, minute=0, second=0, microsecond=0)
        since = (first - midnight).total_seconds()
        moment = midnight + dt.timedelta(seconds=math.ceil(since / step) * step)
        form = "%H:%M"
    else:
        moment = first.replace(hour=0, minute=0, second=0, microsecond=0)
        if moment < first:
            moment += dt.timedelta(days=1)
        if step >= 7 * 86400:
            moment += dt.timedelta(days=-moment.weekday() % 7)  # weeks start on Mondays
        form = "%d %b"
    ticks = []
    while moment.timestamp() <= end:
        # Wall-clock steps: across a DST change a tick stays on the round local hour.
        ticks.append((moment.timestamp(), moment.strftime(form)))
        moment = (moment.replace(tzinfo=None) + dt.timedelta(seconds=step)).replace(tzinfo=tz)
    return ticks


def _axes(drawing, frame, tz, y_ticks, y_format, time_label=True):
    for value in y_ticks:
        y = frame.y(value)
        drawing.line(frame.left, y, frame.right, y, GRID_COLOR)
        drawing.label(frame.left - 6, y + 4, y_format(value), anchor="end", size=11)
    drawing.line(frame.left, frame.bottom, frame.right, frame.bottom, AXIS_COLOR)
    for epoch, text in time_ticks(frame.x0, frame.x1, tz):
        x = frame.x(epoch)
        drawing.line(x, frame.bottom, x, frame.bottom + 4, AXIS_COLOR)
        drawing.label(x, frame.bottom + 16, text, anchor="middle", size=11)
    if time_label:
        drawing.label(frame.right, frame.bottom + 30, f"time ({_local(frame.x0, tz):%Z})", anchor="end", size=11,
                      color="#555555")


def _percent(value):
    return f"{value:.0f}%"


def _shade(drawing, frame, spans, color=GAP_COLOR):
    for start, end in spans:
        drawing.rect(frame.x(start), frame.top, frame.x(end) - frame.x(start), frame.height, color)


def _runs(frame, points):
    """Points split at each None into runs of SVG coordinates."""
    runs, run = [], []
    for epoch, value in points:
        if value is None:
            if run:
                runs.append(run)
            run = []
        else:
            run.append((frame.x(epoch), frame.y(value)))
    if run:
        runs.append(run)
    return runs


def _session_frame(session, width, height, top=34, bottom=40):
    end = max(session.end, session.start + session.window_s)
    return Frame(48, top, width - 64, height - top - bottom, session.start, end, 0, 100)


def interest_svg(session, interested=DEFAULT_INTERESTED, tz=dt.UTC, low=None, description=""):
    """Interest per minute (dots on a thin line), its 5-minute average, gaps shaded, ``low`` outlined."""
    name = window_label(session)
    drawing = Drawing(760, 250, f"Interest ratio per {name}", description)
    frame = _session_frame(session, 760, 250, top=50)
    _shade(drawing, frame, gap_spans(session))
    if low:
        start, end, ratio = low
        drawing.rect(frame.x(start), frame.top, frame.x(end) - frame.x(start), frame.height, LOW_COLOR,
                     ' fill-opacity="0.14" stroke="#d55e00" stroke-dasharray="3 2"')
    _axes(drawing, frame, tz, (0, 25, 50, 75, 100), _percent)
    drawing.label(frame.left, 16, f"Interest ratio per {name} (interested faces, %)", weight="bold")
    if not session.minutes:
        drawing.label(frame.left + frame.width / 2, frame.top + frame.height / 2, NO_DATA, anchor="middle",
                      color="#666666")
        return drawing.text()
    half = session.window_s / 2
    points = [(start + half, None if ratio is None else ratio * 100)
              for start, ratio in interest_points(session, interested)]
    ratios = [value for _, value in points]
    smoothed = [s if r is not None else None for s, r in zip(smooth(ratios), ratios, strict=True)]
    drawing.polylines(_runs(frame, points), INTERESTED_COLOR, 0.8)
    drawing.dots([(frame.x(t), frame.y(v)) for t, v in points if v is not None], INTERESTED_COLOR)
    drawing.polylines(_runs(frame, [(t, s) for (t, _), s in zip(points, smoothed, strict=True)]), SMOOTHED_COLOR,
                      2.4)
    entries = [("dot", INTERESTED_COLOR, f"per {name}"), ("line", SMOOTHED_COLOR, "5-minute average"),
               ("box", GAP_COLOR, "no data")]
    if low:
        entries.append(("box", LOW_FILL, f"lowest 5 minutes ({low[2]:.0%})"))
    drawing.legend(frame.left, 36, entries)
    return drawing.text()


def shares_svg(session, tz=dt.UTC, description=""):
    """Each emotion's share of the faces per minute as stacked bars; gaps stay empty and shaded."""
    name = window_label(session)
    drawing = Drawing(760, 250, f"Emotion shares per {name}", description)
    frame = _session_frame(session, 760, 250, top=50)
    _shade(drawing, frame, gap_spans(session))
    _axes(drawing, frame, tz, (0, 25, 50, 75, 100), _percent)
    drawing.label(frame.left, 16, f"Emotion shares per {name} (% of faces)", weight="bold")
    paths = {label: [] for label in EMOTIONS}
    scale = frame.height / 100
    for minute in session.minutes:
        x = frame.x(minute.start)
        width = max(frame.x(minute.end) - x - 0.6, 0.4)
        # A bar's pieces share its left edge and width: written once, each piece says where it starts and how tall.
        move, across, back = f"M{_n(x)},", f"h{_n(width)}v", f"h{_n(-width)}z"
        total = sum(minute.counts.values())
        top = frame.bottom
        for label in EMOTIONS:
            count = minute.counts[label]
            if count:
                height = count / total * 100 * scale
                top -= height
                paths[label].append(f"{move}{_n(top)}{across}{_n(height)}{back}")
    for label, pieces in paths.items():
        if pieces:
            drawing.add(f'<path d="{"".join(pieces)}" fill="{EMOTION_COLORS[label]}"/>')
    if not session.minutes:
        drawing.label(frame.left + frame.width / 2, frame.top + frame.height / 2, NO_DATA, anchor="middle",
                      color="#666666")
    drawing.legend(frame.left, 36, [("box", EMOTION_COLORS[label], label) for label in EMOTIONS]
                   + [("box", GAP_COLOR, "no data")])
    return drawing.text()


def pie_svg(totals, interested=DEFAULT_INTERESTED, description=""):
    """The interested / not interested split of ``totals`` as a pie with its percentages."""
    drawing = Drawing(300, 250, "Interested and not interested", description)
    drawing.label(10, 16, "Interested vs not interested", weight="bold")
    yes = sum(totals[label] for label in interested)
    total = sum(totals.values())
    cx, cy, r = 150, 130, 85
    if not total:
        drawing.label(cx, cy, "no faces reported", anchor="middle", color="#666666")
        return drawing.text()
    share = yes / total
    if share in (0, 1):
        color = INTERESTED_COLOR if share else NOT_INTERESTED_COLOR
        drawing.add(f'<circle cx="{cx}" cy="{cy}" r="{r}" fill="{color}"/>')
    else:
        # Clockwise from twelve o'clock: interested first, then the rest.
        angle = 2 * math.pi * share
        x, y = cx + r * math.sin(angle), cy - r * math.cos(angle)
        large = 1 if share > 0.5 else 0
        drawing.add(f'<path d="M{cx},{cy}V{cy - r}A{r},{r} 0 {large},1 {_n(x)},{_n(y)}z" fill="{INTERESTED_COLOR}" '
                    'stroke="#ffffff" stroke-width="1.5"/>')
        drawing.add(f'<path d="M{cx},{cy}L{_n(x)},{_n(y)}A{r},{r} 0 {1 - large},1 {cx},{cy - r}z" '
                    f'fill="{NOT_INTERESTED_COLOR}" stroke="#ffffff" stroke-width="1.5"/>')
    for part, start, color in ((share, 0, "#ffffff"), (1 - share, share, TEXT_COLOR)):
        if part >= 0.04:
            middle = 2 * math.pi * (start + part / 2)
            drawing.label(cx + 0.6 * r * math.sin(middle), cy - 0.6 * r * math.cos(middle) + 5, f"{part:.0%}",
                          anchor="middle", weight="bold", color=color)
    drawing.legend(40, 240, [("box", INTERESTED_COLOR, "interested"), ("box", NOT_INTERESTED_COLOR, "not interested")])
    return drawing.text()


@dataclass(frozen=True)
class HistoryPoint:
    """One lesson on a room's history chart."""

    start: int
    ratio: float | None
    marked: bool


def history_svg(points, start, end, tz, marked_name, average=None, description=""):
    """Every lesson's interest as a dot over the weeks; those of one weekday and hour filled and joined."""
    drawing = Drawing(760, 260, "Interest of every lesson", description)
    frame = Frame(48, 40, 760 - 64, 260 - 40 - 40, start, end, 0, 100)
    _axes(drawing, frame, tz, (0, 25, 50, 75, 100), _percent, time_label=False)
    drawing.label(frame.left, 16, "Interest of every lesson (one dot per lesson)", weight="bold")
    if average is not None:
        drawing.line(frame.left, frame.y(average * 100), frame.right, frame.y(average * 100), AXIS_COLOR, 1.2,
                     "5 4")
    with_data = [p for p in points if p.ratio is not None]
    drawing.dots([(frame.x(p.start), frame.y(p.ratio * 100)) for p in with_data if not p.marked], OTHER_COLOR,
                 2.6, hollow=True)
    marked = [(frame.x(p.start), frame.y(p.ratio * 100)) for p in with_data if p.marked]
    drawing.polylines([marked], INTERESTED_COLOR, 1.4)
    drawing.dots(marked, INTERESTED_COLOR, 3.6)
    if not with_data:
        drawing.label(frame.left + frame.width / 2, frame.top + frame.height / 2, "no lesson with data yet",
                      anchor="middle", color="#666666")
    entries = [("dot", INTERESTED_COLOR, marked_name), ("ring", OTHER_COLOR, "other lessons")]
    if average is not None:
        entries.append(("dash", AXIS_COLOR, f"average {average:.0%}"))
    drawing.legend(frame.left, 34, entries)
    return drawing.text()


@dataclass(frozen=True)
class Panel:
    """One small chart of a device's stats: ``(epoch, value or None)`` points, drawn within ``[low, high]``."""

    title: str
    unit: str
    points: list
    low: float
    high: float
    target: float | None = None
    target_name: str = ""


def nice_ceiling(value):
    """The smallest of 1, 2, 2.5 or 5 times a power of ten at or above ``value``: a scale's round top."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value * (1 - 1e-9))


def _panel_scale(panel):
    """The panel's top: a round number above its largest plausible value (or its target), at most ``high``."""
    values = [v for _, v in panel.points if v is not None and panel.low <= v <= panel.high]
    peak = max(values + ([panel.target] if panel.target is not None else []), default=0)
    return min(panel.high, nice_ceiling(peak * 1.1))


def panels_svg(panels, start, end, tz, title, description="", columns=2):
    """Small time charts in a grid, one per panel; a missing value is a gap, an off-scale one a triangle."""
    cell_w, cell_h = 380, 150
    rows = math.ceil(len(panels) / columns)
    drawing = Drawing(cell_w * columns, cell_h * rows + 24, title, description)
    drawing.label(10, 16, title, weight="bold")
    for index, panel in enumerate(panels):
        left = (index % columns) * cell_w
        top = 24 + (index // columns) * cell_h
        high = _panel_scale(panel)
        frame = Frame(left + 52, top + 24, cell_w - 70, cell_h - 58, start, end, panel.low, high)
        off = [(t, v) for t, v in panel.points if v is not None and not panel.low <= v <= high]
        heading = panel.title + (f" ({panel.unit})" if panel.unit else "")
        if off:
            heading += f": {len(off)} off the scale"
        drawing.label(frame.left, top + 14, heading, weight="bold", size=11,
                      color=OFF_SCALE_COLOR if off else None)
        steps = (panel.low, (panel.low + high) / 2, high)
        _axes(drawing, frame, tz, steps, _short, time_label=False)
        if panel.target is not None and panel.low <= panel.target <= high:
            drawing.line(frame.left, frame.y(panel.target), frame.right, frame.y(panel.target), AXIS_COLOR, 1.2, "4 3")
            drawing.label(frame.right, frame.y(panel.target) - 3, panel.target_name, anchor="end", size=10,
                          color="#555555")
        shown = [(t, v if v is None or panel.low <= v <= high else None) for t, v in panel.points]
        drawing.polylines(_runs(frame, shown), "#0072b2", 1.3)
        lonely = _lonely(shown)
        drawing.dots([(frame.x(t), frame.y(v)) for t, v in lonely], "#0072b2", 1.6)
        for t, v in off:
            x, y = frame.x(t), frame.top if v > high else frame.bottom
            tip = 6 if v > high else -6
            drawing.add(f'<path d="M{_n(x - 4)},{_n(y + tip)}h8l-4,{_n(-tip)}z" fill="{OFF_SCALE_COLOR}"/>')
        if not any(v is not None for _, v in panel.points):
            drawing.label(frame.left + frame.width / 2, frame.top + frame.height / 2, "not sent", anchor="middle",
                          color="#666666")
    return drawing.text()


def _lonely(points):
    """Points with a gap on both sides: a line cannot show them, a dot does."""
    values = [None, *(v for _, v in points), None]
    return [(t, v) for i, (t, v) in enumerate(points) if v is not None and values[i] is None and values[i + 2] is None]


def _short(value):
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.1f}"
