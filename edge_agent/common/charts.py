"""What every chart of the product shares: one colour per emotion, the interest pie, stacked shares.

The agent's ``analyze --chart`` and the collector's dashboard and reports draw with these, so an
emotion looks the same wherever it is shown. Each function draws on a matplotlib ``Axes`` it is
given; this module imports no matplotlib (``pyplot`` does, when called), so importing it costs a Pi
nothing.
"""

from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .contract import DEFAULT_INTERESTED, EMOTIONS
from .errors import EdgeAgentError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# One colour per emotion, the same in every chart the product draws: Okabe and Ito's palette,
# told apart with every common colour-vision deficiency (no red beside green).
EMOTION_COLORS = {
    "angry": "#d55e00", "disgust": "#cc79a7", "fear": "#0072b2", "happy": "#f0e442",
    "sad": "#56b4e9", "surprise": "#e69f00", "neutral": "#999999",
}
INTERESTED_COLOR, NOT_INTERESTED_COLOR = "#009e73", "#c7c7c7"


def pyplot() -> ModuleType:
    """matplotlib's pyplot on the file-only backend: charts are files, drawn without a display."""
    try:
        import matplotlib
    except ImportError:
        raise EdgeAgentError("drawing a chart needs matplotlib, which the agent's install leaves out: "
                             "pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_interest_pie(ax: "Axes", counts: Mapping[str, int], interested: Iterable[str] = DEFAULT_INTERESTED) -> None:
    """The interested / not interested split of ``counts`` as a pie (no faces: a note instead)."""
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


def draw_stacked_shares(ax: "Axes", positions: Sequence[float], counts: Sequence[Mapping[str, int]], width: float,
                        **bar_options: Any) -> None:
    """One bar per position, stacked from each emotion's share of that position's ``counts`` (no faces: empty)."""
    bottoms = [0.0] * len(counts)
    for label in EMOTIONS:
        shares = [c[label] / sum(c.values()) if sum(c.values()) else 0.0 for c in counts]
        ax.bar(positions, shares, width=width, bottom=bottoms, color=EMOTION_COLORS[label], label=label,
               **bar_options)
        bottoms = [b + share for b, share in zip(bottoms, shares, strict=True)]
