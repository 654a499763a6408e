"""`edge-agent check --snapshot`: the camera's frame with each face boxed and labelled, the search's
bands drawn, written only where asked and only by `check`."""

import ast
import json
import stat

import cv2
import numpy as np
import pytest

from edge_agent.agent.capture import open_source
from edge_agent.agent.config import load_config
from edge_agent.agent.faces import FaceDetector
from edge_agent.agent.pipeline import FramePipeline
from edge_agent.agent.snapshot import BAND_COLOUR, smallest_face, writable_target, write_private
from edge_agent.common.charts import EMOTION_COLORS
from edge_agent.common.errors import EdgeAgentError
from support import CASCADE, DATA, REPO, run_cli

SOURCE = DATA / "solvay_conference.jpg"  # 995x960, six faces the default detector finds


def write_config(path, port, state_dir, extra=""):
    path.write_text(f"device:\n  id: pi-test\n  site: north\n  room: '101'\ncamera:\n  source: {SOURCE}\n"
                    f"mqtt:\n  host: 127.0.0.1\n  port: {port}\noutbox:\n  path: {state_dir / 'o.sqlite3'}\n"
                    + extra)
    return path


@pytest.fixture
def dirs(tmp_path):
    """Where the agent keeps its state, and an empty directory for the snapshot alone."""
    state, out = tmp_path / "state", tmp_path / "out"
    state.mkdir()
    out.mkdir()
    return state, out


def frame_and_faces(config):
    """The frame `check` reads and the faces the agent's pipeline finds in it, computed here independently."""
    with open_source("auto", str(SOURCE)) as source:
        frame = source.read()
    return frame.image, FramePipeline.from_config(load_config(config), keep_state=False).process(frame).faces


def bgr(label):
    colour = EMOTION_COLORS[label]
    return [int(colour[i:i + 2], 16) for i in (5, 3, 1)]


def verdicts(stdout):
    return {line.split()[0]: line for line in stdout.splitlines() if len(line.split()) > 1}


def test_snapshot_boxes_and_labels_every_face_and_nothing_else(dirs, mosquitto):
    state, out = dirs
    config = write_config(state / "agent.yaml", mosquitto.port, state)
    snapshot = out / "camera.png"
    done = run_cli("check", "--config", config, "--snapshot", snapshot)
    assert done.returncode == 0, done.stdout + done.stderr
    source, faces = frame_and_faces(config)
    assert len(faces) == 6
    picture = verdicts(done.stdout)["picture"]
    assert picture.split()[1] == "ok" and f"{snapshot}: 6 face(s)" in picture
    assert "no bands learned yet" in picture
    assert f"{snapshot} shows one frame of the camera with 6 face(s)" in done.stderr
    assert "it is yours to delete" in done.stderr
    drawn = cv2.imread(str(snapshot))
    assert drawn.shape == source.shape
    for face in faces:
        x, y, w, h = face.box
        # The middle of each box's left and right edges carries the colour of its label (PNG: exact).
        assert drawn[y + h // 2, x].tolist() == bgr(face.label), face
        assert drawn[y + h // 2, x + w].tolist() == bgr(face.label), face
        assert face.label in picture
    # Away from the faces and the legend, the frame is as the camera gave it.
    assert np.array_equal(drawn[600:, :], source[600:, :])
    assert list(out.iterdir()) == [snapshot]
    assert stat.S_IMODE(snapshot.stat().st_mode) == 0o600


def test_hand_set_bands_are_drawn(dirs, mosquitto):
    state, out = dirs
    bands = ("detector:\n  search:\n    mode: bands\n    bands:\n"
             "      - {top: 0.0, bottom: 0.2, min_face: 60, max_face: 140}\n"
             "      - {top: 0.2, bottom: 0.5, min_face: 80, max_face: 160}\n")
    config = write_config(state / "agent.yaml", mosquitto.port, state, bands)
    snapshot = out / "camera.png"
    done = run_cli("check", "--config", config, "--snapshot", snapshot)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 hand-set band(s)" in verdicts(done.stdout)["picture"]
    drawn = cv2.imread(str(snapshot))
    # Each band's outline runs down the frame's right edge, beside no face.
    for top, bottom in ((0, 192), (192, 480)):
        assert drawn[(top + bottom) // 2, 994].tolist() == list(BAND_COLOUR)
    assert drawn[700, 994].tolist() != list(BAND_COLOUR)


@pytest.mark.parametrize("frame, drawn_note", [
    ([995, 960], "1 band(s) learned in"),
    ([1280, 720], "is for 1280x720 frames, not 995x960"),
])
def test_learned_bands_are_read_never_written(dirs, mosquitto, frame, drawn_note):
    state, out = dirs
    config = write_config(state / "agent.yaml", mosquitto.port, state)
    learned = state / "face_search.json"
    learned.write_text(json.dumps({"format": 1, "frame": frame, "camera": str(SOURCE), "learned_frames": 60,
                                   "observations": [[100.0, 200.0, 90.0]],
                                   "bands": [{"top": 100, "bottom": 300, "min_face": 40, "max_face": 120,
                                              "left": 600, "right": 990}]}))
    before = learned.read_bytes(), learned.stat().st_mtime_ns
    snapshot = out / "camera.png"
    done = run_cli("check", "--config", config, "--snapshot", snapshot)
    assert done.returncode == 0, done.stdout + done.stderr
    assert drawn_note in verdicts(done.stdout)["picture"]
    outline = cv2.imread(str(snapshot))[200, 990].tolist() == list(BAND_COLOUR)
    assert outline == (frame == [995, 960])
    assert (learned.read_bytes(), learned.stat().st_mtime_ns) == before


@pytest.mark.parametrize("where, message", [
    ("missing/camera.jpg", "snapshot {tmp}/missing/camera.jpg cannot be written: directory {tmp}/missing does not"),
    ("state", "snapshot {tmp}/state: name it .jpg or .jpeg or .png"),
    ("camera.gif", "snapshot {tmp}/camera.gif: name it .jpg or .jpeg or .png"),
    ("state.jpg", "snapshot {tmp}/state.jpg is a directory"),
])
def test_a_path_that_cannot_be_written_exits_2_and_writes_nothing(tmp_path, where, message):
    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "state.jpg").mkdir()
    config = write_config(state / "agent.yaml", 1, state)
    before = sorted(tmp_path.rglob("*"))
    done = run_cli("check", "--config", config, "--snapshot", tmp_path / where)
    assert done.returncode == 2
    assert done.stderr.startswith("edge-agent: error: " + message.format(tmp=tmp_path))
    assert len(done.stderr.splitlines()) == 1
    # Refused before anything was opened: no verdicts, no outbox, no file anywhere.
    assert done.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before


def test_no_frame_no_snapshot(dirs, mosquitto):
    state, out = dirs
    config = write_config(state / "agent.yaml", mosquitto.port, state)
    config.write_text(config.read_text().replace(str(SOURCE), str(state / "gone.jpg")))
    done = run_cli("check", "--config", config, "--snapshot", out / "camera.jpg")
    assert done.returncode == 1
    found = verdicts(done.stdout)
    assert found["camera"].split()[1] == "FAIL"
    assert found["picture"].split()[1] == "FAIL" and "not written: the camera gave no frame" in found["picture"]
    assert not list(out.iterdir())


def test_without_snapshot_check_draws_nothing(dirs, mosquitto):
    state, out = dirs
    config = write_config(state / "agent.yaml", mosquitto.port, state)
    done = run_cli("check", "--config", config)
    assert done.returncode == 0
    assert "picture" not in verdicts(done.stdout) and "yours to delete" not in done.stderr


def test_the_smallest_face_a_whole_frame_search_looks_for():
    assert smallest_face(FaceDetector(CASCADE, min_size=30, detect_width=320), 1280) == 96
    assert smallest_face(FaceDetector(CASCADE, min_size=30, detect_width=960), 995) == 30
    assert smallest_face(FaceDetector(CASCADE, min_size=30, detect_width=0), 4000) == 30


def test_only_check_draws_snapshots():
    """The running agent never writes one: within the agent, only `check` imports the drawing."""
    importers = []
    for path in sorted((REPO / "edge_agent" / "agent").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module in ("snapshot", "edge_agent.agent.snapshot"):
                importers.append(path.name)
    assert importers == ["check.py"]


def test_a_snapshot_replaces_an_open_file_with_a_private_one(tmp_path):
    """A file left readable by everyone (an earlier snapshot, or one planted to be read) ends 0600."""
    path = tmp_path / "camera.png"
    path.write_bytes(b"old")
    path.chmod(0o644)
    write_private(path, b"faces", "snapshot")
    assert path.read_bytes() == b"faces"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [entry.name for entry in tmp_path.iterdir()] == ["camera.png"]


def test_a_symbolic_link_at_the_path_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "someone-elses.png"
    target.write_bytes(b"theirs")
    target.chmod(0o644)
    link = tmp_path / "camera.png"
    link.symlink_to(target)
    message = f"snapshot {link} is a symbolic link, which is never followed: remove it or name another file"
    for check in (lambda: writable_target(link, "snapshot"), lambda: write_private(link, b"faces", "snapshot")):
        with pytest.raises(EdgeAgentError) as refused:
            check()
        assert str(refused.value) == message
    assert target.read_bytes() == b"theirs" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert link.is_symlink()


def test_check_refuses_a_snapshot_path_that_is_a_link_before_reading_the_camera(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    config = write_config(state / "agent.yaml", 1, state)
    link = tmp_path / "camera.jpg"
    link.symlink_to(tmp_path / "elsewhere.jpg")
    done = run_cli("check", "--config", config, "--snapshot", link)
    assert done.returncode == 2
    assert done.stderr == f"edge-agent: error: snapshot {link} is a symbolic link, which is never followed: " \
                          "remove it or name another file\n"
    assert done.stdout == "" and not (tmp_path / "elsewhere.jpg").exists()
