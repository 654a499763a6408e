"""The collector's unit under a real systemd (its sandbox included), in a container sharing the host's loopback."""

import sys
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from support import REPO, container
from support.broker import Mosquitto
from support.container import VENV, drop_in
from support.windows import lesson

pytestmark = pytest.mark.skipif(container.unavailable() is not None, reason=str(container.unavailable()))

UNIT = REPO / "systemd" / "edge-collector.service"


def show(box, *properties):
    output = box.run("systemctl", "show", "edge-collector", *(f"--property={p}" for p in properties)).stdout
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def test_collector_unit_runs_sandboxed_stores_windows_and_writes_the_dashboard():
    binds = sorted({str(REPO), str(VENV), str(Path(sys.base_prefix))})
    with Mosquitto() as broker, container.Container(read_only_binds=binds) as box:
        box.run("useradd", "--system", "--no-create-home", "edge-collector")
        box.write("/etc/systemd/system/edge-collector.service", UNIT.read_text())
        box.write("/etc/systemd/system/edge-collector.service.d/test.conf",
                  drop_in("edge-collector run --config /etc/edge-collector/collector.yaml", watchdog_s=10))
        box.write("/etc/edge-collector/collector.yaml",
                  f"mqtt:\n  host: 127.0.0.1\n  port: {broker.port}\n  client_id: box-collector\n"
                  f"dashboard:\n  refresh_s: 5\n")
        box.run("systemctl", "daemon-reload")
        started = box.run("systemctl", "start", "edge-collector", timeout=90, check=False)
        journal = lambda: box.run("journalctl", "-u", "edge-collector", "--no-pager", "-n", "40").stdout  # noqa: E731
        assert started.returncode == 0, started.stderr + journal()
        state = show(box, "ActiveState", "SubState", "User", "StatusText")
        assert (state["ActiveState"], state["SubState"], state["User"]) == ("active", "running", "edge-collector")

        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="pi-101a", protocol=paho.MQTTv5)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        for payload in lesson(range(3), devices=("pi-101a",)):
            client.publish("classroom/north/101/pi-101a/emotions", payload.to_json(), qos=1).wait_for_publish(10)
        client.disconnect()
        client.loop_stop()

        page = "/var/lib/edge-collector/dashboard/rooms/north/101.html"
        deadline = time.monotonic() + 40
        while box.run("test", "-f", page, check=False).returncode:
            assert time.monotonic() < deadline, journal()
            time.sleep(1)
        listing = box.run("ls", "-l", "/var/lib/edge-collector").stdout
        assert "collector.sqlite3" in listing and "edge-collector" in listing
        # The per-room rules are the web server's: another local user reads neither the store nor a page.
        store = "/var/lib/edge-collector/collector.sqlite3"
        modes = box.run("stat", "-c", "%n %a %U:%G", "/var/lib/edge-collector", store, page).stdout.splitlines()
        assert modes == ["/var/lib/edge-collector 750 edge-collector:edge-collector",
                         f"{store} 600 edge-collector:edge-collector",
                         f"{page} 640 edge-collector:edge-collector"], modes
        for path in (store, page):
            denied = box.run("runuser", "-u", "nobody", "--", "cat", path, check=False)
            assert denied.returncode != 0 and "Permission denied" in denied.stderr, (path, denied.stdout[:200])
        assert "Traceback" not in journal()
        box.run("systemctl", "stop", "edge-collector", timeout=60)
        assert show(box, "Result")["Result"] == "success"
