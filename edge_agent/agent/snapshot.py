"""``edge-agent check --snapshot``: one camera frame with each face found boxed and labelled.

What IT looks at when it mounts a camera: which faces the configured detector finds, what the
model calls them, how small a face may be before a whole-frame search misses it (the back rows),
and the bands of rows and face sizes the agent searches between whole frames (hand-set, or as
learned in its state file).

Invariants:
- A snapshot is written only by ``check --snapshot``, only to the path its user named, and with
  mode 0600 whatever was there before (it shows people's faces); the running agent never calls
  this module.
- A symbolic link at the path is refused, never followed: in a shared directory such as /tmp
  another user could point it at a file of theirs, or at one of the victim's own files.
- The path is checked before the camera is read: a path that cannot be written ends the command
  with exit status 2 and nothing written anywhere.
- The faces are found as the agent finds them on a whole frame (or through hand-set bands), by a
  search that keeps nothing: the agent's learned state is read, never written.
"""

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ..common.charts import EMOTION_COLORS
from ..common.errors import EdgeAgentError
from .faces import CASCADE_WINDOW, FaceDetector
from .pipeline import FramePipeline, FrameResult, search_state_path
from .search import Band, LearnedSearch, read_state

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Cyan: no emotion's colour, so a band is never mistaken for a face's box.
BAND_COLOUR = (255, 255, 0)


def _symlink_error(path: Path, what: str) -> EdgeAgentError:
    return EdgeAgentError(f"{what} {path} is a symbolic link, which is never followed: "
                          "remove it or name another file")


def writable_target(path: Path, what: str, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> Path:
    """``path`` if a file can be written there, else an error naming it and why (exit status 2).

    Checked before any work, so a mistyped path costs nothing and leaves nothing behind.
    """
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise EdgeAgentError(f"{what} {path}: name it {' or '.join(suffixes)}, the formats it is written in")
    if path.is_symlink():
        raise _symlink_error(path, what)
    if path.is_dir():
        raise EdgeAgentError(f"{what} {path} is a directory; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise EdgeAgentError(f"{what} {path} cannot be written: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise EdgeAgentError(f"{what} {path} cannot be written: permission denied")
    return path


def write_private(path: Path, data: bytes, what: str) -> None:
    """Write ``data`` to ``path`` readable by its owner alone: the file shows faces.

    The bytes go to a new file that mkstemp makes in the same directory (O_EXCL, mode 0600 from
    its first byte, whatever mode an old file at ``path`` had), which then replaces ``path``:
    rename replaces a link planted after the check below, it never writes through it.
    """
    path = Path(path)
    if path.is_symlink():
        raise _symlink_error(path, what)
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise EdgeAgentError(f"{what} {path} cannot be written: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise EdgeAgentError(f"{what} {path} cannot be written: {exc.strerror or exc}") from None


def smallest_face(detector: FaceDetector, frame_width: int) -> int:
    """The narrowest face, in frame pixels, the detector searches this frame for."""
    return max(detector.min_size, round(CASCADE_WINDOW / detector.scale_for(frame_width)))


def _bgr(hex_colour: str) -> tuple[int, int, int]:
    red, green, blue = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return blue, green, red


def _text(image: np.ndarray, text: str, x: int, y: int, scale: float, colour: tuple[int, int, int]) -> None:
    """Text on a filled box, legible on any background; ``(x, y)`` is the box's bottom-left corner."""
    thickness = max(1, round(scale * 2))
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    y = max(y, height + baseline + 2)
    cv2.rectangle(image, (x, y - height - baseline - 2), (x + width + 4, y), colour, cv2.FILLED)
    cv2.putText(image, text, (x + 2, y - baseline), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness,
                cv2.LINE_AA)


def draw_snapshot(image: np.ndarray, result: FrameResult, detector: FaceDetector,
                  bands: tuple[Band, ...] = ()) -> np.ndarray:
    """A copy of the BGR frame with the search bands, each face's box and label, and the smallest
    face a whole-frame search looks for."""
    drawn = image.copy()
    height, width = drawn.shape[:2]
    scale = max(0.4, width / 1600)
    line = max(1, round(width / 640))
    for band in bands:
        right = min(width - 1, band.right)
        cv2.rectangle(drawn, (band.left, band.top), (right, band.bottom), BAND_COLOUR, line)
        _text(drawn, f"faces {band.min_face}-{band.max_face} px", band.left + line, band.bottom - line, scale * 0.8,
              BAND_COLOUR)
    for face in result.faces:
        x, y, w, h = face.box
        colour = _bgr(EMOTION_COLORS[face.label])
        cv2.rectangle(drawn, (x, y), (x + w, y + h), colour, line)
        _text(drawn, f"{face.label} {face.p:.2f}", x, y - line, scale, colour)
    # The square shows IT, at the frame's own scale, which faces are too small to be searched for.
    side = smallest_face(detector, width)
    corner = (8, 8 + round(30 * scale))
    cv2.rectangle(drawn, corner, (corner[0] + side, corner[1] + side), (255, 255, 255), line)
    _text(drawn, f"{len(result.faces)} face(s); a whole-frame search misses faces narrower than the square ({side} px)",
          8, corner[1] - 4, scale, (255, 255, 255))
    return drawn


def search_bands(config, pipeline: FramePipeline, width: int, height: int) -> tuple[tuple[Band, ...], str]:
    """The bands the agent searches between whole frames, for this frame size, and a line about them."""
    search = config.detector.search
    if search.mode == "whole":
        return (), "every frame searched whole"
    if search.mode == "bands":
        # Hand-set bands make the finder a LearnedSearch, planned at the frame the pipeline processed.
        finder = pipeline.finder
        bands = finder.plan.bands if isinstance(finder, LearnedSearch) and finder.plan is not None else ()
        return bands, f"{len(bands)} hand-set band(s)"
    path = search_state_path(config)
    try:
        frame, plan, _, _ = read_state(path)
    except FileNotFoundError:
        return (), f"no bands learned yet ({path} does not exist)"
    except ValueError as exc:
        return (), f"learned bands not drawn: {exc}"
    bands = plan.bands
    if frame != [width, height]:
        return (), f"learned bands not drawn: {path} is for {'x'.join(map(str, frame))} frames, not {width}x{height}"
    return bands, f"{len(bands)} band(s) learned in {path}"


def encode(image: np.ndarray, path: Path) -> bytes:
    """The image in the format ``path``'s suffix names."""
    ok, data = cv2.imencode(path.suffix.lower(), image)
    if not ok:
        raise EdgeAgentError(f"snapshot {path}: OpenCV could not encode the frame as {path.suffix}")
    return data.tobytes()
