"""Running under systemd: sd_notify (READY, STATUS, WATCHDOG, STOPPING, RELOADING), the journal,
and the signals a service answers; what both daemons set up before they serve.

Both systemd parts are thin wrappers over systemd-python: ``systemd.daemon.notify`` (libsystemd's
``sd_notify``, which also handles abstract ``@name`` sockets) and ``systemd.journal.JournalHandler``.
Signal handlers only set events: the daemon's own loop notices them and stops or reloads.
"""

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from systemd import daemon

from .cli import positive_int

log = logging.getLogger(__name__)

# Where sd_journal_send() writes; without it (no journald) logging goes to stderr.
JOURNAL_SOCKET = "/run/systemd/journal/socket"
STDERR_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The name of the root handler configure_logging() adds, by which a second call finds it.
HANDLER_NAME = "edge_agent"


def _positive_env(name: str) -> int | None:
    """The environment variable as a positive whole number, or None when unset or anything else."""
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return positive_int(value)
    except (ValueError, argparse.ArgumentTypeError):
        return None


class Notifier:
    """sd_notify for Type=notify services; every method is a no-op when NOTIFY_SOCKET is unset.

    ``clock`` (seconds, monotonic) only paces ``watchdog()``; tests pass a fake one.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.watchdog_interval_s: float | None = None
        usec = _positive_env("WATCHDOG_USEC")
        # WATCHDOG_PID names the one process meant to ping: a child that inherited the
        # environment (or a process started by hand with it) must stay quiet.
        meant_for_us = not os.environ.get("WATCHDOG_PID") or _positive_env("WATCHDOG_PID") == os.getpid()
        if self.enabled and usec and meant_for_us:
            # Ping at half the timeout, as sd_watchdog_enabled(3) recommends.
            self.watchdog_interval_s = usec / 2e6
        self._last_ping: float | None = None
        self._last_status: str | None = None
        self._send_failed = False

    def _send(self, *fields: str) -> bool:
        if not self.enabled:
            return False
        try:
            return bool(daemon.notify("\n".join(fields)))
        except OSError as error:
            # A vanished socket must not take the agent down; systemd notices on its own
            # (start timeout, watchdog). Say so once, not on every loop iteration.
            if not self._send_failed:
                log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), error)
                self._send_failed = True
            return False

    @staticmethod
    def _with_status(field: str, status: str | None) -> tuple[str, ...]:
        return (field, f"STATUS={status}") if status else (field,)

    def ready(self, status: str | None = None) -> None:
        """Startup (or a reload) is done: READY=1, with an optional STATUS= line."""
        if status:
            self._last_status = status
        self._send(*self._with_status("READY=1", status))

    def status(self, text: str) -> None:
        """STATUS=<text> for `systemctl status`; nothing is sent when the text has not changed."""
        if text == self._last_status:
            return
        self._last_status = text
        self._send(f"STATUS={text}")

    def watchdog(self) -> None:
        """WATCHDOG=1 at most once per ``watchdog_interval_s``: cheap to call on every loop iteration."""
        if self.watchdog_interval_s is None:
            return
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < self.watchdog_interval_s:
            return
        self._last_ping = now
        self._send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> None:
        """Shutdown has begun: STOPPING=1, with an optional STATUS= line."""
        if status:
            self._last_status = status
        self._send(*self._with_status("STOPPING=1", status))

    def reloading(self) -> None:
        """RELOADING=1 with the CLOCK_MONOTONIC time in µs (Type=notify-reload wants it from
        systemd 253 on; older versions ignore it). Call ``ready()`` once the reload is done."""
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send("RELOADING=1", f"MONOTONIC_USEC={now_usec}")


def under_systemd() -> bool:
    """True when systemd started this process (a service has INVOCATION_ID, its stderr JOURNAL_STREAM)."""
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


def _journal_handler(name: str) -> logging.Handler | None:
    if not os.path.exists(JOURNAL_SOCKET):
        return None
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER=name)
    return handler


def configure_logging(level: str | int = "INFO", name: str = "edge-agent") -> None:
    """Send the root logger to the journal under systemd, else to stderr.

    Calling it again (after a config reload) only changes the level: handlers are never doubled.
    """
    if isinstance(level, str):
        level = level.upper()
    root = logging.getLogger()
    root.setLevel(level)
    if any(handler.get_name() == HANDLER_NAME for handler in root.handlers):
        return
    handler = _journal_handler(name) if under_systemd() else None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(STDERR_FORMAT))
    handler.set_name(HANDLER_NAME)
    root.addHandler(handler)


@dataclass(frozen=True)
class Service:
    """What a daemon's run() works with: its notifier, and the events its signals set (``reload``
    never, for a daemon that cannot re-read its config)."""

    notifier: Notifier
    stop: threading.Event
    reload: threading.Event


def start_service(name: str, log_level: str, *, reload: bool = False) -> Service:
    """Logging set up, a Notifier, and SIGTERM and SIGINT setting ``stop``; SIGHUP sets ``reload``
    when the daemon can re-read its config (without it SIGHUP keeps its default: the process ends)."""
    configure_logging(log_level, name=name)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    reload_event = threading.Event()
    if reload:
        signal.signal(signal.SIGHUP, lambda *_: reload_event.set())
    return Service(Notifier(), stop, reload_event)
