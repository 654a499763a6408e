"""Running under systemd: sd_notify (READY, WATCHDOG, STATUS, STOPPING, RELOADING), the journal, board health."""

import logging
import os
import sys
import time
from pathlib import Path

from systemd import daemon

# Zones whose temperature is the CPU's: a Pi's, then Intel's package sensor.
_CPU_ZONE_TYPES = ("cpu-thermal", "cpu_thermal", "x86_pkg_temp", "soc_thermal")


class Notifier:
    """sd_notify for Type=notify services; every method does nothing when NOTIFY_SOCKET is unset."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the one process meant to ping; a child that inherited it must not.
        mine = not pid or pid == str(os.getpid())
        self.watchdog_interval_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self._last_ping = None
        self._last_status = None

    def _send(self, *lines):
        if self.enabled:
            daemon.notify("\n".join(lines))

    def ready(self, status=None):
        self._last_status = status
        self._send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text):
        if text != self._last_status:
            self._last_status = text
            self._send(f"STATUS={text}")

    def watchdog(self):
        """Ping, at most once per half watchdog period: cheap enough to call on every loop."""
        if self.watchdog_interval_s is None:
            return
        now = self._clock()
        if self._last_ping is None or now - self._last_ping >= self.watchdog_interval_s:
            self._last_ping = now
            self._send("WATCHDOG=1")

    def stopping(self, status=None):
        self._send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def reloading(self):
        # systemd 253+ pairs RELOADING=1 with the monotonic time the reload began.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send("RELOADING=1", f"MONOTONIC_USEC={usec}")


def under_systemd():
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


def configure_logging(level="INFO", name="edge-agent"):
    """Log to the journal under systemd, else to stderr; calling it again only changes the level."""
    root = logging.getLogger()
    root.setLevel(level)
    if any(getattr(handler, "_edge_agent", False) for handler in root.handlers):
        return
    handler = None
    if under_systemd():
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER=name)
        except OSError:
            handler = None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._edge_agent = True
    root.addHandler(handler)


def cpu_temperature_c(root="/sys/class/thermal"):
    """The CPU's temperature in °C, or None on boards (and VMs) without a thermal zone."""
    zones = sorted(Path(root).glob("thermal_zone*"))
    readings = []
    for zone in zones:
        try:
            kind = (zone / "type").read_text().strip()
            millidegrees = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        readings.append((kind in _CPU_ZONE_TYPES, millidegrees / 1000))
    if not readings:
        return None
    return next((celsius for is_cpu, celsius in readings if is_cpu), readings[0][1])
