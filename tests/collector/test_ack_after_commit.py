"""No window is acknowledged to the broker before the transaction that stores it has committed.

The store is a real SQLite file on which another connection holds a write transaction for as
long as the test likes: the collector's writes wait for it, then fail, and are retried. What the
collector acknowledged is read from the broker's own log; that nothing was acknowledged early is
shown by the broker too: a collector stopped while the store was locked gets every window again.
"""

import sqlite3

import pytest

from edge_agent.collector import ingest as ingest_module
from edge_agent.collector import store as store_module
from edge_agent.collector.config import parse_collector_config
from edge_agent.collector.ingest import Ingest
from edge_agent.collector.store import Store
from support import wait_until
from support.broker import Mosquitto, publish, publisher
from support.windows import window

CLIENT_ID = "collector-test"
PUBACK = f"Received PUBACK from {CLIENT_ID} "
WINDOWS = 20


@pytest.fixture
def quick_failures(monkeypatch):
    # In production a locked store fails after 10 s and is retried 5 s later; the same cycle, quicker.
    monkeypatch.setattr(store_module, "SQLITE_BUSY_TIMEOUT_MS", 100)
    monkeypatch.setattr(ingest_module, "STORE_RETRY_S", 0.1)


def start_ingest(store, port):
    config = parse_collector_config(f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  reconnect_max_s: 1\n").mqtt
    ingest = Ingest(store, config, client_id=CLIENT_ID)
    ingest.start()
    assert ingest.subscribed.wait(10)
    return ingest


def test_windows_are_acknowledged_only_once_committed(tmp_path, caplog, quick_failures):
    database = tmp_path / "collector.sqlite3"
    store = Store(f"sqlite:///{database}")
    # Another writer holding the database: a retention run, a second collector, a stuck backup.
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with Mosquitto(persistence=True) as broker:
        ingest = start_ingest(store, broker.port)
        client = publisher(broker.port)
        try:
            for minute in range(WINDOWS):
                payload = window("pi-101a", minute)
                publish(client, "classroom/north/101/pi-101a/emotions", payload.to_json())
            wait_until(lambda: ingest.counts["received"] == WINDOWS)
            # Several write attempts have waited for the lock and failed by now.
            wait_until(lambda: caplog.text.count("database is locked") >= 3)
            assert broker.count_in_log(PUBACK) == 0
        finally:
            client.disconnect()
            # Stopped with its batch neither stored nor acknowledged, as a crash would leave it.
            ingest.stop()
        holder.rollback()
        holder.close()
        assert store.count_windows() == 0
        # The same client id resumes the broker's session, which still holds every window.
        ingest = start_ingest(store, broker.port)
        try:
            wait_until(lambda: store.count_windows() == WINDOWS)
            wait_until(lambda: broker.count_in_log(PUBACK) == WINDOWS)
        finally:
            ingest.stop()
    assert [stored.seq for stored in store.windows("north", "101")] == list(range(WINDOWS))
