"""Interest and emotion-share charts drawn from window payloads (matplotlib, no display needed)."""

import datetime as dt

from .emotions import EMOTIONS

DEFAULT_INTERESTED = ("happy", "surprise", "neutral")

# One colour per emotion, the same in every chart the product draws.
EMOTION_COLORS = {
    "angry": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happy": "#f2b701",
    "sad": "#1f77b4", "surprise": "#ff7f0e", "neutral": "#7f7f7f",
}
INTERESTED_COLOR, NOT_INTERESTED_COLOR = "#2ca02c", "#c7c7c7"


def pyplot():
    """matplotlib's pyplot on the file-only backend: charts are drawn on servers and Pis without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def interest_ratio(counts, interested=DEFAULT_INTERESTED):
    """Share of faces with an interested label, or None when there are no faces to judge."""
    total = sum(counts.values())
    return sum(counts[label] for label in interested) / total if total else None


def total_counts(payloads):
    totals = dict.fromkeys(EMOTIONS, 0)
    for payload in payloads:
        for label, count in payload.counts.as_dict().items():
            totals[label] += count
    return totals


def window_time(payload):
    return dt.datetime.fromtimestamp(payload.start_epoch, dt.timezone.utc)


def draw_interest_pie(ax, counts, interested=DEFAULT_INTERESTED):
    yes = sum(counts[label] for label in interested)
    no = sum(counts.values()) - yes
    ax.set_title("Interested vs not interested")
    if yes + no == 0:
        ax.text(0.5, 0.5, "no faces reported", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    ax.pie([yes, no], labels=["interested", "not interested"], colors=[INTERESTED_COLOR, NOT_INTERESTED_COLOR],
           autopct="%1.0f%%", startangle=90, counterclock=False, wedgeprops={"linewidth": 1, "edgecolor": "white"})
    ax.axis("equal")


def draw_stacked_shares(ax, positions, counts, width, **bar_options):
    """One bar per position, stacked from each emotion's share of that position's ``counts`` (no faces: empty)."""
    bottoms = [0.0] * len(counts)
    for label in EMOTIONS:
        shares = [c[label] / sum(c.values()) if sum(c.values()) else 0.0 for c in counts]
        ax.bar(positions, shares, width=width, bottom=bottoms, color=EMOTION_COLORS[label], label=label,
               **bar_options)
        bottoms = [b + share for b, share in zip(bottoms, shares)]


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
