"""The fleet and the collector in Prometheus' text format, served on loopback for IT's Prometheus to scrape.

Everything is read at each scrape (prometheus_client's custom-collector interface): the devices
and their latest stats from the store, judged by fleet.py exactly as the dashboard's device
table judges them, and the running ingest's counters. Nothing is kept between scrapes.

Invariants:

- Only figures a device sent, or the collector derived from them, are exported. A figure the
  device did not send, or sent longer ago than ``fleet.silent_after_min`` (the dashboard then
  judges the device by its silence alone), is absent, never zero. Stats the contract refuses
  (negative, NaN, a CPU at 10,000 °C) never reach the store, so never reach a metric either.
- No emotion counts, no faces per window, nothing per window: the only window figures are the
  collector's counts of windows. The labels name site, room and device, which is why the web
  server gives /metrics to IT and scrapers alone, never to instructors.
- The thresholds the dashboard judges by are exported from the same config (``edge_fleet_*``,
  ``edge_device_fps_target``), so the alert rules (alerts.py) compare against the very numbers
  the dashboard uses, and the two cannot disagree.
"""

import math
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from ..common.errors import EdgeAgentError
from .fleet import Health, Thresholds, fleet_health
from .store import StoreError

LABELS = ("site", "room", "device")
STATES = ("online", "offline", "stopped", "unknown")
MIB = 2**20
# The stats each device sends that become a gauge of the same name: (metric, stats field, scale to
# the metric's unit, help). Prometheus' base units: seconds, bytes, degrees Celsius.
STATS_GAUGES = (
    ("edge_device_fps", "fps", 1.0, "Frames the device analysed per second over its last stats interval"),
    ("edge_device_detection_seconds", "detect_ms", 1e-3, "Seconds to find the faces of one frame (moving average)"),
    ("edge_device_classification_seconds", "classify_ms", 1e-3,
     "Seconds to label all the faces of one frame, in one model call (moving average)"),
    ("edge_device_faces_per_frame", "faces_per_frame", 1.0, "Faces found per frame (moving average)"),
    ("edge_device_outbox_depth", "outbox_depth", 1.0, "Windows waiting in the device's outbox for the broker"),
    ("edge_device_cpu_temperature_celsius", "cpu_temp_c", 1.0, "CPU temperature, where the board has a sensor"),
    ("edge_device_load1", "load_1m", 1.0, "The board's load average over the last minute"),
    ("edge_device_memory_bytes", "rss_mb", MIB, "Resident memory of the agent"),
    ("edge_device_uptime_seconds", "uptime_s", 1.0, "Seconds since the agent started"),
)


STORE_UP = ("edge_collector_store_up", "1 when the store could be read for this scrape")


class MetricsError(EdgeAgentError):
    """The metrics port cannot be listened on; the text names the port and the key."""


class BuildClock:
    """What the dashboard's last build took and when it ended; the worker process writes it, scrapes read it."""

    def __init__(self, shared):
        self._shared = shared  # a multiprocessing Array of two doubles: seconds, end (epoch); NaN before the first

    def record(self, seconds: float, ended: float) -> None:
        with self._shared.get_lock():
            self._shared[0], self._shared[1] = seconds, ended

    def read(self) -> tuple[float, float] | None:
        with self._shared.get_lock():
            seconds, ended = self._shared[0], self._shared[1]
        return None if math.isnan(ended) else (seconds, ended)


def _gauge(name, help_text):
    return GaugeMetricFamily(name, help_text, labels=LABELS)


class FleetMetrics:
    """A prometheus_client collector: every device of ``store`` judged by ``limits``, and the collector itself.

    ``ingest`` (counters of the running ingest) and ``build`` (a BuildClock) are optional: a
    collector whose dashboard is drawn elsewhere has no build time to tell.
    """

    def __init__(self, store, limits: Thresholds, *, ingest=None, build: BuildClock | None = None,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.limits = limits
        self.ingest = ingest
        self.build = build
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        yield from self._thresholds()
        yield from self._collector()
        now = self.clock()
        try:
            health = fleet_health(self.store.devices(), self.store.fleet_stats(now), now, self.limits)
            models = self.store.device_models()
            size = self.store.size_bytes()
        except StoreError:
            # A database that cannot be read says so, and the devices are absent rather than guessed.
            yield GaugeMetricFamily(*STORE_UP, 0)
            return
        yield GaugeMetricFamily(*STORE_UP, 1)
        if size is not None:
            yield GaugeMetricFamily("edge_collector_store_size_bytes", "What the store takes on disk", size)
        yield from self._devices(health, models, now)

    def _thresholds(self):
        yield GaugeMetricFamily("edge_fleet_silent_after_seconds",
                                "A device not heard from for longer needs attention (fleet.silent_after_min)",
                                self.limits.silent_after_s)
        yield GaugeMetricFamily("edge_fleet_hot_celsius",
                                "A CPU temperature at or above this needs attention (fleet.hot_c)", self.limits.hot_c)

    def _collector(self):
        if self.ingest is not None:
            counts = self.ingest.counts
            for name, key, help_text in (
                    ("edge_collector_windows_stored", "stored", "Windows stored (each window once)"),
                    ("edge_collector_windows_duplicate", "duplicates", "Windows received again and not stored twice"),
                    ("edge_collector_windows_ahead", "ahead",
                     "Windows stored though stamped ahead of this server's clock (a device's clock stepped back)"),
                    ("edge_collector_messages_received", "received", "MQTT messages received")):
                yield CounterMetricFamily(name, help_text, counts[key])
            rejected = CounterMetricFamily("edge_collector_messages_rejected",
                                           "Messages refused for breaking the contract, by reason", labels=("reason",))
            for reason, count in sorted(self.ingest.rejected.items()):
                rejected.add_metric((reason,), count)
            yield rejected
            yield GaugeMetricFamily("edge_collector_mqtt_connected", "1 while connected to the broker",
                                    int(self.ingest.connected.is_set()))
            if self.ingest.lag_s is not None:
                yield GaugeMetricFamily("edge_collector_ingest_lag_seconds",
                                        "From the end of the last batch's oldest window to its commit",
                                        self.ingest.lag_s)
        last = self.build.read() if self.build else None
        if last is not None:
            yield GaugeMetricFamily("edge_collector_dashboard_build_seconds", "What the dashboard's last build took",
                                    last[0])
            yield GaugeMetricFamily("edge_collector_dashboard_last_build_timestamp_seconds",
                                    "When the dashboard's last build ended (Unix time)", last[1])

    def _devices(self, health: list[Health], models: dict[str, str], now: float):
        seen = _gauge("edge_device_last_seen_age_seconds",
                      "Seconds since any message of the device arrived (+Inf: never)")
        state = GaugeMetricFamily("edge_device_state", "1 for the device's last announced state (unknown: none)",
                                  labels=(*LABELS, "state"))
        camera = GaugeMetricFamily("edge_device_camera", "1 for the camera state the device last reported",
                                   labels=(*LABELS, "camera"))
        info = InfoMetricFamily("edge_device", "The agent's version and the model of its newest window",
                                labels=LABELS)
        target = _gauge("edge_device_fps_target", "Frames per second the device should analyse (fleet.fps)")
        gauges = {field: (_gauge(name, help_text), scale) for name, field, scale, help_text in STATS_GAUGES}
        per_face = _gauge("edge_device_classification_seconds_per_face",
                          "Seconds to label one face: classification per frame over faces per frame")
        failing = _gauge("edge_device_outbox_failing", "1 while the device cannot write its outbox")
        growth = _gauge("edge_device_outbox_growth",
                        "Outbox depth now less its depth ten minutes ago: above 0, the backlog grows")
        dropped_day = _gauge("edge_device_windows_dropped_24h", "Windows the device dropped in the last 24 hours")
        dropped = CounterMetricFamily("edge_device_windows_dropped",
                                      "Windows the device dropped for age, as it counts them", labels=LABELS)
        for item in health:
            device = item.device
            labels = (device.site, device.room, device.device)
            seen.add_metric(labels, math.inf if device.last_seen is None else max(0.0, now - device.last_seen))
            for name in STATES:
                state.add_metric((*labels, name), int((device.state or "unknown") == name))
            if item.camera:
                camera.add_metric((*labels, item.camera), 1)
            info.add_metric(labels, {"version": device.version or "", "model": models.get(device.device, "")})
            target.add_metric(labels, item.fps_target)
            stats = item.stats
            if stats is None:
                continue
            for field, (gauge, scale) in gauges.items():
                value = getattr(stats, field)
                if value is not None:
                    gauge.add_metric(labels, value * scale)
            if stats.classify_ms is not None and stats.faces_per_frame:
                per_face.add_metric(labels, stats.classify_ms * 1e-3 / stats.faces_per_frame)
            if stats.outbox_failing is not None:
                failing.add_metric(labels, int(stats.outbox_failing))
            if item.outbox_before is not None and stats.outbox_depth is not None:
                growth.add_metric(labels, stats.outbox_depth - item.outbox_before)
            if item.dropped_day is not None:
                dropped_day.add_metric(labels, item.dropped_day)
            if stats.dropped_windows is not None:
                dropped.add_metric(labels, stats.dropped_windows)
        yield from (seen, state, camera, info, target, *(gauge for gauge, _ in gauges.values()), per_face, failing,
                    growth, dropped_day, dropped)


class MetricsServer:
    """/metrics on 127.0.0.1:``port``, listening from the start; what it serves is added once the store is open."""

    def __init__(self, port: int, config_path=None):
        self.port = port
        self.registry = CollectorRegistry()
        try:
            self._server, self._thread = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        except OSError as exc:
            where = f" in {config_path}" if config_path else ""
            raise MetricsError(f"metrics.port {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); "
                               f"stop what uses it or choose a free port for metrics.port{where}") from None

    def expose(self, collector: FleetMetrics) -> None:
        self.registry.register(collector)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
