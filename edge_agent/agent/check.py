"""``edge-agent check``: what IT runs after setup, a verdict for each part the agent needs.

With ``--snapshot FILE`` it also draws the one frame the camera check read, with the faces the
configured detector and model find in it, into FILE (see :mod:`edge_agent.agent.snapshot`); the
frame is otherwise dropped as soon as its size is known.
"""

import sys
from pathlib import Path
from typing import TextIO

from ..common.check import print_verdicts, run_checks
from ..common.errors import EdgeAgentError
from ..common.mqtt import probe_broker
from .capture import CaptureError, Frame, open_source
from .config import load_config
from .emotions import EmotionClassifier
from .faces import FaceDetector, Scan
from .outbox import Outbox
from .pipeline import FramePipeline, search_state_path
from .search import describe_state, reach_for
from .snapshot import draw_snapshot, encode, search_bands, writable_target, write_private


def _config(path):
    config = load_config(path)
    device = config.device
    return config, f"{path}: device {device.id} in {device.site}/{device.room}"


def _model(config):
    classifier = EmotionClassifier(config.classifier.model, num_threads=config.classifier.threads,
                                   flip_average=config.classifier.flip_average)
    FaceDetector.from_config(config.detector)
    return f"{classifier.tag} on {classifier.runtime}; cascade {config.detector.cascade.name}"


def _read_frame(config) -> tuple[str, Frame]:
    """The camera's name and one frame from it."""
    camera = config.camera
    source = open_source(camera.backend, camera.source, width=camera.width, height=camera.height)
    with source:
        frame = source.read()
    if frame is None:
        raise CaptureError(f"{source.name} opened but gave no frame")
    return source.name, frame


def _outbox(config):
    path = config.outbox.resolved_path()
    # Read-only where it exists: the agent beside us may be writing it, or its disk may be full.
    with Outbox(path, max_age_s=config.outbox.max_age_h * 3600, read_only=path.exists()) as outbox:
        return f"{path}: {outbox.depth} window(s) waiting, next seq {outbox.next_seq}"


def _search(config):
    small = f"faces under {Scan(config.detector.scale_factor).every_pixel_px:.0f} px"
    scan = (f"{small} scanned at every pixel (detector.fine_scan)" if config.detector.fine_scan
            else f"{small} scanned at every other pixel (detector.fine_scan: false)")
    return f"{_where(config)}; {scan}"


def _where(config):
    search = config.detector.search
    if search.mode == "whole":
        return "every frame searched whole (detector.search.mode: whole)"
    if search.mode == "bands":
        return f"{len(search.bands)} hand-set band(s)"
    learned = describe_state(search_state_path(config))
    if not search.seats:
        return f"{learned}; between whole frames (one in {search.full_every}) the bands"
    reach = reach_for(Scan(fine=config.detector.fine_scan), search.seat_reach)
    return (f"{learned}; between whole frames (one in {search.full_every}) the seats: each face found in the last "
            f"{search.seat_frames} frames, searched {reach:g} face widths around it (the bands when there are none)")


def _broker(config):
    return probe_broker(config.mqtt, client_id=f"{config.device.id}-check")


def _snapshot(config, frame: Frame | None, path: Path, err: TextIO) -> str:
    if frame is None:
        raise EdgeAgentError(f"{path} not written: the camera gave no frame")
    # keep_state=False: one frame must neither read as learning nor overwrite what the agent learned.
    pipeline = FramePipeline.from_config(config, keep_state=False)
    result = pipeline.process(frame)
    height, width = frame.image.shape[:2]
    bands, about_bands = search_bands(config, pipeline, width, height)
    drawn = draw_snapshot(frame.image, result, pipeline.detector, bands)
    write_private(path, encode(drawn, path), "snapshot")
    print(f"edge-agent: {path} shows one frame of the camera with {len(result.faces)} face(s) boxed and "
          "labelled: pictures of people. Nothing else keeps or sends it; it is yours to delete.", file=err)
    labels = ", ".join(f"{label} {result.labels.count(label)}" for label in dict.fromkeys(result.labels))
    return f"{path}: {len(result.faces)} face(s){' (' + labels + ')' if labels else ''}; {about_bands}"


def check(config_path: Path, out: TextIO, snapshot: Path | None = None, err: TextIO = sys.stderr) -> int:
    """Print a verdict for the config, model, camera, outbox and broker; 0 when all is well, else 1.

    With ``snapshot``, the camera's frame is also drawn with its faces into that file (checked
    writable first: an EdgeAgentError, exit status 2, before anything is read).
    """
    if snapshot is not None:
        snapshot = writable_target(snapshot, "snapshot")
    frames = []

    def camera(config):
        name, frame = _read_frame(config)
        if snapshot is not None:
            frames.append(frame)
        height, width = frame.image.shape[:2]
        return f"{name}: {width}x{height} frames"

    parts = [("model", _model), ("camera", camera), ("search", _search), ("outbox", _outbox), ("broker", _broker)]
    if snapshot is not None:
        parts.append(("picture", lambda config: _snapshot(config, frames[0] if frames else None, snapshot, err)))
    return print_verdicts(run_checks(lambda: _config(config_path), parts), out)
