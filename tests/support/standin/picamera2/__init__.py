"""A stand-in for picamera2, which only installs on Raspberry Pi OS (apt: python3-picamera2).

It follows the parts of picamera2's API the agent uses, as picamera2 documents and implements
them (picamera2/picamera2.py, 0.3.x): ``Picamera2(camera_num=0)``, ``global_camera_info()``,
``create_video_configuration(main={"size": ..., "format": ...})``, ``configure``, ``start``,
``capture_array``, ``stop``, ``close`` and the context manager, including how it fails:

- no camera, or one another process holds: ``Picamera2()`` raises
  ``RuntimeError("Camera __init__ sequence did not complete.")`` either way (picamera2 wraps
  every failure of its init in that one message, after logging the cause);
- a stream key other than format and size: ``ValueError``; an odd width or height, or an
  unknown format: ``RuntimeError`` from ``configure``; configuring a started camera:
  ``RuntimeError("Camera must be stopped before configuring")``;
- ``close()`` stops a started camera and releases it for the next ``Picamera2()``; closing a
  closed camera does nothing.

Pixel formats keep libcamera's naming, which reads backwards: "RGB888" is blue, green, red in
memory (what OpenCV calls BGR), "BGR888" is red, green, blue, and the 32-bit formats carry a
fourth byte. Frames are the ``image`` (a BGR uint8 array, resized to the configured size).

What it does not model: libcamera itself, real sensors and their modes, frame timing, and the
system packages picamera2 imports (numpy, simplejpeg, av) that a Pi's apt installs.

Tests set ``STANDIN`` directly; a separate process reads it from the PICAMERA2_STANDIN
environment variable (JSON with the same keys).
"""

import json
import logging
import os

import numpy as np

_log = logging.getLogger(__name__)

STANDIN = {
    "cameras": [{"Model": "imx708", "Location": 2, "Rotation": 0, "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a"}],
    # Camera numbers another process holds.
    "busy": [],
    # Path of a picture the camera sees (BGR, any size); None: a gray ramp.
    "image": None,
    # Frames delivered before capture_array fails as a camera does when its cable comes loose;
    # None: no end.
    "frames": None,
}
STANDIN.update(json.loads(os.environ.get("PICAMERA2_STANDIN", "{}")))

_acquired = set()
_FORMATS = {"RGB888": 3, "BGR888": 3, "XRGB8888": 4, "XBGR8888": 4, "YUV420": 1}


def _scene(width, height):
    if STANDIN["image"] is None:
        ramp = np.linspace(0, 255, width, dtype=np.uint8)
        return np.repeat(np.tile(ramp, (height, 1))[:, :, None], 3, axis=2)
    import cv2

    image = cv2.imread(os.fspath(STANDIN["image"]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


class Picamera2:
    @staticmethod
    def global_camera_info():
        return [dict(camera, Num=number) for number, camera in enumerate(STANDIN["cameras"])]

    def __init__(self, camera_num=0, tuning=None):
        self.camera_idx = camera_num
        self.is_open = False
        self.started = False
        self.camera_config = None
        self.frames = 0
        try:
            if not STANDIN["cameras"]:
                raise RuntimeError("Camera(s) not found (Do not forget to disable legacy camera with raspi-config).")
            if camera_num >= len(STANDIN["cameras"]):
                raise IndexError("list index out of range")
            if camera_num in STANDIN["busy"] or camera_num in _acquired:
                raise RuntimeError("Failed to acquire camera: Device or resource busy")
        except Exception as exc:
            _log.error("Camera __init__ sequence did not complete. (%s)", exc)
            raise RuntimeError("Camera __init__ sequence did not complete.") from None
        _acquired.add(camera_num)
        self.is_open = True

    def create_video_configuration(self, main=None, lores=None, buffer_count=6, controls=None):
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        stream = {"format": "XBGR8888", "size": (1280, 720)}
        for key, value in (main or {}).items():
            if key not in ("format", "size"):
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are ('format', 'size')")
            stream[key] = value
        return {"use_case": "video", "main": stream, "lores": lores, "buffer_count": buffer_count,
                "controls": controls or {}}

    def configure(self, camera_config=None):
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        main = camera_config["main"]
        if main["format"] not in _FORMATS:
            raise RuntimeError(f"Bad format {main['format']} in stream main")
        size = main["size"]
        if type(size) is not tuple or len(size) != 2:
            raise RuntimeError("size in main stream should be (width, height)")
        if size[0] % 2 or size[1] % 2:
            raise RuntimeError("width and height should be even")
        self.camera_config = camera_config

    def start(self, config=None, show_preview=False):
        if config is not None:
            self.configure(config)
        if self.camera_config is None:
            self.configure(self.create_video_configuration())
        self.started = True

    def capture_array(self, name="main", wait=None, signal_function=None):
        if not self.started:
            raise RuntimeError("Camera is not running")
        if STANDIN["frames"] is not None and self.frames >= STANDIN["frames"]:
            raise TimeoutError("frame request timed out")
        self.frames += 1
        stream = self.camera_config[name]
        (width, height), pixel_format = stream["size"], stream["format"]
        bgr = _scene(width, height)
        if pixel_format == "YUV420":
            import cv2

            return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
        pixels = bgr if pixel_format.startswith("RGB") or pixel_format.startswith("XRGB") else bgr[:, :, ::-1]
        if _FORMATS[pixel_format] == 4:
            pixels = np.dstack([pixels, np.full((height, width), 255, np.uint8)])
        return np.ascontiguousarray(pixels)

    def stop(self):
        self.started = False

    def close(self):
        if not self.is_open:
            return
        self.stop()
        _acquired.discard(self.camera_idx)
        self.is_open = False
        self.camera_config = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
