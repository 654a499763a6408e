"""Charts for instructors and school IT, drawn from sessions and device states (PNG, or PDF by suffix).

Gaps (suppressed minutes, minutes with no faces, minutes no window arrived for) are drawn as
breaks in the lines and lightly shaded, never as zero interest. matplotlib (and numpy with it) is
imported when a chart is drawn, not when the collector starts.
"""

import datetime as dt
import math
import time

from ..common.charts import EMOTION_COLORS, INTERESTED_COLOR, draw_interest_pie, draw_stacked_shares
from ..common.contract import DEFAULT_INTERESTED, EMOTIONS, interest_ratio
from .sessions import interest_series, smooth

UTC = dt.UTC
GAP_COLOR = "#e8e8e8"
GAP_LABEL = "suppressed / no data"
STATE_COLORS = {"online": "#2ca02c", "stopped": "#999999", "offline": "#d62728"}
UNKNOWN_COLOR = "#dddddd"
DPI = 120


def pyplot():
    """matplotlib's pyplot on the file-only backend: charts are drawn on servers without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def interest_points(session, interested=DEFAULT_INTERESTED):
    """``(epoch, ratio or None)`` per slot; a None is added where no window arrived, so the line breaks there too."""
    points = []
    previous_end = None
    for (start, ratio), minute in zip(interest_series(session, interested), session.minutes, strict=True):
        if previous_end is not None and start > previous_end:
            points.append((previous_end, None))
        points.append((start, ratio))
        previous_end = minute.end
    return points


def gap_spans(session):
    """``(start, end)`` epochs of the session's gaps, adjacent gaps merged."""
    spans = []
    previous_end = None
    for minute in session.minutes:
        if previous_end is not None and minute.start > previous_end:
            spans.append((previous_end, minute.start))
        if minute.counts is None:
            spans.append((minute.start, minute.end))
        previous_end = minute.end
    merged = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _time(epoch, tz=UTC):
    return dt.datetime.fromtimestamp(epoch, tz)


def session_span(session, tz=UTC):
    """``2026-11-23 10:00–10:50 CET``: the session's day and times in the zone its readers live in."""
    start, end = _time(session.start, tz), _time(session.end, tz)
    return f"{start:%Y-%m-%d %H:%M}–{end:%H:%M} {start:%Z}"


def _nan(value):
    return math.nan if value is None else value


def slot_name(session):
    """What one point of the session stands for: "minute" for the usual 60 s windows."""
    window_s = session.minutes[0].window_s if session.minutes else 60
    return "minute" if window_s == 60 else f"{window_s} s window"


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
    """Interest per slot as points on a thin line, a smoothed line on top; gaps break both."""
    ax.set_title(f"Interest ratio per {slot_name(session)}")
    ax.set_ylabel("interested faces (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", color="#eeeeee")
    if not session.minutes:
        _no_data(ax)
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
            label=f"per {slot_name(session)}")
    ax.plot(times, smoothed, color="#1b5e20", linewidth=2.2, label="smoothed (5-slot average)")
    _shade_gaps(ax, session)
    _time_axis(ax, session, tz)
    if all(r is None for r in ratios):
        _no_data(ax, "no data: every minute suppressed")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")


def draw_shares(ax, session, tz=UTC):
    """Stacked bars of each emotion's share per slot; gaps stay empty."""
    ax.set_title(f"Emotion shares per {slot_name(session)}")
    ax.set_ylabel("share of faces")
    ax.set_ylim(0, 1)
    if not session.minutes:
        _no_data(ax)
        return
    minutes = [m for m in session.minutes if m.counts]
    starts = [_time(m.start) for m in minutes]
    widths = [m.window_s * 0.9 / 86400 for m in minutes]  # matplotlib's date unit is a day
    draw_stacked_shares(ax, starts, [m.counts for m in minutes], widths, align="edge")
    _shade_gaps(ax, session)
    _time_axis(ax, session, tz)
    if not minutes:
        _no_data(ax, "no data: every minute suppressed")
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


def interest_chart(session, path, interested=DEFAULT_INTERESTED, title=None, tz=UTC):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 4))
    draw_interest(ax, session, interested, tz)
    fig.suptitle(title or default_title(session, tz))
    fig.tight_layout()
    _save(plt, fig, path)


def emotion_shares_chart(session, path, title=None, tz=UTC):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 4))
    draw_shares(ax, session, tz)
    fig.suptitle(title or default_title(session, tz))
    fig.tight_layout()
    _save(plt, fig, path)


def session_pie(session, path, interested=DEFAULT_INTERESTED, title=None, tz=UTC):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    draw_interest_pie(ax, session.totals(), interested)
    fig.suptitle(title or default_title(session, tz), fontsize="medium")
    fig.tight_layout()
    _save(plt, fig, path)


def seen_ago(last_seen, now):
    if last_seen is None:
        return "never seen"
    minutes = max(0, int((now - last_seen) // 60))
    if minutes < 120:
        return f"last seen {minutes} min ago"
    if minutes < 48 * 60:
        return f"last seen {minutes // 60} h ago"
    return f"last seen {minutes // (24 * 60)} days ago"


def fleet_chart(devices, path, now=None, title=None, tz=UTC):
    """One bar per device, coloured by its last known state, with how long ago it was heard from."""
    plt = pyplot()
    now = time.time() if now is None else now
    devices = sorted(devices, key=lambda d: (d.site or "", d.room or "", d.device))
    fig, ax = plt.subplots(figsize=(10, 1.6 + 0.45 * max(len(devices), 4)))
    ax.set_title(title or f"Devices at {_time(now, tz):%Y-%m-%d %H:%M %Z}")
    if not devices:
        _no_data(ax, "no devices: none has reported a status yet")
        ax.set_axis_off()
    else:
        rows = range(len(devices))
        colors = [STATE_COLORS.get(d.state, UNKNOWN_COLOR) for d in devices]
        ax.barh(rows, [1] * len(devices), color=colors, edgecolor="white", height=0.8)
        for row, d in zip(rows, devices, strict=True):
            state = d.state or "unknown"
            camera = f", camera {d.camera}" if d.camera else ""
            ax.text(0.02, row, f"{state}{camera} · {seen_ago(d.last_seen, now)}", va="center", fontsize="small",
                    color="white" if d.state in ("online", "offline") else "black")
        ax.set_yticks(rows, [f"{d.site}/{d.room}/{d.device}" for d in devices])
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xticks([])
        for side in ("top", "right", "bottom"):
            ax.spines[side].set_visible(False)
        from matplotlib.patches import Patch

        legend = [Patch(color=c, label=s) for s, c in STATE_COLORS.items()] + [Patch(color=UNKNOWN_COLOR,
                                                                                       label="unknown")]
        ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    fig.tight_layout()
    _save(plt, fig, path)


def session_figures(session, interested=DEFAULT_INTERESTED, tz=UTC):
    """The report's headline numbers as (label, text) rows."""
    totals = session.totals()
    with_data = sum(1 for m in session.minutes if m.counts)
    ratio = interest_ratio(totals, interested)
    return [
        ("room", f"{session.site}/{session.room}"),
        ("when", session_span(session, tz)),
        (f"{slot_name(session)}s", f"{len(session.minutes)} ({with_data} with data, "
                                   f"{len(session.minutes) - with_data} gaps)"),
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
