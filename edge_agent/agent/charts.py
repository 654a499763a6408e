"""``edge-agent analyze --chart``: a session's interest pie and emotion shares drawn from window payloads.

matplotlib is imported only when a chart is drawn: a Pi's install leaves it out, and the
running agent never draws.
"""

import datetime as dt

from ..common.charts import draw_interest_pie, draw_stacked_shares, pyplot
from ..common.contract import DEFAULT_INTERESTED, EMOTIONS


def total_counts(payloads):
    """Faces per label summed over window payloads."""
    totals = dict.fromkeys(EMOTIONS, 0)
    for payload in payloads:
        for label, count in payload.counts.as_dict().items():
            totals[label] += count
    return totals


def window_time(payload):
    return dt.datetime.fromtimestamp(payload.start_epoch, dt.UTC)


def draw_emotion_shares(ax, payloads):
    """Stacked bars of each emotion's share, one bar per window in order; suppressed windows stay empty and hatched."""
    ax.set_title("Emotion shares per window")
    ax.set_ylabel("share of faces")
    ax.set_ylim(0, 1)
    if not payloads:
        ax.text(0.5, 0.5, "no windows", ha="center", va="center", transform=ax.transAxes)
        return
    # Bars by position, not by time: recordings from different days still read as one session.
    positions = range(len(payloads))
    draw_stacked_shares(ax, positions, [payload.counts.as_dict() for payload in payloads], width=0.9)
    suppressed = [i for i, payload in enumerate(payloads) if payload.suppressed]
    if suppressed:
        ax.bar(suppressed, [1] * len(suppressed), width=0.9, color="none", edgecolor="#bbbbbb", hatch="//",
               label="suppressed")
    step = max(1, len(payloads) // 12)
    ticks = list(positions)[::step]
    fmt = "%H:%M" if all(p.window_s % 60 == 0 for p in payloads) else "%H:%M:%S"
    ax.set_xticks(ticks, [window_time(payloads[i]).strftime(fmt) for i in ticks])
    ax.set_xlim(-0.6, len(payloads) - 0.4)
    ax.set_xlabel("window start (UTC)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")


def session_chart(payloads, path, interested=DEFAULT_INTERESTED, title=None):
    """The session's interest pie beside its emotion shares over time, saved to ``path`` (PNG, PDF, SVG)."""
    plt = pyplot()
    fig, (pie_ax, bars_ax) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [1, 2.4]})
    draw_interest_pie(pie_ax, total_counts(payloads), interested)
    draw_emotion_shares(bars_ax, payloads)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
