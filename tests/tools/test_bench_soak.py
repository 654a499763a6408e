"""``edge-agent bench soak``: its figures, and a short run of the real thing (the hour is a benchmark, not a test)."""

import json

import pytest

from edge_agent.tools.bench_soak import (
    DEVICE,
    EMOTIONS_TOPIC,
    ROOM,
    SITE,
    Broker,
    Receiver,
    Sample,
    slope_per_hour,
    summarise,
)
from edge_agent.tools.demo_broker import mosquitto_path
from support import REPO, run_cli, wait_until
from support.broker import publish, publisher
from support.windows import window

DELIVERED = {"stored": 10, "received": 10, "missing": [], "missing_count": 0, "left_in_outbox": 0,
             "median_frames_per_window": 50}


def samples(rss, fds=None, threads=None):
    return [Sample(minute, value, (fds or [12] * len(rss))[i], (threads or [10] * len(rss))[i], 10.0, 100.0, 0,
                   True, i) for i, (minute, value) in enumerate(zip(range(0, 10 * len(rss), 10), rss, strict=True))]


def test_slopes_are_least_squares_per_hour():
    assert slope_per_hour([0, 30, 60], [100, 100.5, 101]) == pytest.approx(1.0)
    assert slope_per_hour([0, 10, 20, 30], [5, 7, 5, 7]) == pytest.approx(2.4)
    assert slope_per_hour([5], [1]) == 0.0


def test_a_leak_or_a_lost_window_fails_its_verdict():
    steady = summarise(samples([100, 100.1, 100.0, 100.1, 100.05, 100.1]), 0, DELIVERED, [])
    assert all(steady["verdicts"].values())
    leaking = summarise(samples([100, 101, 102, 103, 104, 105], fds=[12, 12, 12, 13, 14, 15]), 0, DELIVERED, [])
    assert leaking["slopes_per_hour"]["rss_mb"] == pytest.approx(6.0)
    assert not leaking["verdicts"]["RSS slope under 1 MB/h"] and not leaking["verdicts"]["no fd growth"]
    lost = summarise(samples([100] * 6), 0, {**DELIVERED, "missing": [3], "missing_count": 1}, [])
    assert not lost["verdicts"]["every window delivered, once"]
    twice = summarise(samples([100] * 6), 0, DELIVERED, [(7, "seq sent twice with different contents")])
    assert not twice["verdicts"]["every window delivered, once"]


@pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto is not installed")
def test_a_short_soak_samples_the_agent_through_broker_outages(tmp_path):
    result = run_cli("bench", "soak", "--duration", "45", "--sample-every", "5", "--broker-every", "15",
                     "--broker-down", "5", "--warmup", "5", "--fps", "4", "--out", tmp_path)
    # 45 s cannot show a slope under 1 MB/h; the other verdicts must hold.
    assert result.returncode in (0, 1), result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["min", "RSS", "MB", "fds"]
    assert "ok   no fd growth" in lines and "ok   no thread growth" in lines
    assert "ok   every window delivered, once" in lines, result.stdout
    report = json.loads((tmp_path / "soak.json").read_text())
    assert len(report["samples"]) >= 7 and len(report["outages"]) >= 2
    assert {s["broker_up"] for s in report["samples"]} == {True, False}
    assert report["delivered"]["stored"] >= 8 and report["exit_status"] == 0
    assert (tmp_path / "soak.png").stat().st_size > 10_000
    # The agent ran with the shipped unit's environment, read back from the running process.
    unit = (REPO / "systemd" / "edge-agent.service").read_text()
    assert report["environment"] == dict(line.removeprefix("Environment=").split("=", 1)
                                         for line in unit.splitlines() if line.startswith("Environment="))
    assert "the agent's environment, as the unit's: MALLOC_ARENA_MAX=2" in lines


@pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto is not installed")
def test_a_window_sent_while_the_receiver_is_still_away_after_a_broker_restart_reaches_it(tmp_path):
    # The soak's verdict on delivery is only as good as its broker's memory of the receiver's session.
    broker = Broker(tmp_path)
    broker.start()
    receiver = Receiver(broker.port)
    try:
        wait_until(lambda: receiver.client.is_connected())
        broker.stop()
        broker.start()
        # Before the receiver's reconnect (at least a second away): only its kept session can take it.
        client = publisher(broker.port)
        publish(client, EMOTIONS_TOPIC, window(DEVICE, 0, room=ROOM, site=SITE, window_s=5, happy=3).to_json())
        client.disconnect()
        wait_until(lambda: receiver.count == 1, timeout=15)
    finally:
        receiver.close()
        broker.stop()
