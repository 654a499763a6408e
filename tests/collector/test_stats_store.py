"""Device stats in the store: kept as sent, summarised per hour past a day, deleted past retention,
in SQLite and PostgreSQL; and stored by the collector from a real mosquitto."""

import json

import pytest
from sqlalchemy import text

from edge_agent.collector.config import parse_collector_config
from edge_agent.collector.ingest import Ingest
from edge_agent.collector.store import Stats, Store, stats_table
from edge_agent.common.config import ConfigError
from edge_agent.common.contract import StatsPayload, format_utc, parse_payload
from support import wait_until
from support.broker import Mosquitto, publish, publisher

HOUR = 3600
NOW = 1_795_000_000 - 1_795_000_000 % HOUR + 30 * 60  # half past an hour, in 2026


def stats(sent_at, **fields):
    values = {"device": "pi-1", "t": format_utc(sent_at), "uptime_s": 100.0, "fps": 1.0, "detect_ms": 300.0,
              "classify_ms": 2.0, "faces_per_frame": 12.0, "outbox_depth": 0, "dropped_windows": 0,
              "frames_dropped": 0, "camera": "running", "cpu_temp_c": 55.0, "rss_mb": 180.0,
              "outbox_failing": False, "windows_held": 0, "clock_synced": True, "clock_ahead_s": 0.0,
              "load_1m": 0.7}
    return StatsPayload.model_validate(values | fields)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'collector.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database()
    store = Store(url, stats_retention_days=30, stats_detail_days=1)
    yield store
    store.close()


def test_stats_are_stored_as_sent_absurd_ones_included(store):
    absurd = stats(NOW - 61, fps=10_000.0, cpu_temp_c=-300.0, outbox_depth=10**9)
    plain = stats(NOW - 1, camera="stalled", outbox_failing=True, clock_synced=False)
    sparse = StatsPayload(device="pi-2", t=format_utc(NOW), uptime_s=5.0)
    assert store.add_stats([("pi-1", absurd)], received_at=NOW - 60.4) == 1
    assert store.add_stats([("pi-1", plain), ("pi-2", sparse)], received_at=NOW) == 2
    # The same second again (a second collector, a redelivery): kept once.
    assert store.add_stats([("pi-1", plain)], received_at=NOW + 0.5) == 0
    assert store.add_stats([], received_at=NOW) == 0
    rows = store.stats()
    assert [(row.device, row.at) for row in rows] == [("pi-1", NOW - 61), ("pi-1", NOW), ("pi-2", NOW)]
    first = rows[0]
    assert (first.fps, first.cpu_temp_c, first.outbox_depth) == (10_000.0, -300.0, 10**9)
    assert (first.summary, first.samples, first.sent_at) == (False, 1, NOW - 61)
    for name, value in plain.model_dump(exclude={"device", "t"}).items():
        assert getattr(rows[1], name) == value, name
    # What the device did not send stays unknown, never zero.
    assert rows[2].fps is None and rows[2].cpu_temp_c is None and rows[2].uptime_s == 5.0
    assert store.stats("pi-2") == [rows[2]]
    assert store.stats(start=NOW) == rows[1:]
    assert store.stats("pi-1", end=NOW) == [first]


def test_an_old_hour_becomes_one_row_per_device_and_recent_minutes_stay(store):
    old_hour = NOW - 2 * 86400 - 30 * 60  # an hour boundary two days back
    minutes = [
        (old_hour + 60, stats(old_hour + 60, fps=1.0, cpu_temp_c=60.0, outbox_depth=3, dropped_windows=2,
                               camera="running")),
        (old_hour + 120, stats(old_hour + 120, fps=0.5, cpu_temp_c=82.5, outbox_depth=1, dropped_windows=4,
                                camera="stalled", outbox_failing=True)),
        (old_hour + 180, stats(old_hour + 180, fps=None, cpu_temp_c=70.0, outbox_depth=0, dropped_windows=4,
                                camera="reopening", clock_synced=False)),
        (old_hour + HOUR + 60, stats(old_hour + HOUR + 60, fps=2.0)),
    ]
    for at, payload in minutes:
        store.add_stats([("pi-1", payload)], received_at=at)
    store.add_stats([("pi-2", stats(old_hour + 90, device="pi-2", fps=3.0))], received_at=old_hour + 90)
    recent = [NOW - 3600, NOW - 60]
    for at in recent:
        store.add_stats([("pi-1", stats(at))], received_at=at)

    assert store.prune_stats(now=NOW) == (5, 0)
    rows = store.stats()
    summaries = [row for row in rows if row.summary]
    assert [(row.device, row.at, row.samples) for row in summaries] == [
        ("pi-1", old_hour, 3), ("pi-1", old_hour + HOUR, 1), ("pi-2", old_hour, 1)]
    hour = summaries[0]
    assert hour.fps == pytest.approx(0.75)  # the mean of what was sent; the missing one is not a zero
    assert hour.cpu_temp_c == 82.5 and hour.outbox_depth == 3 and hour.dropped_windows == 4
    assert hour.camera == "reopening" and hour.outbox_failing is True and hour.clock_synced is False
    assert hour.detect_ms == pytest.approx(300.0) and hour.sent_at == old_hour + 180
    assert [(row.at, row.summary) for row in rows if row.device == "pi-1" and not row.summary] == \
        [(at, False) for at in recent]
    # Pruning again changes nothing.
    assert store.prune_stats(now=NOW) == (0, 0)
    assert store.stats() == rows


def test_stats_past_retention_are_deleted_summaries_included(store):
    store.add_stats([("pi-1", stats(NOW - 31 * 86400))], received_at=NOW - 31 * 86400)
    store.add_stats([("pi-1", stats(NOW - 29 * 86400))], received_at=NOW - 29 * 86400)
    assert store.prune_stats(now=NOW) == (1, 1)
    [kept] = store.stats()
    assert kept.summary and kept.at == (NOW - 29 * 86400) // HOUR * HOUR
    # A month later the summary goes too.
    assert store.prune_stats(now=NOW + 30 * 86400) == (0, 1)
    assert store.stats() == []


def test_stats_settings_are_checked_and_reach_the_store(tmp_path):
    with pytest.raises(ConfigError, match=r"c.yaml line 3: store.stats_detail_days: .*40 days is longer"):
        parse_collector_config("store:\n  stats_retention_days: 30\n  stats_detail_days: 40\n", source="c.yaml")
    with pytest.raises(ConfigError, match="line 2: store.stats_retention_days"):
        parse_collector_config("store:\n  stats_retention_days: 0\n", source="c.yaml")
    config = parse_collector_config(f"store:\n  url: sqlite:///{tmp_path / 'c.db'}\n  stats_retention_days: 7\n"
                                    "  stats_detail_days: 0.5\n")
    store = Store.from_config(config.store)
    try:
        assert (store.stats_retention_days, store.stats_detail_days) == (7, 0.5)
    finally:
        store.close()


def test_the_contract_takes_an_absurd_temperature_and_refuses_what_is_not_a_number():
    body = {"device": "pi-1", "t": format_utc(NOW), "uptime_s": 1.0}
    assert parse_payload("stats", json.dumps(body | {"cpu_temp_c": -300}).encode()).cpu_temp_c == -300
    for bad in ("hot", True, 1e308, -1e308):
        with pytest.raises(ValueError):
            parse_payload("stats", json.dumps(body | {"cpu_temp_c": bad}).encode())


def test_the_collector_stores_stats_from_the_broker_and_skips_a_bad_one(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    with Mosquitto(persistence=True) as broker:
        config = parse_collector_config(f"mqtt:\n  host: 127.0.0.1\n  port: {broker.port}\n  reconnect_max_s: 1\n")
        ingest = Ingest(store, config.mqtt, client_id="collector-test")
        ingest.start()
        assert ingest.subscribed.wait(10)
        client = publisher(broker.port)
        try:
            good = stats(NOW, fps=0.4, camera="stalled")
            publish(client, "classroom/north/101/pi-1/stats", b'{"device": "pi-1", "fps": "fast"}')
            publish(client, "classroom/north/101/pi-1/stats", good.to_json())
            wait_until(lambda: len(store.stats()) == 1)
            assert ingest.counts["rejected"] == 1
        finally:
            client.disconnect()
            ingest.stop()
    [row] = store.stats()
    assert (row.device, row.fps, row.camera, row.sent_at) == ("pi-1", 0.4, "stalled", NOW)
    assert [(d.device, d.room) for d in store.devices()] == [("pi-1", "101")]
    store.close()


def test_a_store_made_before_the_load_was_sent_gets_its_column_and_keeps_its_rows(store):
    url = store.engine.url.render_as_string(hide_password=False)
    store.add_stats([("pi-1", stats(NOW - 60))], received_at=NOW - 60)
    with store.engine.begin() as connection:
        connection.execute(text("ALTER TABLE stats DROP COLUMN load_1m"))
    store.close()
    again = Store(url)
    try:
        [before] = again.stats()
        assert before.at == NOW - 60 and before.fps == 1.0 and before.load_1m is None
        again.add_stats([("pi-1", stats(NOW, load_1m=1.5))], received_at=NOW)
        assert [row.load_1m for row in again.stats()] == [None, 1.5]
    finally:
        again.close()


def test_a_stats_row_has_every_field_of_the_contract_in_the_tables_order():
    assert set(StatsPayload.model_fields) - {"device", "t"} <= set(Stats.__dataclass_fields__)
    assert [column.name for column in stats_table.columns] == list(Stats.__dataclass_fields__)


def test_a_series_is_summarised_per_bucket_in_the_database(store):
    start = NOW - 3600
    for minute, (fps, temperature) in enumerate([(1.0, 50.0), (0.5, 70.0), (None, 60.0), (0.9, 55.0)]):
        at = start + (0 if minute < 3 else 1200) + minute * 60
        store.add_stats([("pi-1", stats(at, fps=fps, cpu_temp_c=temperature))], received_at=at)
    store.add_stats([("pi-2", stats(start, device="pi-2", fps=9.0))], received_at=start)
    series = store.stats_series("pi-1", start, start + 1800, 600, ["fps", "cpu_temp_c"])
    assert [t - start for t, _ in series["fps"]] == [300, 900, 1500]
    # fps is a level (averaged), the temperature a peak; an empty bucket is None, never zero.
    assert [v for _, v in series["fps"]] == [pytest.approx(0.75), None, pytest.approx(0.9)]
    assert [v for _, v in series["cpu_temp_c"]] == [70.0, None, 55.0]
