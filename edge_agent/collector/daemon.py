"""``edge-collector run``: MQTT into the store, the dashboard regenerated every refresh, until SIGTERM."""

import logging
import time

from ..common.service import start_service
from .config import load_collector_config
from .dashboard import Dashboard, DashboardError
from .ingest import Ingest
from .store import Store, StoreError

log = logging.getLogger(__name__)

STORE_RETRY_MAX_S = 60.0
STATS_EVERY_S = 60.0
RETENTION_EVERY_S = 6 * 3600
# Stats are summarised an hour at a time, so pruning hourly keeps each run to an hour of rows.
STATS_PRUNE_EVERY_S = 3600
# The main loop's tick: the watchdog is pinged and stop requests are noticed at least this often.
TICK_S = 1.0


def open_store(config, notifier, stop):
    """The store, retried with backoff while the database is unreachable; None when stopped first."""
    delay = 1.0
    while True:
        try:
            return Store.from_config(config)
        except StoreError as exc:
            log.error("%s; retrying in %g s", exc, delay)
            notifier.status(f"waiting for the store: {exc}")
        # Keep systemd's watchdog fed: a database that is down is not a hung collector.
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            notifier.watchdog()
            if stop.wait(min(TICK_S, max(0.0, deadline - time.monotonic()))):
                return None
        delay = min(delay * 2, STORE_RETRY_MAX_S)


class Collector:
    def __init__(self, config, notifier, stop):
        self.config = config
        self.notifier = notifier
        self.stop = stop
        self.dashboard = Dashboard.from_config(config)
        self.store = None
        self.ingest = None

    def serve(self):
        self.dashboard.check_writable()
        self.store = open_store(self.config.store, self.notifier, self.stop)
        if self.store is None:
            return
        log.info("store %s; dashboard in %s", self.store.url, self.dashboard.output_dir)
        mqtt = self.config.mqtt
        self.ingest = Ingest(self.store, mqtt, client_id=mqtt.client_id, shared_group=mqtt.shared_group)
        self.ingest.start()
        self.notifier.ready(f"subscribing on {mqtt.host}:{mqtt.port}")
        next_dashboard = next_stats = next_retention = next_prune = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_retention:
                self._guarded(self._apply_retention)
                next_retention = now + RETENTION_EVERY_S
            if now >= next_prune:
                self._guarded(self._prune_stats)
                next_prune = now + STATS_PRUNE_EVERY_S
            if now >= next_dashboard:
                self._guarded(self._build_dashboard)
                next_dashboard = time.monotonic() + self.config.dashboard.refresh_s
            if now >= next_stats:
                self._log_stats()
                next_stats = now + STATS_EVERY_S
            self.notifier.watchdog()
            self.stop.wait(TICK_S)

    def _guarded(self, action):
        # A database hiccup or a full disk must not stop the collector: the next round retries.
        try:
            action()
        except (StoreError, DashboardError) as exc:
            log.error("%s", exc)

    def _apply_retention(self):
        deleted = self.store.apply_retention()
        if deleted:
            log.info("retention: deleted %d windows older than %g days", deleted, self.store.retention_days)

    def _prune_stats(self):
        summarised, deleted = self.store.prune_stats()
        if summarised or deleted:
            log.info("stats: %d rows summarised per hour, %d older than %g days deleted", summarised, deleted,
                     self.store.stats_retention_days)

    def _build_dashboard(self):
        result = self.dashboard.build(self.store)
        log.debug("dashboard: %d rooms, %d sessions, %d charts drawn in %.1f s", result.rooms, result.sessions,
                  result.charts_drawn, result.seconds)

    def _log_stats(self):
        counts = self.ingest.counts
        text = (f"{'connected' if self.ingest.connected.is_set() else 'not connected'}; "
                f"{counts['stored']} windows stored, {counts['duplicates']} duplicates, "
                f"{counts['rejected']} messages rejected")
        # Only when there are any: stamps from a clock that stepped back, or from one that is wrong.
        if counts["ahead"] or counts["future"]:
            text += (f" ({counts['future']} windows from more than a day ahead), "
                     f"{counts['ahead']} stored stamped ahead of this clock")
        self.notifier.status(text)
        log.info("%s", text)

    def close(self):
        if self.ingest:
            self.ingest.stop()
        if self.store:
            self.store.close()


def run(config_path):
    """Serve until SIGTERM or SIGINT; returns the exit status."""
    config = load_collector_config(config_path)
    service = start_service("edge-collector", config.logging.level)
    collector = Collector(config, service.notifier, service.stop)
    try:
        collector.serve()
    finally:
        service.notifier.stopping("stopping: acknowledging what is stored")
        collector.close()
    log.info("stopped")
    return 0
