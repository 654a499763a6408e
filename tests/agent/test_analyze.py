import json
import os
import subprocess
import sys

import pytest

from edge_agent.common.contract import parse_payload
from support import DATA, REPO, SHARED, needs, run_cli

VIDEO = DATA / "test.mp4"  # 115 frames at 24.7 fps: 4.66 s
WOMAN2 = SHARED / "media" / "woman2.mp4"
START = "2026-11-23T10:15:00Z"


@pytest.fixture
def short_windows(tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text("device:\n  id: pi-test\n  site: north\n  room: '101'\n"
                      "window:\n  length_s: 2\n  min_group: 1\n")
    return config


def json_lines(text):
    return [json.loads(line) for line in text.splitlines()]


def test_video_windows_follow_the_videos_own_timestamps(short_windows):
    result = run_cli("analyze", VIDEO, "--config", short_windows, "--sample-fps", "4", "--start", START, "--json")
    assert result.returncode == 0, result.stderr
    payloads = [parse_payload("emotions", line.encode(), ("north", "101", "pi-test"))
                for line in result.stdout.splitlines()]
    assert [p.window_start for p in payloads] == [
        "2026-11-23T10:15:00Z", "2026-11-23T10:15:02Z", "2026-11-23T10:15:04Z"]
    assert [p.seq for p in payloads] == [0, 1, 2]
    # 4 frames a second of video: 8, 8, and the 0.66 s left over gives 3.
    assert [p.frames for p in payloads] == [8, 8, 3]
    assert all(p.faces >= p.frames and not p.suppressed for p in payloads)
    assert "session: 1 source(s), 19 frames" in result.stderr


def test_sample_fps_zero_analyses_every_frame(short_windows):
    result = run_cli("analyze", VIDEO, "--config", short_windows, "--sample-fps", "0", "--start", START, "--json")
    assert sum(p["frames"] for p in json_lines(result.stdout)) == 115


def test_sample_rate_defaults_to_the_config_camera_rate(tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text("camera:\n  fps: 2\nwindow:\n  min_group: 1\n")
    result = run_cli("analyze", VIDEO, "--config", config, "--start", START, "--json")
    assert [p["frames"] for p in json_lines(result.stdout)] == [10]


def test_default_output_is_a_table_and_a_summary_without_boxes(short_windows):
    result = run_cli("analyze", VIDEO, "--config", short_windows, "--start", START)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["window", "(UTC)", "frames", "faces"]
    assert lines[1].startswith("2026-11-23 10:15:00")
    assert any(line.startswith("interest (happy, surprise, neutral):") for line in lines)
    assert "box" not in result.stdout and "box" not in result.stderr


def test_per_frame_lines_carry_boxes_labels_and_video_time(short_windows):
    result = run_cli("analyze", VIDEO, "--config", short_windows, "--sample-fps", "2", "--per-frame")
    frames = json_lines(result.stdout)
    assert [f["frame"] for f in frames] == list(range(10))
    assert frames[0]["t"] == 0 and 0.45 < frames[1]["t"] < 0.55
    assert all(f["source"] == str(VIDEO) for f in frames)
    face = frames[0]["faces"][0]
    assert set(face) == {"box", "label", "p"} and len(face["box"]) == 4 and 0 < face["p"] <= 1


def test_folder_skips_what_is_not_an_image_with_a_warning(tmp_path, short_windows):
    folder = tmp_path / "lesson"
    folder.mkdir()
    for name in ("justin.jpg", "solvay_conference.jpg", "no-faces.jpg"):
        (folder / name).write_bytes((DATA / name).read_bytes())
    (folder / "notes.txt").write_text("not a picture")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    result = run_cli("analyze", folder, "--config", short_windows, "--per-frame")
    assert result.returncode == 0, result.stderr
    assert f"skipping {folder / 'notes.txt'}: not an image or a video" in result.stderr
    assert f"skipping {folder / 'broken.jpg'}: cannot be read as an image" in result.stderr
    faces = sorted(len(frame["faces"]) for frame in json_lines(result.stdout))
    assert faces == [0, 1, 6]


def test_missing_path_is_an_error(tmp_path):
    result = run_cli("analyze", tmp_path / "lesson.mp4")
    assert result.returncode == 2
    assert result.stderr.strip() == f"edge-agent: error: {tmp_path / 'lesson.mp4'} does not exist"


def test_named_unreadable_image_and_video_are_errors(tmp_path):
    (tmp_path / "photo.jpg").write_text("text")
    result = run_cli("analyze", tmp_path / "photo.jpg")
    assert result.returncode == 2 and "photo.jpg cannot be read as an image" in result.stderr
    (tmp_path / "lesson.mp4").write_text("text")
    result = run_cli("analyze", tmp_path / "lesson.mp4")
    assert result.returncode == 2 and "lesson.mp4 cannot be decoded" in result.stderr
    assert "Traceback" not in result.stderr


def test_chart_is_drawn(tmp_path, short_windows):
    chart = tmp_path / "session.png"
    result = run_cli("analyze", VIDEO, "--config", short_windows, "--chart", chart)
    assert result.returncode == 0, result.stderr
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 20_000
    result = run_cli("analyze", VIDEO, "--chart", tmp_path / "no" / "such" / "dir.png")
    assert result.returncode == 2 and "cannot write chart" in result.stderr


def test_interested_labels_are_checked():
    result = run_cli("analyze", VIDEO, "--interested", "happy,bored")
    assert result.returncode == 2 and "unknown emotion bored" in result.stderr


def test_analysis_writes_nothing_to_disk(tmp_path, short_windows):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(home), "PYTHONPATH": str(REPO),
           "MPLCONFIGDIR": str(home / "mpl")}
    result = subprocess.run([sys.executable, "-m", "edge_agent.agent.cli", "analyze", str(VIDEO), "--config",
                             str(short_windows), "--sample-fps", "0"],
                            cwd=home, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert [p for p in home.rglob("*")] == []


def test_help_says_what_per_frame_output_is_for():
    text = " ".join(run_cli("analyze", "--help").stdout.split())
    assert "for your own recordings only" in text
    assert "never writes or sends boxes" in text


@needs(WOMAN2)
def test_one_person_lesson_is_suppressed_by_default():
    result = run_cli("analyze", WOMAN2, "--start", START, "--json")
    (payload,) = json_lines(result.stdout)
    assert payload["frames"] == 16 and payload["faces"] >= 15
    assert payload["faces_per_frame_median"] == 1 and payload["suppressed"] is True
    assert set(payload["counts"].values()) == {0}
