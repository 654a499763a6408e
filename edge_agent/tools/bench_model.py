"""Milliseconds per face for each way of running the emotion model, measured in one run."""

import tempfile
import time
from pathlib import Path

import numpy as np

from ..agent.emotions import EmotionClassifier


def ms_per_face(call, faces_per_call, rounds=5, min_round_s=0.3):
    """Median over ``rounds`` of the time per face of ``call``, after a warm-up."""
    for _ in range(3):
        call()
    results = []
    for _ in range(rounds):
        calls = 0
        start = time.perf_counter()
        while True:
            call()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_round_s:
                break
        results.append(1000.0 * elapsed / (calls * faces_per_call))
    return float(np.median(results))


def float_tflite_from_keras(keras_model, directory):
    """Convert the Keras model to a float TFLite file, as a plain LiteRT port would."""
    from .keras_model import import_tensorflow

    tf, _ = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    path = Path(directory) / "emotion_float.tflite"
    path.write_bytes(converter.convert())
    return path


def baseline_predict_per_face(keras_model, faces):
    """The original project's way: one Keras ``predict()`` per face, preprocessing included."""
    from .keras_model import model_inputs

    position = [0]

    def call():
        face = faces[position[0] % len(faces)]
        position[0] += 1
        keras_model.predict(model_inputs(keras_model, [face]), verbose=0)

    return call


def classifier_call(classifier, faces, batch):
    """A call that labels the next ``batch`` faces, cycling through ``faces``."""
    batches = [faces[i:i + batch] for i in range(0, len(faces) - batch + 1, batch)]
    position = [0]

    def call():
        classifier.probabilities(batches[position[0] % len(batches)])
        position[0] += 1

    return call


def bench_model(model_paths, faces, keras_model=None, threads=1):
    """Rows ``{"name", "ms_per_face", "note"}`` for each int8 model in ``model_paths``.

    The first row is the baseline (the laptop prototype's Keras way) when TensorFlow is present."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if keras_model is not None:
            rows.append({
                "name": "baseline: Keras float, predict() per face",
                "ms_per_face": ms_per_face(baseline_predict_per_face(keras_model, faces), 1, rounds=3),
                "note": "baseline",
            })
            float_model = EmotionClassifier(float_tflite_from_keras(keras_model, tmp), num_threads=threads)
            rows.append({"name": "LiteRT float, 1 face per call",
                         "ms_per_face": ms_per_face(classifier_call(float_model, faces, 1), 1), "note": ""})
            rows.append({"name": "LiteRT float, 32 faces per call",
                         "ms_per_face": ms_per_face(classifier_call(float_model, faces, 32), 32), "note": ""})
        # Each later model against the first, way for way: "at most N times the shipped model's time".
        first_model = {}
        for number, model_path in enumerate(model_paths):
            name = Path(model_path).stem.removeprefix("emotion_")
            # The last way is the model as the agent runs it: its read-out's mirroring, inset and bias.
            for flip in (False, True, None):
                model = EmotionClassifier(model_path, num_threads=threads, flip_average=flip)
                for batch in ((1, 8, 32) if flip is False else (32,)):
                    way = f"{batch} face{'s' if batch > 1 else ''} per call" + {
                        False: "", True: ", flip-averaged",
                        None: f", as deployed ({'flip-averaged' if model.flip_average else 'unflipped'}"
                              f"{', biased' if model.read_out.biased else ''})"}[flip]
                    row = {"name": f"{name}, {way}",
                           "ms_per_face": ms_per_face(classifier_call(model, faces, batch), batch),
                           "note": f"{Path(model_path).stat().st_size / 1000:.0f} kB" if batch == 1 else ""}
                    if number == 0:
                        first_model[batch, flip] = row["ms_per_face"]
                    else:
                        row["vs_first_model"] = row["ms_per_face"] / first_model[batch, flip]
                    rows.append(row)
    if keras_model is None:
        rows.insert(0, {"name": "baseline: Keras float, predict() per face", "ms_per_face": None,
                        "note": "skipped: TensorFlow not installed (pip install -e '.[model]')"})
    baseline = rows[0]["ms_per_face"]
    for row in rows:
        if baseline and row["ms_per_face"]:
            row["speedup"] = baseline / row["ms_per_face"]
    return rows


def format_rows(rows, runtime, threads):
    width = max(len(row["name"]) for row in rows) + 2
    lines = [f"emotion model, ms per face ({threads} thread(s), runtime {runtime}); "
             "'time vs 1st': a later model's time over the first model's, the same way",
             f"  {'way':<{width}}{'ms/face':>10}{'vs base':>10}{'time vs 1st':>13}"]
    for row in rows:
        ms = "-" if row["ms_per_face"] is None else f"{row['ms_per_face']:.3f}"
        speedup = f"{row['speedup']:.0f}x" if "speedup" in row else ""
        versus = f"{row['vs_first_model']:.2f}x" if "vs_first_model" in row else ""
        lines.append(f"  {row['name']:<{width}}{ms:>10}{speedup:>10}{versus:>13}  {row['note']}".rstrip())
    return "\n".join(lines)
