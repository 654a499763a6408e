"""Float Keras emotion models (a trained one, or the mini-Xception baseline), for building int8 models and comparing.

Needs the ``[model]`` extra (TensorFlow); nothing on a Pi imports this module.
"""

import os
from pathlib import Path

import numpy as np

from ..agent.emotions import ReadOut, apply_log_bias, inset_crop, pixel_to_model_input, resize_face
from ..common.errors import EdgeAgentError


def import_tensorflow():
    """Import TensorFlow with the Keras 2 API the saved model was written with."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import tf_keras
    except ImportError:
        raise EdgeAgentError(
            "this needs TensorFlow: install the model extra, e.g. `pip install -e '.[model]'`"
        ) from None
    return tf, tf_keras


def load_keras_model(path, threads=None):
    """Load the float model; ``threads`` caps TensorFlow's threads, for fair timing."""
    path = Path(path)
    if not path.is_file():
        raise EdgeAgentError(f"Keras model file {path} does not exist")
    tf, tf_keras = import_tensorflow()
    if threads:
        # Only possible before TensorFlow's first operation in this process.
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    try:
        return tf_keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as exc:
        raise EdgeAgentError(f"Keras model file {path} cannot be loaded: {exc}") from None


def model_inputs(model, images):
    """Resize gray uint8 faces to the model's input and scale them: float32 [N, H, W, 1]."""
    height, width = model.input_shape[1:3]
    resized = np.stack([resize_face(image, (width, height)) for image in images])
    return pixel_to_model_input(resized)[..., None]


def predict_probabilities(model, images, batch_size=256):
    return model.predict(model_inputs(model, images), batch_size=batch_size, verbose=0)


def predict_as_deployed(model, images, read_out: ReadOut, flip_average: bool):
    """The float model's probabilities read as the classifier reads its int8 twin: the read-out's
    inset, mirroring and bias, so that the two differ by quantization alone."""
    inset = [inset_crop(image, read_out.inset) for image in images]
    probs = predict_probabilities(model, inset)
    if flip_average:
        probs = (probs + predict_probabilities(model, [image[:, ::-1] for image in inset])) / 2
    return apply_log_bias(probs, read_out.log_bias) if read_out.biased else probs
