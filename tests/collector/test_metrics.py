"""The fleet in Prometheus: ``edge-collector run`` with ``metrics.port``, fed through a real mosquitto by
publishers of contract messages, scraped by a real Prometheus that the tests query as IT's Grafana would."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import paho.mqtt.client as paho
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import text

from edge_agent.collector.fleet import Thresholds
from edge_agent.collector.metrics import FleetMetrics
from edge_agent.common.contract import EMOTIONS, StatusPayload
from support import REPO, free_port
from support.broker import Mosquitto
from support.prometheus import Prometheus
from support.windows import window

GOOD = {"pi-101a": {"fps": 0.8, "outbox_depth": 4, "detect_ms": 120.0, "classify_ms": 6.0, "faces_per_frame": 12.0,
                    "cpu_temp_c": 61.5, "rss_mb": 200.0, "load_1m": 1.25},
        "pi-102a": {"fps": 1.0, "outbox_depth": 0}}
# Each refused by the contract: a negative fps, NaN, a CPU at 10,000 °C.
ABSURD = ('"fps": -1.0', '"fps": NaN', '"cpu_temp_c": 10000.0')


def write_config(path, *, broker_port, metrics_port, tmp_path):
    path.write_text(f"mqtt:\n  host: 127.0.0.1\n  port: {broker_port}\n  client_id: collector-test\n"
                    f"  reconnect_max_s: 1\nstore:\n  url: sqlite:///{tmp_path / 'collector.sqlite3'}\n"
                    f"dashboard:\n  output_dir: {tmp_path / 'www'}\n  refresh_s: 5\n"
                    f"metrics:\n  port: {metrics_port}\n")
    return path


def start_collector(config, log_path):
    log = open(log_path, "a")
    return subprocess.Popen([sys.executable, "-m", "edge_agent.collector.cli", "run", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)


def stats_message(device, **figures):
    body = {"device": device, "t": "2026-11-23T10:00:00Z", "uptime_s": 600.0, "camera": "running"} | figures
    return json.dumps(body).encode()


def publish(port, device, room, messages):
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=device, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for kind, payload in messages:
            client.publish(f"classroom/north/{room}/{device}/{kind}", payload, qos=1,
                           retain=kind == "status").wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def collector(tmp_path):
    with Mosquitto() as broker:
        metrics_port = free_port()
        config = write_config(tmp_path / "collector.yaml", broker_port=broker.port, metrics_port=metrics_port,
                              tmp_path=tmp_path)
        log_path = tmp_path / "collector.log"
        process = start_collector(config, log_path)
        try:
            deadline = time.monotonic() + 60
            # Subscribed: what the devices publish from now on is the collector's.
            while "(session new)" not in log_path.read_text():
                assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            yield {"broker": broker, "metrics_port": metrics_port, "process": process,
                   "log": log_path}
        finally:
            process.terminate()
            process.wait(30)


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return answer.read().decode()


def test_prometheus_gets_each_device_figures_as_the_camera_published_them(collector):
    port = collector["broker"].port
    status = json.dumps({"state": "online", "device": "", "version": "0.1.0"})
    for device, figures in GOOD.items():
        room = device[3:6]
        publish(port, device, room, [("status", status.replace('""', f'"{device}"').encode()),
                                     ("emotions", window(device, 0, room=room, happy=7, neutral=3).to_json()),
                                     ("stats", stats_message(device, **figures))])
    bad = [("status", status.replace('""', '"pi-103a"').encode())]
    bad += [("stats", stats_message("pi-103a").replace(b'"camera"', figure.encode() + b', "camera"'))
            for figure in ABSURD]
    publish(port, "pi-103a", "103", bad)
    with Prometheus([f"127.0.0.1:{collector['metrics_port']}"]) as prometheus:
        for device, figures in GOOD.items():
            labels = f'device="{device}", site="north", room="{device[3:6]}"'
            for metric, value in (("edge_device_fps", figures["fps"]),
                                  ("edge_device_outbox_depth", figures["outbox_depth"])):
                result = prometheus.wait_for(f"{metric}{{{labels}}}")
                assert [value for _, value in result] == [value], (metric, device, result)
        first = 'device="pi-101a"'
        assert prometheus.query(f"edge_device_detection_seconds{{{first}}}")[0][1] == pytest.approx(0.12)
        assert prometheus.query(f"edge_device_cpu_temperature_celsius{{{first}}}")[0][1] == 61.5
        assert prometheus.query(f"edge_device_memory_bytes{{{first}}}")[0][1] == 200 * 2**20
        assert prometheus.query(f"edge_device_load1{{{first}}}")[0][1] == 1.25
        assert prometheus.query(f"edge_device_classification_seconds_per_face{{{first}}}")[0][1] == \
            pytest.approx(0.0005)
        info = prometheus.query(f"edge_device_info{{{first}}}")
        assert info[0][0]["version"] == "0.1.0" and info[0][0]["model"] == "mini-xception-int8:test", info
        # The camera whose every stats message was refused: known and online, its figures absent, not zero.
        assert prometheus.wait_for('edge_device_state{device="pi-103a", state="online"}')[0][1] == 1
        for metric in ("edge_device_fps", "edge_device_cpu_temperature_celsius", "edge_device_outbox_depth"):
            assert prometheus.query(f'{metric}{{device="pi-103a"}}') == [], metric
        rejected = prometheus.wait_for('edge_collector_messages_rejected_total{reason="schema"}',
                                       lambda result: result and result[0][1] >= len(ABSURD))
        assert rejected[0][1] == len(ABSURD)
        assert prometheus.query('edge_collector_messages_rejected_total{reason="json"}')[0][1] == 0
        assert prometheus.wait_for("edge_collector_windows_stored_total")[0][1] == len(GOOD)
        assert prometheus.query("edge_collector_store_size_bytes")[0][1] > 0
        assert prometheus.query("edge_fleet_silent_after_seconds")[0][1] == 300
        # Drawn by the worker process, reported by the collector.
        assert prometheus.wait_for("edge_collector_dashboard_build_seconds")[0][1] >= 0
        # The Grafana dashboard shipped for IT asks Prometheus only what it can answer.
        board = json.loads((REPO / "ansible" / "files" / "grafana" / "edge-fleet.json").read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                result = prometheus.query(target["expr"])
                if target["expr"].startswith("edge_device_"):
                    assert result, (panel["title"], target["expr"])
    text = scrape(collector["metrics_port"])
    # Only counts of windows: no emotion, no faces counted in a window.
    assert not any(label in text for label in EMOTIONS), [label for label in EMOTIONS if label in text]
    assert "edge_device_faces_per_frame" in text and "faces_total" not in text


def test_a_store_that_cannot_be_read_says_so_and_invents_no_device(store):
    store.set_status(StatusPayload(state="online", device="pi-101a"), site="north", room="101", received_at=1.0)
    registry = CollectorRegistry()
    registry.register(FleetMetrics(store, Thresholds()))
    assert registry.get_sample_value("edge_collector_store_up") == 1
    assert registry.get_sample_value("edge_device_state", {"site": "north", "room": "101", "device": "pi-101a",
                                                           "state": "online"}) == 1
    with store.engine.begin() as connection:
        connection.execute(text("DROP TABLE devices"))
    assert registry.get_sample_value("edge_collector_store_up") == 0
    text_now = generate_latest(registry).decode()
    assert "edge_device_" not in text_now and "edge_fleet_hot_celsius 80.0" in text_now


def test_a_metrics_port_in_use_stops_the_collector_at_start_naming_port_and_key(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "collector.yaml", broker_port=free_port(), metrics_port=port,
                              tmp_path=tmp_path)
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "edge_agent.collector.cli", "run", "--config", str(config)],
                                capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "metrics.port" in lines[0] and str(port) in lines[0], result.stderr
    assert str(config) in lines[0]
    # Nothing was started before it: no store opened, no dashboard written.
    assert not (tmp_path / "collector.sqlite3").exists() and not (tmp_path / "www").exists()
    assert time.monotonic() - started < 60
