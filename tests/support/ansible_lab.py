"""What the Ansible system test needs around the playbook: wheels, an inventory, runs, MQTT probes.

The hosts are systemd containers (support/container.py) reached with the nsenter connection
plugin, so no sshd is needed; they share the host's network, so the broker they run is on
127.0.0.1 for everyone.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from support import REPO, source_copy

ANSIBLE_DIR = REPO / "ansible"
BIN = Path(sys.executable).parent
WHEEL_CACHE = Path(os.environ.get("EDGE_AGENT_WHEELHOUSE", "/var/tmp/edge-agent-test/wheelhouse"))
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def unavailable():
    if not (BIN / "ansible-playbook").exists():
        return "ansible is not installed in this venv (pip install ansible)"
    return None


def _pip_wheel(*args, timeout=900):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", *args], capture_output=True,
                            text=True, timeout=timeout)
    if result.returncode:
        pytest.skip(f"cannot build wheels (no package index?): {result.stderr.strip()[-500:]}")


def _both_distributions(*args):
    """pip wheel of the agent's and the collector's distributions, built from a copy of the checkout."""
    with tempfile.TemporaryDirectory() as tmp:
        source = source_copy(Path(tmp) / "edge-agent")
        _pip_wheel(*args, str(source), str(source / "collector"))


def dependency_wheels():
    """Wheels of both distributions' dependencies, built once per version of what declares them and cached."""
    declared = [REPO / "setup.py", REPO / "collector" / "setup.py", *sorted((REPO / "requirements").glob("*.txt"))]
    key = hashlib.sha256(b"".join(path.read_bytes() for path in declared)).hexdigest()[:12]
    wheels = WHEEL_CACHE / key
    if wheels.is_dir():
        return wheels
    partial = WHEEL_CACHE / f"{key}.partial-{uuid.uuid4().hex[:6]}"
    _both_distributions("--wheel-dir", str(partial))
    for wheel in [*partial.glob("edge_agent-*.whl"), *partial.glob("edge_collector-*.whl")]:
        wheel.unlink()
    try:
        partial.rename(wheels)
    except OSError:  # another run finished first
        shutil.rmtree(partial, ignore_errors=True)
    for stale in WHEEL_CACHE.iterdir():  # wheels for an older setup.py (about 130 MB each)
        if stale.name != key and "partial" not in stale.name:
            shutil.rmtree(stale, ignore_errors=True)
    return wheels


def project_wheel(directory):
    """This checkout as the two wheels, built for each run so the hosts get the code under test."""
    _both_distributions("--no-deps", "--wheel-dir", str(directory))
    return directory


def write_inventory(path, data):
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def vault_encrypt(password_file, *paths):
    subprocess.run([str(BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(password_file),
                    *map(str, paths)], check=True, capture_output=True, timeout=120)


def playbook(inventory, *args, timeout=900):
    """Run site.yml as IT would; the finished process (output in .stdout, duration in .seconds)."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg")}
    started = time.monotonic()
    result = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), "site.yml", *args],
                            cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=timeout)
    result.seconds = time.monotonic() - started
    return result


def stored_windows(server, device, timeout=90):
    """How many windows of ``device`` the collector on ``server`` has stored, waiting up to
    ``timeout`` seconds for the first."""
    count_rows = ("import sqlite3; print(sqlite3.connect('file:/var/lib/edge-collector/collector.sqlite3"
                  "?mode=ro', uri=True).execute(\"select count(*) from windows where device = ?\", "
                  f"({device!r},)).fetchone()[0])")
    deadline = time.monotonic() + timeout
    while True:
        result = server.run("python3", "-c", count_rows, check=False)
        rows = int(result.stdout) if result.returncode == 0 else 0
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(2)


def recap(output):
    """``{host: {"ok": n, "changed": n, "unreachable": n, "failed": n}}`` from PLAY RECAP."""
    return {host: dict(zip(("ok", "changed", "unreachable", "failed"), map(int, numbers), strict=True))
            for host, *numbers in RECAP.findall(output)}


class Client:
    """A paho client that connects once and says how the broker answered.

    ``resume=True`` logs in as a persistent session would (no clean start, a week's expiry) and
    acknowledges nothing, so a session it resumes keeps every queued message for its owner;
    ``reconnect=False`` leaves it disconnected once the broker drops it (``disconnected`` is set).
    """

    def __init__(self, port, *, ca=None, username=None, password=None, client_id=None, resume=False,
                 reconnect=True):
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id=client_id or f"probe-{uuid.uuid4().hex[:8]}", manual_ack=resume,
                                  reconnect_on_failure=reconnect)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca))
        if username is not None:
            self.client.username_pw_set(username, password)
        self.port = port
        self.resume = resume
        self.connack = None
        self.messages = []
        self.received = []
        self.disconnected = threading.Event()
        self._answered = threading.Event()
        self._arrived = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *args: self.disconnected.set()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = reason_code
        self._answered.set()

    def _on_message(self, client, userdata, message):
        with self._arrived:
            self.messages.append(message.topic)
            self.received.append((message.topic, bytes(message.payload[:200]), len(message.payload),
                                  bool(message.retain)))
            self._arrived.notify_all()

    def connect(self, timeout=10):
        """The CONNACK reason code, or the exception that stopped the connection."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = None
        if self.resume:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 7 * 24 * 3600
        try:
            self.client.connect("127.0.0.1", self.port, keepalive=10, clean_start=not self.resume,
                                properties=properties)
        except (OSError, ValueError) as exc:
            return exc
        self.client.loop_start()
        self._answered.wait(timeout)
        return self.connack

    def subscribe(self, topic):
        result, mid = self.client.subscribe(topic, qos=1)
        assert result == 0, result

    def publish(self, topic, payload=b"{}", retain=False):
        return self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def wait_for(self, topic, timeout=10):
        with self._arrived:
            return self._arrived.wait_for(lambda: topic in self.messages, timeout)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()
