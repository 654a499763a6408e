"""The agent's unit under a real systemd, booted in a container that shares the host's loopback."""

import json
import sys
import time
from pathlib import Path

import pytest

from support import DATA, REPO, container
from support.broker import Mosquitto, Subscriber
from support.container import VENV, drop_in

pytestmark = pytest.mark.skipif(container.unavailable() is not None, reason=str(container.unavailable()))

UNIT = REPO / "systemd" / "edge-agent.service"
STATUS = "classroom/north/101/pi-box/status"


def agent_config(port, loop):
    return (f"device:\n  id: pi-box\n  site: north\n  room: '101'\n"
            f"camera:\n  source: {DATA / 'test.mp4'}\n  loop: {str(loop).lower()}\n  fps: 4\n  stall_s: 2\n"
            f"window:\n  length_s: 2\n  min_group: 1\n"
            f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  keepalive_s: 5\n"
            # The container shares the host's kernel clock, which no NTP daemon disciplines here.
            f"clock:\n  require_sync: false\n")


@pytest.fixture(scope="module")
def box():
    binds = sorted({str(REPO), str(VENV), str(Path(sys.base_prefix))})
    with container.Container(read_only_binds=binds) as box:
        box.run("useradd", "--system", "--no-create-home", "--groups", "video", "edge-agent")
        box.write("/etc/systemd/system/edge-agent.service", UNIT.read_text())
        box.write("/etc/systemd/system/edge-agent.service.d/test.conf", drop_in())
        yield box


def start(box, verb):
    result = box.run("systemctl", verb, "edge-agent", timeout=90, check=False)
    journal = box.run("journalctl", "-u", "edge-agent", "--no-pager", "-n", "40", check=False).stdout
    assert result.returncode == 0, result.stderr + journal


def show(box, *properties):
    output = box.run("systemctl", "show", "edge-agent", *(f"--property={p}" for p in properties)).stdout
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def test_unit_becomes_active_after_ready_and_publishes(box):
    with Mosquitto() as broker, Subscriber(broker.port, ["classroom/north/101/pi-box/#"]) as subscriber:
        box.write("/etc/edge-agent/edge-agent.yaml", agent_config(broker.port, loop=True))
        box.run("systemctl", "daemon-reload")
        # Type=notify: start returns only once the agent sent READY=1.
        start(box, "start")
        state = show(box, "ActiveState", "SubState", "StatusText", "User")
        assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
        assert state["User"] == "edge-agent"
        assert "camera running" in state["StatusText"]
        subscriber.wait_for(lambda m: sum(n.endswith("/emotions") for n, _, _ in m) >= 2, timeout=30)
        box.run("systemctl", "stop", "edge-agent", timeout=60)
        assert json.loads(subscriber.payloads("/status")[-1])["state"] == "stopped"
    state_dir = box.run("ls", "-A", "/var/lib/edge-agent").stdout.split()
    # The outbox, its single-agent lock and the learned face bands (rows of the frame): never a picture.
    assert set(state_dir) <= {"outbox.sqlite3", "outbox.sqlite3-wal", "outbox.sqlite3-shm", "outbox.sqlite3.lock",
                              "face_search.json"}


def test_stalled_camera_gets_the_service_restarted_by_the_watchdog(box):
    with Mosquitto() as broker:
        # Without loop the video ends after 4.7 s: from then on no frame arrives.
        box.write("/etc/edge-agent/edge-agent.yaml", agent_config(broker.port, loop=False))
        box.run("systemctl", "daemon-reload")
        box.run("systemctl", "reset-failed", "edge-agent", check=False)
        start(box, "restart")
        deadline = time.monotonic() + 40
        restarts = 0
        while time.monotonic() < deadline and restarts < 1:
            time.sleep(1)
            restarts = int(show(box, "NRestarts")["NRestarts"])
        journal = box.run("journalctl", "-u", "edge-agent", "--no-pager", check=False).stdout
        box.run("systemctl", "stop", "edge-agent", timeout=60, check=False)
    assert restarts >= 1, journal
    assert "Watchdog timeout" in journal
