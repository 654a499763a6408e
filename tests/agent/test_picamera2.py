"""Picamera2Source against a stand-in for picamera2 (tests/support/standin), which follows
picamera2's documented API and its failures: a Pi's own package cannot be installed here.

Proven: the calls the agent makes, in order, and what it does with their answers and errors:
frames in OpenCV's byte order at the configured size, a missing camera told from a busy one,
the camera released on every path, a camera that stops delivering reopened by the grabber, and
`edge-agent check`'s verdict. Not proven: libcamera, a real sensor, or picamera2's own system
packages on a Pi.
"""

import json
import os
import sys

import cv2
import numpy as np
import pytest

from edge_agent.agent.capture import CaptureError, LatestFrameGrabber, Picamera2Source, open_source
from edge_agent.agent.faces import FaceDetector
from support import CASCADE, DATA, REPO, free_port, run_cli

STANDIN_PATH = REPO / "tests" / "support" / "standin"
PHOTO = DATA / "justin.jpg"


@pytest.fixture
def standin(monkeypatch):
    """The stand-in imported as picamera2, reset for each test; its STANDIN dict steers it."""
    monkeypatch.syspath_prepend(str(STANDIN_PATH))
    import picamera2

    monkeypatch.setattr(picamera2, "STANDIN", {**picamera2.STANDIN, "image": str(PHOTO), "busy": [],
                                               "frames": None})
    monkeypatch.setattr(picamera2, "_acquired", set())
    yield picamera2.STANDIN
    # Later tests must find picamera2 missing again, as it is here.
    sys.modules.pop("picamera2", None)


def test_frames_arrive_in_opencvs_byte_order_at_the_configured_size(standin):
    expected = cv2.resize(cv2.imread(str(PHOTO)), (640, 480), interpolation=cv2.INTER_AREA)
    with Picamera2Source(width=640, height=480, clock=lambda: 1234.5) as source:
        frames = [source.read() for _ in range(3)]
    assert [frame.index for frame in frames] == [0, 1, 2]
    assert all(frame.t == 1234.5 for frame in frames)
    image = frames[0].image
    assert image.shape == (480, 640, 3) and image.dtype == np.uint8
    # Blue, green, red as OpenCV reads a file: the agent's gray conversion and detector see what they expect.
    assert np.array_equal(image, expected)
    faces = FaceDetector(CASCADE).detect(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    assert len(faces) == 1


def test_the_auto_backend_opens_the_pi_camera_for_source_picamera2(standin):
    with open_source("auto", "picamera2", width=1280, height=720) as source:
        assert source.name == "Raspberry Pi camera (picamera2)"
        assert source.read().image.shape == (720, 1280, 3)


def test_a_missing_camera_is_told_apart_from_a_busy_one(standin):
    standin["cameras"] = []
    with pytest.raises(CaptureError, match="libcamera finds no camera") as missing:
        Picamera2Source().open()
    assert "ribbon cable" in str(missing.value)
    standin["cameras"] = [{"Model": "imx708"}]
    standin["busy"] = [0]
    with pytest.raises(CaptureError, match="lists 1 camera.* another program") as busy:
        Picamera2Source().open()
    assert "Camera __init__ sequence did not complete" in str(busy.value)


def test_the_camera_is_released_on_close_and_after_a_failed_start(standin):
    first, second = Picamera2Source(width=640, height=480), Picamera2Source(width=640, height=480)
    first.open()
    with pytest.raises(CaptureError, match="another program"):
        second.open()
    first.close()
    first.close()
    second.open()
    second.close()
    odd = Picamera2Source(width=641, height=480)
    with pytest.raises(CaptureError, match="cannot start the .* at 641x480: width and height should be even"):
        odd.open()
    # The failed start closed the camera it had opened: the next one gets it.
    with Picamera2Source(width=640, height=480) as source:
        assert source.read() is not None


def test_a_camera_that_stops_delivering_is_reopened(standin):
    standin["frames"] = 2
    source = Picamera2Source(width=320, height=240)
    source.open()
    source.read(), source.read()
    with pytest.raises(CaptureError, match="stopped delivering frames: frame request timed out"):
        source.read()
    source.close()
    states = []
    with LatestFrameGrabber(source, backoff_s=0.01, on_state=lambda state, reason: states.append(state)) as grabber:
        frames = [grabber.next_frame(timeout=5) for _ in range(4)]
    assert all(frame is not None for frame in frames)
    assert "reopening" in states and "stopped delivering frames" in grabber.last_error
    assert [frame.index for frame in frames] == sorted({frame.index for frame in frames})


@pytest.mark.parametrize("setup, verdict", [
    ({}, "Raspberry Pi camera (picamera2): 1280x720 frames"),
    ({"cameras": []}, "libcamera finds no camera"),
    ({"busy": [0]}, "another program"),
])
def test_check_gives_the_pi_cameras_verdict(tmp_path, setup, verdict):
    config = tmp_path / "agent.yaml"
    config.write_text(f"device:\n  id: pi-test\n  site: north\n  room: '101'\ncamera:\n  source: picamera2\n"
                      f"mqtt:\n  host: 127.0.0.1\n  port: {free_port()}\noutbox:\n  path: {tmp_path / 'o.sqlite3'}\n")
    env = {"PYTHONPATH": os.pathsep.join([str(STANDIN_PATH), os.environ.get("PYTHONPATH", "")]),
           "PICAMERA2_STANDIN": json.dumps({"image": str(PHOTO), **setup})}
    done = run_cli("check", "--config", config, env=env)
    camera = next(line for line in done.stdout.splitlines() if line.startswith("camera"))
    assert verdict in camera, done.stdout + done.stderr
    assert ("FAIL" in camera) == bool(setup), camera
