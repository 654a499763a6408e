"""The collector's MQTT side against a real mosquitto and a real SQLite store."""

import json

import paho.mqtt.client as paho
import pytest

from edge_agent.collector.config import parse_collector_config
from edge_agent.collector.ingest import Ingest
from edge_agent.collector.store import Store
from edge_agent.common.contract import EmotionsPayload, format_utc
from support import wait_until
from support.broker import Mosquitto, publish, publisher

T0 = 1_795_000_000 - 1_795_000_000 % 60


def window(seq, device="pi-1", room="101"):
    counts = {"angry": 0, "disgust": 0, "fear": 1, "happy": 2, "sad": 0, "surprise": 0, "neutral": 3}
    return EmotionsPayload.model_validate({
        "schema": 1, "device": device, "site": "north", "room": room, "window_start": format_utc(T0 + 60 * seq),
        "window_s": 60, "seq": seq, "frames": 2, "faces": 6, "faces_per_frame_median": 3, "counts": counts,
        "suppressed": False, "model": "mini-xception-int8:464fa583"})


@pytest.fixture
def broker():
    with Mosquitto(persistence=True) as running:
        yield running


def ingest_for(store, port):
    config = parse_collector_config(f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  reconnect_max_s: 1\n").mqtt
    ingest = Ingest(store, config, client_id="collector-test")
    ingest.start()
    assert ingest.subscribed.wait(10)
    return ingest


def test_windows_are_stored_once_and_bad_messages_counted(tmp_path, broker):
    store = Store(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    ingest = ingest_for(store, broker.port)
    client = publisher(broker.port)
    topic = "classroom/north/101/pi-1/emotions"
    try:
        for seq in range(20):
            publish(client, topic, window(seq).to_json())
            publish(client, topic, window(seq).to_json())
        for bad in (b"{", b"\xff", json.dumps({"schema": 1}).encode(), window(99, device="pi-2").to_json()):
            publish(client, topic, bad)
        publish(client, "classroom/north/101/pi-1/status", b'{"state": "online", "device": "pi-1"}')
        wait_until(lambda: ingest.counts["received"] >= 45)
        wait_until(lambda: store.count_windows() == 20 and ingest.counts["duplicates"] == 20)
        assert ingest.counts["rejected"] == 4
        # The status is counted as received before it is stored: wait for the store, not the count.
        wait_until(lambda: [d.state for d in store.devices() if d.device == "pi-1"] == ["online"])
    finally:
        client.disconnect()
        ingest.stop()
    assert [w.seq for w in store.windows("north", "101")] == list(range(20))


def test_windows_sent_while_the_collector_is_away_arrive_when_it_returns(tmp_path, broker):
    store = Store(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    ingest_for(store, broker.port).stop()
    client = publisher(broker.port)
    try:
        for seq in range(10):
            publish(client, "classroom/north/101/pi-1/emotions", window(seq).to_json())
    finally:
        client.disconnect()
    ingest = ingest_for(store, broker.port)
    try:
        wait_until(lambda: store.count_windows() == 10)
    finally:
        ingest.stop()


def test_on_a_broker_binding_ids_to_users_neither_a_camera_nor_check_takes_the_queued_windows(tmp_path):
    """As the broker role sets mosquitto up: a camera asking for the collector's client id gets its own
    user's instead, and ``edge-collector check`` (logging in as the collector's own session there)
    resumes the session without acknowledging anything, so every window queued while the collector
    was away is stored when it returns."""
    from edge_agent.collector.ingest import SESSION_EXPIRY_S
    from edge_agent.common.mqtt import probe_broker

    acl = "user collector\ntopic read classroom/#\nuser pi-1\ntopic write classroom/north/101/pi-1/emotions\n"
    users = {"collector": "collector secret", "pi-1": "camera secret"}
    (tmp_path / "password").write_text(users["collector"])
    text = (f"mqtt:\n  host: 127.0.0.1\n  port: {{port}}\n  reconnect_max_s: 1\n  username: collector\n"
            f"  password_file: {tmp_path / 'password'}\n")
    with Mosquitto(allow_anonymous=False, users=users, acl=acl, persistence=True,
                   extra_config="use_username_as_clientid true") as broker:
        config = parse_collector_config(text.format(port=broker.port)).mqtt
        store = Store(f"sqlite:///{tmp_path / 'c.sqlite3'}")
        ingest = Ingest(store, config, client_id="collector-test")
        ingest.start()
        assert ingest.subscribed.wait(10)
        ingest.stop()
        camera = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="collector-test", protocol=paho.MQTTv5)
        camera.username_pw_set("pi-1", users["pi-1"])
        camera.connect("127.0.0.1", broker.port)
        camera.loop_start()
        try:
            for seq in range(3):
                publish(camera, "classroom/north/101/pi-1/emotions", window(seq).to_json())
            assert probe_broker(config, client_id="collector-test-check", session_expiry_s=SESSION_EXPIRY_S) == \
                f"127.0.0.1:{broker.port}: connected as collector"
        finally:
            camera.disconnect()
            camera.loop_stop()
        ingest = Ingest(store, config, client_id="collector-test")
        ingest.start()
        try:
            wait_until(lambda: store.count_windows() == 3)
        finally:
            ingest.stop()
        assert "as collector (p5, c0" in broker.log_text() and "as pi-1 (p5, c1" in broker.log_text()

