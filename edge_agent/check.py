"""``edge-agent check``: what IT runs after setup, a verdict for each part the agent needs."""

from .capture import CaptureError, open_source
from .config import ConfigError, load_config
from .emotions import EmotionClassifier
from .errors import EdgeAgentError
from .faces import FaceDetector
from .mqtt import probe_broker
from .outbox import Outbox


def _config(path):
    config = load_config(path)
    device = config.device
    return config, f"{path}: device {device.id} in {device.site}/{device.room}"


def _model(config):
    classifier = EmotionClassifier(config.classifier.model, num_threads=config.classifier.threads)
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
    with Outbox(path, max_age_s=config.outbox.max_age_h * 3600) as outbox:
        return f"{path}: {outbox.depth} window(s) waiting, next seq {outbox.next_seq}"


def _broker(config):
    return probe_broker(config.mqtt, client_id=f"{config.device.id}-check")


def run_checks(config_path):
    """Yield ``(part, ok, detail)`` for the config, model, camera, outbox and broker."""
    try:
        config, detail = _config(config_path)
    except ConfigError as exc:
        yield "config", False, str(exc)
        return
    yield "config", True, detail
    for part, check in (("model", _model), ("camera", _camera), ("outbox", _outbox), ("broker", _broker)):
        try:
            yield part, True, check(config)
        except EdgeAgentError as exc:
            yield part, False, str(exc)


def check(config_path, out):
    return print_verdicts(run_checks(config_path), out)


def print_verdicts(results, out):
    """Print each ``(part, ok, detail)`` as it comes; 0 when every part is fine, 1 otherwise."""
    failed = 0
    for part, ok, detail in results:
        failed += not ok
        print(f"{part:<7} {'ok' if ok else 'FAIL':<5} {detail}", file=out, flush=True)
    print("all good" if not failed else f"{failed} problem(s) found", file=out)
    return 1 if failed else 0
