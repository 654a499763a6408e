"""Accuracy, recall, confusion and speed of an emotion model on a labelled face set."""

import time

import numpy as np

from ..common.contract import EMOTIONS

# The float model's top two within this are a near coin-toss, which int8 rounding can flip.
UNSURE_MARGIN = 0.05


def confusion_matrix(labels, predicted):
    """Rows are the true label, columns the predicted one."""
    matrix = np.zeros((len(EMOTIONS), len(EMOTIONS)), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def timed_probabilities(classifier, images, batch_size):
    """Class probabilities for all images, and the mean milliseconds per face spent getting them."""
    chunks = []
    start = time.perf_counter()
    for first in range(0, len(images), batch_size):
        chunks.append(classifier.probabilities(images[first:first + batch_size]))
    elapsed = time.perf_counter() - start
    return np.concatenate(chunks), 1000.0 * elapsed / len(images)


def evaluate(classifier, images, labels, batch_size=32, reference_probabilities=None):
    """Score ``classifier`` on ``images``; returns a JSON-ready dict."""
    probabilities, ms_per_face = timed_probabilities(classifier, images, batch_size)
    predicted = probabilities.argmax(axis=1)
    confusion = confusion_matrix(labels, predicted)
    support = confusion.sum(axis=1)
    present = support > 0
    recall = np.divide(np.diag(confusion), support, out=np.zeros(len(EMOTIONS)), where=present)
    result = {
        "model": str(classifier.path),
        "model_sha256": classifier.sha256,
        "runtime": classifier.runtime,
        "n": int(len(labels)),
        "accuracy": float((predicted == labels).mean()),
        "macro_recall": float(recall[present].mean()),
        "per_class_recall": {name: (float(recall[i]) if present[i] else None) for i, name in enumerate(EMOTIONS)},
        "confusion": confusion.tolist(),
        "labels": list(EMOTIONS),
        "ms_per_face": ms_per_face,
        "batch_size": batch_size,
        "threads": classifier.num_threads,
    }
    if reference_probabilities is not None:
        reference = reference_probabilities.argmax(axis=1)
        disagree = reference != predicted
        top_two = np.sort(reference_probabilities, axis=1)[:, -2:]
        unsure = (top_two[:, 1] - top_two[:, 0]) < UNSURE_MARGIN
        result["agreement"] = float(1 - disagree.mean())
        result["reference_accuracy"] = float((reference == labels).mean())
        result["disagreements"] = int(disagree.sum())
        result["disagreements_where_reference_unsure"] = int((disagree & unsure).sum())
    return result


def format_report(result):
    """The evaluation as text a person reads in a terminal."""
    lines = [
        f"model      {result['model']} (sha256 {result['model_sha256'][:12]}, runtime {result['runtime']})",
        f"faces      {result['n']}",
        f"accuracy   {100 * result['accuracy']:.2f}%",
        f"macro recall {100 * result['macro_recall']:.2f}%",
    ]
    if "agreement" in result:
        lines.append(f"reference  accuracy {100 * result['reference_accuracy']:.2f}%, "
                     f"agreement with it {100 * result['agreement']:.2f}%")
        lines.append(f"           {result['disagreements']} disagreements, "
                     f"{result['disagreements_where_reference_unsure']} where the reference's top two "
                     f"were within {UNSURE_MARGIN}")
    lines.append(f"speed      {result['ms_per_face']:.3f} ms per face "
                 f"(batches of {result['batch_size']}, {result['threads']} thread(s))")
    lines.append("")
    lines.append("recall per class")
    for name, value in result["per_class_recall"].items():
        lines.append(f"  {name:<9}{'n/a' if value is None else f'{100 * value:6.2f}%'}")
    lines.append("")
    lines.append("confusion (rows: true label, columns: predicted)")
    short = [name[:7] for name in result["labels"]]
    lines.append(" " * 10 + "".join(f"{name:>8}" for name in short))
    for name, row in zip(result["labels"], result["confusion"], strict=True):
        lines.append(f"  {name:<8}" + "".join(f"{count:>8}" for count in row))
    return "\n".join(lines)
