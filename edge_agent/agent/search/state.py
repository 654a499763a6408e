"""The state file: what the search learned (face positions and sizes), kept across restarts.

``face_search.json`` holds the fingerprint it was learned under (this ``FORMAT``, the frame size,
the camera source and the detector's settings), how many whole-frame searches it learned from,
the observations (centre x, centre y, width of each face found by a whole-frame search, to 0.1 px)
and, for people and ``edge-agent check``, the bands planned from them.

Invariants:
- A file is used only when its fingerprint is the one asked for; a file from another format,
  frame size, camera or detector setting, or a damaged one, is discarded with a warning and
  relearned, never trusted, never raised.
- It holds face positions and sizes only: never pixels, seats, times or labels.
- It is replaced atomically (written beside it, then renamed over it); a failure to write it is
  logged and the caller goes on from memory.
- :func:`read_state` and :func:`describe_state` only read, so they are safe beside a running agent.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..faces import FaceDetector
from .bands import Band, Plan

# The package's logger: the search's lines carry one name, whichever of its modules writes them.
log = logging.getLogger(__package__)

FORMAT = 1


def fingerprint(frame_size: Sequence[int] | None, camera: str, detector: FaceDetector) -> dict:
    """What a state file must have been learned with to be used for these frames."""
    return {"format": FORMAT, "frame": list(frame_size or ()), "camera": camera,
            "detector": {"cascade": detector.path.name, "scale_factor": detector.scale_factor,
                         "min_neighbors": detector.min_neighbors, "min_size": detector.min_size}}


def load_state(path: Path | None, wanted: dict) -> dict | None:
    """The state at ``path`` when it is sound and was learned with ``wanted`` (:func:`fingerprint`),
    else None (and a warning unless there is no file)."""
    if path is None or not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        observations = np.asarray(state["observations"], dtype=np.float64)
        if observations.size and (observations.ndim != 2 or observations.shape[1] != 3):
            raise ValueError("observations are not (x, y, width) triples")
        int(state["learned_frames"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("face search: %s is damaged (%s); discarding it and learning again", path, exc)
        return None
    differs = [key for key in wanted if state.get(key) != wanted[key]]
    if differs:
        log.warning("face search: %s was learned with another %s (%s, now %s); discarding it and learning "
                    "again", path, " and ".join(differs),
                    ", ".join(str(state.get(k)) for k in differs), ", ".join(str(wanted[k]) for k in differs))
        return None
    return state


def write_state(path: Path, wanted: dict, learned_frames: int, observations: Iterable[Sequence[float]],
                plan: Plan | None) -> None:
    """Replace the state at ``path`` (through ``<name>.tmp``); a failure is logged, not raised."""
    state = {**wanted, "learned_frames": learned_frames,
             "observations": [[round(v, 1) for v in o] for o in observations],
             "bands": [asdict(b) for b in (plan.bands if plan else ())]}
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("face search: cannot write %s (%s); the bands stay in memory only", path, exc.strerror or exc)


def read_state(path: Path) -> tuple[list[int], Plan, int, str]:
    """(frame size, bands, faces learned from, camera) of a state file, read only.

    Raises FileNotFoundError when there is none, ValueError when it is damaged.
    """
    try:
        state = json.loads(Path(path).read_text())
        plan = Plan(tuple(Band(**band) for band in state["bands"]))
        return [int(v) for v in state["frame"]], plan, len(state["observations"]), str(state.get("camera"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is damaged ({exc})") from None


def describe_state(path: Path) -> str:
    """What a state file says, for ``edge-agent check``; read-only, safe beside a running agent."""
    try:
        frame, plan, faces, camera = read_state(path)
    except FileNotFoundError:
        return f"{path}: nothing learned yet (the agent learns its bands in its first minutes)"
    except ValueError as exc:
        return f"{exc}; the agent will discard it and learn again"
    return f"{path}: learned from {faces} faces at {'x'.join(map(str, frame))} from {camera}: {plan.describe()}"
