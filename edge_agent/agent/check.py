"""``edge-agent check``: what IT runs after setup, a verdict for each part the agent needs."""

from ..common.check import print_verdicts, run_checks
from ..common.mqtt import probe_broker
from .capture import CaptureError, open_source
from .config import load_config
from .emotions import EmotionClassifier
from .faces import FaceDetector
from .outbox import Outbox


def _config(path):
    config = load_config(path)
    device = config.device
    return config, f"{path}: device {device.id} in {device.site}/{device.room}"


def _model(config):
    classifier = EmotionClassifier(config.classifier.model, num_threads=config.classifier.threads,
                                   flip_average=config.classifier.flip_average)
    FaceDetector.from_config(config.detector)
    return f"{classifier.tag} on {classifier.runtime}; cascade {config.detector.cascade.name}"


def _camera(config):
    camera = config.camera
    source = open_source(camera.backend, camera.source, width=camera.width, height=camera.height)
    with source:
        frame = source.read()
    if frame is None:
        raise CaptureError(f"{source.name} opened but gave no frame")
    height, width = frame.image.shape[:2]
    return f"{source.name}: {width}x{height} frames"


def _outbox(config):
    path = config.outbox.resolved_path()
    # Read-only where it exists: the agent beside us may be writing it, or its disk may be full.
    with Outbox(path, max_age_s=config.outbox.max_age_h * 3600, read_only=path.exists()) as outbox:
        return f"{path}: {outbox.depth} window(s) waiting, next seq {outbox.next_seq}"


def _broker(config):
    return probe_broker(config.mqtt, client_id=f"{config.device.id}-check")


PARTS = (("model", _model), ("camera", _camera), ("outbox", _outbox), ("broker", _broker))


def check(config_path, out) -> int:
    """Print a verdict for the config, model, camera, outbox and broker; 0 when all is well, else 1."""
    return print_verdicts(run_checks(lambda: _config(config_path), PARTS), out)
