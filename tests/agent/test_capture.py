import importlib.util
import os
import threading
import time

import cv2
import numpy as np
import pytest

from edge_agent.agent.capture import (
    CaptureError,
    Frame,
    FrameSource,
    LatestFrameGrabber,
    OpenCVSource,
    Picamera2Source,
    open_source,
    sample_frames,
)
from edge_agent.common.errors import EdgeAgentError
from support import SHARED, needs

WOMAN2 = SHARED / "media" / "woman2.mp4"


def write_video(path, frames=5, fps=10, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), i * 40 % 256, np.uint8))
    writer.release()
    return path


def read_all(source, limit=10_000):
    frames = []
    while len(frames) < limit and (frame := source.read()) is not None:
        frames.append(frame)
    return frames


def wait_for(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_reads_a_video_file_with_its_own_timestamps(tmp_path):
    path = write_video(tmp_path / "lesson.mp4", frames=12, fps=10)
    with OpenCVSource(path, start_time=1000.0) as source:
        assert source.name == f"file {path}"
        frames = read_all(source)
        assert source.read() is None
    assert len(frames) == 12
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert [f.index for f in frames] == list(range(12))
    assert [f.t for f in frames] == pytest.approx([1000.0 + i / 10 for i in range(12)])
    # Pixels survive the trip: frame 3 was written with gray level 120.
    assert abs(int(frames[3].image.mean()) - 120) < 5


def test_offline_file_starts_at_its_recording_time(tmp_path):
    path = write_video(tmp_path / "lesson.mp4", frames=12, fps=10)
    os.utime(path, (2_000_000.0, 2_000_000.0))
    with OpenCVSource(path) as source:
        assert source.read().t == pytest.approx(2_000_000.0 - 1.2)


def test_realtime_file_starts_now(tmp_path):
    path = write_video(tmp_path / "lesson.mp4", frames=3, fps=10)
    with OpenCVSource(path, realtime=True, clock=lambda: 5000.0) as source:
        assert [f.t for f in read_all(source)] == pytest.approx([5000.0, 5000.1, 5000.2])


@pytest.mark.parametrize("content, reason", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"this is not a video\n", "cannot be decoded"),
])
def test_unusable_files_are_named(tmp_path, content, reason):
    path = tmp_path / "broken.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CaptureError, match=reason) as caught:
        OpenCVSource(path).open()
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, EdgeAgentError)


def test_loop_keeps_index_and_time_rising(tmp_path):
    path = write_video(tmp_path / "loop.mp4", frames=5, fps=10)
    with OpenCVSource(path, loop=True, realtime=False, start_time=0.0) as source:
        frames = read_all(source, limit=13)
    assert [f.index for f in frames] == list(range(13))
    # Three passes of five frames at 10 fps: the time runs on evenly across the seams.
    assert [f.t for f in frames] == pytest.approx([i / 10 for i in range(13)])


def test_realtime_paces_to_the_recording(tmp_path):
    path = write_video(tmp_path / "paced.mp4", frames=5, fps=10)
    elapsed = {}
    for realtime in (True, False):
        with OpenCVSource(path, realtime=realtime) as source:
            started = time.monotonic()
            assert len(read_all(source)) == 5
            elapsed[realtime] = time.monotonic() - started
    assert elapsed[True] >= 0.35
    assert elapsed[False] < 0.2


class ListSource(FrameSource):
    """Frames at given times, through the base class's grab() and retrieve()."""

    name = "list"
    finite = True

    def __init__(self, times):
        self.times = times

    def open(self):
        self._frames = iter(Frame(np.zeros((2, 2, 3), np.uint8), t, i) for i, t in enumerate(self.times))

    def read(self):
        return next(self._frames, None)

    def close(self):
        pass


def test_sample_frames_spaces_by_source_time():
    with ListSource([i / 30 for i in range(90)]) as source:
        assert [f.index for f in sample_frames(source, 1)] == [0, 30, 60]
    with ListSource([i / 30 for i in range(90)]) as source:
        assert len(list(sample_frames(source, 10))) == 30
    with ListSource([i / 30 for i in range(90)]) as source:
        assert len(list(sample_frames(source, 0))) == 90


@needs(WOMAN2)
def test_woman2_reads_whole_and_samples_one_per_second():
    with OpenCVSource(WOMAN2) as source:
        frames = read_all(source)
    assert len(frames) == 464
    assert frames[0].image.shape == (336, 596, 3)

    with OpenCVSource(WOMAN2) as source:
        sampled = list(sample_frames(source, 1.0))
    assert 15 <= len(sampled) <= 17
    gaps = np.diff([f.t for f in sampled])
    assert gaps.min() >= 1.0 - 1e-3 and gaps.max() < 1.05
    assert all(f.image.shape == (336, 596, 3) for f in sampled)

    with OpenCVSource(WOMAN2) as source:
        assert len(list(sample_frames(source, 0))) == 464


def test_grabber_hands_out_only_new_frames_and_drops_for_a_slow_consumer(tmp_path):
    path = write_video(tmp_path / "kiosk.mp4", frames=10, fps=30)
    with LatestFrameGrabber(OpenCVSource(path, loop=True)) as grabber:
        taken = []
        for _ in range(6):
            taken.append(grabber.next_frame(timeout=2).index)
            time.sleep(0.15)
        assert grabber.state == "running"
        assert grabber.frames_dropped > 0
        assert grabber.last_frame_monotonic <= time.monotonic()
    assert taken == sorted(set(taken))
    # Every frame read was taken, dropped, or is the one left waiting at the stop.
    assert grabber.frames_read - grabber.frames_dropped - len(taken) in (0, 1)
    assert grabber.state == "stopped"
    assert grabber.next_frame(timeout=0.1) is None


def test_grabber_ends_with_a_file_that_does_not_loop(tmp_path):
    path = write_video(tmp_path / "once.mp4", frames=5, fps=10)
    with LatestFrameGrabber(OpenCVSource(path, realtime=False)) as grabber:
        taken = []
        while (frame := grabber.next_frame(timeout=2)) is not None:
            taken.append(frame.index)
        assert grabber.state == "ended"
        assert grabber.frames_read == 5
        assert len(taken) + grabber.frames_dropped == 5
    assert taken == sorted(set(taken)) and taken[-1] == 4


class UnpluggableCamera(FrameSource):
    """Stands in for a camera that can be unplugged, stuck and plugged back: a real looping file inside."""

    name = "test camera"

    def __init__(self, path):
        self.inner = OpenCVSource(path, loop=True)
        self.fault = None  # None works; "raise" and "none" fail like an unplugged camera; "block" hangs a read
        self.unblock = threading.Event()
        self.closes = 0

    def open(self):
        if self.fault in ("raise", "none"):
            raise CaptureError("test camera is unplugged")
        self.inner.open()

    def read(self):
        if self.fault == "raise":
            raise CaptureError("test camera stopped delivering frames")
        if self.fault == "none":
            return None
        if self.fault == "block":
            self.unblock.wait(5)
            self.fault = None
        return self.inner.read()

    def close(self):
        self.closes += 1
        self.inner.close()


@pytest.mark.parametrize("fault, reason", [("raise", "stopped delivering"), ("none", "delivered no frame")])
def test_grabber_reopens_a_failing_source_and_recovers(tmp_path, fault, reason):
    camera = UnpluggableCamera(write_video(tmp_path / "cam.mp4", frames=10, fps=30))
    changes = []
    grabber = LatestFrameGrabber(camera, backoff_s=0.05, backoff_max_s=0.2,
                                 on_state=lambda state, why: changes.append((state, why)))
    with grabber:
        before = grabber.next_frame(timeout=2)
        assert before is not None and grabber.state == "running"

        camera.fault = fault
        assert wait_for(lambda: grabber.state == "reopening")
        assert any(state == "reopening" and reason in why for state, why in changes)
        assert grabber.last_error
        assert camera.closes >= 1

        camera.fault = None
        assert wait_for(lambda: grabber.state == "running")
        after = grabber.next_frame(timeout=2)
        assert after is not None and after.index > before.index
    assert changes[0] == ("running", None)
    assert changes[-1] == ("stopped", None)


def test_grabber_reports_a_stalled_read(tmp_path):
    camera = UnpluggableCamera(write_video(tmp_path / "cam.mp4", frames=10, fps=30))
    changes = []
    with LatestFrameGrabber(camera, stall_s=0.2, on_state=lambda *change: changes.append(change)) as grabber:
        before = grabber.next_frame(timeout=2)
        camera.fault = "block"
        assert wait_for(lambda: grabber.state == "stalled")
        assert ("stalled", "no frame from test camera for 0.2 s") in changes
        camera.unblock.set()
        assert wait_for(lambda: grabber.state == "running")
        assert grabber.next_frame(timeout=2).index > before.index


def test_grabber_stops_promptly_during_a_backoff_wait(tmp_path):
    camera = UnpluggableCamera(write_video(tmp_path / "cam.mp4", frames=10, fps=30))
    camera.fault = "raise"
    grabber = LatestFrameGrabber(camera, backoff_s=30)
    grabber.start()
    assert wait_for(lambda: grabber.state == "reopening")
    started = time.monotonic()
    grabber.stop()
    assert time.monotonic() - started < 2
    assert grabber.state == "stopped"
    assert grabber.last_error == "test camera is unplugged"
    assert grabber.next_frame(timeout=0.1) is None


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="picamera2 is installed here")
@pytest.mark.parametrize("backend", ["picamera2", "auto"])
def test_picamera2_missing_says_how_to_install_it(backend):
    source = open_source(backend, "picamera2", width=640, height=480)
    assert isinstance(source, Picamera2Source)
    with pytest.raises(CaptureError, match="python3-picamera2"):
        source.open()


def test_open_source_picks_opencv_and_rejects_unknown_backends(tmp_path):
    assert isinstance(open_source("auto", 0), OpenCVSource)
    assert isinstance(open_source("opencv", str(tmp_path / "x.mp4"), loop=True), OpenCVSource)
    with pytest.raises(CaptureError, match="unknown capture backend 'gstreamer'"):
        open_source("gstreamer", 0)


def test_source_names():
    assert OpenCVSource(0).name == "camera 0"
    assert OpenCVSource("2").name == "camera 2"
    assert OpenCVSource("/dev/video0").name == "/dev/video0"
    assert OpenCVSource("rtsp://cam.local/live").name == "rtsp://cam.local/live"


def test_stream_password_never_shows():
    source = OpenCVSource("rtsp://admin:s3cret@127.0.0.1:1/live")
    assert source.name == "rtsp://admin:***@127.0.0.1:1/live"
    with pytest.raises(CaptureError) as caught:
        source.open()
    assert "admin:***@127.0.0.1" in str(caught.value) and "s3cret" not in str(caught.value)


def test_missing_camera_is_named():
    with pytest.raises(CaptureError, match="cannot open /dev/video99"):
        OpenCVSource("/dev/video99").open()
