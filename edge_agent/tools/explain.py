"""``edge-agent explain``: what the emotion model looks at, as guided-backpropagation and Grad-CAM maps.

Maps come from the float Keras model the int8 one is built from (``[model]`` extra, never a Pi):
the int8 graph has no gradients. Two kinds of sheet, both PNG:

- per face: the crop as the model sees it, then guided backpropagation and Grad-CAM for the
  predicted emotion and, where the true one is known (a labelled npz), for the true emotion;
- per class: for each emotion, the average map over the faces labelled with it, for that emotion,
  with the share of each map on the eyes, the nose and the mouth.

Invariants:
- Scores are the network's pre-softmax outputs (its logits): a softmax couples the classes, so
  its gradient for one emotion also carries every other emotion's.
- Guided backpropagation (Springenberg et al. 2015) passes gradient back through a ReLU only where
  its input was positive *and* the gradient arriving is positive; every other layer is
  differentiated as it is. Grad-CAM (Selvaraju et al. 2017) is ReLU(sum_k w_k A_k) over the last
  convolutional feature map A, w_k the mean gradient of the score over A_k, resized to the input.
- The model passed in is never changed: both methods run on rebuilt copies of its graph that share
  its weights' values.
- A face's maps are in the model's input pixels; before averaging, each is scaled to sum 1, so
  every face weighs the same.
- A sheet is written only to the path its user names, with mode 0600; a per-face sheet shows
  people's faces, a class-average sheet shows no single face.
"""

import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..agent.config import load_config
from ..agent.faces import FaceDetector
from ..agent.paths import DEFAULT_MODEL
from ..agent.snapshot import writable_target, write_private
from ..common.charts import EMOTION_COLORS, pyplot
from ..common.contract import EMOTIONS
from ..common.errors import EdgeAgentError
from .dataset import load_faces
from .keras_model import import_tensorflow, load_keras_model, model_inputs
from .model_build import float_weights_of

# Where the parts of a face lie in a face crop framed as FER-2013's (and the Haar cascade's), as
# fractions (top, bottom, left, right) of its height and width: read off the mean PublicTest face,
# whose eyes are dark blobs at 35% of the height and mouth a line at 79%.
REGIONS = {
    "eyes": (0.22, 0.48, 0.12, 0.88),
    "nose": (0.48, 0.66, 0.30, 0.70),
    "mouth": (0.66, 0.92, 0.25, 0.75),
}
BATCH = 64


def _guided_relu(tf):
    @tf.custom_gradient
    def guided_relu(x):
        def gradient(upstream):
            # The forward gate is backpropagation's, the backward gate the deconvnet's: guided keeps both.
            return upstream * tf.cast(x > 0, upstream.dtype) * tf.cast(upstream > 0, upstream.dtype)

        return tf.nn.relu(x), gradient

    return guided_relu


def _is_softmax(layer) -> bool:
    if type(layer).__name__ == "Softmax":
        return True
    return getattr(getattr(layer, "activation", None), "__name__", None) == "softmax"


def _is_relu(layer) -> bool:
    if type(layer).__name__ == "ReLU":
        config = layer.get_config()
        if config.get("max_value") is not None or config.get("negative_slope") or config.get("threshold"):
            raise EdgeAgentError(f"layer {layer.name} is a clipped or leaky ReLU; guided backpropagation "
                                 "is implemented for plain ReLUs only")
        return True
    return getattr(getattr(layer, "activation", None), "__name__", None) == "relu"


def rebuild(model, tf_keras, activation=None):
    """A copy of ``model``'s graph with the same weights, scoring by logits (its output softmax made
    linear) and, given ``activation``, with every ReLU replaced by it."""
    if len(model.outputs) != 1:
        raise EdgeAgentError(f"model {model.name} has {len(model.outputs)} outputs; an emotion model has one")
    output_name = model.output_names[0]

    def clone(layer):
        config = layer.get_config()
        if layer.name == output_name and _is_softmax(layer):
            if "activation" in config and type(layer).__name__ != "Activation":
                return type(layer).from_config({**config, "activation": "linear"})
            return tf_keras.layers.Activation("linear", name=layer.name)
        if activation is not None and _is_relu(layer):
            if type(layer).__name__ in ("ReLU", "Activation"):
                return tf_keras.layers.Activation(activation, name=layer.name)
            return type(layer).from_config({**config, "activation": activation})
        return type(layer).from_config(config)

    copy = tf_keras.models.clone_model(model, clone_function=clone)
    for layer in copy.layers:
        layer.set_weights(model.get_layer(layer.name).get_weights())
    return copy


def feature_layer(model, name=None):
    """The layer Grad-CAM weighs: ``name``, else the last feature maps before the network pools or
    flattens them away.

    Maps with no more channels than the model has classes are skipped: that is a classifier
    convolution (mini-Xception's last), on which Grad-CAM is only ReLU of the class's own channel.
    """
    if name is not None:
        try:
            layer = model.get_layer(name)
        except ValueError:
            raise EdgeAgentError(f"model {model.name} has no layer {name!r}") from None
        if len(layer.output.shape) != 4:
            raise EdgeAgentError(f"layer {name} gives {tuple(layer.output.shape)}, not feature maps [N, H, W, C]")
        return layer
    classes = model.output.shape[-1]
    for layer in reversed(model.layers):
        kind = type(layer).__name__
        shape = layer.output.shape
        if len(shape) == 4 and shape[-1] > classes and "Pooling" not in kind and "Dropout" not in kind:
            return layer
    raise EdgeAgentError(f"model {model.name} has no layer with feature maps for Grad-CAM")


class Explainer:
    """Logits, guided-backpropagation gradients and Grad-CAM maps of one float Keras model."""

    def __init__(self, model, layer: str | None = None):
        tf, tf_keras = import_tensorflow()
        self._tf = tf
        self.input_size = tuple(model.input_shape[1:3])
        self._logits = rebuild(model, tf_keras)
        self._guided = rebuild(model, tf_keras, activation=_guided_relu(tf))
        self.layer = feature_layer(self._logits, layer).name
        self._cam = tf_keras.Model(self._logits.inputs,
                                   [self._logits.get_layer(self.layer).output, self._logits.output])

    def inputs(self, crops) -> np.ndarray:
        """Gray uint8 crops resized and scaled as the model was trained: float32 [N, H, W, 1]."""
        return model_inputs(self._logits, crops)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self._logits(x[i:i + BATCH], training=False).numpy()
                               for i in range(0, len(x), BATCH)])

    def _picked(self, logits, classes):
        # Faces are independent at inference, so the gradient of the summed scores is each face's own.
        return self._tf.reduce_sum(self._tf.gather(logits, classes, axis=1, batch_dims=1))

    def guided(self, x: np.ndarray, classes) -> np.ndarray:
        """d score[class] / d input through guided ReLUs, one [H, W] map per face (signed)."""
        tf, out = self._tf, []
        for i in range(0, len(x), BATCH):
            batch = tf.constant(x[i:i + BATCH])
            with tf.GradientTape() as tape:
                tape.watch(batch)
                score = self._picked(self._guided(batch, training=False), np.asarray(classes[i:i + BATCH]))
            out.append(tape.gradient(score, batch).numpy()[..., 0])
        return np.concatenate(out)

    def grad_cam(self, x: np.ndarray, classes) -> np.ndarray:
        """Grad-CAM of score[class] on the feature layer, resized to the input: one [H, W] map per face, >= 0."""
        tf, out = self._tf, []
        height, width = self.input_size
        for i in range(0, len(x), BATCH):
            with tf.GradientTape() as tape:
                features, logits = self._cam(x[i:i + BATCH], training=False)
                score = self._picked(logits, np.asarray(classes[i:i + BATCH]))
            weights = tf.reduce_mean(tape.gradient(score, features), axis=(1, 2), keepdims=True)
            cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy()
            out += [cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR) for cam in cams]
        return np.maximum(np.stack(out), 0)


def unit_mass(maps: np.ndarray) -> np.ndarray:
    """Each map scaled to sum 1 (an all-zero map stays zero)."""
    totals = maps.reshape(len(maps), -1).sum(axis=1)
    return maps / np.where(totals > 0, totals, 1)[:, None, None]


def region_mask(shape, region: str) -> np.ndarray:
    top, bottom, left, right = REGIONS[region]
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    mask[round(top * height):round(bottom * height), round(left * width):round(right * width)] = True
    return mask


def region_shares(heat: np.ndarray) -> dict:
    """The share of a non-negative map on each face region, and elsewhere."""
    total = float(heat.sum()) or 1.0
    shares = {name: float(heat[region_mask(heat.shape, name)].sum()) / total for name in REGIONS}
    shares["elsewhere"] = 1.0 - sum(shares.values())
    return shares


def peak_region(heat: np.ndarray) -> str:
    """The region holding the map's maximum, after smoothing away single-pixel spikes."""
    sigma = heat.shape[0] / 32
    smooth = cv2.GaussianBlur(heat.astype(np.float32), (0, 0), sigma)
    y, x = np.unravel_index(int(smooth.argmax()), smooth.shape)
    return next((name for name in REGIONS if region_mask(heat.shape, name)[y, x]), "elsewhere")


def region_areas(shape) -> dict:
    return {name: float(region_mask(shape, name).mean()) for name in REGIONS}


@dataclass
class FaceMaps:
    """One face's crop (as the model sees it) and its maps for the predicted and, if known, true emotion."""

    where: str
    crop: np.ndarray
    probabilities: np.ndarray
    guided: dict
    cam: dict
    true: int | None = None

    @property
    def predicted(self) -> int:
        return int(self.probabilities.argmax())


def explain_faces(explainer: Explainer, crops, wheres, true=None) -> list[FaceMaps]:
    """Maps of each crop for its predicted emotion, and for its true one when ``true`` is given."""
    x = explainer.inputs(crops)
    logits = explainer.logits(x)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)
    wanted = {"predicted": predicted} if true is None else {"predicted": predicted, "true": np.asarray(true)}
    guided = {key: explainer.guided(x, classes) for key, classes in wanted.items()}
    cam = {key: explainer.grad_cam(x, classes) for key, classes in wanted.items()}
    shown = np.rint((x[..., 0] + 1) * 127.5).astype(np.uint8)
    return [FaceMaps(wheres[i], shown[i], probabilities[i],
                     {EMOTIONS[classes[i]]: np.abs(guided[key][i]) for key, classes in wanted.items()},
                     {EMOTIONS[classes[i]]: cam[key][i] for key, classes in wanted.items()},
                     None if true is None else int(true[i]))
            for i in range(len(crops))]


def correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Mean per-face Pearson correlation of two stacks of maps (faces where either is flat left out)."""
    a, b = first.reshape(len(first), -1), second.reshape(len(second), -1)
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    kept = norms > 0
    return float(((a * b).sum(axis=1)[kept] / norms[kept]).mean()) if kept.any() else float("nan")


@dataclass
class ClassAverages:
    """Per emotion, the mean of the unit-mass maps of the faces labelled with it, for that emotion.

    ``contrast``: per emotion and method, how alike each face's map for that emotion is to its map
    for the emotion the model scores lowest on it (mean correlation). Near 1, the map shows the
    face more than the emotion: a map that does not change with the class explains no class.
    """

    faces: dict
    guided: dict
    cam: dict
    contrast: dict
    mean_face: np.ndarray

    def figures(self) -> dict:
        """Per emotion: faces, and for each method its share per region, its peak region and its contrast."""
        return {label: {"faces": self.faces[label],
                        **{method: {"shares": region_shares(maps[label]), "peak": peak_region(maps[label]),
                                    "r_least_likely": self.contrast[label][method]}
                           for method, maps in (("guided", self.guided), ("grad_cam", self.cam))}}
                for label in self.guided}


def class_averages(explainer: Explainer, images: np.ndarray, labels: np.ndarray, per_class: int) -> ClassAverages:
    """Average maps over the first ``per_class`` faces of each emotion present in ``labels``."""
    faces, guided, cam, contrast, used = {}, {}, {}, {}, []
    for k, label in enumerate(EMOTIONS):
        chosen = np.flatnonzero(labels == k)[:per_class]
        if not len(chosen):
            continue
        x = explainer.inputs(images[chosen])
        classes, least = np.full(len(chosen), k), explainer.logits(x).argmin(axis=1)
        own_guided, own_cam = np.abs(explainer.guided(x, classes)), explainer.grad_cam(x, classes)
        faces[label] = len(chosen)
        guided[label] = unit_mass(own_guided).mean(axis=0)
        cam[label] = unit_mass(own_cam).mean(axis=0)
        contrast[label] = {"guided": correlation(own_guided, np.abs(explainer.guided(x, least))),
                           "grad_cam": correlation(own_cam, explainer.grad_cam(x, least))}
        used.append(x[..., 0])
    mean_face = np.rint((np.concatenate(used).mean(axis=0) + 1) * 127.5).astype(np.uint8)
    return ClassAverages(faces, guided, cam, contrast, mean_face)


def image_faces(paths, detector: FaceDetector, warn) -> tuple[list, list]:
    """Face crops found in image files, and where each came from; a file with no face is said, and skipped."""
    crops, wheres = [], []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if Path(path).is_file() else None
        if image is None:
            reason = "does not exist" if not Path(path).exists() else "is not an image OpenCV can read"
            raise EdgeAgentError(f"image {path} {reason}")
        boxes = detector.detect(image)
        if not len(boxes):
            warn(f"no face found in {path}")
        for (x, y, w, h), crop in zip(boxes, detector.crops(image, boxes), strict=True):
            crops.append(crop)
            wheres.append(f"{Path(path).name} {w}x{h} at {x},{y}")
    return crops, wheres


def _png(figure, plt) -> bytes:
    from PIL import Image

    drawn = io.BytesIO()
    figure.savefig(drawn, format="png", dpi=100)
    plt.close(figure)
    # 256 colours keep the maps legible at a quarter of the bytes: the model card's sheet is in the repository.
    image = Image.open(drawn).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    packed = io.BytesIO()
    image.save(packed, format="png", optimize=True)
    return packed.getvalue()


def _outline_regions(ax, shape):
    from matplotlib.patches import Rectangle

    height, width = shape
    for top, bottom, left, right in REGIONS.values():
        ax.add_patch(Rectangle((left * width - 0.5, top * height - 0.5), (right - left) * width,
                               (bottom - top) * height, fill=False, edgecolor="white", linewidth=0.6,
                               linestyle="--"))


def _show(ax, image, title, cmap="gray", overlay=None, color="black"):
    ax.imshow(image, cmap="gray" if overlay is not None else cmap, vmin=0, vmax=None if cmap != "gray" else 255)
    if overlay is not None:
        ax.imshow(overlay, cmap="jet", alpha=0.45)
    ax.set_title(title, fontsize=8, color=color)
    ax.set_xticks([])
    ax.set_yticks([])


def face_sheet(faces: list[FaceMaps], path: Path) -> None:
    """One row per face: crop, then guided backpropagation and Grad-CAM per explained emotion."""
    plt = pyplot()
    columns = 1 + 2 * max(len(face.guided) for face in faces)
    figure, axes = plt.subplots(len(faces), columns, figsize=(1.7 * columns, 1.9 * len(faces)), squeeze=False)
    for row, face in zip(axes, faces, strict=True):
        predicted = EMOTIONS[face.predicted]
        truth = "" if face.true is None else f"\ntrue: {EMOTIONS[face.true]}"
        # The source's name on a line of its own: a column is too narrow for it and the box beside it.
        where = face.where.replace(" ", "\n", 1)
        _show(row[0], face.crop, f"{where}\n{predicted} {face.probabilities.max():.2f}{truth}")
        for i, label in enumerate(face.guided):
            kind = "predicted" if label == predicted else "true"
            if label == predicted and face.true == face.predicted:
                kind = "predicted and true"
            colour = EMOTION_COLORS[label]
            _show(row[1 + i], face.guided[label], f"guided: {label}\n({kind})", cmap="inferno", color=colour)
            _show(row[1 + len(face.guided) + i], face.crop, f"Grad-CAM: {label}\n({kind})", overlay=face.cam[label],
                  color=colour)
        for ax in row[1 + 2 * len(face.guided):]:
            ax.set_axis_off()
    figure.tight_layout()
    write_private(path, _png(figure, plt), "sheet")


def average_sheet(averages: ClassAverages, path: Path, title: str) -> None:
    """Two rows (guided backpropagation, Grad-CAM over the mean face), one column per emotion."""
    plt = pyplot()
    labels = list(averages.guided)
    figure, axes = plt.subplots(2, len(labels), figsize=(1.45 * len(labels), 3.6), squeeze=False)
    for column, label in enumerate(labels):
        colour = EMOTION_COLORS[label]
        _show(axes[0][column], averages.guided[label], f"{label}\n{averages.faces[label]} faces", cmap="inferno",
              color=colour)
        _show(axes[1][column], averages.mean_face, "", overlay=averages.cam[label])
        for row in (0, 1):
            _outline_regions(axes[row][column], averages.mean_face.shape)
    axes[0][0].set_ylabel("guided backprop", fontsize=8)
    axes[1][0].set_ylabel("Grad-CAM", fontsize=8)
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    write_private(path, _png(figure, plt), "sheet")


def format_figures(figures: dict, areas: dict) -> str:
    """The class averages' share of each map per region, peak and contrast, as a table."""
    regions = [*REGIONS, "elsewhere"]
    areas = {**areas, "elsewhere": 1.0 - sum(areas.values())}
    half = "".join(f"{name[:5]:>6}" for name in regions) + f"  {'peak':<9} {'r':>5}"
    lines = [f"{'':<15}  {'guided backpropagation':<{len(half)}}  Grad-CAM",
             f"{'emotion':<9}{'faces':>6}  {half}  {half}"]
    for label, row in figures.items():
        cells = ["".join(f"{100 * row[method]['shares'][r]:5.0f}%" for r in regions)
                 + f"  {row[method]['peak']:<9} {row[method]['r_least_likely']:5.2f}"
                 for method in ("guided", "grad_cam")]
        lines.append(f"{label:<9}{row['faces']:>6}  {cells[0]}  {cells[1]}")
    lines.append(f"{'area':<15}  " + "".join(f"{100 * areas[r]:5.0f}%" for r in regions)
                 + "  (share of the crop each region covers)")
    lines.append("r: each face's map for the emotion against its map for the emotion the model scores lowest "
                 "(mean correlation; near 1: the map shows the face, not the emotion)")
    return "\n".join(lines)


def _say(message: str) -> None:
    print(f"edge-agent: {message}", file=sys.stderr)


def main(args) -> None:
    """``edge-agent explain``: check the arguments, compute the maps, write the sheet, say what it holds."""
    if bool(args.images) == bool(args.data):
        raise EdgeAgentError("explain: give face images or --data FILE.npz, not both and not neither")
    if args.average and not args.data:
        raise EdgeAgentError("explain: --average needs labelled faces: --data FILE.npz")
    out = writable_target(args.out, "sheet", (".png",))
    # TensorFlow 2.21's oneDNN kernel for a convolution's filter gradient crashes the process
    # (SIGSEGV) on the gradients these maps take, on some x86 CPUs (seen on a Xeon with AMX, at
    # every ISA limit); TensorFlow's own kernels are slower, which a few faces do not notice.
    # Set before TensorFlow loads.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import_tensorflow()
    if args.data:
        images, labels = load_faces(args.data)
    else:
        detector = FaceDetector.from_config(load_config(args.config).detector)
        crops, wheres = image_faces(args.images, detector, _say)
        if not crops:
            raise EdgeAgentError(f"no face found in {', '.join(map(str, args.images))}: no sheet written")
    model = args.model or float_weights_of(DEFAULT_MODEL)
    explainer = Explainer(load_keras_model(model), layer=args.layer)
    if args.average:
        averages = class_averages(explainer, images, labels, args.per_class)
        total = sum(averages.faces.values())
        average_sheet(averages, out, f"mean map per emotion over {total} faces of {args.data.name} labelled with it "
                                     f"(Grad-CAM on {explainer.layer}; dashed: eyes, nose, mouth)")
        figures = averages.figures()
        if args.json:
            print(json.dumps({"model": str(model), "data": str(args.data),
                              "layer": explainer.layer, "region_areas": region_areas(averages.mean_face.shape),
                              "emotions": figures}))
        else:
            print(format_figures(figures, region_areas(averages.mean_face.shape)))
        _say(f"{out} holds each emotion's average map over {total} faces of {args.data}, no single face; "
             "it is yours to keep or delete.")
        return
    if args.data:
        chosen = np.arange(min(args.faces, len(images)))
        faces = explain_faces(explainer, images[chosen], [f"{args.data.name} #{i}" for i in chosen],
                              true=labels[chosen])
    else:
        if len(crops) > args.faces:
            _say(f"{len(crops)} faces found; the sheet shows the first {args.faces} (--faces)")
        faces = explain_faces(explainer, crops[:args.faces], wheres[:args.faces])
    face_sheet(faces, out)
    for face in faces:
        truth = "" if face.true is None else f", true {EMOTIONS[face.true]}"
        print(f"{face.where}: predicted {EMOTIONS[face.predicted]} {face.probabilities.max():.2f}{truth}; "
              f"guided map peaks on the {peak_region(face.guided[EMOTIONS[face.predicted]])}")
    _say(f"{out} shows {len(faces)} face crop(s) and the model's maps of them: pictures of people. "
         "Nothing else keeps a copy; it is yours to delete.")
