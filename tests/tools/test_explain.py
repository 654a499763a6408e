"""`edge-agent explain`: guided backpropagation and Grad-CAM checked by hand on a tiny network, then
measured on the shipped model's float weights, and the command's sheets and bad input."""

import json
import stat
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edge_agent.common.errors import EdgeAgentError
from support import DATA, PUBLICTEST, REPO, SHIPPED, needs, run_cli

pytest.importorskip("tensorflow", reason="the [model] extra (TensorFlow) is not installed")

# The tiny network: a 2x2 gray input, a 1x1 convolution with three ReLU channels, global average
# pooling, and a dense layer to two classes (softmax). Its weights make every gate of guided
# backpropagation matter: channel 0 passes where x > 0, channel 1 where x < 0, channel 2 at one
# pixel only, and each class's weights are positive for some channels and negative for others.
X = np.array([[1.0, -1.0], [2.0, 0.5]])
CONV_W, CONV_B = np.array([1.0, -1.0, 0.5]), np.array([0.0, 0.0, -0.6])
DENSE_W = np.array([[1.0, -1.0], [-2.0, 3.0], [0.5, 0.5]])  # [channel, class]


def tiny_network(style):
    """The tiny network, its ReLU and softmax written the three ways Keras models write them."""
    from edge_agent.tools.keras_model import import_tensorflow

    _, tf_keras = import_tensorflow()
    layers = tf_keras.layers
    inputs = layers.Input((2, 2, 1))
    if style == "activation argument":
        x = layers.Conv2D(3, 1, activation="relu", name="conv")(inputs)
        x = layers.GlobalAveragePooling2D()(x)
        outputs = layers.Dense(2, activation="softmax", name="dense")(x)
    else:
        relu, softmax = ((layers.ReLU(), layers.Softmax()) if style == "ReLU and Softmax layers"
                         else (layers.Activation("relu"), layers.Activation("softmax")))
        x = relu(layers.Conv2D(3, 1, name="conv")(inputs))
        x = layers.GlobalAveragePooling2D()(x)
        outputs = softmax(layers.Dense(2, name="dense")(x))
    model = tf_keras.Model(inputs, outputs)
    model.get_layer("conv").set_weights([CONV_W.reshape(1, 1, 1, 3), CONV_B])
    model.get_layer("dense").set_weights([DENSE_W, np.zeros(2)])
    return model


def by_hand():
    """Logits, guided-backpropagation gradients and Grad-CAM maps of the tiny network at X, step by step."""
    z = CONV_W[:, None, None] * X + CONV_B[:, None, None]  # pre-activation, [channel, 2, 2]
    a = np.maximum(z, 0)
    logits = a.mean(axis=(1, 2)) @ DENSE_W
    guided, cams = [], []
    for c in range(2):
        upstream = DENSE_W[:, c] / 4  # d logit_c / d a_k at every pixel: pooling averages 4 pixels
        # A ReLU passes gradient where its input was positive and the gradient arriving is positive.
        passed = upstream[:, None, None] * (z > 0) * (upstream[:, None, None] > 0)
        guided.append((CONV_W[:, None, None] * passed).sum(axis=0))
        cams.append(np.maximum((upstream[:, None, None] * a).sum(axis=0), 0))
    return logits, np.array(guided), np.array(cams)


def test_the_hand_computation_is_what_it_claims():
    logits, guided, cams = by_hand()
    np.testing.assert_allclose(logits, [0.425, -0.075])
    np.testing.assert_allclose(guided[0], [[0.25, 0.0], [0.3125, 0.25]])
    np.testing.assert_allclose(guided[1], [[0.0, -0.75], [0.0625, 0.0]])
    np.testing.assert_allclose(cams[0], [[0.25, 0.0], [0.55, 0.125]])
    np.testing.assert_allclose(cams[1], [[0.0, 0.75], [0.0, 0.0]])
    # Plain backpropagation would also pass channel 1's negative gradient for class 0 at x < 0.
    z = CONV_W[:, None, None] * X + CONV_B[:, None, None]
    plain = (CONV_W[:, None, None] * (DENSE_W[:, 0] / 4)[:, None, None] * (z > 0)).sum(axis=0)
    np.testing.assert_allclose(plain, [[0.25, 0.5], [0.3125, 0.25]])


@pytest.mark.parametrize("style", ["activation argument", "ReLU and Softmax layers", "Activation layers"])
def test_guided_backprop_and_grad_cam_match_the_hand_computation(style):
    from edge_agent.tools.explain import Explainer

    model = tiny_network(style)
    explainer = Explainer(model)
    x = X[None, :, :, None].astype(np.float32)
    logits, guided, cams = by_hand()
    np.testing.assert_allclose(explainer.logits(x)[0], logits, atol=1e-6)
    for c in range(2):
        np.testing.assert_allclose(explainer.guided(x, [c])[0], guided[c], atol=1e-6)
        np.testing.assert_allclose(explainer.grad_cam(x, [c])[0], cams[c], atol=1e-6)
    # The model given is left as it was: it still ends in a softmax over plain ReLUs.
    np.testing.assert_allclose(model(x).numpy()[0], np.exp(logits) / np.exp(logits).sum(), atol=1e-6)


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_the_trained_architecture_through_the_command(tmp_path):
    """`model train`'s network (48x48 input, ReLU and Softmax layers, flatten and dense) saved as .h5:
    Grad-CAM weighs its last feature maps before pooling, every map is in its own input pixels."""
    from edge_agent.tools.explain import Explainer, explain_faces
    from edge_agent.tools.keras_model import import_tensorflow, load_keras_model
    from edge_agent.tools.train import Recipe, build_network

    _, tf_keras = import_tensorflow()
    tf_keras.utils.set_random_seed(3)
    path = tmp_path / "vgg.h5"
    build_network(Recipe(width=0.25), tf_keras).save(path)
    explainer = Explainer(load_keras_model(path))
    assert explainer.input_size == (48, 48)
    assert explainer.layer.startswith("re_lu") and explainer._cam.outputs[0].shape[1:3] == (6, 6)
    face = cv2.imread(str(DATA / "justin.jpg"), cv2.IMREAD_GRAYSCALE)[84:277, 88:281]
    (maps,) = explain_faces(explainer, [face], ["justin.jpg"], true=[3])
    assert maps.crop.shape == (48, 48)
    assert all(m.shape == (48, 48) and m.max() > 0 for m in (*maps.guided.values(), *maps.cam.values()))
    sheet = tmp_path / "sheet.png"
    done = run_cli("explain", DATA / "justin.jpg", "--model", path, "--out", sheet)
    assert done.returncode == 0, done.stderr
    assert cv2.imread(str(sheet)) is not None


def test_a_clipped_relu_is_refused_by_name():
    from edge_agent.common.errors import EdgeAgentError
    from edge_agent.tools.explain import Explainer
    from edge_agent.tools.keras_model import import_tensorflow

    _, tf_keras = import_tensorflow()
    inputs = tf_keras.layers.Input((4, 4, 1))
    x = tf_keras.layers.ReLU(max_value=6.0, name="relu6")(tf_keras.layers.Conv2D(8, 1)(inputs))
    outputs = tf_keras.layers.Dense(2, activation="softmax")(tf_keras.layers.Flatten()(x))
    with pytest.raises(EdgeAgentError, match="layer relu6 is a clipped or leaky ReLU"):
        Explainer(tf_keras.Model(inputs, outputs))


def test_regions_and_peaks():
    from edge_agent.tools.explain import peak_region, region_areas, region_shares

    heat = np.zeros((64, 64))
    heat[50:56, 28:36] = 1.0  # a mouth
    assert peak_region(heat) == "mouth" and region_shares(heat)["mouth"] == pytest.approx(1.0)
    heat[20:26, 14:22] = 3.0  # and a brighter eye
    assert peak_region(heat) == "eyes"
    assert region_shares(heat)["eyes"] == pytest.approx(0.75)
    assert sum(region_areas((64, 64)).values()) < 0.5


@pytest.fixture(scope="module")
def shipped(weights):
    from edge_agent.tools.explain import Explainer
    from edge_agent.tools.keras_model import load_keras_model

    model = load_keras_model(weights)
    return model, Explainer(model)


@needs(PUBLICTEST)
def test_the_float_models_own_probabilities_and_its_grad_cam_layer(shipped):
    model, explainer = shipped
    with np.load(PUBLICTEST) as data:
        x = explainer.inputs(data["images"][:64])
    logits = explainer.logits(x)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax, model.predict(x, verbose=0), atol=1e-5)
    # Its last convolution has one channel per emotion (the classifier): Grad-CAM weighs the features before it.
    assert explainer.layer == "add_4"


@pytest.fixture(scope="module")
def happy_surprise_neutral(tmp_path_factory):
    """Sixty PublicTest faces each of happy, surprise and neutral, as an npz."""
    if not PUBLICTEST.is_file():
        pytest.skip(f"{PUBLICTEST} is absent (../shared not beside the repo)")
    with np.load(PUBLICTEST) as data:
        images, labels = data["images"], data["labels"]
    chosen = np.concatenate([np.flatnonzero(labels == k)[:60] for k in (3, 5, 6)])
    path = tmp_path_factory.mktemp("faces") / "faces.npz"
    np.savez(path, images=images[chosen], labels=labels[chosen])
    return path


def test_class_averages_of_the_baseline_model(tmp_path, weights, happy_surprise_neutral):
    sheet = tmp_path / "average.png"
    done = run_cli("explain", "--data", happy_surprise_neutral, "--average", "--json", "--model", weights,
                   "--out", sheet)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    emotions = result["emotions"]
    assert list(emotions) == ["happy", "surprise", "neutral"]
    assert all(row["faces"] == 60 for row in emotions.values())
    guided = {label: row["guided"] for label, row in emotions.items()}
    # Happy: the guided map peaks on the mouth, and no other emotion's holds as much of it there.
    assert guided["happy"]["peak"] == "mouth"
    mouths = {label: row["shares"]["mouth"] for label, row in guided.items()}
    assert mouths["happy"] > max(mouths["surprise"], mouths["neutral"])
    # Surprise: peaks on the eyes, with eyes and mouth holding far more than their third of the crop.
    assert guided["surprise"]["peak"] == "eyes"
    assert guided["surprise"]["shares"]["eyes"] + guided["surprise"]["shares"]["mouth"] > 0.55
    assert sum(result["region_areas"][name] for name in ("eyes", "mouth")) < 0.35
    # Guided maps of a face hardly change with the emotion asked about; Grad-CAM's do.
    assert all(row["guided"]["r_least_likely"] > 0.8 for row in emotions.values())
    assert all(row["grad_cam"]["r_least_likely"] < 0.5 for row in emotions.values())
    picture = cv2.imread(str(sheet))
    # Two rows of maps, one column per emotion.
    assert picture is not None and picture.shape[1] > picture.shape[0]
    assert stat.S_IMODE(sheet.stat().st_mode) == 0o600
    assert f"{sheet} holds each emotion's average map over 180 faces" in done.stderr
    assert "no single face" in done.stderr and "yours to keep or delete" in done.stderr


def test_a_sheet_per_face_from_images_skips_one_without_a_face(tmp_path, weights):
    sheet = tmp_path / "faces.png"
    done = run_cli("explain", DATA / "justin.jpg", DATA / "no-faces.jpg", "--model", weights, "--out", sheet)
    assert done.returncode == 0, done.stderr
    assert f"no face found in {DATA / 'no-faces.jpg'}" in done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("justin.jpg ") and "predicted " in lines[0]
    assert f"{sheet} shows 1 face crop(s)" in done.stderr and "yours to delete" in done.stderr
    one_row = cv2.imread(str(sheet))
    assert one_row is not None and stat.S_IMODE(sheet.stat().st_mode) == 0o600
    # Crop, guided backpropagation and Grad-CAM for the predicted emotion: three panels in a row.
    assert one_row.shape[1] > 2 * one_row.shape[0]


def test_a_sheet_per_face_from_an_npz_shows_the_true_emotion_too(tmp_path, weights, happy_surprise_neutral):
    sheet = tmp_path / "faces.png"
    done = run_cli("explain", "--data", happy_surprise_neutral, "--faces", 3, "--model", weights, "--out", sheet)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"faces.npz #{i}" for i in range(3)]
    assert all(", true happy;" in line for line in lines)
    assert cv2.imread(str(sheet)).shape[0] > cv2.imread(str(sheet)).shape[1] / 3


def test_an_image_with_no_face_writes_no_sheet(tmp_path, weights):
    sheet = tmp_path / "faces.png"
    done = run_cli("explain", DATA / "no-faces.jpg", "--model", weights, "--out", sheet)
    assert done.returncode == 2
    assert f"no face found in {DATA / 'no-faces.jpg'}: no sheet written" in done.stderr
    assert not sheet.exists()


@pytest.mark.parametrize("args, message", [
    (["--out", "{tmp}/x.png"], "give face images or --data FILE.npz"),
    (["{data}/justin.jpg", "--average", "--out", "{tmp}/x.png"], "--average needs labelled faces"),
    (["{data}/justin.jpg", "--out", "{tmp}/gone/x.png"], "sheet {tmp}/gone/x.png cannot be written: directory"),
    (["{data}/justin.jpg", "--out", "{tmp}/x.jpg"], "name it .png"),
    (["{tmp}/nowhere.jpg", "--out", "{tmp}/x.png"], "image {tmp}/nowhere.jpg does not exist"),
    (["--data", "{tmp}/nowhere.npz", "--out", "{tmp}/x.png"], "data file {tmp}/nowhere.npz does not exist"),
])
def test_bad_input_exits_2_naming_it(tmp_path, args, message):
    done = run_cli("explain", *(arg.format(tmp=tmp_path, data=DATA) for arg in args))
    assert done.returncode == 2, done.stderr
    assert message.format(tmp=tmp_path) in done.stderr
    assert not list(tmp_path.iterdir())


def test_without_tensorflow_one_line_says_what_to_install(tmp_path):
    blocker = (
        "import sys\n"
        "class Blocked:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'tf_keras'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Blocked())\n"
        "from edge_agent.agent.cli import main\n"
        f"sys.exit(main(['explain', {str(DATA / 'justin.jpg')!r}, '--out', {str(tmp_path / 'x.png')!r}]))\n")
    done = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "edge-agent: error: this needs TensorFlow: install the model extra, e.g. `pip install -e '.[model]'`"]
    assert not (tmp_path / "x.png").exists()


def test_by_default_the_float_weights_the_shipped_model_was_built_from_are_explained(tmp_path):
    from edge_agent.tools.model_build import float_weights_of

    assert float_weights_of(SHIPPED) == SHIPPED.with_name("emotion_fer_gap9_fear.h5")
    sheet = tmp_path / "faces.png"
    done = run_cli("explain", DATA / "justin.jpg", "--out", sheet)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("justin.jpg ") and "predicted happy" in done.stdout
    # A model whose float weights are not beside it says so, and how to name them.
    lone = tmp_path / SHIPPED.name
    lone.write_bytes(SHIPPED.read_bytes())
    lone.with_suffix(".json").write_text(SHIPPED.with_suffix(".json").read_text())
    with pytest.raises(EdgeAgentError, match=r"emotion_fer_gap9_fear\.h5 is not the float model .* pass --model"):
        float_weights_of(lone)
