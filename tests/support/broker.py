"""A real mosquitto for tests: a child process on a free loopback port, its files in a temp dir.

    with Mosquitto() as broker:               # anonymous, no persistence
        ...  broker.port, broker.stop(), broker.kill(), broker.restart(), broker.log_text()

``users={"name": "password"}`` writes a password file with mosquitto_passwd; ``persistence=True``
keeps retained messages and persistent sessions in the temp dir across stop()/restart()
(mosquitto writes its database on SIGTERM, not on SIGKILL unless ``autosave_interval`` is set).

The ``mosquitto`` fixture (tests/conftest.py) is a started one. ``Subscriber`` is a paho client
that records what arrives; ``publisher`` and ``publish`` send raw messages as a device would.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from support import free_port, port_open

MOSQUITTO = os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = os.environ.get("MOSQUITTO_PASSWD", "/usr/bin/mosquitto_passwd")


class BrokerError(RuntimeError):
    pass


class Mosquitto:
    def __init__(self, *, port=None, allow_anonymous=True, users=None, persistence=False, acl=None,
                 autosave_interval=None, extra_config=""):
        if shutil.which(MOSQUITTO) is None:
            pytest.skip(f"{MOSQUITTO} is not installed")
        self.port = port or free_port()
        self.allow_anonymous = allow_anonymous
        self.users = dict(users or {})
        self.persistence = persistence
        self.acl = acl
        self.autosave_interval = autosave_interval
        self.extra_config = extra_config
        self.dir = Path(tempfile.mkdtemp(prefix="mosquitto-"))
        self.conf = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        self.proc = None
        self._write_config()

    # -- files ------------------------------------------------------------------------------

    def _write_config(self):
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            "log_dest stderr",
            "log_type all",
            "connection_messages true",
            "log_timestamp true",
        ]
        if os.geteuid() == 0:
            # As root mosquitto would switch to its own user, which cannot write this dir.
            lines.append("user root")
        if self.users:
            passwd = self.dir / "passwd"
            first = True
            for name, password in self.users.items():
                args = [MOSQUITTO_PASSWD, "-b"] + (["-c"] if first else []) + [str(passwd), name, password]
                subprocess.run(args, check=True, capture_output=True, timeout=30)
                first = False
            os.chmod(passwd, 0o600)
            lines.append(f"password_file {passwd}")
        if self.acl is not None:
            acl_path = self.dir / "acl"
            acl_path.write_text(self.acl)
            os.chmod(acl_path, 0o600)
            lines.append(f"acl_file {acl_path}")
        if self.persistence:
            store = self.dir / "store"
            store.mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {store}/"]
            if self.autosave_interval is not None:
                lines.append(f"autosave_interval {self.autosave_interval}")
        else:
            lines.append("persistence false")
        if self.extra_config:
            lines.append(self.extra_config)
        self.conf.write_text("\n".join(lines) + "\n")

    # -- process ----------------------------------------------------------------------------

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=10):
        if self.running:
            return self
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with status {self.proc.returncode}:\n{self.log_text()}")
            if port_open(self.port):
                return self
            time.sleep(0.02)
        self.kill()
        raise BrokerError(f"mosquitto did not listen on port {self.port} within {timeout} s:\n{self.log_text()}")

    def stop(self, timeout=10):
        """SIGTERM and wait: mosquitto saves its database (with persistence) and closes clients."""
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._wait_port_closed()

    def kill(self):
        """SIGKILL: as if the server lost power (nothing saved since the last autosave)."""
        if self.running:
            self.proc.kill()
            self.proc.wait()
        self._wait_port_closed()

    def restart(self, timeout=10):
        self.stop()
        return self.start(timeout)

    def _wait_port_closed(self, timeout=5):
        deadline = time.monotonic() + timeout
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def count_in_log(self, text):
        return self.log_text().count(text)

    def cleanup(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.cleanup()


class Subscriber:
    """A paho client (QoS 1 subscriptions) that records ``(topic, payload, retain)`` as it arrives.

    ``messages`` holds those triples; ``received`` the same with the QoS as a fourth item.
    ``clean_session=False`` with a fixed ``client_id`` is a persistent session: the broker keeps
    the subscription and queues QoS 1 messages while the subscriber is away. It reconnects by
    itself (1 s apart) when the broker goes away.
    """

    def __init__(self, port, topics, *, username=None, password=None, client_id=None, clean_session=True,
                 timeout=10):
        import paho.mqtt.client as mqtt

        self.received = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        if isinstance(topics, str):
            topics = [topics]
        self.topics = list(topics)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"sub-{uuid.uuid4().hex[:8]}", clean_session=clean_session)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.close()
            raise BrokerError(f"subscriber could not subscribe to {self.topics} on port {port}")

    @property
    def messages(self):
        with self._cond:
            return [(name, payload, retain) for name, payload, retain, _ in self.received]

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe([(name, 1) for name in self.topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        if not any(code.is_failure for code in reason_codes):
            self._subscribed.set()

    def _on_message(self, client, userdata, message):
        with self._cond:
            self.received.append((message.topic, bytes(message.payload), bool(message.retain), message.qos))
            self._cond.notify_all()

    def snapshot(self):
        return self.messages

    def payloads(self, topic_suffix=""):
        return [payload for name, payload, _ in self.snapshot() if name.endswith(topic_suffix)]

    def wait_for(self, predicate, timeout=10):
        """Wait until ``predicate(messages)`` is true; return the messages, or raise AssertionError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                messages = [(name, payload, retain) for name, payload, retain, _ in self.received]
                if predicate(messages):
                    return messages
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout} s; got {len(messages)} message(s), "
                                         f"the last ones: {messages[-5:]}")
                self._cond.wait(min(left, 0.1))

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def publisher(port):
    """A started MQTT 5 client for sending raw messages as a device would."""
    import paho.mqtt.client as paho

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-publisher", protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def publish(client, topic, body):
    client.publish(topic, body, qos=1).wait_for_publish(5)
