"""``edge-collector run`` as a process: a real mosquitto, a real store, killed and restarted."""

import os
import signal
import subprocess
import sys
import threading
import time

import paho.mqtt.client as paho
import pytest

from edge_agent.collector.store import Store
from support import REPO
from support.broker import Mosquitto
from support.postgres import Postgres, find_bin_dir
from support.windows import window

DEVICES = ("pi-101a", "pi-101b", "pi-102a")


class Collector:
    """The collector as systemd runs it, its log in a file the test can read while it runs."""

    def __init__(self, config, log_path):
        self.config = config
        self.log_path = log_path
        self.process = None

    def start(self):
        self.log = open(self.log_path, "a")
        self.process = subprocess.Popen([sys.executable, "-m", "edge_agent.collector.cli", "run", "--config",
                                         str(self.config)], stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO,
                                        start_new_session=True)
        return self

    def log_text(self):
        return self.log_path.read_text()

    def wait_for_log(self, text, count=1, timeout=30):
        deadline = time.monotonic() + timeout
        while self.log_text().count(text) < count:
            assert self.process.poll() is None, f"collector exited {self.process.returncode}:\n{self.log_text()}"
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.log_text()}"
            time.sleep(0.1)

    def kill(self):
        self.process.kill()
        self.process.wait(10)
        self.log.close()

    def terminate(self, timeout=30, *, group=False):
        """SIGTERM to the collector, or with ``group`` to all its processes at once, as systemd stops a unit."""
        if group:
            os.killpg(self.process.pid, signal.SIGTERM)
        else:
            self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout)
        self.log.close()
        return status


def write_config(path, port, *, store_url, output_dir, client_id="collector-test"):
    path.write_text(f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  client_id: {client_id}\n  reconnect_max_s: 1\n"
                    f"store:\n  url: {store_url}\n"
                    f"dashboard:\n  output_dir: {output_dir}\n  refresh_s: 5\n")
    return path


def device_client(port, device):
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=device, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def publish_lesson(port, minutes, pause_s, stop):
    """Each device publishes its windows at QoS 1, as the agent does, with a pause between minutes."""
    clients = {device: device_client(port, device) for device in DEVICES}
    try:
        for minute in minutes:
            if stop.is_set():
                return
            for device, client in clients.items():
                payload = window(device, minute, room=device[3:6], happy=minute % 7, neutral=3, sad=1)
                client.publish(f"classroom/north/{payload.room}/{device}/emotions", payload.to_json(),
                               qos=1).wait_for_publish(10)
            time.sleep(pause_s)
    finally:
        for client in clients.values():
            client.disconnect()
            client.loop_stop()


def stored(url):
    store = Store(url)
    try:
        return {(p.device, p.start_epoch): p for room in store.rooms() for p in store.windows(*room)}
    finally:
        store.close()


def test_killed_and_restarted_collector_stores_every_window_exactly_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'collector.sqlite3'}"
    with Mosquitto(persistence=True, extra_config="max_queued_messages 100000\n") as broker:
        config = write_config(tmp_path / "collector.yaml", broker.port, store_url=url, output_dir=tmp_path / "www")
        collector = Collector(config, tmp_path / "collector.log").start()
        collector.wait_for_log("(session new)")
        stop = threading.Event()
        publisher = threading.Thread(target=publish_lesson, args=(broker.port, range(300), 0.01, stop))
        publisher.start()
        try:
            time.sleep(1.0)
            collector.kill()  # SIGKILL: no chance to finish a batch or acknowledge anything
            time.sleep(1.0)   # windows keep coming and queue in the broker for the collector's session
            collector.start()
            collector.wait_for_log("(session resumed)")
            publisher.join(60)
            assert not publisher.is_alive()
            # An agent that lost the broker's acknowledgement publishes a window again.
            publish_lesson(broker.port, range(0, 300, 10), 0, stop)
            deadline = time.monotonic() + 60
            while len(stored(url)) < 300 * len(DEVICES) and time.monotonic() < deadline:
                time.sleep(0.5)
            # The dashboard worker draws beside ingest, at its own pace.
            room = tmp_path / "www" / "rooms" / "north" / "101.html"
            while not room.is_file() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert collector.terminate() == 0
        finally:
            stop.set()
            if collector.process.poll() is None:
                collector.kill()
    rows = stored(url)
    expected = {(device, window(device, minute).start_epoch): (device, minute)
                for device in DEVICES for minute in range(300)}
    assert rows.keys() == expected.keys()
    for key, (device, minute) in expected.items():
        assert rows[key].counts.happy == minute % 7 and rows[key].room == device[3:6]
    assert "stopped" in collector.log_text()
    assert (tmp_path / "www" / "index.html").is_file()
    assert (tmp_path / "www" / "rooms" / "north" / "101.html").is_file()


def test_an_unreachable_store_is_retried_until_it_comes_up(tmp_path):
    if find_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = Postgres()
    url = server.url.replace("postgres@", "postgres:hunter2@")
    with Mosquitto() as broker:
        config = write_config(tmp_path / "collector.yaml", broker.port, store_url=url, output_dir=tmp_path / "www")
        collector = Collector(config, tmp_path / "collector.log").start()
        try:
            collector.wait_for_log("retrying in 2 s")
            log = collector.log_text()
            assert f"cannot open the store postgresql+psycopg://postgres:***@127.0.0.1:{server.port}/collector" in log
            assert "hunter2" not in log
            with server:
                collector.wait_for_log("(session new)", timeout=60)
                publish_lesson(broker.port, range(3), 0, threading.Event())
                deadline = time.monotonic() + 30
                while len(stored(server.url)) < 3 * len(DEVICES):
                    assert time.monotonic() < deadline, collector.log_text()
                    time.sleep(0.2)
                assert collector.terminate() == 0
        finally:
            if collector.process.poll() is None:
                collector.kill()
            server.stop()


def wait_for_windows(url, count, collector, timeout=30):
    deadline = time.monotonic() + timeout
    while len(stored(url)) < count:
        assert time.monotonic() < deadline, f"{len(stored(url))} of {count} windows stored:\n{collector.log_text()}"
        time.sleep(0.2)


def test_a_collector_killed_while_its_store_is_down_loses_no_window(tmp_path):
    if find_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    no_stop = threading.Event()
    with Postgres() as server, Mosquitto(persistence=True) as broker:
        config = write_config(tmp_path / "collector.yaml", broker.port, store_url=server.url,
                              output_dir=tmp_path / "www")
        collector = Collector(config, tmp_path / "collector.log").start()
        try:
            collector.wait_for_log("(session new)")
            publish_lesson(broker.port, range(0, 5), 0, no_stop)
            wait_for_windows(server.url, 5 * len(DEVICES), collector)
            server.go_down()
            publish_lesson(broker.port, range(5, 10), 0, no_stop)
            # The collector holds these windows and cannot store them: the moment to lose them.
            collector.wait_for_log("cannot write windows to")
            collector.kill()
            publish_lesson(broker.port, range(10, 15), 0, no_stop)
            server.come_back()
            collector.start()
            collector.wait_for_log("(session resumed)")
            wait_for_windows(server.url, 15 * len(DEVICES), collector)
        finally:
            if collector.process.poll() is None:
                collector.kill()
        store = Store(server.url)
        try:
            assert store.count_windows() == 15 * len(DEVICES)
        finally:
            store.close()
        assert set(stored(server.url)) == {(device, window(device, minute).start_epoch)
                                           for device in DEVICES for minute in range(15)}


def test_an_unwritable_output_directory_stops_the_collector_with_the_reason(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = write_config(tmp_path / "collector.yaml", 1, store_url=f"sqlite:///{tmp_path / 'c.sqlite3'}",
                          output_dir=blocker / "www")
    result = subprocess.run([sys.executable, "-m", "edge_agent.collector.cli", "run", "--config", str(config)],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2
    assert f"dashboard output {blocker / 'www'} cannot be written" in result.stderr


def test_two_collectors_in_a_shared_group_split_the_windows_between_them(tmp_path):
    urls = [f"sqlite:///{tmp_path / f'{name}.sqlite3'}" for name in ("a", "b")]
    with Mosquitto() as broker:
        collectors = []
        for name, url in zip(("a", "b"), urls, strict=True):
            config = write_config(tmp_path / f"{name}.yaml", broker.port, store_url=url,
                                  output_dir=tmp_path / f"www-{name}", client_id=f"collector-{name}")
            config.write_text(config.read_text().replace("mqtt:\n", "mqtt:\n  shared_group: school\n"))
            collectors.append(Collector(config, tmp_path / f"{name}.log").start())
        try:
            for collector in collectors:
                collector.wait_for_log("(session new)")
            publish_lesson(broker.port, range(100), 0, threading.Event())
            deadline = time.monotonic() + 30
            while sum(len(stored(url)) for url in urls) < 100 * len(DEVICES):
                assert time.monotonic() < deadline
                time.sleep(0.2)
        finally:
            for collector in collectors:
                assert collector.terminate() == 0
    a, b = (set(stored(url)) for url in urls)
    assert a and b, "both collectors take a share"
    assert not a & b, "no window goes to both"
    assert len(a | b) == 100 * len(DEVICES)


def test_device_status_reaches_the_dashboard(tmp_path):
    with Mosquitto() as broker:
        config = write_config(tmp_path / "collector.yaml", broker.port,
                              store_url=f"sqlite:///{tmp_path / 'c.sqlite3'}", output_dir=tmp_path / "www")
        collector = Collector(config, tmp_path / "collector.log").start()
        try:
            collector.wait_for_log("(session new)")
            client = device_client(broker.port, "pi-102a")
            client.publish("classroom/north/102/pi-102a/status", b'{"state":"online","device":"pi-102a",'
                           b'"camera":"ok","version":"0.1.0"}', qos=1, retain=True).wait_for_publish(10)
            client.disconnect()
            index = tmp_path / "www" / "index.html"
            deadline = time.monotonic() + 30
            while "pi-102a (online)" not in (index.read_text() if index.exists() else ""):
                assert time.monotonic() < deadline, collector.log_text()
                time.sleep(0.5)
        finally:
            assert collector.terminate() == 0
    assert "no data from this room yet" in index.read_text()
