"""Windows from the future: more than a day ahead refused and counted, a clock held ahead stored and counted."""

import logging

from edge_agent.collector.config import parse_collector_config
from edge_agent.collector.ingest import Ingest
from edge_agent.collector.store import Store
from edge_agent.common.contract import EmotionsPayload, format_utc
from support import wait_until
from support.broker import Mosquitto, publish, publisher

NOW = 1_796_000_000 // 60 * 60
TOPIC = "classroom/north/101/pi-1/emotions"


def window(start, seq, happy=3):
    counts = {"angry": 0, "disgust": 0, "fear": 0, "happy": happy, "sad": 0, "surprise": 0, "neutral": 1}
    return EmotionsPayload.model_validate({
        "schema": 1, "device": "pi-1", "site": "north", "room": "101", "window_start": format_utc(start),
        "window_s": 60, "seq": seq, "frames": 2, "faces": happy + 1, "faces_per_frame_median": 2, "counts": counts,
        "suppressed": False, "model": "m:1"}).to_json()


def test_a_window_more_than_a_day_ahead_is_refused_and_never_takes_the_real_ones_place(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    server_time = {"now": NOW + 60.0}
    store = Store(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    with Mosquitto() as broker:
        config = parse_collector_config(f"mqtt:\n  host: 127.0.0.1\n  port: {broker.port}\n").mqtt
        ingest = Ingest(store, config, client_id="collector-test", clock=lambda: server_time["now"])
        ingest.start()
        assert ingest.subscribed.wait(10)
        client = publisher(broker.port)
        try:
            publish(client, TOPIC, window(NOW, 0))                     # on time
            publish(client, TOPIC, window(NOW + 7200, 1))              # stamped 2 h ahead: a clock that stepped back
            publish(client, TOPIC, window(NOW + 2 * 86400, 2, happy=9))  # 2 days ahead: a wrong clock
            publish(client, TOPIC, window(NOW + 86400 - 120, 3))       # just inside a day: stored
            wait_until(lambda: ingest.counts["received"] == 4 and store.count_windows() == 3)
            assert ingest.counts["future"] == 1 and ingest.counts["rejected"] == 1
            assert ingest.counts["ahead"] == 2
            # Two days on, the real window for that minute arrives and is the one stored.
            server_time["now"] = NOW + 2 * 86400 + 60
            publish(client, TOPIC, window(NOW + 2 * 86400, 4, happy=5))
            wait_until(lambda: store.count_windows() == 4)
        finally:
            client.disconnect()
            ingest.stop()
    stored = {w.start_epoch: w for w in store.windows("north", "101")}
    assert sorted(stored) == [NOW, NOW + 7200, NOW + 86400 - 120, NOW + 2 * 86400]
    assert stored[NOW + 2 * 86400].seq == 4 and stored[NOW + 2 * 86400].counts.happy == 5
    assert "rejected a message on 'classroom/north/101/pi-1/emotions': future window: window_start " \
           f"{format_utc(NOW + 2 * 86400)} is 48 h ahead of this server's clock" in caplog.text
    assert "device pi-1 sends windows stamped 7200 s ahead of this server's clock" in caplog.text
