"""What the arm64 tests need before they test anything, begun when the session starts.

Under emulation the setup is most of the arm64 tests' time: each suite's install as the README's
Pi section does it (a venv and pip, minutes), the runs of the installed agent the tests compare
with this machine's (:data:`RUNS`: a minute or two each), and the fleet's two site.yml runs on an
emulated camera (ten minutes and more). None of it depends on another test, so ``start`` runs it
in a background thread at the lowest CPU priority from the session's start (conftest.py), beside
the rest of the suite; the arm64 tests, which run last, then wait only for what is left.

Invariants:
- Everything this starts runs at nice 19 (a thread's nice value is its own on Linux, and the
  processes and threads it starts inherit it), so the rest of the suite keeps the CPU it had.
- Results are futures: a failure or a skip in the setup (``pytest.skip`` in a worker) reaches the
  test that asks for it, as if the fixture had raised it.
- ``close`` stops the fleet's containers whether or not a test used them, and waits for the
  thread, so nothing started here outlives the session.
- The fleet's broker listens on a port below the kernel's ephemeral range: the rest of the suite
  takes ports from that range (``free_port``) while the fleet holds its own for the whole session.
"""

import os
import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

import cv2
import numpy as np
import pytest

from edge_agent.agent.faces import FaceDetector
from support import CASCADE, DATA, ansible_lab, arm64, container

# The README's Pi section, run as written (sudo aside: these run as root); pip gets the
# wheelhouse as its index.
VENV_COMMAND = f"python3 -m venv --system-site-packages {arm64.VENV}"
PIP_COMMAND = f"{arm64.VENV}/bin/pip install edge_agent-"
# The suite whose root is also the Ansible fleet's arm64 camera.
ANSIBLE_SUITE = "trixie"
# Below Linux's default ephemeral range (32768-60999), which bind(0) draws from.
FLEET_PORTS = range(20000, 32000)


def lower_priority():
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def quiet_port():
    """A free loopback port outside the ephemeral range, so no ``free_port()`` elsewhere draws it."""
    for port in FLEET_PORTS:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {FLEET_PORTS}")


def install(suite, wheel, venv):
    """One suite's root with the agent installed as the README says: (suite, root, venv directory)."""
    started = time.monotonic()
    root = arm64.root(suite)
    if problem := arm64.emulated_cpu_problem(root, arm64.PI_CPUS[suite]):
        pytest.skip(problem)
    rooted = time.monotonic()
    wheels = arm64.wheelhouse(root, suite, wheel)
    downloaded = time.monotonic()
    # As /opt/edge-agent/venv on a Pi: the service user reads it (pytest makes its directories private).
    venv.chmod(0o755)
    pip = f"{PIP_COMMAND}{wheel.name.removeprefix('edge_agent-')}".replace(
        " install ", " install --no-index --find-links /wheels ", 1)
    arm64.run(root, "sh", "-c", f"cd /project && {VENV_COMMAND} && {pip}",
              binds=[f"{venv}:{arm64.VENV}"], read_only_binds=[f"{wheels}:/wheels", f"{wheel.parent}:/project"])
    installed = time.monotonic()
    size = subprocess.run(["du", "-sm", str(venv)], capture_output=True, text=True, check=True).stdout.split()[0]
    print(f"\narm64 {suite}: root {rooted - started:.0f} s, wheels {downloaded - rooted:.0f} s, "
          f"venv + pip install {installed - downloaded:.0f} s, venv {size} MB")
    return suite, root, venv


START = "2026-11-23T10:15:00Z"
# Three 2 s windows of the 4.7 s clip at a frame a second (emulation is slow), one or two people
# in view: min_group 1.
ANALYZE_CONFIG = "window:\n  length_s: 2\n  min_group: 1\n"
# The clip decoded on each machine differs by a level or so (FFmpeg's colour conversion): that test
# checks the decoding, so it scans at OpenCV's own step. The fine scan finds more faces at the
# cascade's threshold in these small blurred frames, and the decoders' difference flipped two of
# them in one window (3 faces on arm64, 1 on x86); the same pixels (images/) find the same faces.
CLIP_CONFIG = ANALYZE_CONFIG + "detector:\n  fine_scan: false\n"
SAMPLE_FPS = "1"
# The batch sizes the classifier's int8 runs are asked for: each interpreter shape the agent pads to (1, 2, 4, 8).
BATCHES = (1, 2, 3, 5)


def inputs(top):
    """What the emulated runs read, and the tests read too, in ``top``: images/, the clip's frames at
    1 a second as PNG (decoded here, so both machines see the same pixels) and the group photo, timed
    a second apart from START; analyze.yaml, which reports one face, and analyze-clip.yaml, the same
    for the clip (CLIP_CONFIG); and faces.npy, the photo's faces
    already at the model's size."""
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
    (top / "analyze-clip.yaml").write_text(CLIP_CONFIG)
    gray = cv2.cvtColor(cv2.imread(str(folder / "solvay_conference.jpg")), cv2.COLOR_BGR2GRAY)
    detector = FaceDetector(CASCADE)
    # Crops already at the model's size: cv2.resize's bilinear mode is not bit-exact across
    # architectures (see the README), INTER_AREA is.
    np.save(top / "faces.npy", np.stack([cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA)
                                         for crop in detector.crops(gray, detector.detect(gray))]))
    return top


def in_pi(pi, *command, binds=(), timeout=1200):
    """Run ``command`` in the suite's root as the Pi's CPU, with the installed venv; its output, and
    its ``seconds``."""
    suite, root, venv = pi
    started = time.monotonic()
    done = arm64.run(root, *command, binds=[f"{venv}:{arm64.VENV}"], read_only_binds=binds,
                     cpu=arm64.PI_CPUS[suite], timeout=timeout)
    done.seconds = time.monotonic() - started
    return done


def installed_sample(venv, name):
    """The path, inside the root, of a sample the wheel installed."""
    (site_packages,) = venv.glob("lib/python3*/site-packages")
    return f"{arm64.VENV}/{site_packages.relative_to(venv)}/edge_agent/samples/{name}"


def classify(pi, top):
    """The installed classifier's probabilities for the first n of faces.npy, for each n of BATCHES."""
    script = ("import json, sys, numpy as np; from edge_agent.agent.emotions import EmotionClassifier; "
              "from edge_agent.agent.paths import DEFAULT_MODEL; faces = np.load('/in/faces.npy'); "
              "c = EmotionClassifier(DEFAULT_MODEL); "
              f"print(json.dumps([c.probabilities(list(faces[:n])).tolist() for n in {BATCHES}]))")
    return in_pi(pi, f"{arm64.VENV}/bin/python", "-c", script, binds=[f"{top}:/in"])


def analyze_images(pi, top):
    """``edge-agent analyze`` over images/: the windows (--json), then each frame (--per-frame)."""
    analyze = f"{arm64.VENV}/bin/edge-agent analyze --config /in/analyze.yaml"
    return in_pi(pi, "sh", "-c", f"{analyze} --json /in/images && {analyze} --per-frame /in/images",
                 binds=[f"{top}:/in"])


def analyze_clip(pi, top):
    """``edge-agent analyze`` over the clip the wheel installed, decoded on the Pi."""
    return in_pi(pi, f"{arm64.VENV}/bin/edge-agent", "analyze", "--config", "/in/analyze-clip.yaml", "--start", START,
                 "--sample-fps", SAMPLE_FPS, "--json", installed_sample(pi[2], "test.mp4"), binds=[f"{top}:/in"])


# What each suite runs under emulation once installed, beside the rest of the session; the tests
# compare the outputs with this machine's.
RUNS = {"classify": classify, "analyze images": analyze_images, "analyze clip": analyze_clip}


def emulation_drop_in(suite):
    """What emulation changes in the unit, and only that.

    The agent needs minutes where a Pi needs seconds to import, load and reach READY. qemu-user
    runs threads of its own, and the kernel refuses a new user namespace to a multi-threaded
    process (EINVAL), so PrivateUsers= cannot be set up under it. Under qemu, trixie's systemd 257
    cannot set up a mount namespace for any unit (journald, logind and tmpfiles fail as the agent
    would, 226/NAMESPACE), so there the sandbox's mount options are off too; bookworm's systemd 252
    keeps them, and the same unit keeps all of them under x86's systemd
    (test_systemd_container.py).
    """
    lines = ["[Service]", "TimeoutStartSec=900", "WatchdogSec=300", "RestartSec=1", "PrivateUsers=no"]
    if suite == "trixie":
        lines += ["PrivateTmp=no", "PrivateMounts=no", "ProtectSystem=no", "ProtectHome=no",
                  "ProtectKernelTunables=no", "ProtectKernelModules=no", "ProtectKernelLogs=no",
                  "ProtectControlGroups=no", "ProtectProc=default", "ProtectHostname=no"]
    return "\n".join(lines) + "\n"


def fleet_inventory(boxes, port, secrets, wheels, pi_32):
    """A server (this machine's architecture), an arm64 camera, and a 32-bit Pi reached by chroot."""
    reach = {"ansible_connection": "community.docker.nsenter", "ansible_python_interpreter": "/usr/bin/python3",
             "ansible_become": False}
    pip_args = "--no-index " + " ".join(f"--find-links {path}" for path in wheels)
    cameras = {"pi-arm": {**reach, "ansible_nsenter_pid": boxes["pi-arm"].leader, "device_id": "pi-arm",
                          "site": "north", "room": "103", "edge_agent_camera_video_src": str(DATA / "test.mp4"),
                          "edge_agent_camera_loop": True}}
    if pi_32 is not None:
        cameras["pi-32"] = {"ansible_connection": "community.general.chroot", "ansible_host": str(pi_32),
                            "ansible_python_interpreter": "/usr/bin/python3", "ansible_become": False,
                            "device_id": "pi-32", "site": "north", "room": "104"}
    return {"all": {
        # The cached root's package lists are as old as the cache: a refresh would be apt's work
        # under emulation (a minute and more), not the role's.
        "vars": {"mqtt_host": "127.0.0.1", "mqtt_port": port, "secrets_dir": str(secrets),
                 "edge_agent_pip_extra_args": pip_args, "collector_pip_extra_args": pip_args,
                 "edge_agent_apt_cache_valid_time": 365 * 86400},
        "children": {
            "servers": {"vars": reach, "hosts": {"server": {"ansible_nsenter_pid": boxes["server"].leader}}},
            # The containers share this machine's kernel clock, which no NTP daemon disciplines here.
            "cameras": {"vars": {"edge_agent_window_length_s": 10, "edge_agent_window_min_group": 1,
                                 "edge_agent_camera_fps": 1, "edge_agent_clock_require_sync": False},
                        "hosts": cameras},
        },
    }}


def thirty_two_bit_root(tmp):
    """A copy of a cached armhf Debian (32-bit Raspberry Pi OS's base), or None where it cannot run."""
    if arm64.unavailable("qemu-arm"):
        return None
    cached = arm64.root(**arm64.ARMHF_ROOT)
    copy = tmp / "pi-32"
    subprocess.run(["cp", "-a", "--reflink=auto", str(cached), str(copy)], check=True, timeout=600)
    return copy


KEY = pytest.StashKey()


def started(config):
    """The session's setup, started now if it was not at the session's start (a cold cache)."""
    if KEY not in config.stash:
        config.stash[KEY] = Setup(config._tmp_path_factory).start()
    return config.stash[KEY]


def close(config):
    if KEY in config.stash:
        config.stash[KEY].close()


def timeline(config) -> str | None:
    return config.stash[KEY].timeline() if KEY in config.stash else None


class Setup:
    """The arm64 tests' setup in a background thread: ``installs[suite]``, ``runs[suite][name]``
    (:data:`RUNS`), ``inputs`` (the directory they read) and ``fleet`` are futures."""

    def __init__(self, tmp_path_factory):
        self.tmp = tmp_path_factory
        self.wheel = Future()
        self.inputs = Future()
        self.installs = {suite: Future() for suite in arm64.SUITES}
        self.runs = {suite: {name: Future() for name in RUNS} for suite in arm64.SUITES}
        self.fleet = Future()
        self.boxes = {}
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._run, name="arm64-setup", daemon=True)
        # When each part was ready and when the first arm64 test asked, in seconds from the start.
        self.began = 0.0
        self.ready: dict[str, float] = {}
        self.first_test_s: float | None = None

    def start(self):
        self.began = time.monotonic()
        self.thread.start()
        return self

    def test_began(self):
        if self.first_test_s is None:
            self.first_test_s = time.monotonic() - self.began

    def timeline(self) -> str:
        """One line for the session's summary: what was ready when, against when the arm64 tests began."""
        parts = [f"{name} {seconds / 60:.1f}" for name, seconds in self.ready.items()]
        began = "never" if self.first_test_s is None else f"at {self.first_test_s / 60:.1f}"
        return (f"arm64 setup, minutes from the session's start: {', '.join(parts) or 'nothing ready'}; "
                f"the first arm64 test began {began}, the session ended at {(time.monotonic() - self.began) / 60:.1f}")

    def _run(self):
        lower_priority()
        if not self._settle("wheel", self.wheel, arm64.agent_wheel, self.tmp.mktemp("wheel")):
            for future in (self.inputs, *self.installs.values(), *self._all_runs(), self.fleet):
                future.set_exception(self.wheel.exception())
            return
        wheel = self.wheel.result()
        self._settle("inputs", self.inputs, inputs, self.tmp.mktemp("inputs"))
        # An emulated process keeps one core busy: the suites install and run side by side with the fleet.
        with ThreadPoolExecutor(len(self.installs), initializer=lower_priority) as pool:
            for suite in self.installs:
                pool.submit(self._install_and_run, suite, wheel)
            self._settle("fleet", self.fleet, self._fleet, wheel)

    def _all_runs(self):
        return [future for runs in self.runs.values() for future in runs.values()]

    def _install_and_run(self, suite, wheel):
        """A suite's install, then its emulated runs one after another."""
        installed = self._settle(f"{suite} install", self.installs[suite], install, suite, wheel,
                                 self.tmp.mktemp(f"venv-{suite}"))
        for name, function in RUNS.items():
            future = self.runs[suite][name]
            if not installed:
                future.set_exception(self.installs[suite].exception())
            elif self.inputs.exception() is not None:
                future.set_exception(self.inputs.exception())
            elif self.closing.is_set():
                future.set_exception(RuntimeError("the session ended before the emulated runs"))
            else:
                self._settle(f"{suite} {name}", future, function, self.installs[suite].result(),
                             self.inputs.result())

    def _settle(self, name, future, function, *args):
        try:
            future.set_result(function(*args))
            return True
        except BaseException as error:  # pytest.skip raises a BaseException: it reaches the test too
            future.set_exception(error)
            return False
        finally:
            self.ready[name] = time.monotonic() - self.began

    def _fleet(self, wheel):
        for reason in (container.unavailable(), ansible_lab.unavailable()):
            if reason:
                pytest.skip(reason)
        tmp = self.tmp.mktemp("fleet")
        root = arm64.root(ANSIBLE_SUITE)
        wheels = [ansible_lab.dependency_wheels(), ansible_lab.project_wheel(tmp / "project"),
                  arm64.wheelhouse(root, ANSIBLE_SUITE, wheel)]
        pi_32 = thirty_two_bit_root(tmp)
        dpkg_status = (pi_32 / "var/lib/dpkg/status").read_bytes() if pi_32 else None
        binds = [str(path) for path in wheels]
        self.boxes = {"server": container.Container(read_only_binds=binds),
                      "pi-arm": container.Container(root=root, read_only_binds=binds)}
        for box in self.boxes.values():
            if self.closing.is_set():
                raise RuntimeError("the session ended before the fleet was up")
            box.start(timeout=900)
        self.boxes["pi-arm"].write("/etc/systemd/system/edge-agent.service.d/emulation.conf",
                                   emulation_drop_in(ANSIBLE_SUITE))
        inventory = ansible_lab.write_inventory(tmp / "hosts.yml", fleet_inventory(
            self.boxes, quiet_port(), tmp / "secrets", wheels, pi_32))
        runs = {}
        for name in ("first", "second"):
            if self.closing.is_set():
                raise RuntimeError("the session ended before site.yml ran twice")
            runs[name] = ansible_lab.playbook(inventory, timeout=3600)
        print("\nsite.yml with an emulated arm64 camera: " + ", ".join(
            f"{name} run {run.seconds:.0f} s" for name, run in runs.items()))
        return {"boxes": self.boxes, "runs": runs, "pi_32": pi_32, "dpkg_status": dpkg_status}

    def close(self):
        """Stop the fleet's containers (a playbook still running then fails at once) and wait for the thread."""
        self.closing.set()
        for box in list(self.boxes.values()):
            box.stop()
        if self.thread.is_alive():
            self.thread.join()
        # A container started while the first ones were stopping.
        for box in list(self.boxes.values()):
            box.stop()
