"""The publisher against a real mosquitto, real paho and a real outbox: order, outages, status, login."""

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest

from edge_agent.agent.config import MQTTConfig
from edge_agent.agent.outbox import Outbox
from edge_agent.agent.publisher import Publisher
from edge_agent.agent.tally import WindowTally
from edge_agent.common.contract import (
    StatsPayload,
    format_utc,
    parse_payload,
    parse_utc,
    topic,
)
from edge_agent.common.mqtt import MQTTError, probe_broker
from support import REPO, free_port
from support.broker import Mosquitto, Subscriber

SITE, ROOM, DEVICE, MODEL = "north", "101", "pi-101a", "mini-xception-int8:3f2a9c1e"
EMOTIONS = topic("classroom", SITE, ROOM, DEVICE, "emotions")
STATUS = topic("classroom", SITE, ROOM, DEVICE, "status")
STATS = topic("classroom", SITE, ROOM, DEVICE, "stats")
T0 = 1_795_000_000 // 60 * 60  # a minute boundary in 2026


def config(port, **overrides):
    values = {"host": "127.0.0.1", "port": port, "keepalive_s": 5, "reconnect_max_s": 1}
    values.update(overrides)
    return MQTTConfig(**values)


def fill(outbox, count):
    """Append ``count`` real windows (from the tally) after those already stored."""
    for _ in range(count):
        start = T0 + 60 * outbox.next_seq
        tally = WindowTally(length_s=60, min_group=3)
        tally.add(start + 1, ["happy"] * 4 + ["neutral"])
        closed = tally.flush()
        outbox.append(EMOTIONS, lambda seq, closed=closed: closed.payload(
            device=DEVICE, site=SITE, room=ROOM, seq=seq, model=MODEL))


def seqs(subscriber):
    return [parse_payload("emotions", payload, (SITE, ROOM, DEVICE)).seq
            for name, payload, _ in subscriber.snapshot() if name == EMOTIONS]


def has_seqs(count):
    return lambda messages: {json.loads(p)["seq"] for name, p, _ in messages if name == EMOTIONS} >= set(range(count))


def statuses(messages):
    return [(parse_payload("status", payload, (SITE, ROOM, DEVICE)), retain)
            for name, payload, retain in messages if name == STATUS]


def wait_until(condition, timeout=10, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def retained_status(port):
    """What a collector that subscribes now is told about the device."""
    with Subscriber(port, STATUS) as sub:
        messages = sub.wait_for(lambda m: statuses(m))
    (payload, retain), = statuses(messages)
    assert retain
    return payload


@pytest.fixture
def outbox(tmp_path):
    with Outbox(tmp_path / "outbox.sqlite3") as box:
        yield box


@pytest.fixture
def publishers():
    """Make publishers that are stopped after the test, whatever happens."""
    made = []

    def make(mqtt_config, outbox, **kwargs):
        publisher = Publisher(mqtt_config, device=DEVICE, site=SITE, room=ROOM, outbox=outbox, **kwargs)
        made.append(publisher)
        return publisher

    yield make
    for publisher in made:
        publisher.stop(timeout=1)


def refusals(caplog, text):
    return [r for r in caplog.records if r.name == "edge_agent.agent.publisher" and r.levelno >= logging.WARNING
            and text in r.getMessage()]


def test_windows_arrive_in_seq_order_and_leave_the_outbox(mosquitto, outbox, publishers):
    with Subscriber(mosquitto.port, EMOTIONS) as sub:
        publisher = publishers(config(mosquitto.port), outbox)
        publisher.start()
        wait_until(lambda: publisher.connected, what="the connection")
        fill(outbox, 30)
        publisher.kick()
        sub.wait_for(lambda m: len(m) >= 30)
        assert seqs(sub) == list(range(30))
        assert {(retain, qos) for _, _, retain, qos in sub.received} == {(False, 1)}
        wait_until(lambda: outbox.depth == 0, what="an empty outbox")
        assert publisher.inflight == 0 and publisher.last_error is None


def test_broker_down_at_start_then_the_backlog_arrives_oldest_first(outbox, publishers, caplog):
    caplog.set_level(logging.INFO, logger="edge_agent.agent.publisher")
    with Mosquitto(persistence=True) as broker:
        # A collector with a persistent session, so it misses nothing while the broker restarts.
        Subscriber(broker.port, EMOTIONS, client_id="collector", clean_session=False).close()
        broker.stop()

        publisher = publishers(config(broker.port), outbox)
        publisher.start()  # no broker: must not raise
        fill(outbox, 5)
        publisher.kick()
        time.sleep(2.3)  # attempts at about 0, 1 and 2 s
        fill(outbox, 3)
        assert not publisher.connected
        assert outbox.depth == 8
        assert "connection refused" in publisher.last_error
        # One line for the problem, not one per attempt.
        assert len(refusals(caplog, f"cannot connect to broker 127.0.0.1:{broker.port}: connection refused")) == 1

        broker.start()
        with Subscriber(broker.port, EMOTIONS, client_id="collector", clean_session=False) as sub:
            sub.wait_for(has_seqs(8))
            wait_until(lambda: outbox.depth == 0, what="an empty outbox")
            assert seqs(sub) == list(range(8))
        assert publisher.connected and publisher.last_error is None
        publisher.stop()


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_broker_outage_midway_loses_nothing(how, outbox, publishers):
    with Mosquitto(persistence=True) as broker:
        sub = Subscriber(broker.port, EMOTIONS, client_id="collector", clean_session=False)
        try:
            broker.restart()  # the collector's session is now on disk: it outlives even a SIGKILL
            publisher = publishers(config(broker.port), outbox, max_inflight=4)
            publisher.start()
            fill(outbox, 5)
            publisher.kick()
            sub.wait_for(has_seqs(5))
            wait_until(lambda: outbox.depth == 0, what="an empty outbox")

            # Freeze the broker: windows go out and no PUBACK comes back.
            os.kill(broker.proc.pid, signal.SIGSTOP)
            fill(outbox, 10)
            publisher.kick()
            wait_until(lambda: publisher.inflight == 4, what="4 windows in flight")
            time.sleep(0.2)
            assert publisher.inflight == 4  # never more than max_inflight unacknowledged
            assert outbox.depth == 10
            if how == "kill":
                broker.kill()
            else:
                os.kill(broker.proc.pid, signal.SIGCONT)
                broker.stop()
            wait_until(lambda: not publisher.connected, what="the publisher to notice")
            assert publisher.inflight == 0
            fill(outbox, 5)
            assert outbox.depth >= 5

            broker.start()
            sub.wait_for(has_seqs(20), timeout=15)
            wait_until(lambda: outbox.depth == 0, what="an empty outbox")
            got = seqs(sub)
            assert sorted(set(got)) == list(range(20))  # at least once, no gap
            first_seen = list(dict.fromkeys(got))
            assert first_seen == sorted(first_seen)  # oldest first
            publisher.stop()
        finally:
            sub.close()


def test_status_online_with_camera_then_stopped(mosquitto, outbox, publishers):
    publisher = publishers(config(mosquitto.port), outbox, version="0.1.0")
    publisher.set_camera_state("running")
    publisher.start()
    wait_until(lambda: publisher.connected, what="the connection")
    status = retained_status(mosquitto.port)
    assert (status.state, status.device, status.camera, status.version) == ("online", DEVICE, "running", "0.1.0")
    assert abs(time.time() - parse_utc(status.t)) < 5

    publisher.stop()
    assert not publisher.connected
    time.sleep(0.3)  # a Last Will would have arrived by now
    assert retained_status(mosquitto.port).state == "stopped"


def test_set_camera_state_republishes_the_retained_status(mosquitto, outbox, publishers):
    publisher = publishers(config(mosquitto.port), outbox)
    publisher.start()
    wait_until(lambda: publisher.connected, what="the connection")
    with Subscriber(mosquitto.port, STATUS) as sub:
        sub.wait_for(lambda m: len(statuses(m)) == 1)
        publisher.set_camera_state("stalled", "no frame for 10 s")
        sub.wait_for(lambda m: len(statuses(m)) == 2)
        publisher.set_camera_state("stalled", "no frame for 10 s")  # no change: nothing sent
        time.sleep(0.3)
        (first, _), (second, live) = statuses(sub.snapshot())
        assert first.camera is None and not live
        assert (second.state, second.camera, second.reason) == ("online", "stalled", "no frame for 10 s")
    assert retained_status(mosquitto.port).camera == "stalled"
    publisher.set_camera_state("running")
    wait_until(lambda: retained_status(mosquitto.port).camera == "running", what="camera running")
    assert retained_status(mosquitto.port).reason is None


def test_last_will_says_offline_when_the_agent_is_killed(mosquitto, tmp_path):
    script = f"""
import sys, time
sys.path.insert(0, {str(REPO)!r})
from edge_agent.agent.config import MQTTConfig
from edge_agent.agent.publisher import Publisher
from edge_agent.agent.outbox import Outbox
publisher = Publisher(MQTTConfig(host="127.0.0.1", port={mosquitto.port}, keepalive_s=60), device={DEVICE!r},
                      site={SITE!r}, room={ROOM!r}, outbox=Outbox({str(tmp_path / 'outbox.sqlite3')!r}))
publisher.start()
while not publisher.connected:
    time.sleep(0.01)
print("connected", flush=True)
time.sleep(60)
"""
    agent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             cwd=REPO)
    try:
        ready, _, _ = select.select([agent.stdout], [], [], 15)
        assert ready and agent.stdout.readline() == b"connected\n", agent.stderr.read1().decode()
        with Subscriber(mosquitto.port, STATUS) as sub:
            sub.wait_for(lambda m: [s.state for s, _ in statuses(m)] == ["online"])
            agent.kill()
            agent.wait()
            # A closed socket, not the 90 s keepalive, makes the broker send the will.
            messages = sub.wait_for(lambda m: len(statuses(m)) == 2, timeout=3)
        assert statuses(messages)[-1][0].state == "offline"
        status = retained_status(mosquitto.port)
        assert (status.state, status.device) == ("offline", DEVICE)
    finally:
        agent.kill()
        agent.wait()


def test_wrong_password_is_logged_once_and_retried_with_backoff(tmp_path, outbox, publishers, caplog):
    caplog.set_level(logging.INFO, logger="edge_agent.agent.publisher")
    password_file = tmp_path / "mqtt-password"
    password_file.write_text("wrong\n")
    password_file.chmod(0o600)
    with Mosquitto(allow_anonymous=False, users={"agent": "s3cret", "collector": "c0llect"}) as broker:
        fill(outbox, 3)
        publisher = publishers(config(broker.port, username="agent", password_file=password_file,
                                      reconnect_max_s=2), outbox)
        publisher.start()
        time.sleep(5)
        attempts = broker.count_in_log("not authorised")
        assert 2 <= attempts <= 6, broker.log_text()  # backoff, not a busy loop
        assert not publisher.connected
        assert outbox.depth == 3
        lines = refusals(caplog, "refused the connection")
        assert len(lines) == 1
        assert (f"broker 127.0.0.1:{broker.port} refused the connection: not authorized — check mqtt.username "
                f"and the password file {password_file}") in lines[0].getMessage()

        # The file is read again at each attempt: a fixed password needs no restart.
        password_file.write_text("s3cret\n")
        wait_until(lambda: publisher.connected, timeout=5, what="the connection with the right password")
        with Subscriber(broker.port, STATUS, username="collector", password="c0llect") as sub:
            assert statuses(sub.wait_for(lambda m: statuses(m)))[0][0].state == "online"
        wait_until(lambda: outbox.depth == 0, what="an empty outbox")
        publisher.stop()


def test_a_window_the_acl_refuses_stays_in_the_outbox(outbox, publishers, caplog):
    acl = "user agent\ntopic write classroom/+/+/+/status\n"
    with Mosquitto(allow_anonymous=False, users={"agent": "s3cret"}, acl=acl) as broker:
        os.environ["TEST_MQTT_PASSWORD"] = "s3cret"
        try:
            publisher = publishers(config(broker.port, username="agent", password_env="TEST_MQTT_PASSWORD",
                                          reconnect_max_s=5), outbox)
            publisher.start()
            fill(outbox, 2)
            publisher.kick()
            time.sleep(2)
        finally:
            del os.environ["TEST_MQTT_PASSWORD"]
        assert publisher.connected
        assert outbox.depth == 2
        assert 1 <= broker.count_in_log("Denied PUBLISH") <= 3  # retried slowly, one window at a time
        lines = refusals(caplog, "refused window seq 0")
        assert len(lines) == 1 and "not authorized" in lines[0].getMessage()
        publisher.stop()


def test_a_status_from_a_lost_connection_is_not_sent_again(outbox, publishers):
    with Mosquitto() as broker:
        publisher = publishers(config(broker.port), outbox)
        publisher.start()
        wait_until(lambda: publisher.connected, what="the connection")
        os.kill(broker.proc.pid, signal.SIGSTOP)
        publisher.set_camera_state("stalled", "no frame for 10 s")  # sent, never acknowledged
        time.sleep(0.1)
        broker.kill()
        wait_until(lambda: not publisher.connected, what="the publisher to notice")
        publisher.set_camera_state("running")
        broker.start()
        wait_until(lambda: publisher.connected, what="the reconnection")
        time.sleep(0.3)  # paho would resend the unacknowledged "stalled" right after the new status
        status = retained_status(broker.port)
        assert (status.state, status.camera) == ("online", "running")
        publisher.stop()


def test_stats_go_out_with_qos0_and_validate(mosquitto, outbox, publishers):
    publisher = publishers(config(mosquitto.port), outbox)
    stats = StatsPayload(device=DEVICE, t=format_utc(time.time()), uptime_s=61.5, fps=1.0, detect_ms=120.0,
                         outbox_depth=0, camera="running")
    assert publisher.publish_stats(stats) is False  # offline: dropped
    publisher.start()
    wait_until(lambda: publisher.connected, what="the connection")
    with Subscriber(mosquitto.port, STATS) as sub:
        assert publisher.publish_stats(stats) is True
        sub.wait_for(lambda m: len(m) == 1)
        (name, payload, retain, qos), = sub.received
    assert (name, retain, qos) == (STATS, False, 0)
    assert parse_payload("stats", payload, (SITE, ROOM, DEVICE)) == stats
    with pytest.raises(TypeError):
        publisher.publish_stats({"device": DEVICE})


def test_probe_broker(mosquitto):
    assert probe_broker(config(mosquitto.port), client_id="pi-101a-check") == \
        f"127.0.0.1:{mosquitto.port}: connected anonymously"
    with pytest.raises(MQTTError, match="cannot connect to broker 127.0.0.1:[0-9]+: connection refused"):
        probe_broker(config(free_port()), client_id="pi-101a-check")


def make_ca(directory, name):
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}"],
                   check=True, capture_output=True, timeout=30)
    return key, cert


def make_server_cert(directory, ca_key, ca_cert):
    key, csr, cert, ext = (directory / n for n in ("server.key", "server.csr", "server.crt", "server.ext"))
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=30)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
                    "-out", cert, "-days", "2", "-extfile", ext], check=True, capture_output=True, timeout=30)
    return key, cert


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_with_the_right_ca_and_a_clear_line_with_the_wrong_one(tmp_path, outbox, publishers, caplog):
    ca_key, ca_cert = make_ca(tmp_path / "pki", "school-ca")
    server_key, server_cert = make_server_cert(tmp_path / "pki", ca_key, ca_cert)
    _, stranger_ca = make_ca(tmp_path / "other", "stranger-ca")
    listener = f"cafile {ca_cert}\ncertfile {server_cert}\nkeyfile {server_key}"
    with Mosquitto(extra_config=listener) as broker:
        wrong = publishers(config(broker.port, tls={"ca": stranger_ca}), outbox)
        wrong.start()
        wait_until(lambda: wrong.last_error, what="the TLS failure")
        assert "TLS certificate not accepted (" in wrong.last_error
        assert wrong.last_error.endswith("— check mqtt.tls.ca; retrying, at most 1 s apart")
        wrong.stop()

        fill(outbox, 2)
        right = publishers(config(broker.port, tls={"ca": ca_cert}), outbox)
        right.start()
        wait_until(lambda: right.connected, what="the TLS connection")
        wait_until(lambda: outbox.depth == 0, what="an empty outbox")
        assert probe_broker(config(broker.port, tls={"ca": ca_cert}), client_id="pi-101a-check") == \
            f"127.0.0.1:{broker.port}: connected anonymously over TLS"
        right.stop()
    assert len(refusals(caplog, "TLS certificate not accepted")) == 1
