"""Running under systemd: sd_notify (READY, STATUS, WATCHDOG, STOPPING, RELOADING), the journal,
and the board's CPU temperature for the health messages.

Both systemd parts are thin wrappers over systemd-python: ``systemd.daemon.notify`` (libsystemd's
``sd_notify``, which also handles abstract ``@name`` sockets) and ``systemd.journal.JournalHandler``.
"""

import logging
import os
import re
import sys
import time
from pathlib import Path

from systemd import daemon

log = logging.getLogger(__name__)

# Where sd_journal_send() writes; without it (no journald) logging goes to stderr.
JOURNAL_SOCKET = "/run/systemd/journal/socket"
STDERR_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Thermal zone types that measure the CPU: "cpu-thermal" on a Raspberry Pi, "x86_pkg_temp" on
# Intel, "soc_thermal"/"cpu_thermal" on other ARM boards.
_CPU_ZONE = re.compile(r"cpu|x86_pkg_temp|soc_thermal", re.IGNORECASE)


def _positive_int(text):
    try:
        value = int(text)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


class Notifier:
    """sd_notify for Type=notify services; every method is a no-op when NOTIFY_SOCKET is unset.

    ``clock`` (seconds, monotonic) only paces ``watchdog()``; tests pass a fake one.
    """

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.watchdog_interval_s = None
        usec = _positive_int(os.environ.get("WATCHDOG_USEC"))
        watchdog_pid = os.environ.get("WATCHDOG_PID")
        # WATCHDOG_PID names the one process meant to ping: a child that inherited the
        # environment (or a process started by hand with it) must stay quiet.
        meant_for_us = not watchdog_pid or _positive_int(watchdog_pid) == os.getpid()
        if self.enabled and usec and meant_for_us:
            # Ping at half the timeout, as sd_watchdog_enabled(3) recommends.
            self.watchdog_interval_s = usec / 2e6
        self._last_ping = None
        self._last_status = None
        self._send_failed = False

    def _send(self, *fields):
        if not self.enabled:
            return False
        try:
            return daemon.notify("\n".join(fields))
        except OSError as error:
            # A vanished socket must not take the agent down; systemd notices on its own
            # (start timeout, watchdog). Say so once, not on every loop iteration.
            if not self._send_failed:
                log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), error)
                self._send_failed = True
            return False

    @staticmethod
    def _with_status(field, status):
        return (field, f"STATUS={status}") if status else (field,)

    def ready(self, status=None):
        """Startup (or a reload) is done: READY=1, with an optional STATUS= line."""
        if status:
            self._last_status = status
        self._send(*self._with_status("READY=1", status))

    def status(self, text):
        """STATUS=<text> for `systemctl status`; nothing is sent when the text has not changed."""
        if text == self._last_status:
            return
        self._last_status = text
        self._send(f"STATUS={text}")

    def watchdog(self):
        """WATCHDOG=1 at most once per ``watchdog_interval_s``: cheap to call on every loop iteration."""
        if self.watchdog_interval_s is None:
            return
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < self.watchdog_interval_s:
            return
        self._last_ping = now
        self._send("WATCHDOG=1")

    def stopping(self, status=None):
        """Shutdown has begun: STOPPING=1, with an optional STATUS= line."""
        if status:
            self._last_status = status
        self._send(*self._with_status("STOPPING=1", status))

    def reloading(self):
        """RELOADING=1 with the CLOCK_MONOTONIC time in µs (Type=notify-reload wants it from
        systemd 253 on; older versions ignore it). Call ``ready()`` once the reload is done."""
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send("RELOADING=1", f"MONOTONIC_USEC={now_usec}")


def under_systemd():
    """True when systemd started this process (a service has INVOCATION_ID, its stderr JOURNAL_STREAM)."""
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


def _journal_handler(name):
    if not os.path.exists(JOURNAL_SOCKET):
        return None
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    return JournalHandler(SYSLOG_IDENTIFIER=name)


def configure_logging(level="INFO", name="edge-agent"):
    """Send the root logger to the journal under systemd, else to stderr.

    Calling it again (after a config reload) only changes the level: handlers are never doubled.
    """
    if isinstance(level, str):
        level = level.upper()
    root = logging.getLogger()
    root.setLevel(level)
    if any(getattr(handler, "_edge_agent_handler", False) for handler in root.handlers):
        return
    handler = _journal_handler(name) if under_systemd() else None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(STDERR_FORMAT))
    handler._edge_agent_handler = True
    root.addHandler(handler)


def _zone_number(path):
    digits = path.name[len("thermal_zone"):]
    return int(digits) if digits.isdigit() else sys.maxsize


def cpu_temperature_c(root="/sys/class/thermal"):
    """The CPU temperature in °C from the kernel's thermal zones, or None where there is none (VMs).

    The first zone whose type names the CPU wins; otherwise the first zone that can be read.
    """
    first = None
    for zone in sorted(Path(root).glob("thermal_zone*"), key=_zone_number):
        try:
            millidegrees = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue  # some zones (a Wi-Fi chip that is down) refuse to be read
        try:
            kind = (zone / "type").read_text().strip()
        except OSError:
            kind = ""
        celsius = millidegrees / 1000
        if _CPU_ZONE.search(kind):
            return celsius
        if first is None:
            first = celsius
    return first
