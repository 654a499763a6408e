"""``edge-collector run``: MQTT into the store until SIGTERM, the dashboard drawn beside it by a worker
process; and ``edge-collector dashboard --watch``, the same drawing as a service of its own.

The dashboard is never drawn on the ingest path: the worker is a separate process (its own
interpreter, so no lock is shared with the threads that store and acknowledge windows) at a
lower CPU priority, with its own connection to the store. It stops when the collector does, or
when the collector is killed (it notices its parent is gone within a tick), and a worker that
dies is started again after WORKER_RESTART_S, the collector logging why.

With ``metrics.port`` set, the fleet's Prometheus metrics (metrics.py) are served on loopback.
The port is taken before anything else starts, so a port in use stops the collector at once
with one line naming it (exit status 2), never leaving it half started.
"""

import logging
import math
import multiprocessing
import os
import signal
import time

from ..common.service import configure_logging, start_service
from .config import load_collector_config
from .dashboard import Dashboard, DashboardError
from .fleet import Thresholds
from .ingest import Ingest
from .metrics import BuildClock, FleetMetrics, MetricsServer
from .store import Store, StoreError

log = logging.getLogger(__name__)

STORE_RETRY_MAX_S = 60.0
STATS_EVERY_S = 60.0
RETENTION_EVERY_S = 6 * 3600
# Stats are summarised an hour at a time, so pruning hourly keeps each run to an hour of rows.
STATS_PRUNE_EVERY_S = 3600
# The main loop's tick: the watchdog is pinged and stop requests are noticed at least this often.
TICK_S = 1.0
# The worker yields the CPU to ingest: a full core's worth of drawing must not delay a commit.
# Ingest beside it, measured: docs/dashboard.md, "The worker process".
WORKER_NICE = 10
WORKER_RESTART_S = 10.0
# Well inside the unit's TimeoutStopSec (30 s): a worker stuck in a build is killed, never the unit.
WORKER_STOP_S = 10.0


def open_store(config, notifier, stop, url=None):
    """The store, retried with backoff while the database is unreachable; None when stopped first."""
    delay = 1.0
    while True:
        try:
            return Store.from_config(config, url)
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


def refresh_until_stopped(dashboard, store, stop, refresh_s, notifier=None, still_wanted=lambda: True,
                          build_clock=None):
    """Bring the dashboard up to date every ``refresh_s`` until ``stop`` is set or ``still_wanted()`` is false;
    each build's time goes to ``build_clock`` when given."""
    while not stop.is_set() and still_wanted():
        began = time.monotonic()
        try:
            result = dashboard.build(store)
            if build_clock is not None:
                build_clock.record(result.seconds, time.time())
            log.debug("dashboard: %d rooms, %d lessons, %d pages and %d charts written in %.1f s (%.1f s CPU)",
                      result.rooms, result.lessons, result.pages, result.charts_drawn, result.seconds,
                      result.cpu_seconds)
        except (StoreError, DashboardError) as exc:
            # A database hiccup or a full disk must not stop the drawing: the next round retries.
            log.error("%s", exc)
        while not stop.is_set() and still_wanted() and time.monotonic() < began + refresh_s:
            if notifier:
                notifier.watchdog()
            stop.wait(TICK_S)


def _worker_main(config, stop, parent, build_clock):
    """The worker process: the dashboard of ``config`` every refresh, until ``stop`` or its parent is gone.

    ``parent`` is the collector's pid as the collector gave it: one killed while this process was
    still starting would otherwise leave it reading its new parent's pid as the one to outlive.
    """
    configure_logging(config.logging.level, name="edge-collector")
    try:
        os.nice(WORKER_NICE)
    except PermissionError:
        # The unit's sandbox may refuse even lowering a priority; drawing goes on at the collector's own.
        log.info("dashboard worker: nice(%d) refused here; drawing at normal priority", WORKER_NICE)
    # Ctrl-C and systemd's SIGTERM reach the whole group: the collector decides when its worker stops.
    # Setting ``stop`` from a handler here would deadlock: a multiprocessing Event's set() waits for its
    # sleepers to wake, and the sleeper is this same thread, interrupted inside stop.wait().
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    store = None
    try:
        store = Store.from_config(config.store)
        refresh_until_stopped(Dashboard.from_config(config), store, stop, config.dashboard.refresh_s,
                              still_wanted=lambda: os.getppid() == parent, build_clock=build_clock)
    except StoreError as exc:
        log.error("dashboard worker: %s", exc)
        raise SystemExit(1) from None
    finally:
        if store is not None:
            store.close()


class DashboardWorker:
    """The dashboard's worker process, started again when it dies."""

    def __init__(self, config):
        self.config = config
        self._context = multiprocessing.get_context("spawn")
        self._stop = self._context.Event()
        self.build_clock = BuildClock(self._context.Array("d", [math.nan, math.nan]))
        self.process = None
        self._restart_at = None

    def start(self):
        self.process = self._context.Process(target=_worker_main,
                                             args=(self.config, self._stop, os.getpid(), self.build_clock),
                                             name="edge-collector dashboard", daemon=True)
        self.process.start()
        log.info("dashboard worker started (pid %d), refreshing every %g s", self.process.pid,
                 self.config.dashboard.refresh_s)

    def check(self):
        """Called every tick: a dead worker is logged, then started again WORKER_RESTART_S later."""
        if self.process.is_alive():
            return
        now = time.monotonic()
        if self._restart_at is None:
            log.error("dashboard worker (pid %d) exited with status %s; starting it again in %g s",
                      self.process.pid, self.process.exitcode, WORKER_RESTART_S)
            self._restart_at = now + WORKER_RESTART_S
        elif now >= self._restart_at:
            self._restart_at = None
            self.start()

    def stop(self):
        self._stop.set()
        self.process.join(WORKER_STOP_S)
        if self.process.is_alive():
            log.warning("dashboard worker did not stop within %g s: killing it", WORKER_STOP_S)
            self.process.kill()
            self.process.join()


class Collector:
    def __init__(self, config, notifier, stop, metrics: MetricsServer | None = None):
        self.config = config
        self.metrics = metrics
        self.notifier = notifier
        self.stop = stop
        self.dashboard = Dashboard.from_config(config)
        self.store = None
        self.ingest = None
        self.worker = None

    def serve(self):
        self.dashboard.check_writable()
        self.store = open_store(self.config.store, self.notifier, self.stop)
        if self.store is None:
            return
        log.info("store %s; dashboard in %s", self.store.url, self.dashboard.output_dir)
        mqtt = self.config.mqtt
        self.ingest = Ingest(self.store, mqtt, client_id=mqtt.client_id, shared_group=mqtt.shared_group)
        self.ingest.start()
        if self.config.dashboard.worker:
            self.worker = DashboardWorker(self.config)
            self.worker.start()
        if self.metrics:
            self.metrics.expose(FleetMetrics(self.store, Thresholds.from_config(self.config.fleet), ingest=self.ingest,
                                             build=self.worker.build_clock if self.worker else None))
            log.info("metrics on http://127.0.0.1:%d/metrics", self.metrics.port)
        self.notifier.ready(f"subscribing on {mqtt.host}:{mqtt.port}")
        next_stats = next_retention = next_prune = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_retention:
                self._guarded(self._apply_retention)
                next_retention = now + RETENTION_EVERY_S
            if now >= next_prune:
                self._guarded(self._prune_stats)
                next_prune = now + STATS_PRUNE_EVERY_S
            if now >= next_stats:
                self._log_stats()
                next_stats = now + STATS_EVERY_S
            if self.worker:
                self.worker.check()
            self.notifier.watchdog()
            self.stop.wait(TICK_S)

    def _guarded(self, action):
        # A database hiccup must not stop the collector: the next round retries.
        try:
            action()
        except StoreError as exc:
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

    def _log_stats(self):
        counts = self.ingest.counts
        link = ("subscribed" if self.ingest.subscribed.is_set()
                else "connected, not subscribed" if self.ingest.connected.is_set() else "not connected")
        text = (f"{link}; "
                f"{counts['stored']} windows stored, {counts['duplicates']} duplicates, "
                f"{counts['rejected']} messages rejected")
        # Only when there are any: stamps from a clock that stepped back, or from one that is wrong.
        if counts["ahead"] or counts["future"]:
            text += (f" ({counts['future']} windows from more than a day ahead), "
                     f"{counts['ahead']} stored stamped ahead of this clock")
        self.notifier.status(text)
        log.info("%s", text)

    def close(self):
        if self.metrics:
            self.metrics.close()
        if self.worker:
            self.worker.stop()
        if self.ingest:
            self.ingest.stop()
        if self.store:
            self.store.close()


def run(config_path):
    """Serve until SIGTERM or SIGINT; returns the exit status."""
    config = load_collector_config(config_path)
    # First: a port in use must stop the collector before it has started anything.
    metrics = MetricsServer(config.metrics.port, config_path) if config.metrics.port else None
    service = start_service("edge-collector", config.logging.level)
    collector = Collector(config, service.notifier, service.stop, metrics)
    try:
        collector.serve()
    finally:
        service.notifier.stopping("stopping: acknowledging what is stored")
        collector.close()
    log.info("stopped")
    return 0


def watch_dashboard(config, dashboard, url=None):
    """``edge-collector dashboard --watch``: the dashboard every refresh until SIGTERM or SIGINT."""
    service = start_service("edge-collector-dashboard", config.logging.level)
    store = open_store(config.store, service.notifier, service.stop, url)
    if store is None:
        return 0
    service.notifier.ready(f"drawing {dashboard.output_dir} every {config.dashboard.refresh_s:g} s")
    try:
        refresh_until_stopped(dashboard, store, service.stop, config.dashboard.refresh_s, service.notifier)
    finally:
        store.close()
    return 0
