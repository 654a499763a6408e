"""The training curve of a `model train` run: accuracy per epoch on its training faces and on PublicTest.

Drawn from the run's own records (a state directory's ``history.jsonl`` or the ``.train.json``
written beside the finished model), so the model card's plot is the run as it happened. Runs
on other machines or in another precision are marked where they begin.

Invariants:
- PublicTest is drawn as watched, never used to choose anything; the curve ends at the last epoch,
  which is the model written.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..common.charts import pyplot
from ..common.errors import EdgeAgentError
from .train import HISTORY_FILE


def load_history(source: Path) -> list[dict]:
    """Per-epoch records from a state directory or a ``.train.json``, or a message naming what is wrong."""
    source = Path(source)
    try:
        if source.is_dir():
            lines = (source / HISTORY_FILE).read_text().splitlines()
            history = [json.loads(line) for line in lines if line.strip()]
        else:
            history = json.loads(source.read_text())["history"]
    except FileNotFoundError as exc:
        raise EdgeAgentError(f"{exc.filename} does not exist; give a training state directory or a .train.json") \
            from None
    except (ValueError, KeyError, TypeError) as exc:
        raise EdgeAgentError(f"{source} holds no training history ({exc})") from None
    if not history:
        raise EdgeAgentError(f"{source} holds no epochs yet")
    return history


def runs(history: list[dict]) -> list[tuple[int, str]]:
    """(first epoch, 'cpu, precision') where each stretch of epochs on one machine and precision begins."""
    starts, last = [], None
    for record in history:
        where = f"{record.get('cpu', 'unrecorded CPU')}, {record.get('precision', 'float32')}"
        if where != last:
            starts.append((record["epoch"], where))
            last = where
    return starts


def draw_curve(history: list[dict], out: Path, title: str) -> Path:
    epochs = [h["epoch"] for h in history]
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot(epochs, [100 * h["train_accuracy"] for h in history], label="training faces (augmented)",
            color="#0072b2")
    ax.plot(epochs, [100 * h["publictest_accuracy"] for h in history], label="PublicTest (watched only)",
            color="#d55e00")
    for epoch, where in runs(history)[1:]:
        ax.axvline(epoch - 0.5, color="#999999", linewidth=0.8, linestyle=":")
        ax.text(epoch - 0.5, 1, f" {where}", rotation=90, fontsize=7, color="#666666",
                transform=ax.get_xaxis_transform(), va="top")
    last = history[-1]
    ax.set_title(f"{title}: epoch {last['epoch']}, PublicTest {100 * last['publictest_accuracy']:.2f}%")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("accuracy, %")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
