"""The agent on a Raspberry Pi's OS: 64-bit Raspberry Pi OS is Debian arm64, trixie or bookworm.

Each suite's arm64 root (support/arm64.py, cached) gets the agent as the README's Pi section
installs it: the apt packages, a venv with the system's site packages, pip and the wheel. Then,
under qemu emulating one core of the Pi it stands for (bookworm a Pi 4's Cortex-A72, trixie a
Pi 5's Cortex-A76):

- ``edge-agent analyze`` over the bundled clip and group photo gives the same windows as this
  x86_64 machine (run in the background as soon as the suite is installed, arm64_setup.RUNS);
- the root boots its own systemd, where the shipped unit reports READY and publishes windows to
  a broker on this machine, and ``edge-agent check`` passes as the service user.

Emulation proves what installs and what it computes, never how fast: the times printed
(``pytest -s``) are for the cache, not for a Pi.
"""

import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from edge_agent.agent.emotions import EmotionClassifier
from support import DATA, REPO, SHIPPED, ansible_lab, arm64, arm64_setup, container, run_cli
from support.broker import Mosquitto, Subscriber

pytestmark = [pytest.mark.arm64,
              pytest.mark.skipif(arm64.unavailable() is not None, reason=str(arm64.unavailable()))]

README = (REPO / "README.md").read_text(encoding="utf-8")
UNIT = REPO / "systemd" / "edge-agent.service"


def test_the_readme_pi_section_has_the_commands_this_test_runs():
    for line in (f"sudo {arm64_setup.VENV_COMMAND}", f"sudo {arm64_setup.PIP_COMMAND}",
                 "sudo apt install -y python3-venv python3-systemd"):
        assert line in README, line


@pytest.fixture(scope="module")
def setup(request):
    """The installs, the emulated runs and the fleet, begun at the session's start (support/arm64_setup.py)."""
    return arm64_setup.started(request.config)


@pytest.fixture(scope="module", params=arm64.SUITES)
def suite(request):
    return request.param


@pytest.fixture(scope="module")
def pi(setup, suite):
    return setup.installs[suite].result()


@pytest.fixture(scope="module")
def inputs(setup):
    """What the emulated runs read: images/, analyze.yaml and faces.npy (arm64_setup.inputs)."""
    return setup.inputs.result()


def emulated(setup, suite, name):
    """The output of one of the suite's emulated runs (arm64_setup.RUNS)."""
    return setup.runs[suite][name].result()


def per_frame(lines):
    return [{"image": Path(row["source"]).name, "faces": row["faces"]} for row in map(json.loads, lines)]


def test_the_int8_model_gives_the_same_outputs_on_the_pis_cpu(setup, suite, inputs):
    """The classifier as installed, LiteRT and its XNNPACK kernels: bit for bit what this machine computes."""
    faces = np.load(inputs / "faces.npy")
    arm = json.loads(emulated(setup, suite, "classify").stdout)
    classifier = EmotionClassifier(SHIPPED)
    x86 = [classifier.probabilities(list(faces[:n])).tolist() for n in arm64_setup.BATCHES]
    assert len(faces) >= 5 and arm == x86


def test_analyze_finds_the_same_faces_and_windows_on_the_same_pixels(setup, suite, inputs):
    x86 = run_cli("analyze", "--config", inputs / "analyze.yaml", "--json", inputs / "images")
    x86_frames = run_cli("analyze", "--config", inputs / "analyze.yaml", "--per-frame", inputs / "images")
    assert x86.returncode == x86_frames.returncode == 0, x86.stderr + x86_frames.stderr
    done = emulated(setup, suite, "analyze images")
    lines = done.stdout.splitlines()
    arm, arm_frames = [json.loads(line) for line in lines[:4]], per_frame(lines[4:])
    print(f"\narm64 {suite} under qemu ({arm64.PI_CPUS[suite]}): {done.seconds:.0f} s; "
          f"counts {[w['counts'] for w in arm]}, on x86 {[w['counts'] for w in map(json.loads, x86.stdout.split())]}")
    # LiteRT's int8 kernels for arm64 (XNNPACK), not a slower fallback.
    assert "XNNPACK" in done.stderr, done.stderr
    x86_windows, x86_frames = [json.loads(line) for line in x86.stdout.splitlines()], per_frame(
        x86_frames.stdout.splitlines())
    # Haar finds the same boxes on the same pixels: same windows, frames and faces.
    assert [[face["box"] for face in row["faces"]] for row in arm_frames] == \
        [[face["box"] for face in row["faces"]] for row in x86_frames]
    keys = ("window_start", "frames", "faces", "faces_per_frame_median", "suppressed", "model", "counts")
    # Each face is resized to the model's input in fixed point (INTER_LINEAR_EXACT), so both CPUs
    # feed the model the same pixels and, the model agreeing bit for bit (the test above), every
    # face gets the same label with the same probability.
    assert [[(face["label"], face["p"]) for face in row["faces"]] for row in arm_frames] == \
        [[(face["label"], face["p"]) for face in row["faces"]] for row in x86_frames]
    assert [[w[k] for k in keys] for w in arm] == [[w[k] for k in keys] for w in x86_windows]


def test_analyze_reads_the_clip_on_the_pi(setup, suite, inputs):
    """The video decoded on arm64: same windows and frames; its pixels come out of FFmpeg's colour
    conversion a level or so apart from x86's, so faces at the cascade's threshold may differ."""
    done = emulated(setup, suite, "analyze clip")
    x86 = run_cli("analyze", "--config", inputs / "analyze-clip.yaml", "--start", arm64_setup.START, "--sample-fps",
                  arm64_setup.SAMPLE_FPS, "--json", DATA / "test.mp4")
    arm = [json.loads(line) for line in done.stdout.splitlines()]
    ours = [json.loads(line) for line in x86.stdout.splitlines()]
    print(f"\nclip on arm64 {suite}: faces {[w['faces'] for w in arm]}, counts {[w['counts'] for w in arm]}; "
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
    video = arm64_setup.installed_sample(venv, "test.mp4")
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
