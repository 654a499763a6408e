"""The after-class report (``edge-collector report``): one page, PNG or PDF, drawn with matplotlib;
and the helpers every chart of a session shares (its points, its gaps, how its times read).

Gaps (suppressed minutes, minutes with no faces, minutes no window arrived for) are drawn as
breaks in the lines and lightly shaded, never as zero interest. matplotlib (and numpy with it) is
imported when a report is drawn, not when the collector starts; the dashboard draws SVG (svg.py).
"""

import datetime as dt
import math

from ..common.charts import EMOTION_COLORS, INTERESTED_COLOR, draw_interest_pie, draw_stacked_shares, pyplot
from ..common.contract import DEFAULT_INTERESTED, EMOTIONS, interest_ratio
from .sessions import interest_series, smooth

UTC = dt.UTC
GAP_COLOR = "#e8e8e8"
# A darker shade of the interested colour: the smoothed line reads as the same quantity, on top.
SMOOTHED_COLOR = "#00634a"
GAP_LABEL = "suppressed / no data"
NO_DATA = "no data: no minute with faces to count"
DPI = 120


def interest_points(session, interested=DEFAULT_INTERESTED):
    """``(epoch, ratio or None)`` per minute; a None is added where minutes are missing, so the line breaks there."""
    points = []
    previous_end = None
    for (start, ratio), minute in zip(interest_series(session, interested), session.minutes, strict=True):
        if previous_end is not None and start > previous_end:
            points.append((previous_end, None))
        points.append((start, ratio))
        previous_end = minute.end
    return points


def gap_spans(session):
    """``(start, end)`` epochs of the session's gaps: every stretch of ``[start, end)`` without a minute."""
    spans = []
    cursor = session.start
    for minute in session.minutes:
        if minute.start > cursor:
            spans.append((cursor, minute.start))
        cursor = max(cursor, minute.end)
    if session.end > cursor:
        spans.append((cursor, session.end))
    return spans


def _time(epoch, tz=UTC):
    return dt.datetime.fromtimestamp(epoch, tz)


def span_text(start, end, tz=UTC):
    """``2026-11-23 10:00–10:50 CET``: a day and times in the zone the readers live in."""
    first, last = _time(start, tz), _time(end, tz)
    return f"{first:%Y-%m-%d %H:%M}–{last:%H:%M} {first:%Z}"


def session_span(session, tz=UTC):
    return span_text(session.start, session.end, tz)


def _nan(value):
    return math.nan if value is None else value


def window_label(session):
    """What one point of the session stands for: "minute" for the usual 60 s windows."""
    return "minute" if session.window_s == 60 else f"{session.window_s} s window"


def _time_axis(ax, session, tz):
    import matplotlib.dates as mdates

    ax.set_xlim(_time(session.start), _time(session.end))
    # The data stay UTC instants; only the ticks are read in the local zone.
    locator = mdates.AutoDateLocator(tz=tz, minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    # Seconds matter only when a session is a few minutes of short windows (the demo).
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S" if session.end - session.start < 600 else "%H:%M",
                                                      tz=tz))
    ax.set_xlabel(f"time ({_time(session.start, tz):%Z})")


def _shade_gaps(ax, session):
    for i, (start, end) in enumerate(gap_spans(session)):
        ax.axvspan(_time(start), _time(end), color=GAP_COLOR, zorder=0, label=GAP_LABEL if i == 0 else None)


def _no_data(ax, text="no data"):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize="large", color="#666666")


def draw_interest(ax, session, interested=DEFAULT_INTERESTED, tz=UTC):
    """Interest per window as points on a thin line, a smoothed line on top; gaps break both."""
    ax.set_title(f"Interest ratio per {window_label(session)}")
    ax.set_ylabel("interested faces (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", color="#eeeeee")
    if not session.minutes:
        _shade_gaps(ax, session)
        _no_data(ax, NO_DATA)
        return
    points = interest_points(session, interested)
    # Points sit mid-slot so they line up with the shaded gap spans, which cover whole slots.
    half = session.minutes[0].window_s / 2
    times = [_time(start + half) for start, _ in points]
    ratios = [ratio for _, ratio in points]
    percent = [_nan(r) * 100 for r in ratios]
    # Averaging across a gap is fine, but drawing a value inside one would claim data that was never sent.
    smoothed = [_nan(s) * 100 if r is not None else math.nan for s, r in zip(smooth(ratios), ratios, strict=True)]
    ax.plot(times, percent, color=INTERESTED_COLOR, linewidth=0.8, marker="o", markersize=3, alpha=0.6,
            label=f"per {window_label(session)}")
    ax.plot(times, smoothed, color=SMOOTHED_COLOR, linewidth=2.2, label="smoothed (5-slot average)")
    _shade_gaps(ax, session)
    _time_axis(ax, session, tz)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")


def draw_shares(ax, session, tz=UTC):
    """Stacked bars of each emotion's share per window; gaps stay empty."""
    ax.set_title(f"Emotion shares per {window_label(session)}")
    ax.set_ylabel("share of faces")
    ax.set_ylim(0, 1)
    minutes = session.minutes
    starts = [_time(m.start) for m in minutes]
    widths = [m.window_s * 0.9 / 86400 for m in minutes]  # matplotlib's date unit is a day
    draw_stacked_shares(ax, starts, [m.counts for m in minutes], widths, align="edge")
    _shade_gaps(ax, session)
    _time_axis(ax, session, tz)
    if not minutes:
        _no_data(ax, NO_DATA)
    from matplotlib.patches import Patch

    # Built by hand: with no bars drawn, matplotlib's own legend would show default colours.
    handles = [Patch(color=EMOTION_COLORS[label], label=label) for label in EMOTIONS]
    if gap_spans(session):
        handles.append(Patch(color=GAP_COLOR, label=GAP_LABEL))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")


def default_title(session, tz=UTC):
    return f"{session.site}/{session.room}  {session_span(session, tz)}"


def _save(plt, fig, path):
    try:
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


def session_figures(session, interested=DEFAULT_INTERESTED, tz=UTC):
    """The report's headline numbers as (label, text) rows."""
    totals = session.totals()
    with_data = len(session.minutes)
    ratio = interest_ratio(totals, interested)
    return [
        ("room", f"{session.site}/{session.room}"),
        ("when", session_span(session, tz)),
        (f"{window_label(session)}s", f"{session.slots} ({with_data} with data, {session.slots - with_data} gaps)"),
        ("faces counted", f"{sum(totals.values()):,}"),
        ("interest", "no data" if ratio is None else f"{ratio:.0%}"),
        ("interested", ", ".join(interested)),
    ]


def session_report(session, path, interested=DEFAULT_INTERESTED, title=None, tz=UTC):
    """The instructor's after-class page: interest over time, emotion shares, the pie and the headline numbers."""
    plt = pyplot()
    fig = plt.figure(figsize=(11.69, 8.27))  # A4 landscape, so the PDF prints as one page
    grid = fig.add_gridspec(3, 2, height_ratios=[1.1, 1, 1.1], width_ratios=[1, 1.3])
    draw_interest(fig.add_subplot(grid[0, :]), session, interested, tz)
    draw_shares(fig.add_subplot(grid[1, :]), session, tz)
    draw_interest_pie(fig.add_subplot(grid[2, 0]), session.totals(), interested)
    table = fig.add_subplot(grid[2, 1])
    table.set_axis_off()
    table.set_title("Session")
    for row, (label, text) in enumerate(session_figures(session, interested, tz)):
        y = 0.9 - row * 0.13
        table.text(0.02, y, label, fontweight="bold", transform=table.transAxes, va="center")
        table.text(0.35, y, text, transform=table.transAxes, va="center")
    fig.suptitle(title or default_title(session, tz), fontsize="x-large")
    fig.tight_layout()
    _save(plt, fig, path)
