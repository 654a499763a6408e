"""The long-running agent: camera to windows to the outbox to the broker, under systemd.

Data flows one way: the capture thread keeps the newest frame; this loop takes one at the
configured rate, labels its faces, counts them into the open window and, when a window
closes, stores its payload in the outbox; the publisher sends the outbox. Frames, crops and
boxes never leave this process: only window payloads are stored or sent.

Windows are stamped by the AgentClock (clock.py): none before the system clock is synchronised
(frames are analysed, the camera and the watchdog stay alive, and the status line and the journal
say the agent is waiting, once a minute), and never a second time for one minute, however the
clock steps.

A disk that refuses writes (full, or an SD card gone read-only) never stops the loop: closed
windows wait in memory, oldest first and at most ``outbox.memory_windows`` of them (the oldest
beyond that are dropped and counted), the status line and the stats say so, and they are
stored, in order and with their seq, as soon as a write works again.
"""

import logging
import shutil
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..common.contract import StatsPayload, format_utc, topic
from ..common.errors import EdgeAgentError
from ..common.service import configure_logging, start_service
from .capture import LatestFrameGrabber, open_source
from .clock import AgentClock
from .config import load_config
from .health import cpu_temperature_c, load_1m, rss_mb
from .lock import OutboxLock
from .outbox import Outbox, OutboxError
from .pipeline import FramePipeline
from .publisher import Publisher
from .tally import Window, WindowTally

log = logging.getLogger(__name__)

# Weight of the newest frame in the moving averages the stats report.
AVERAGE_WEIGHT = 0.1
# How often expired windows are looked for in the outbox.
EXPIRY_CHECK_S = 60.0
# How often a disk that refused a write is tried again while windows wait in memory.
STORAGE_RETRY_S = 5.0
# Free space below which the disk holding the outbox is called out at start.
LOW_SPACE_BYTES = 1 << 20
# How often the journal is told, again, that windows wait for the clock.
CLOCK_LOG_EVERY_S = 60.0


class MovingAverage:
    def __init__(self, weight=AVERAGE_WEIGHT):
        self.weight = weight
        self.value = None

    def add(self, sample):
        self.value = sample if self.value is None else self.value + self.weight * (sample - self.value)


@dataclass
class Counters:
    frames: int = 0
    frames_at_last_stats: int = 0


class Agent:
    """One configuration's worth of running parts; ``serve()`` runs until stopped or asked to reload."""

    def __init__(self, config, notifier, stop, reload, clock: AgentClock | None = None):
        self.config = config
        self.notifier = notifier
        self._stop = stop
        self._reload = reload
        device = config.device
        self.pipeline = FramePipeline.from_config(config)
        self.pipeline.classifier.reserve()
        self.outbox = Outbox(config.outbox.resolved_path(), max_age_s=config.outbox.max_age_h * 3600)
        self.emotions_topic = topic(config.mqtt.prefix, device.site, device.room, device.id, "emotions")
        self.tally = WindowTally(config.window.length_s, config.window.min_group,
                                 floor=self.outbox.last_window_end)
        self.clock = clock or AgentClock(require_sync=config.clock.require_sync, length_s=config.window.length_s,
                                         floor=self.tally.floor)
        self._clock_condition = None  # what the status says about the clock
        self.held: deque[Window] = deque()  # closed windows the outbox could not take yet, oldest first
        self.held_dropped = 0         # held windows pushed out by newer ones since the last good write
        self.storage_error = None     # the OutboxError of the write that failed, until one works
        self._next_storage_try = 0.0
        self.publisher = Publisher(config.mqtt, device=device.id, site=device.site, room=device.room,
                                   outbox=self.outbox, version=__version__)
        camera = config.camera
        source = open_source(camera.backend, camera.source, loop=camera.loop, width=camera.width,
                             height=camera.height)
        self.grabber = LatestFrameGrabber(source, stall_s=camera.stall_s, backoff_max_s=camera.backoff_max_s,
                                          on_state=self._camera_state)
        self.detect_ms, self.classify_ms, self.faces_per_frame = MovingAverage(), MovingAverage(), MovingAverage()
        self.counters = Counters()
        self.started = time.monotonic()

    def _camera_state(self, state, reason):
        self.publisher.set_camera_state(state, reason)
        self.notifier.status(self._status_line(state, reason))

    def _status_line(self, camera=None, reason=None):
        camera = camera or self.grabber.state
        parts = []
        if self.clock.waiting:
            parts.append(self.clock.waiting_text())
        elif self.clock.stamps.ahead_s:
            parts.append(f"windows stamped {self.clock.stamps.ahead_s:.0f} s ahead of the clock (it stepped back)")
        if self.storage_error is not None:
            parts.append(f"OUTBOX NOT WRITABLE ({self.storage_error.reason}): {self._held_text()}")
        parts.append(f"camera {camera}" + (f" ({reason})" if reason and camera != "running" else ""))
        if self.faces_per_frame.value is not None:
            parts.append(f"{self.faces_per_frame.value:.1f} faces/frame")
        depth = self._outbox_figure(lambda: self.outbox.depth)
        parts.append(f"outbox {'?' if depth is None else depth} waiting")
        parts.append("broker connected" if self.publisher.connected else "broker not connected")
        return ", ".join(parts)

    def _held_text(self):
        return (f"{len(self.held)} window(s) held in memory (at most {self.config.outbox.memory_windows}), "
                f"{self.held_dropped} dropped")

    def _outbox_figure(self, read):
        # A failing card can refuse reads too; a status line or stats message must not end the agent.
        try:
            return read()
        except OutboxError:
            return None

    def serve(self):
        """Run until SIGTERM (returns "stop") or SIGHUP (returns "reload"); the open window is saved either way."""
        self._check_space()
        self.publisher.start()
        self.grabber.start()
        self._wait_for_camera()
        self.notifier.ready(self._status_line())
        log.info("running: %s/%s/%s, %s, model %s", self.config.device.site, self.config.device.room,
                 self.config.device.id, self.grabber.source.name, self.pipeline.classifier.tag)
        try:
            self._loop()
        finally:
            self._store(self.tally.flush(), now=True)
            if self.held:
                log.error("%d window(s) held in memory could not be written to the outbox %s and are lost",
                          len(self.held), self.outbox.path)
        return "reload" if self._reload.is_set() and not self._stop.is_set() else "stop"

    def _check_space(self):
        directory = self.outbox.path.parent
        try:
            free = shutil.disk_usage(directory).free
        except OSError:
            return
        if free < LOW_SPACE_BYTES:
            log.error("the disk holding the outbox %s has only %d KiB free: windows will wait in memory (at most "
                      "%d) whenever it cannot be written; free space on it", self.outbox.path, free // 1024,
                      self.config.outbox.memory_windows)

    def close(self):
        self.grabber.stop()
        self.pipeline.close()
        self.publisher.stop()
        self.outbox.close()

    def _wait_for_camera(self):
        """READY means frames are coming, unless the camera stays away for stall_s: then say so and go on."""
        deadline = time.monotonic() + self.config.camera.stall_s
        while time.monotonic() < deadline and not self._stop.is_set():
            if self.grabber.last_frame_monotonic is not None:
                return
            self._stop.wait(0.1)
        log.warning("no frame from %s yet (%s); running anyway", self.grabber.source.name,
                    self.grabber.last_error or self.grabber.state)

    def _loop(self):
        interval = 1.0 / self.config.camera.fps
        stats_every = self.config.mqtt.stats_interval_s
        next_frame = time.monotonic()
        next_stats = next_frame + stats_every
        next_expiry = next_frame
        next_clock_log = next_frame
        last_index = None
        while not self._stop.is_set() and not self._reload.is_set():
            now = time.monotonic()
            if now < next_frame:
                self._stop.wait(min(next_frame - now, 0.5))
                continue
            # A slow frame pushes the next one back rather than building a queue of them.
            next_frame = max(next_frame + interval, now)
            frame = self.grabber.next_frame(after_index=last_index, timeout=min(interval, 0.5))
            stamp = self.clock.stamp()
            if frame is not None:
                last_index = frame.index
                result = self.pipeline.process(frame)
                self.counters.frames += 1
                self.detect_ms.add(result.detect_s * 1000)
                self.classify_ms.add(result.classify_s * 1000)
                self.faces_per_frame.add(len(result.faces))
                if stamp is not None:
                    self._store(self.tally.add(stamp, result.labels))
            if stamp is not None:
                self._store(self.tally.close_due(stamp))
                self._report_clock()
            elif now >= next_clock_log:
                next_clock_log = now + CLOCK_LOG_EVERY_S
                text = self.clock.waiting_text()
                log.warning("%s: no window is stamped until the system clock is synchronised (NTP); "
                            "frames are analysed meanwhile", text)
                self._report_clock()
            self._store(None)
            self._feed_watchdog()
            if now >= next_expiry:
                next_expiry = now + EXPIRY_CHECK_S
                self._drop_expired()
            if now >= next_stats:
                next_stats = now + stats_every
                self._publish_stats(stats_every)
                self.notifier.status(self._status_line())

    def _report_clock(self):
        if self.clock.waiting:
            condition = "waiting for sync"
        elif self.clock.stamps.ahead_s:
            condition = f"windows stamped {self.clock.stamps.ahead_s:.0f} s ahead"
        else:
            condition = None
        if condition != self._clock_condition:
            self._clock_condition = condition
            self.publisher.set_condition("clock", condition)
            self.notifier.status(self._status_line())

    def _feed_watchdog(self):
        # Only while frames arrive: a dead camera or a stuck loop must get the service restarted.
        last = self.grabber.last_frame_monotonic
        if last is not None and time.monotonic() - last < self.config.camera.stall_s:
            self.notifier.watchdog()

    def _drop_expired(self):
        try:
            self.outbox.drop_expired()
        except OutboxError as exc:
            self._storage_failed(exc)

    def _store(self, window, now=False):
        """Queue a closed window (None: none) behind those held, and write what the disk takes."""
        if window is not None:
            if len(self.held) >= self.config.outbox.memory_windows:
                lost = self.held.popleft()
                self.held_dropped += 1
                log.error("window %s dropped: %d windows are already held in memory, waiting for the outbox",
                          format_utc(lost.start), self.config.outbox.memory_windows)
            self.held.append(window)
        if self.held and (now or time.monotonic() >= self._next_storage_try):
            self._write_held()

    def _write_held(self):
        device = self.config.device
        while self.held:
            window = self.held[0]
            try:
                stored = self.outbox.append(self.emotions_topic, lambda seq, w=window: w.payload(
                    device=device.id, site=device.site, room=device.room, seq=seq,
                    model=self.pipeline.classifier.tag))
            except OutboxError as exc:
                self._storage_failed(exc)
                return
            self.held.popleft()
            log.info("window %s stored as seq %d: %d frames, %d faces%s", format_utc(window.start), stored.seq,
                     window.frames, window.faces, " (suppressed)" if window.suppressed else "")
            self.publisher.kick()
        if self.storage_error is not None:
            self._storage_recovered()

    def _storage_failed(self, exc):
        self._next_storage_try = time.monotonic() + STORAGE_RETRY_S
        if self.storage_error is None or str(exc) != str(self.storage_error):
            log.error("%s; closed windows wait in memory (at most %d) until it can be written, tried every %g s",
                      exc, self.config.outbox.memory_windows, STORAGE_RETRY_S)
        self.storage_error = exc
        self.publisher.set_condition("outbox", f"cannot be written: {exc.reason}")
        self.notifier.status(self._status_line())

    def _storage_recovered(self):
        dropped, self.held_dropped = self.held_dropped, 0
        try:
            self.outbox.count_dropped(dropped)
        except OutboxError as exc:
            self.held_dropped = dropped
            self._storage_failed(exc)
            return
        log.warning("outbox %s can be written again: the windows held in memory are stored%s", self.outbox.path,
                    f"; {dropped} were dropped for want of memory" if dropped else "")
        self.storage_error = None
        self.publisher.set_condition("outbox", None)
        self.notifier.status(self._status_line())

    def _publish_stats(self, elapsed):
        frames = self.counters.frames - self.counters.frames_at_last_stats
        self.counters.frames_at_last_stats = self.counters.frames
        stats = StatsPayload(
            device=self.config.device.id, t=format_utc(time.time()), uptime_s=time.monotonic() - self.started,
            fps=frames / elapsed, detect_ms=self.detect_ms.value, classify_ms=self.classify_ms.value,
            faces_per_frame=self.faces_per_frame.value, outbox_depth=self._outbox_figure(lambda: self.outbox.depth),
            dropped_windows=(self._outbox_figure(lambda: self.outbox.dropped_total) or 0) + self.held_dropped,
            frames_dropped=self.grabber.frames_dropped, camera=self.grabber.state,
            cpu_temp_c=cpu_temperature_c(), rss_mb=rss_mb(), load_1m=load_1m(),
            outbox_failing=self.storage_error is not None, windows_held=len(self.held),
            clock_synced=self.clock.synced, clock_ahead_s=self.clock.stamps.ahead_s,
        )
        self.publisher.publish_stats(stats)


def run(config_path: Path) -> int:
    """``edge-agent run``: serve until SIGTERM, re-reading the config on SIGHUP. Returns the exit status.

    Only one agent serves an outbox: a second ``run`` on the same one stops with AlreadyRunning (exit 2).
    """
    config = load_config(config_path)
    # Before anything starts: a second copy must not even open the camera.
    lock = OutboxLock(config.outbox.resolved_path()).acquire()
    service = start_service("edge-agent", config.logging.level, reload=True)
    notifier, stop, reload = service.notifier, service.stop, service.reload
    try:
        while True:
            agent = Agent(config, notifier, stop, reload)
            try:
                outcome = agent.serve()
            finally:
                if stop.is_set() or not reload.is_set():
                    notifier.stopping("stopping: window in progress saved")
                agent.close()
            if outcome == "stop":
                log.info("stopped")
                return 0
            reload.clear()
            notifier.reloading()
            try:
                config, lock = _reread(config_path, config, lock)
            except EdgeAgentError as exc:
                log.error("configuration not changed: %s", exc)
    finally:
        lock.release()


def _reread(config_path, config, lock):
    """The new config, and the lock on its outbox (taken before the old one is let go)."""
    new = load_config(config_path)
    if new.outbox.resolved_path() != config.outbox.resolved_path():
        taken = OutboxLock(new.outbox.resolved_path()).acquire()
        lock.release()
        lock = taken
    configure_logging(new.logging.level, name="edge-agent")
    log.info("configuration %s re-read", config_path)
    return new, lock
