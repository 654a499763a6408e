"""Label gray face crops with one of the seven FER-2013 emotions using a TFLite model.

How a model's scores are read (its read-out) travels with the model, in the build record beside
it (``emotion_x_int8.json``, key ``read_out``), because it belongs to that file and to no config:
- ``inset``: a share of each side cut off every crop before resizing, so that the face fills the
  model's input as it filled it in training (a network trained on the centred 44 px of FER's 48 px
  faces sees a Haar box best with 2/48 of it cut from each side);
- ``flip_average``: the default for mirroring (a config may still set it either way);
- ``log_bias``: added per emotion to the log-probabilities, then renormalised; chosen on
  classroom-like frames of training faces by ``edge-agent model bias``.
A model without a record, or a record without ``read_out``, is read plainly. A record that
describes another file is refused: its read-out would be applied to a model it was not chosen for.
"""

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..common.contract import EMOTIONS
from ..common.errors import EdgeAgentError
from .runtime import interpreter_class

# Smaller crops carry no expression; the face detector never yields them.
MIN_CROP_SIDE = 8

# Batches above this are split, so a crowded frame cannot allocate without bound.
MAX_BATCH = 64

_TFLITE_IDENTIFIER = b"TFL3"


def _bucket(count):
    return 1 << (count - 1).bit_length()


def _buckets():
    """Every batch size an interpreter is made for: the powers of two up to MAX_BATCH."""
    return [1 << k for k in range(_bucket(MAX_BATCH).bit_length())]


@dataclass(frozen=True)
class Emotion:
    label: str
    p: float


# A probability of exactly 0 (an int8 output's floor) has no logarithm; this floor keeps a bias
# able to lift such a class without making it win from nothing.
LOG_FLOOR = 1e-4


@dataclass(frozen=True)
class ReadOut:
    """How a model's probabilities are read; see the module's docstring."""

    inset: float = 0.0
    flip_average: bool = False
    log_bias: tuple[float, ...] = (0.0,) * len(EMOTIONS)

    @property
    def biased(self) -> bool:
        return any(self.log_bias)


def apply_log_bias(probs: np.ndarray, log_bias: "tuple[float, ...] | np.ndarray") -> np.ndarray:
    """Shift each emotion's log-probability by its bias and renormalise: [N, 7] in, [N, 7] out.

    Computed as odds multiplied by e^bias, without a logarithm or exponential per face: NumPy's
    vectorised ``log``/``exp`` round differently on x86 and arm64, and a Pi must give the labels and
    probabilities this machine gives. The sum runs column by column, in one fixed order, for the same
    reason; the factors are rounded so that a last-bit difference in libm cannot reach them.
    """
    factors = [round(math.exp(float(b)), 12) for b in log_bias]
    weighted = np.maximum(np.asarray(probs, dtype=np.float64), LOG_FLOOR) * np.asarray(factors)
    total = weighted[:, 0].copy()
    for column in range(1, weighted.shape[1]):
        total += weighted[:, column]
    return (weighted / total[:, None]).astype(np.float32)


def inset_crop(crop: np.ndarray, inset: float) -> np.ndarray:
    """``crop`` less ``inset`` of its height and width on each side (a view, not a copy)."""
    top, left = (round(side * inset) for side in crop.shape[:2])
    return crop[top:crop.shape[0] - top, left:crop.shape[1] - left] if top or left else crop


def record_path_for(model: Path) -> Path:
    """The build record `model build` writes beside a model."""
    return Path(model).with_suffix(".json")


def read_out_of(model: Path, sha256: str) -> ReadOut:
    """The read-out in ``model``'s build record, or the plain one where it has none."""
    path = record_path_for(model)
    if not path.is_file():
        return ReadOut()
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgeAgentError(
            f"build record {path} cannot be read: {exc}; rebuild the model or remove the record") from None
    if not isinstance(record, dict):
        raise EdgeAgentError(f"build record {path} is not a JSON object; rebuild the model or remove the record")
    if record.get("sha256") not in (None, sha256):
        raise EdgeAgentError(
            f"build record {path} describes another model file (sha256 {str(record['sha256'])[:12]}…, "
            f"the file's is {sha256[:12]}…); rebuild the model, or remove the record to read it plainly")
    given = record.get("read_out") or {}
    try:
        inset = float(given.get("inset", 0.0))
        flip = given.get("flip_average", False)
        bias = tuple(float(b) for b in given.get("log_bias", (0.0,) * len(EMOTIONS)))
    except (TypeError, ValueError, AttributeError) as exc:
        raise EdgeAgentError(f"build record {path}: read_out is malformed ({exc})") from None
    if not 0.0 <= inset < 0.25 or not isinstance(flip, bool) or len(bias) != len(EMOTIONS) \
            or not all(math.isfinite(b) and abs(b) <= 5 for b in bias):
        raise EdgeAgentError(
            f"build record {path}: read_out must have inset in [0, 0.25), flip_average true or false and "
            f"log_bias of {len(EMOTIONS)} numbers within ±5; it has {given}")
    return ReadOut(inset=inset, flip_average=flip, log_bias=bias)


def pixel_to_model_input(pixels):
    """Scale uint8 pixels to [-1, 1], exactly as the model was trained."""
    return (np.asarray(pixels, dtype=np.float32) / 255.0 - 0.5) * 2.0


def resize_face(crop: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear in fixed point: the same pixels on x86 and on a Pi's arm64, so the same labels.

    OpenCV's default bilinear mode rounds differently in its x86 and arm64 builds, and a level off
    in a few pixels turned a face near a tie to another label.
    """
    return cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR_EXACT)


def check_crop(crop, index=0):
    """Raise a clear error unless ``crop`` is a usable 2-D uint8 gray image."""
    if not isinstance(crop, np.ndarray):
        raise EdgeAgentError(f"face crop {index} is a {type(crop).__name__}, not a numpy array")
    if crop.ndim == 3 and crop.shape[2] == 1:
        crop = crop[:, :, 0]
    if crop.ndim != 2:
        raise EdgeAgentError(
            f"face crop {index} has shape {crop.shape}; expected a 2-D gray image (height, width)"
        )
    if crop.dtype != np.uint8:
        raise EdgeAgentError(f"face crop {index} has dtype {crop.dtype}; expected uint8 gray pixels")
    if min(crop.shape) < MIN_CROP_SIDE:
        raise EdgeAgentError(
            f"face crop {index} is {crop.shape[1]}x{crop.shape[0]} pixels; "
            f"crops must be at least {MIN_CROP_SIDE}x{MIN_CROP_SIDE}"
        )
    return crop


def read_model_file(path):
    """Return the bytes of a TFLite file, or raise a message naming what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise EdgeAgentError(f"model file {path} does not exist")
    data = path.read_bytes()
    if len(data) < 8:
        raise EdgeAgentError(f"model file {path} is {len(data)} bytes: empty or truncated")
    if data[4:8] != _TFLITE_IDENTIFIER:
        raise EdgeAgentError(f"model file {path} is not a TFLite model (no TFL3 identifier)")
    return data


class EmotionClassifier:
    """A loaded emotion model that labels a batch of crops in one interpreter call (up to 64).

    Works with the int8 model the project ships and with float models of the same
    shape (used for comparison), quantizing with the model's own scale and zero point.
    With ``flip_average`` each face is labelled by the mean of its own and its mirror image's
    probabilities, both in the same interpreter call (so up to 32 faces per call); None takes the
    model's own default from its read-out, as do the inset and the bias (see the module).
    ``unbiased`` leaves the read-out's bias out: the scores a bias is chosen on.
    """

    def __init__(self, path: Path | str, num_threads: int = 1, flip_average: bool | None = None,
                 unbiased: bool = False):
        self.path = Path(path)
        self._content = read_model_file(self.path)
        self.sha256 = hashlib.sha256(self._content).hexdigest()
        read_out = read_out_of(self.path, self.sha256)
        if unbiased:
            read_out = ReadOut(inset=read_out.inset, flip_average=read_out.flip_average)
        self.flip_average = read_out.flip_average if flip_average is None else flip_average
        self.read_out = read_out
        self.num_threads = num_threads
        self._interpreter_cls, self.runtime = interpreter_class()
        # Per batch size: the interpreter (the runtime's class, untyped) and its input and output indices.
        self._interpreters: dict[int, tuple[Any, int, int]] = {}
        first = self._interpreter(1)[0]
        self._check_signature(first)
        inp = first.get_input_details()[0]
        out = first.get_output_details()[0]
        self.input_height, self.input_width = int(inp["shape"][1]), int(inp["shape"][2])
        self.input_dtype = np.dtype(inp["dtype"])
        self.output_dtype = np.dtype(out["dtype"])
        self.input_quantization = tuple(inp["quantization"])
        self.output_quantization = tuple(out["quantization"])
        self._pixel_lut = self._make_pixel_lut()
        # Time inside the interpreter alone, so the pipeline's own overhead can be measured.
        self.invoke_seconds = 0.0

    @property
    def tag(self):
        """Short model name and hash, as window payloads carry it: ``mini-xception-int8:3f2a9c1e``."""
        name = self.path.stem.removeprefix("emotion_").replace("_", "-")
        return f"{name}:{self.sha256[:8]}"

    @property
    def quantized(self):
        return self.input_dtype == np.int8

    def _interpreter(self, batch):
        found = self._interpreters.get(batch)
        if found is not None:
            return found
        try:
            interpreter = self._interpreter_cls(model_content=self._content, num_threads=self.num_threads)
        except (ValueError, RuntimeError) as exc:
            raise EdgeAgentError(f"model file {self.path} cannot be loaded: {exc}") from None
        input_index = interpreter.get_input_details()[0]["index"]
        output_index = interpreter.get_output_details()[0]["index"]
        if batch != 1:
            interpreter.resize_tensor_input(input_index, [batch, self.input_height, self.input_width, 1])
        interpreter.allocate_tensors()
        # Looking the indices up on every call costs as much as preprocessing a face.
        found = (interpreter, input_index, output_index)
        self._interpreters[batch] = found
        return found

    def reserve(self) -> None:
        """Make and run the interpreter of every batch size now (about 25 MB for all seven).

        Otherwise each is made the first time a frame has that many faces, so a daemon's memory
        steps up weeks into its life, the day a fuller class comes in; reserved at start, it is at
        its ceiling from the first frame and ``MemoryMax`` trips at boot, not mid-lesson.
        """
        # A crop that needs resizing, so OpenCV's first-call setup happens now as well.
        self.probabilities([np.zeros((self.input_height + 1, self.input_width + 1), np.uint8)])
        for bucket in _buckets():
            self._invoke(np.zeros((bucket, self.input_height, self.input_width, 1), self.input_dtype))
        self.invoke_seconds = 0.0

    def _check_signature(self, interpreter):
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise EdgeAgentError(
                f"model file {self.path} has {len(inputs)} inputs and {len(outputs)} outputs; "
                "an emotion model has one of each"
            )
        shape = inputs[0]["shape"].tolist()
        if len(shape) != 4 or shape[3] != 1:
            raise EdgeAgentError(
                f"model file {self.path} takes input of shape {shape}; "
                "an emotion model takes one gray channel, [batch, height, width, 1]"
            )
        if outputs[0]["shape"].tolist() != [1, len(EMOTIONS)]:
            raise EdgeAgentError(
                f"model file {self.path} gives output of shape {outputs[0]['shape'].tolist()}; "
                f"an emotion model gives {len(EMOTIONS)} scores, [batch, {len(EMOTIONS)}]"
            )
        allowed = (np.int8, np.float32)
        for kind, detail in (("input", inputs[0]), ("output", outputs[0])):
            if np.dtype(detail["dtype"]) not in allowed:
                raise EdgeAgentError(
                    f"model file {self.path} has {kind} type {np.dtype(detail['dtype'])}; "
                    "expected int8 (or float32)"
                )

    def _make_pixel_lut(self):
        """Map each of the 256 pixel values to the model's input value once, not per pixel."""
        scaled = pixel_to_model_input(np.arange(256))
        if not self.quantized:
            return scaled
        scale, zero_point = self.input_quantization
        return np.clip(np.round(scaled / scale + zero_point), -128, 127).astype(np.int8)

    def preprocess(self, crops):
        """Resize crops to the model's input and map them to its input type: [N, H, W, 1]."""
        size = (self.input_width, self.input_height)
        resized = np.empty((len(crops), self.input_height, self.input_width), dtype=np.uint8)
        for i, crop in enumerate(crops):
            crop = inset_crop(check_crop(crop, i), self.read_out.inset)
            resized[i] = crop if crop.shape == resized.shape[1:] else resize_face(crop, size)
        return self._pixel_lut[resized][..., None]

    def probabilities(self, crops):
        """Return an [N, 7] float array of class probabilities, one row per crop."""
        if len(crops) == 0:
            raise EdgeAgentError("no face crops to classify: the batch is empty")
        batch = self.preprocess(crops)
        step = MAX_BATCH // 2 if self.flip_average else MAX_BATCH
        probs = np.concatenate([self._label_chunk(batch[start:start + step]) for start in range(0, len(batch), step)])
        return apply_log_bias(probs, self.read_out.log_bias) if self.read_out.biased else probs

    def _label_chunk(self, faces):
        if not self.flip_average:
            return self._invoke(faces)
        both = self._invoke(np.concatenate([faces, faces[:, :, ::-1]]))
        return (both[:len(faces)] + both[len(faces):]) / 2

    def _invoke(self, batch):
        count = len(batch)
        # One interpreter per power of two, padded up to it: a classroom's face count changes
        # every frame, and an interpreter per count would hold up to 64 sets of tensors.
        bucket = _bucket(count)
        if bucket != count:
            batch = np.concatenate([batch, np.zeros((bucket - count, *batch.shape[1:]), batch.dtype)])
        interpreter, input_index, output_index = self._interpreter(bucket)
        interpreter.set_tensor(input_index, batch)
        started = time.perf_counter()
        interpreter.invoke()
        self.invoke_seconds += time.perf_counter() - started
        raw = interpreter.get_tensor(output_index)[:count]
        if not self.quantized:
            return raw.astype(np.float32)
        scale, zero_point = self.output_quantization
        return (raw.astype(np.float32) - zero_point) * scale

    def classify(self, crops):
        """Label each crop: a list of :class:`Emotion`, in the order of ``crops``."""
        probs = self.probabilities(crops)
        best = probs.argmax(axis=1)
        return [Emotion(EMOTIONS[k], float(probs[i, k])) for i, k in enumerate(best)]
