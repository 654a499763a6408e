"""What the arm64 tests need before they test anything, begun when the session starts.

Under emulation the setup is most of the arm64 tests' time: each suite's install as the README's
Pi section does it (a venv and pip, minutes), and the fleet's two site.yml runs on an emulated
camera (ten minutes and more). None of it depends on another test, so ``start`` runs it in a
background thread at the lowest CPU priority from the session's start (conftest.py), beside the
rest of the suite; the arm64 tests, which run last, then wait only for what is left.

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
import socket
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from support import DATA, ansible_lab, arm64, container

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


class Setup:
    """The arm64 tests' setup in a background thread: ``installs[suite]`` and ``fleet`` are futures."""

    def __init__(self, tmp_path_factory):
        self.tmp = tmp_path_factory
        self.wheel = Future()
        self.installs = {suite: Future() for suite in arm64.SUITES}
        self.fleet = Future()
        self.boxes = {}
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._run, name="arm64-setup", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        lower_priority()
        if not self._settle(self.wheel, arm64.agent_wheel, self.tmp.mktemp("wheel")):
            for future in (*self.installs.values(), self.fleet):
                future.set_exception(self.wheel.exception())
            return
        wheel = self.wheel.result()
        # An emulated process keeps one core busy: the suites install side by side with the fleet.
        with ThreadPoolExecutor(len(self.installs), initializer=lower_priority) as pool:
            for suite, future in self.installs.items():
                pool.submit(self._settle, future, install, suite, wheel, self.tmp.mktemp(f"venv-{suite}"))
            self._settle(self.fleet, self._fleet, wheel)

    @staticmethod
    def _settle(future, function, *args):
        try:
            future.set_result(function(*args))
            return True
        except BaseException as error:  # pytest.skip raises a BaseException: it reaches the test too
            future.set_exception(error)
            return False

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
