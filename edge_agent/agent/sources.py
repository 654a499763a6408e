"""What a ``camera.source`` names: the Pi camera, a camera device, a network stream or a file.

One answer for the config (which makes file paths relative to the config file) and for capture
(which opens each kind its own way). Needs no OpenCV, so validating a config stays cheap.
"""

import os
import re

# A URL scheme: rtsp://, http://, https://, udp://...
_URL = re.compile(r"[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def source_kind(source: int | str | os.PathLike) -> str:
    """``"picamera2"``, ``"camera"`` (an index, a digit string or a /dev/ path), ``"stream"`` (a URL) or ``"file"``."""
    if isinstance(source, int):
        return "camera"
    text = os.fspath(source)
    if text == "picamera2":
        return "picamera2"
    if text.isdigit() or text.startswith("/dev/"):
        return "camera"
    if _URL.match(text):
        return "stream"
    return "file"
