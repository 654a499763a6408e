"""Frames from a camera, a network stream or a video file.

Frames stay in memory: nothing here writes an image anywhere.
"""

import logging
import math
import os
import re
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from ..common.errors import EdgeAgentError
from .sources import source_kind

log = logging.getLogger(__name__)

PICAMERA2_MISSING = (
    "picamera2 is not installed: on Raspberry Pi OS install python3-picamera2 with apt and create "
    "the venv with --system-site-packages; elsewhere use an OpenCV source (camera.source)"
)

# Broken files report an fps of 0 or NaN; this is the common rate of such recordings.
FALLBACK_FPS = 25.0

# Network reads that hang would freeze capture: FFmpeg gives up after this long.
STREAM_TIMEOUT_MS = 10_000

# Timestamps near 1.7e9 s carry float rounding of ~1e-7 s, and a 30 fps video's 30th
# frame lands a hair before its whole second: sampling forgives this much.
_SAMPLE_SLACK_S = 1e-4

class CaptureError(EdgeAgentError):
    """A source that cannot be opened or has stopped delivering frames."""


@dataclass(frozen=True, eq=False)
class Frame:
    image: np.ndarray  # BGR uint8, height x width x 3
    t: float  # seconds since the Unix epoch (UTC) at which the frame was taken
    index: int  # frame number within the source, from 0, rising across loops and reopens


class FrameSource(ABC):
    """Where frames come from. Use as a context manager, or call open() and close()."""

    name: str
    # True when read() returning None means the source is finished (a file played once),
    # not that it failed.
    finite = False

    @abstractmethod
    def open(self) -> None:
        """Start delivering frames; raise CaptureError naming the source and the problem."""

    @abstractmethod
    def read(self) -> Frame | None:
        """The next frame, or None at the end of a finite source; CaptureError on failure."""

    @abstractmethod
    def close(self) -> None:
        """Release the device or file; safe to call more than once."""

    def grab(self) -> float | None:
        """Advance to the next frame and return its time (None at the end); retrieve() hands it out.

        Sources that can skip the pixel work for frames nobody wants override both.
        """
        self._grabbed = self.read()
        return None if self._grabbed is None else self._grabbed.t

    def retrieve(self) -> Frame:
        """The frame the last grab() advanced to."""
        if self._grabbed is None:
            raise CaptureError(f"{self.name}: retrieve() called with no frame grabbed")
        return self._grabbed

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()


def mask_password(url):
    """The URL with any password replaced by ***, fit for logs and messages."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _to_bgr(image):
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


class OpenCVSource(FrameSource):
    """A camera device, a network stream or a video file, read with OpenCV.

    ``source``: a camera index (int or digit string), a ``/dev/video*`` path, a URL
    (``rtsp://``, ``http://``...) or a file path. ``loop`` and ``realtime`` apply to files;
    ``width`` and ``height`` to cameras. File frames carry ``start_time`` plus the video's
    own timestamps; ``start_time`` defaults to now for realtime playback and to the
    recording's start (modification time minus duration) otherwise.
    """

    def __init__(self, source, *, loop=False, width=None, height=None, realtime=None,
                 start_time=None, clock=time.time):
        self.loop = loop
        self.realtime = loop if realtime is None else realtime
        self.width, self.height = width, height
        self.start_time = start_time
        self._clock = clock
        self._kind, self._target, self.name = self._classify(source)
        self.finite = self._kind == "file" and not loop
        # Files only, known once open: the recording's rate (FALLBACK_FPS when it does not say)
        # and frame count (None when it does not say).
        self.fps = None
        self.frame_count = None
        self._cap = None
        self._index = -1

    @staticmethod
    def _classify(source):
        """(kind, what to hand to OpenCV, readable name) for a camera, a stream or a file."""
        if isinstance(source, int):
            return "camera", source, f"camera {source}"
        kind, text = source_kind(source), os.fspath(source)
        if kind == "camera" and text.isdigit():
            return "camera", int(text), f"camera {text}"
        if kind == "camera":
            # V4L2 opens by index far more reliably than by path; by-id links resolve to one.
            match = re.fullmatch(r"/dev/video(\d+)", os.path.realpath(text))
            return "camera", int(match.group(1)) if match else text, text
        if kind == "stream":
            return "stream", text, mask_password(text)
        # "picamera2" given to the OpenCV backend is a file name too; opening it says it does not exist.
        return "file", text, f"file {text}"

    def open(self):
        self.close()
        if self._kind == "file":
            self._open_file()
            return
        if self._kind == "camera":
            api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
            cap = cv2.VideoCapture(self._target, api)
            why = ("no such device, no permission (is the user in the video group?), "
                   "or another program is using it")
        else:
            cap = cv2.VideoCapture(self._target, cv2.CAP_FFMPEG, [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
            ])
            why = "unreachable, wrong address or credentials, or a format OpenCV cannot read"
        if not cap.isOpened():
            raise CaptureError(f"cannot open {self.name}: {why}")
        if self._kind == "camera":
            if self.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            if self.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        self._cap = cap

    def _open_file(self):
        path = self._target
        if not os.path.isfile(path):
            raise CaptureError(f"video file {path} does not exist")
        if not os.access(path, os.R_OK):
            raise CaptureError(f"video file {path} is not readable (permission denied)")
        if os.path.getsize(path) == 0:
            raise CaptureError(f"video file {path} is empty")
        cap = cv2.VideoCapture(path)
        # Some containers open fine and then decode nothing: only a first frame proves it works.
        if not cap.isOpened() or not cap.grab():
            cap.release()
            raise CaptureError(
                f"video file {path} cannot be decoded by OpenCV (not a video, or a codec this build lacks)"
            )
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if math.isfinite(fps) and fps > 0 else FALLBACK_FPS
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if math.isfinite(count) and count > 0 else None
        if self.start_time is not None:
            self._t0 = self.start_time
        elif self.realtime:
            self._t0 = self._clock()
        else:
            duration = self.frame_count / self.fps if self.frame_count else 0.0
            self._t0 = os.path.getmtime(path) - duration
        self._cap = cap
        self._first_grabbed = True
        self._loop_offset = 0.0
        self._pass_t = None
        self._pace_origin = None

    def close(self):
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def read(self):
        return None if self.grab() is None else self.retrieve()

    def grab(self):
        """Advance to the next frame without converting its pixels; its time, or None at the end."""
        if self._cap is None:
            raise CaptureError(f"{self.name} is not open")
        try:
            if self._kind != "file":
                if not self._cap.grab():
                    raise CaptureError(f"{self.name} delivered no frame (unplugged, or stopped sending)")
                self._t = self._clock()
            elif not self._grab_file():
                return None
        except cv2.error as exc:
            raise CaptureError(f"{self.name} failed: {exc}") from None
        self._index += 1
        return self._t

    def _grab_file(self):
        if self._first_grabbed:  # open() already grabbed frame 0 to check the file
            self._first_grabbed = False
        elif not self._cap.grab():
            if not self.loop:
                return False
            self._rewind()
        pos = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000
        # Broken files and some backends repeat or zero the position: keep time rising.
        if self._pass_t is not None and not pos > self._pass_t:
            pos = self._pass_t + 1 / self.fps
        self._pass_t = pos
        video_t = self._loop_offset + pos
        self._t = self._t0 + video_t
        if self.realtime:
            self._pace(video_t)
        return True

    def _rewind(self):
        # The pass lasted until one frame period after its last frame.
        self._loop_offset += self._pass_t + 1 / self.fps
        self._pass_t = None
        if self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0) and self._cap.grab():
            return
        # Some containers cannot seek; a fresh open always starts at frame 0.
        self._cap.release()
        self._cap = cv2.VideoCapture(self._target)
        if not self._cap.grab():
            raise CaptureError(f"{self.name} yields no frames after rewinding to loop it")

    def _pace(self, video_t):
        now = time.monotonic()
        # After a long pause (a slow consumer), restart the clock rather than burst to catch up.
        if self._pace_origin is None or now - (self._pace_origin + video_t) > 1.0:
            self._pace_origin = now - video_t
        delay = self._pace_origin + video_t - now
        if delay > 0:
            time.sleep(delay)

    def retrieve(self):
        ok, image = self._cap.retrieve()
        if not ok or image is None:
            raise CaptureError(f"{self.name}: frame {self._index} could not be decoded")
        return Frame(_to_bgr(image), self._t, self._index)


class Picamera2Source(FrameSource):
    """The Raspberry Pi camera through picamera2 (libcamera)."""

    def __init__(self, *, width=1280, height=720, clock=time.time):
        self.name = "Raspberry Pi camera (picamera2)"
        self.width, self.height = width, height
        self._clock = clock
        self._camera = None
        self._index = -1

    def open(self):
        self.close()
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise CaptureError(PICAMERA2_MISSING) from None
        # libcamera reports a missing or busy camera with assorted exception types.
        try:
            camera = Picamera2()
        except Exception as exc:
            raise CaptureError(f"cannot open the {self.name}: {self._why_not_opened(Picamera2, exc)}") from None
        try:
            # "RGB888" is picamera2's name for BGR byte order, what OpenCV expects.
            size = (self.width, self.height)
            camera.configure(camera.create_video_configuration(main={"size": size, "format": "RGB888"}))
            camera.start()
        except Exception as exc:
            camera.close()
            raise CaptureError(f"cannot start the {self.name} at {self.width}x{self.height}: {exc}") from None
        self._camera = camera

    @staticmethod
    def _why_not_opened(picamera2, exc):
        """What to tell the user: picamera2 0.3 wraps a missing and a busy camera alike in "Camera
        __init__ sequence did not complete.", so libcamera's list of cameras tells them apart."""
        try:
            cameras = picamera2.global_camera_info()
        except Exception:
            return str(exc) or type(exc).__name__
        if not cameras:
            return ("libcamera finds no camera (is the ribbon cable seated, the right way round, "
                    "and the camera detected: rpicam-hello --list-cameras?)")
        return (f"libcamera lists {len(cameras)} camera(s) but cannot open the first: another program "
                f"(or a running agent, when this is check) is using it ({exc})")

    def read(self):
        if self._camera is None:
            raise CaptureError(f"{self.name} is not open")
        try:
            image = self._camera.capture_array()
        except Exception as exc:
            raise CaptureError(f"{self.name} stopped delivering frames: {exc}") from None
        self._index += 1
        return Frame(image, self._clock(), self._index)

    def close(self):
        if self._camera is not None:
            camera, self._camera = self._camera, None
            camera.close()


def open_source(backend, source, *, loop=False, width=None, height=None):
    """An unopened source: backend "opencv", "picamera2", or "auto" (picamera2 when source is "picamera2")."""
    if backend == "auto":
        backend = "picamera2" if source == "picamera2" else "opencv"
    if backend == "picamera2":
        size = {key: value for key, value in (("width", width), ("height", height)) if value}
        return Picamera2Source(**size)
    if backend == "opencv":
        return OpenCVSource(source, loop=loop, width=width, height=height)
    raise CaptureError(f"unknown capture backend {backend!r}: expected auto, opencv or picamera2")


def sample_frames(source, fps):
    """Yield frames of an open offline source at least 1/fps seconds apart in its own time (fps 0: all)."""
    interval = 1.0 / fps if fps > 0 else 0.0
    due = None
    while (t := source.grab()) is not None:
        if due is not None and t < due - _SAMPLE_SLACK_S:
            continue
        # Due times keep to a fixed grid, so the sampled rate does not sag by up to a frame
        # period each time; a source slower than the rate yields every frame.
        due = t + interval if due is None else max(due + interval, t)
        yield source.retrieve()


class LatestFrameGrabber:
    """Reads a live source in its own thread and keeps only the newest frame.

    A slow consumer drops frames instead of queueing them. A source that fails is closed
    and reopened with exponential backoff. States: starting, running, stalled, reopening,
    ended (a file played to its end), stopped. ``on_state(state, reason)`` is called from
    the grabber's threads on each change, so it must be quick.
    """

    def __init__(self, source, *, stall_s=10.0, backoff_s=1.0, backoff_max_s=60.0, on_state=None):
        self.source = source
        self.stall_s = stall_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._on_state = on_state
        # Condition's default lock is an RLock: state changes happen inside sections that hold it.
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._state, self._reason = "starting", None
        self._last_error = None
        self._latest = None
        self._fresh = False  # the newest frame has not been handed out yet
        self._frames_read = 0
        self._frames_dropped = 0
        self._last_frame_monotonic = None
        self._reading_since = None
        self._reader = None

    @property
    def state(self):
        return self._state

    @property
    def last_error(self):
        """The readable reason of the last failure."""
        return self._last_error

    @property
    def frames_read(self):
        return self._frames_read

    @property
    def frames_dropped(self):
        """Frames read but replaced by a newer one before anyone took them."""
        return self._frames_dropped

    @property
    def last_frame_monotonic(self):
        """time.monotonic() of the newest frame, for watchdogs."""
        return self._last_frame_monotonic

    def start(self):
        if self._reader is not None:
            raise RuntimeError("a LatestFrameGrabber starts only once")
        self._reader = threading.Thread(target=self._run, name=f"capture {self.source.name}", daemon=True)
        self._reader.start()
        threading.Thread(target=self._watch, name=f"capture watchdog {self.source.name}", daemon=True).start()

    def stop(self, timeout=5):
        """Stop reading and close the source."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._reader is None:
            self.source.close()
        else:
            self._reader.join(timeout)
            if self._reader.is_alive():
                # Closing under a read in progress is unsafe: the thread closes it when the read returns.
                log.warning("%s: a read is still blocked after %s s; the source closes when it returns",
                            self.source.name, timeout)
        self._set_state("stopped")

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def next_frame(self, after_index=None, timeout=None):
        """The newest frame not yet handed out (and newer than ``after_index``), waiting up to
        ``timeout`` seconds; None on timeout, once stopped, or once an ended source is drained."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._state != "stopped":
                frame = self._latest
                if self._fresh and (after_index is None or frame.index > after_index):
                    self._fresh = False
                    return frame
                if self._state == "ended":
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return None

    def _set_state(self, state, reason=None):
        with self._cond:
            if (state, reason) == (self._state, self._reason) or self._state == "stopped":
                return
            self._state, self._reason = state, reason
            if reason:
                self._last_error = reason
                log.warning("%s: %s (%s)", self.source.name, state, reason)
            else:
                log.info("%s: %s", self.source.name, state)
            self._cond.notify_all()
            if self._on_state is not None:
                try:
                    self._on_state(state, reason)
                except Exception:
                    log.exception("on_state callback failed")

    def _run(self):
        self._backoff = self.backoff_s
        try:
            while not self._stop.is_set():
                try:
                    self.source.open()
                    self._read_frames()
                    return
                except Exception as exc:
                    # Only CaptureError is expected; log anything else in full, but retry all the
                    # same, since a capture thread that dies leaves the device silently blind.
                    if not isinstance(exc, CaptureError):
                        log.exception("%s failed", self.source.name)
                    reason = str(exc) or type(exc).__name__
                self.source.close()
                if self._stop.is_set():
                    return
                self._set_state("reopening", reason)
                if self._stop.wait(self._backoff):
                    return
                self._backoff = min(self._backoff * 2, self.backoff_max_s)
        finally:
            self.source.close()

    def _read_frames(self):
        """Hand frames over until stopped or a finite source ends; raise on failure."""
        while not self._stop.is_set():
            with self._cond:
                self._reading_since = time.monotonic()
            try:
                frame = self.source.read()
            finally:
                with self._cond:
                    self._reading_since = None
            if frame is None:
                if self.source.finite:
                    self._set_state("ended")
                    return
                raise CaptureError(f"{self.source.name} delivered no frame")
            self._backoff = self.backoff_s
            with self._cond:
                if self._fresh:
                    self._frames_dropped += 1
                self._latest, self._fresh = frame, True
                self._frames_read += 1
                self._last_frame_monotonic = time.monotonic()
                self._cond.notify_all()
                self._set_state("running")

    def _watch(self):
        """Mark the grabber stalled while a read has been blocked for longer than stall_s.

        A blocked OpenCV read cannot be interrupted safely from another thread; backends time
        out eventually (V4L2, FFmpeg), and the service watchdog sees last_frame_monotonic.
        """
        period = min(1.0, self.stall_s / 4)
        while self._reader.is_alive() and not self._stop.wait(period):
            with self._cond:
                since = self._reading_since
                if since is not None and time.monotonic() - since > self.stall_s:
                    self._set_state("stalled", f"no frame from {self.source.name} for {self.stall_s:g} s")
