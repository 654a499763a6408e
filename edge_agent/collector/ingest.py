"""MQTT in: every device's windows, status and stats, validated against the contract, stored in batches.

Windows (and the status and stats beside them in a batch) are acknowledged to the broker only
once they are committed to the store (manual PUBACK on a persistent MQTT 5 session), so a
collector killed mid-batch loses nothing: the broker delivers the unacknowledged windows again
when it comes back, and the store keeps each (device, window_start) once.

A window's time is its stamp, as the agent made it. An agent whose clock stepped back keeps
stamping on from where it was, ahead of the clock, so that no (device, window_start) is ever
used twice (agent/clock.py): such windows are stored under their stamps, and counted as
``ahead`` with a rate-limited warning naming the device. A window stamped more than a day
(MAX_AHEAD_S) ahead of this server's clock comes from a clock that is simply wrong: it is
refused, counted as ``future`` (and ``rejected``), and never stored, so it cannot take the
place of the real window for that minute later.

Ready means subscribed: ``subscribed`` is set when the broker acknowledges the subscriptions
(SUBACK), not when it accepts the connection (CONNACK). On a first start there is no session yet,
and a message published between the two would not reach the collector.
"""

import logging
import queue
import threading
import time
from collections import Counter

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..common.contract import MAX_AHEAD_S, REJECT_REASONS, MessageError, parse_payload, parse_topic
from ..common.mqtt import configure_tls, connect_options, new_client, set_credentials
from .store import StoreError

log = logging.getLogger(__name__)

# How long the broker keeps our session (and the windows queued for it) while we are away.
SESSION_EXPIRY_S = 7 * 24 * 3600
# Windows written per transaction, and the longest a window waits for its batch.
BATCH_SIZE = 500
BATCH_WAIT_S = 0.05
# Unacknowledged messages the broker may send us at once (MQTT 5 Receive Maximum). We acknowledge
# only after the commit, so this bounds the batch: without it mosquitto allows 20
# (max_inflight_messages) and a backlog drains 20 windows per BATCH_WAIT_S. Room for several
# batches lets the next ones fill while one commits.
RECEIVE_MAXIMUM = 4 * BATCH_SIZE
# Rejections are logged at most this often per reason, with a count of those not shown.
REJECT_LOG_EVERY_S = 10.0
STORE_RETRY_S = 5.0
# A window arrives when it ends; one stamped further ahead than this came from a clock ahead of ours.
AHEAD_SLACK_S = 300


class RateLimitedLog:
    def __init__(self, every_s=REJECT_LOG_EVERY_S, clock=time.monotonic):
        self.every_s = every_s
        self.clock = clock
        self._last = {}
        self._hidden = Counter()

    def warning(self, key, message):
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            self._hidden[key] += 1
            return
        hidden = self._hidden.pop(key, 0)
        self._last[key] = now
        log.warning("%s%s", message, f" ({hidden} more like it not shown)" if hidden else "")


class Ingest:
    """Subscribes to ``<prefix>/+/+/+/{emotions,status,stats}`` and feeds the store."""

    def __init__(self, store, mqtt_config, *, client_id, shared_group=None, clock=time.time):
        self.store = store
        self.config = mqtt_config
        self.prefix = mqtt_config.prefix
        self.client_id = client_id
        self.shared_group = shared_group
        self.clock = clock
        self.counts = Counter()
        # Every reason from the start, at zero: a monitoring system's rate() needs the series before the first.
        self.rejected = Counter(dict.fromkeys(REJECT_REASONS, 0))
        # Seconds from the end of the last batch's oldest window to its commit: how far behind storing is.
        self.lag_s = None
        self._queue = queue.Queue()
        self._stop = threading.Event()
        self._writer = None
        self._rejections = RateLimitedLog()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._subscribe_mid = None
        self.client = new_client(mqtt_config, client_id, persistent=True, manual_ack=True)
        configure_tls(self.client, mqtt_config)
        self.client.reconnect_delay_set(1, int(mqtt_config.reconnect_max_s))
        self.client.on_pre_connect = lambda client, userdata: set_credentials(client, mqtt_config)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def topics(self):
        filters = [f"{self.prefix}/+/+/+/{kind}" for kind in ("emotions", "status", "stats")]
        if self.shared_group:
            # MQTT 5 shared subscription: collectors in one group split the messages between them.
            filters = [f"$share/{self.shared_group}/{name}" for name in filters]
        return filters

    def start(self):
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        self.client.connect_async(self.config.host, self.config.port,
                                  **connect_options(self.config, clean_start=False, properties=properties))
        self._writer = threading.Thread(target=self._write_batches, name="collector writer", daemon=True)
        self._writer.start()
        self.client.loop_start()

    def stop(self, timeout=10):
        self._stop.set()
        if self._writer:
            self._writer.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("broker %s:%s refused the collector: %s", self.config.host, self.config.port, reason_code)
            return
        # Subscribing again is harmless with a kept session and needed when the broker lost it.
        _, self._subscribe_mid = client.subscribe([(name, 1) for name in self.topics()])
        log.info("connected to %s:%s (session %s)", self.config.host, self.config.port,
                 "resumed" if flags.session_present else "new")
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        if mid != self._subscribe_mid:
            return
        refused = [f"{name} ({code})" for name, code in zip(self.topics(), reason_codes, strict=False)
                   if code.is_failure]
        if refused:
            log.warning("broker %s:%s refused the collector's subscription to %s: check the broker's ACL",
                        self.config.host, self.config.port, ", ".join(refused))
            return
        self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()
        self.subscribed.clear()
        if not self._stop.is_set():
            log.warning("disconnected from %s:%s: %s; reconnecting", self.config.host, self.config.port,
                        reason_code)

    def _on_message(self, client, userdata, message):
        self.counts["received"] += 1
        try:
            name = message.topic
        except UnicodeDecodeError:
            # paho decodes the topic on access; mosquitto refuses such topics, another broker may not.
            self._reject(message, "?", "the topic is not UTF-8", "topic")
            return
        try:
            site, room, device, kind = parse_topic(name, self.prefix)
            payload = parse_payload(kind, message.payload, (site, room, device))
        except MessageError as exc:
            self._reject(message, name, str(exc), exc.reason)
            return
        if kind == "emotions":
            ahead = payload.start_epoch + payload.window_s - self.clock()
            if ahead > MAX_AHEAD_S:
                self.counts["future"] += 1
                self._reject(message, name, f"future window: window_start {payload.window_start} is "
                             f"{ahead / 3600:.0f} h ahead of this server's clock (more than a day): the device's "
                             "clock is wrong", "future")
                return
            if ahead > AHEAD_SLACK_S:
                self.counts["ahead"] += 1
                self._rejections.warning(f"ahead {device}", f"device {device} sends windows stamped {ahead:.0f} s "
                                         "ahead of this server's clock (its clock stepped back, or is ahead): "
                                         "stored under their stamps")
        self._queue.put((kind, site, room, device, payload, message.mid, message.qos))

    def _reject(self, message, name, reason, kind):
        self.counts["rejected"] += 1
        self.rejected[kind] += 1
        self._rejections.warning(reason.split(":")[0], f"rejected a message on {name[:200]!r}: {reason}")
        # A bad message is acknowledged all the same: redelivering it would not make it good.
        if message.qos:
            self.client.ack(message.mid, message.qos)

    def _write_batches(self):
        batch = []
        while not self._stop.is_set() or batch or not self._queue.empty():
            batch = batch or self._take_batch()
            if not batch:
                continue
            try:
                self._store(batch)
                batch = []
            except StoreError as exc:
                # Unacknowledged, the batch stays the broker's too: nothing is lost while we wait.
                log.error("%s; retrying in %g s", exc, STORE_RETRY_S)
                if self._stop.wait(STORE_RETRY_S):
                    return

    def _take_batch(self):
        batch = []
        deadline = time.monotonic() + BATCH_WAIT_S
        while len(batch) < BATCH_SIZE:
            try:
                batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _store(self, batch):
        now = self.clock()
        windows = [item[4] for item in batch if item[0] == "emotions"]
        new = self.store.add_windows(windows) if windows else 0
        self.counts["stored"] += new
        self.counts["duplicates"] += len(windows) - new
        if windows:
            self.lag_s = max(0.0, self.clock() - min(window.start_epoch + window.window_s for window in windows))
        seen = {}
        for kind, site, room, device, payload, _, _ in batch:
            seen[device] = (site, room)
            if kind == "status":
                self.store.set_status(payload, site=site, room=room, received_at=now)
        self.store.add_stats([(item[3], item[4]) for item in batch if item[0] == "stats"], received_at=now)
        # Once per device and batch, all in one statement: a backlog batch names hundreds of devices.
        self.store.touch_many(seen, seen_at=now)
        # Only now is every window of the batch safe: acknowledge them to the broker.
        for item in batch:
            if item[6]:
                self.client.ack(item[5], item[6])
