"""The agent on a Raspberry Pi's OS: 64-bit Raspberry Pi OS is Debian arm64, trixie or bookworm.

Each suite's arm64 root (support/arm64.py, cached) gets the agent as the README's Pi section
installs it: the apt packages, a venv with the system's site packages, pip and the wheel. Then,
under qemu emulating one core of the Pi it stands for (bookworm a Pi 4's Cortex-A72, trixie a
Pi 5's Cortex-A76):

- ``edge-agent analyze`` over the bundled clip and group photo gives the same windows as this
  x86_64 machine;
- the root boots its own systemd, where the shipped unit reports READY and publishes windows to
  a broker on this machine, and ``edge-agent check`` passes as the service user.

Emulation proves what installs and what it computes, never how fast: the times printed
(``pytest -s``) are for the cache, not for a Pi.
"""

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.agent.emotions import EmotionClassifier
from edge_agent.agent.faces import FaceDetector
from support import CASCADE, DATA, MODEL, REPO, ansible_lab, arm64, arm64_setup, container, run_cli
from support.broker import Mosquitto, Subscriber

pytestmark = [pytest.mark.arm64,
              pytest.mark.skipif(arm64.unavailable() is not None, reason=str(arm64.unavailable()))]

README = (REPO / "README.md").read_text(encoding="utf-8")
UNIT = REPO / "systemd" / "edge-agent.service"
START = "2026-11-23T10:15:00Z"
# Three 2 s windows of the 4.7 s clip at a frame a second (emulation is slow), one or two people
# in view: min_group 1.
ANALYZE_CONFIG = "window:\n  length_s: 2\n  min_group: 1\n"
SAMPLE_FPS = "1"


def test_the_readme_pi_section_has_the_commands_this_test_runs():
    for line in (f"sudo {arm64_setup.VENV_COMMAND}", f"sudo {arm64_setup.PIP_COMMAND}",
                 "sudo apt install -y python3-venv python3-systemd"):
        assert line in README, line


@pytest.fixture(scope="module")
def setup(request):
    """The installs and the fleet, begun at the session's start (support/arm64_setup.py)."""
    return arm64_setup.started(request.config)


@pytest.fixture(scope="module", params=arm64.SUITES)
def pi(request, setup):
    return setup.installs[request.param].result()


def site_packages(venv):
    (found,) = venv.glob("lib/python3*/site-packages")
    return found


def in_pi(pi, *command, binds=(), timeout=1200):
    """Run ``command`` in the suite's root as the Pi's CPU, with the installed venv; its output."""
    suite, root, venv = pi
    return arm64.run(root, *command, binds=[f"{venv}:{arm64.VENV}"], read_only_binds=binds,
                     cpu=arm64.PI_CPUS[suite], timeout=timeout)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """A directory with images/: the clip's frames at 1 a second as PNG (decoded here, so both
    machines see the same pixels) and the group photo, timed a second apart from START; and
    analyze.yaml, which reports one face."""
    top = tmp_path_factory.mktemp("pictures")
    folder = top / "images"
    folder.mkdir()
    capture = cv2.VideoCapture(str(DATA / "test.mp4"))
    index = 0
    while (frame := capture.read()[1]) is not None:
        if index % 25 == 0:
            cv2.imwrite(str(folder / f"frame-{index:03d}.png"), frame)
        index += 1
    shutil.copy(DATA / "solvay_conference.jpg", folder)
    start = datetime.fromisoformat(START).timestamp()
    # The photo gets a window of its own, after the clip's three.
    for position, path in enumerate(sorted(folder.iterdir())):
        moment = start + (6.0 if path.suffix == ".jpg" else position * 1.0)
        os.utime(path, (moment, moment))
    (top / "analyze.yaml").write_text(ANALYZE_CONFIG)
    return top


def per_frame(lines):
    return [{"image": Path(row["source"]).name, "faces": row["faces"]} for row in map(json.loads, lines)]


def test_the_int8_model_gives_the_same_outputs_on_the_pis_cpu(pi, pictures, tmp_path):
    """The classifier as installed, LiteRT and its XNNPACK kernels: bit for bit what this machine computes."""
    gray = cv2.cvtColor(cv2.imread(str(pictures / "images" / "solvay_conference.jpg")), cv2.COLOR_BGR2GRAY)
    detector = FaceDetector(CASCADE)
    # Crops already at the model's size: cv2.resize's bilinear mode is not bit-exact across
    # architectures (see the README), INTER_AREA is.
    faces = np.stack([cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA)
                      for crop in detector.crops(gray, detector.detect(gray))])
    np.save(tmp_path / "faces.npy", faces)
    # One call per batch size the agent pads to (1, 2, 4, 8), so each interpreter shape runs.
    script = ("import json, sys, numpy as np; from edge_agent.agent.emotions import EmotionClassifier; "
              "from edge_agent.agent.paths import DEFAULT_MODEL; faces = np.load('/in/faces.npy'); "
              "c = EmotionClassifier(DEFAULT_MODEL); "
              "print(json.dumps([c.probabilities(list(faces[:n])).tolist() for n in (1, 2, 3, 5)]))")
    arm = json.loads(in_pi(pi, f"{arm64.VENV}/bin/python", "-c", script, binds=[f"{tmp_path}:/in"]).stdout)
    classifier = EmotionClassifier(MODEL)
    x86 = [classifier.probabilities(list(faces[:n])).tolist() for n in (1, 2, 3, 5)]
    assert len(faces) >= 5 and arm == x86


def test_analyze_finds_the_same_faces_and_windows_on_the_same_pixels(pi, pictures):
    x86 = run_cli("analyze", "--config", pictures / "analyze.yaml", "--json", pictures / "images")
    x86_frames = run_cli("analyze", "--config", pictures / "analyze.yaml", "--per-frame", pictures / "images")
    assert x86.returncode == x86_frames.returncode == 0, x86.stderr + x86_frames.stderr
    started = time.monotonic()
    analyze = f"{arm64.VENV}/bin/edge-agent analyze --config /pictures/analyze.yaml"
    done = in_pi(pi, "sh", "-c", f"{analyze} --json /pictures/images && {analyze} --per-frame /pictures/images",
                 binds=[f"{pictures}:/pictures"])
    lines = done.stdout.splitlines()
    arm, arm_frames = [json.loads(line) for line in lines[:4]], per_frame(lines[4:])
    print(f"\narm64 {pi[0]} under qemu ({arm64.PI_CPUS[pi[0]]}): {time.monotonic() - started:.0f} s; "
          f"counts {[w['counts'] for w in arm]}, on x86 {[w['counts'] for w in map(json.loads, x86.stdout.split())]}")
    # LiteRT's int8 kernels for arm64 (XNNPACK), not a slower fallback.
    assert "XNNPACK" in done.stderr, done.stderr
    x86_windows, x86_frames = [json.loads(line) for line in x86.stdout.splitlines()], per_frame(
        x86_frames.stdout.splitlines())
    # Haar finds the same boxes on the same pixels: same windows, frames and faces.
    assert [[face["box"] for face in row["faces"]] for row in arm_frames] == \
        [[face["box"] for face in row["faces"]] for row in x86_frames]
    keys = ("window_start", "frames", "faces", "faces_per_frame_median", "suppressed", "model")
    assert [[w[k] for k in keys] for w in arm] == [[w[k] for k in keys] for w in x86_windows]
    # Labels: each face is shrunk or enlarged to 64x64 by cv2.resize, whose bilinear mode rounds
    # differently in OpenCV's x86 and arm64 builds; given the same 64x64 pixels the model agrees
    # bit for bit (the test above), but a level off in a few pixels can turn a label near a tie.
    pairs = [(a["label"], b["label"]) for ra, rb in zip(arm_frames, x86_frames, strict=True)
             for a, b in zip(ra["faces"], rb["faces"], strict=True)]
    differing = [pair for pair in pairs if pair[0] != pair[1]]
    print(f"labels differing (arm64, x86): {differing} of {len(pairs)} faces")
    assert len(differing) <= len(pairs) // 5, differing
    assert arm[-1]["counts"] == x86_windows[-1]["counts"], "the group photo's labels differ"


def test_analyze_reads_the_clip_on_the_pi(pi):
    """The video decoded on arm64: same windows and frames; its pixels come out of FFmpeg's colour
    conversion a level or so apart from x86's, so faces at the cascade's threshold may differ."""
    config = "/config/analyze.yaml"
    video = f"{arm64.VENV}/{site_packages(pi[2]).relative_to(pi[2])}/edge_agent/samples/test.mp4"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "analyze.yaml").write_text(ANALYZE_CONFIG)
        done = in_pi(pi, f"{arm64.VENV}/bin/edge-agent", "analyze", "--config", config, "--start", START,
                     "--sample-fps", SAMPLE_FPS, "--json", video, binds=[f"{tmp}:/config"])
        x86 = run_cli("analyze", "--config", Path(tmp) / "analyze.yaml", "--start", START, "--sample-fps",
                      SAMPLE_FPS, "--json", DATA / "test.mp4")
    arm = [json.loads(line) for line in done.stdout.splitlines()]
    ours = [json.loads(line) for line in x86.stdout.splitlines()]
    print(f"\nclip on arm64 {pi[0]}: faces {[w['faces'] for w in arm]}, counts {[w['counts'] for w in arm]}; "
          f"x86: faces {[w['faces'] for w in ours]}, counts {[w['counts'] for w in ours]}")
    assert [(w["window_start"], w["frames"]) for w in arm] == [(w["window_start"], w["frames"]) for w in ours]
    assert all(abs(a["faces"] - b["faces"]) <= 1 for a, b in zip(arm, ours, strict=True))


def agent_config(port, video):
    return (f"device:\n  id: pi-arm\n  site: north\n  room: '101'\n"
            f"camera:\n  source: {video}\n  loop: true\n  fps: 1\n  stall_s: 30\n"
            f"window:\n  length_s: 5\n  min_group: 1\n"
            f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  keepalive_s: 10\n"
            f"outbox:\n  path: /var/lib/edge-agent/outbox.sqlite3\n"
            # The container shares this machine's kernel clock, which no NTP daemon disciplines here.
            f"clock:\n  require_sync: false\n")


@contextmanager
def booted(box):
    started = time.monotonic()
    try:
        box.start(timeout=900)
        print(f"\nemulated boot: {time.monotonic() - started:.0f} s")
        yield box
    finally:
        box.stop()


def test_the_unit_boots_under_the_pis_systemd_and_publishes(pi):
    suite, root, venv = pi
    if suite == arm64_setup.ANSIBLE_SUITE:
        pytest.skip(f"on {suite} the unit is installed, booted and checked by the site.yml test below")
    video = f"{arm64.VENV}/{site_packages(venv).relative_to(venv)}/edge_agent/samples/test.mp4"
    box = container.Container(root=root, read_only_binds=[f"{venv}:{arm64.VENV}"])
    with Mosquitto() as broker, Subscriber(broker.port, ["classroom/north/101/pi-arm/#"]) as subscriber, \
            booted(box):
        assert box.run("uname", "-m").stdout.strip() == "aarch64"
        box.run("useradd", "--system", "--no-create-home", "--groups", "video", "edge-agent")
        box.write("/etc/edge-agent/edge-agent.yaml", agent_config(broker.port, video))
        box.write("/etc/systemd/system/edge-agent.service", UNIT.read_text())
        box.write("/etc/systemd/system/edge-agent.service.d/emulation.conf", arm64_setup.emulation_drop_in(suite))
        box.run("systemctl", "daemon-reload")
        started = time.monotonic()
        # Type=notify: start returns once the agent sent READY=1.
        start = box.run("systemctl", "start", "edge-agent", check=False, timeout=960)
        ready_s = time.monotonic() - started
        journal = box.run("journalctl", "-u", "edge-agent", "--no-pager", "-n", "40", check=False).stdout
        assert start.returncode == 0, start.stderr + journal
        state = box.run("systemctl", "show", "edge-agent", "--property=ActiveState", "--property=SubState",
                        "--property=StatusText").stdout
        assert "ActiveState=active" in state and "SubState=running" in state, state + journal
        assert subscriber.wait_for(lambda m: sum(n.endswith("/emotions") for n, _, _ in m) >= 2, timeout=300), \
            box.run("journalctl", "-u", "edge-agent", "--no-pager", "-n", "40", check=False).stdout
        window = json.loads(subscriber.payloads("/emotions")[-1])
        # As the README has IT check a camera: the service user, beside the running service.
        check = box.run("runuser", "-u", "edge-agent", "--", f"{arm64.VENV}/bin/edge-agent", "check", "--config",
                        "/etc/edge-agent/edge-agent.yaml", check=False, timeout=900)
        assert check.returncode == 0, check.stdout + check.stderr
        box.run("systemctl", "stop", "edge-agent", timeout=120)
        assert json.loads(subscriber.payloads("/status")[-1])["state"] == "stopped"
    print(f"\narm64 {suite}: READY {ready_s:.0f} s after start (emulated); last window {window['counts']}")
    assert window["device"] == "pi-arm" and window["faces"] > 0


# --- Ansible: site.yml on an arm64 camera, and a 32-bit one refused ------------------------------------------


@pytest.fixture(scope="module")
def fleet(setup):
    return setup.fleet.result()


def test_site_yml_converges_on_an_arm64_camera_and_changes_nothing_the_second_time(fleet):
    first, second = fleet["runs"]["first"], fleet["runs"]["second"]
    recaps = [ansible_lab.recap(run.stdout) for run in (first, second)]
    for recap in recaps:
        for host in ("server", "pi-arm"):
            assert recap[host]["failed"] == recap[host]["unreachable"] == 0, first.stdout[-6000:]
    assert recaps[1]["pi-arm"]["changed"] == recaps[1]["server"]["changed"] == 0, second.stdout[-6000:]
    pi_arm = fleet["boxes"]["pi-arm"]
    assert pi_arm.run("dpkg", "--print-architecture").stdout.strip() == "arm64"
    journal = pi_arm.run("journalctl", "-u", "edge-agent", "--no-pager", "-n", "40", check=False).stdout
    # Type=notify: active means the agent under the Pi's own systemd sent READY.
    assert pi_arm.run("systemctl", "is-active", "edge-agent", check=False).stdout.strip() == "active", journal
    assert ansible_lab.stored_windows(fleet["boxes"]["server"], "pi-arm", timeout=300) >= 1, journal
    # systemd-python came from apt (python3-systemd): nothing was compiled on the camera.
    where = pi_arm.run("/opt/edge-agent/venv/bin/python", "-c", "import systemd; print(systemd.__file__)").stdout
    assert where.startswith("/usr/lib/python3/dist-packages/"), where
    result = pi_arm.run("/opt/edge-agent/venv/bin/edge-agent", "check", "--config",
                        "/etc/edge-agent/edge-agent.yaml", check=False, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_32_bit_pi_is_refused_in_one_line_before_anything_changes(fleet):
    if fleet["pi_32"] is None:
        pytest.skip(arm64.unavailable("qemu-arm"))
    first = fleet["runs"]["first"]
    assert ansible_lab.recap(first.stdout)["pi-32"]["failed"] == 1, first.stdout[-6000:]
    line = ("host pi-32: its OS is armhf, which cannot run the agent (LiteRT and OpenCV have no wheels for 32-bit "
            "ARM): install 64-bit Raspberry Pi OS (arm64, Lite is enough) and run the playbook again")
    assert line in first.stdout, first.stdout[-6000:]
    pi_32 = fleet["pi_32"]
    assert (pi_32 / "var/lib/dpkg/status").read_bytes() == fleet["dpkg_status"]
    assert not (pi_32 / "opt/edge-agent").exists() and not (pi_32 / "etc/edge-agent").exists()
    assert "edge-agent" not in (pi_32 / "etc/passwd").read_text()
