"""The agent's MQTT side: the outbox to the broker, and a retained status that tells the truth.

Publisher sends stored windows oldest first with QoS 1 and removes a window from the outbox only
when the broker's PUBACK for it arrives, so a broker outage, a lost connection or a killed agent
loses nothing (the collector stores a window once however often it arrives). The status topic
always holds the device's state: ``online`` (published retained on every connect, with the
camera state), ``stopped`` (published by stop()), or ``offline``, the Last Will the broker
publishes when the agent vanishes without saying goodbye.

Protocol choices, and why:

- MQTT 5. With MQTT 3.1.1 mosquitto acknowledges a PUBLISH its ACL denies exactly like one it
  accepted (a 3.1.1 PUBACK has no reason code), so a misconfigured ACL would silently delete
  every window from the outbox. An MQTT 5 PUBACK carries "Not authorized", and such a window
  stays in the outbox. ``mqtt.protocol: "3.1.1"`` exists for brokers that lack MQTT 5 (the
  demo's embedded one) and gives up that safeguard.
- Clean start, no session expiry: the broker keeps no session for the agent. Paho keeps its
  own copy of unacknowledged QoS 1 messages and sends them again after a reconnect, after
  on_connect; on_connect discards that copy (``drop_out_messages``), so the outbox is the one
  source of what gets sent again, and no stale retained status from an earlier connection can
  arrive after the fresh one.
- A message id means something only on the connection it was sent on (paho's counter wraps
  at 65535). A window in flight is recorded as ``(connection number, mid) -> row``; every
  connect and disconnect starts a new connection number and forgets the rows in flight,
  which the next connection sends again. A PUBACK only ever removes the row that was
  published with that mid on that same connection, and a row is recorded only if the
  connection did not change while it was being published.
- Reconnects are paho's own (``loop_start`` runs ``loop_forever(retry_first_connection=True)``):
  it retries an unreachable broker and a refused CONNACK alike, waiting ``min_delay`` and
  doubling up to ``reconnect_max_s``; the wait starts over only after a successful CONNACK, so
  a wrong password is retried ever more slowly, never in a busy loop.
"""

import logging
import threading
import time
from collections.abc import Callable

from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessageInfo
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ..common.config import BrokerConfig
from ..common.contract import State, StatsPayload, StatusPayload, format_utc, topic
from ..common.errors import EdgeAgentError
from ..common.mqtt import configure_tls, connect_options, describe_socket_error, new_client, refusal_text
from .outbox import Outbox, Pending

log = logging.getLogger(__name__)

# How long the sender sleeps when nothing wakes it; kick() and PUBACKs wake it at once.
_IDLE_S = 2.0
# A connection that lasted this long counts as healthy: the next problem is news again.
_HEALTHY_S = 30.0
# paho's own window on unacknowledged messages is a little wider than ours, so the status
# message never waits behind windows.
_PAHO_INFLIGHT_SPARE = 10



class Publisher:
    """Sends the outbox to the broker oldest first, QoS 1, deleting a window only on its PUBACK;
    keeps the retained status topic truthful.

    ``on_connection(connected)`` is called (from the network thread) when the connection comes
    up or goes away. All methods are thread-safe.
    """

    def __init__(self, mqtt_config: BrokerConfig, *, device: str, site: str, room: str, outbox: Outbox,
                 version: str = "", on_connection: Callable[[bool], None] | None = None, max_inflight: int = 20):
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1, not {max_inflight!r}")
        self.config = mqtt_config
        self.device, self.site, self.room = device, site, room
        self.outbox = outbox
        self.version = version or None
        self.max_inflight = max_inflight
        self.where = f"{mqtt_config.host}:{mqtt_config.port}"
        self.status_topic = topic(mqtt_config.prefix, site, room, device, "status")
        self.stats_topic = topic(mqtt_config.prefix, site, room, device, "stats")
        self._on_connection = on_connection

        # _lock guards the connection state and the in-flight map. It is never held while
        # calling paho: paho calls on_publish holding its own lock, and on_publish takes this one.
        self._lock = threading.Lock()
        self._connection = 0          # rises on every connect and disconnect
        self._connected = False
        self._connected_at = 0.0
        # (connection, mid) -> Pending, windows awaiting their PUBACK
        self._inflight: dict[tuple[int, int], Pending] = {}
        # (connection, mid, reason code) from on_publish, for the sender
        self._acks: list[tuple[int, int, ReasonCode]] = []
        # (connection, mid) -> state, to report a refused status
        self._status_mids: dict[tuple[int, int], State] = {}
        # _status_lock orders status publishes, so the last one sent carries the latest camera state.
        self._status_lock = threading.Lock()
        self._camera: str | None = None
        self._camera_reason: str | None = None
        self._conditions: dict[str, str] = {}  # clock / outbox problems for the status, while there are any

        self._wake = threading.Event()
        self._halt = False            # the sender thread ends
        self._closing = False         # stop() has begun: no more windows, no more "online"
        self._sender: threading.Thread | None = None  # started by start()
        self._hold_until = 0.0        # windows wait after the broker refused one
        self._refusal_delay = 0.0
        self._last_logged: str | None = None  # the last problem logged as a warning
        self._announce = True         # log the next successful connect at INFO
        self._password: str | None = None
        self.last_error: str | None = None

        # Validate our own payloads now, not in the network thread: the Last Will, for one.
        will = StatusPayload(state="offline", device=device).to_json()
        self._status_payload("online")
        self._client = new_client(mqtt_config, device, reconnect_on_failure=True)
        self._client.will_set(self.status_topic, will, qos=1, retain=True)
        # paho hints max_delay as int but only compares and sleeps with it: a fractional limit works as set.
        self._client.reconnect_delay_set(min_delay=1, max_delay=mqtt_config.reconnect_max_s)  # type: ignore[arg-type]
        self._client.max_inflight_messages_set(max_inflight + _PAHO_INFLIGHT_SPARE)
        configure_tls(self._client, mqtt_config)
        self._client.on_pre_connect = self._on_pre_connect
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    # -- public ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    @property
    def inflight(self) -> int:
        """Windows sent on the current connection and not yet acknowledged."""
        with self._lock:
            return sum(1 for key in self._inflight if key[0] == self._connection)

    def start(self) -> None:
        """Connect in the background; an unreachable broker is retried, and windows wait in the outbox."""
        if self._sender is not None:
            return
        self._sender = threading.Thread(target=self._run_sender, name="mqtt-sender", daemon=True)
        self._sender.start()
        self._client.connect_async(self.config.host, self.config.port,
                                   **connect_options(self.config, clean_start=True))
        self._client.loop_start()

    def stop(self, timeout: float = 5) -> None:
        """Publish ``stopped`` (retained) and wait for its PUBACK, then disconnect cleanly: no Last Will."""
        if self._sender is None or self._halt:
            return
        deadline = time.monotonic() + timeout
        self._closing = True
        info = self._publish_status("stopped") if self.connected else None
        if info is not None:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass
            if not info.is_published():
                log.warning("broker %s did not acknowledge the 'stopped' status within %g s", self.where, timeout)
        # PUBACKs for windows sent before "stopped" came before its own: settle them.
        self._halt = True
        self._wake.set()
        self._sender.join(max(0.5, deadline - time.monotonic()))
        if not self._sender.is_alive():
            self._settle_acks()
        self._client.disconnect()
        self._client.loop_stop()

    def kick(self) -> None:
        """New rows in the outbox: send them now."""
        self._wake.set()

    def set_camera_state(self, camera: str | None, reason: str | None = None) -> None:
        """Republish the retained status with the camera state when it changes."""
        camera = None if camera is None else str(camera)[:32]
        reason = None if reason is None else str(reason)[:500]
        with self._status_lock:
            if (camera, reason) == (self._camera, self._camera_reason):
                return
            self._camera, self._camera_reason = camera, reason
        if self.connected:
            self._publish_status("online")

    def set_condition(self, name: str, text: str | None) -> None:
        """Republish the retained status when a problem (``clock`` or ``outbox``; None: gone) changes."""
        limit = {"clock": 64, "outbox": 200}[name]
        with self._status_lock:
            conditions = dict(self._conditions)
            if text is None:
                conditions.pop(name, None)
            else:
                conditions[name] = str(text)[:limit]
            if conditions == self._conditions:
                return
            self._conditions = conditions
        if self.connected:
            self._publish_status("online")

    def publish_stats(self, stats_payload: StatsPayload) -> bool:
        """Send health figures with QoS 0, not retained; dropped (False) while offline."""
        if not isinstance(stats_payload, StatsPayload):
            raise TypeError(f"publish_stats takes a StatsPayload, not {type(stats_payload).__name__}")
        if stats_payload.device != self.device:
            raise ValueError(f"stats for device {stats_payload.device!r} from publisher {self.device!r}")
        if not self.connected:
            return False
        info = self._client.publish(self.stats_topic, stats_payload.to_json(), qos=0, retain=False)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    # -- status --------------------------------------------------------------------------------

    def _status_payload(self, state: State) -> bytes:
        return StatusPayload(state=state, device=self.device, t=format_utc(time.time()), camera=self._camera,
                             reason=self._camera_reason, version=self.version, **self._conditions).to_json()

    def _publish_status(self, state: State) -> MQTTMessageInfo | None:
        with self._status_lock:
            if self._closing and state != "stopped":
                return None
            with self._lock:
                connection = self._connection
            info = self._client.publish(self.status_topic, self._status_payload(state), qos=1, retain=True)
            with self._lock:
                self._status_mids[(connection, info.mid)] = state
            return info

    # -- paho callbacks (network thread); they must not raise --------------------------------

    def _problem(self, text: str) -> None:
        """Log a connection problem once, however often it repeats; the last one stays in last_error."""
        self.last_error = text
        if text != self._last_logged:
            self._last_logged = text
            self._announce = True
            log.warning("%s", text)
        else:
            log.debug("%s", text)

    def _notify(self, connected: bool) -> None:
        if self._on_connection is not None:
            try:
                self._on_connection(connected)
            except Exception:
                log.exception("on_connection callback failed")

    def _on_pre_connect(self, client: Client, userdata: object) -> None:
        # Read at every attempt, so a rotated password file is picked up without a restart.
        try:
            password = self.config.password()
        except EdgeAgentError as exc:
            self._problem(f"cannot read the MQTT password ({exc}); trying the last one read")
            password = self._password
        else:
            self._password = password
        try:
            if self.config.username is not None or password is not None:
                client.username_pw_set(self.config.username, password)
        except Exception:
            log.exception("cannot set the MQTT credentials")

    def _on_connect_fail(self, client: Client, userdata: object) -> None:
        reason = describe_socket_error(getattr(client, "last_socket_error", None))
        self._problem(f"cannot connect to broker {self.where}: {reason}; retrying, at most "
                      f"{self.config.reconnect_max_s:g} s apart")

    def _on_connect(self, client: Client, userdata: object, flags: ConnectFlags, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        try:
            if reason_code.is_failure:
                self._problem(refusal_text(self.config, reason_code) +
                              f"; retrying, at most {self.config.reconnect_max_s:g} s apart")
                return
            # What paho kept from the last connection is not sent again: the outbox resends
            # its windows, and the status below replaces any older one. This comes before
            # ``connected`` turns true, so nothing published on this connection is dropped
            # (a dropped message's PUBACK would never reach on_publish).
            client.drop_out_messages()
            with self._lock:
                self._connection += 1
                self._inflight.clear()
                self._status_mids.clear()
                self._connected = True
                self._connected_at = time.monotonic()
            self.last_error = None
            level = logging.INFO if self._announce else logging.DEBUG
            log.log(level, "connected to broker %s as %s", self.where, self.device)
            self._announce = False
            self._publish_status("online")
            self._wake.set()
            self._notify(True)
        except Exception:
            log.exception("on_connect failed")

    def _on_disconnect(self, client: Client, userdata: object, flags: DisconnectFlags, reason_code: ReasonCode,
                       properties: Properties | None) -> None:
        try:
            with self._lock:
                was_connected = self._connected
                self._connected = False
                self._connection += 1
                lasted = time.monotonic() - self._connected_at
            if not was_connected:
                return  # a refused CONNACK, already logged
            if self._closing:
                log.info("disconnected from broker %s", self.where)
            else:
                if lasted >= _HEALTHY_S:
                    self._last_logged = None
                why = "connection lost" if str(reason_code) == "Unspecified error" else str(reason_code).lower()
                self._problem(f"lost the connection to broker {self.where} ({why}); reconnecting")
            self._wake.set()
            self._notify(False)
        except Exception:
            log.exception("on_disconnect failed")

    def _on_publish(self, client: Client, userdata: object, mid: int, reason_code: ReasonCode,
                    properties: Properties) -> None:
        with self._lock:
            self._acks.append((self._connection, mid, reason_code))
        self._wake.set()

    # -- sender thread ------------------------------------------------------------------------

    def _run_sender(self) -> None:
        failure = None
        while not self._halt:
            self._wake.wait(self._next_wait())
            self._wake.clear()
            if self._halt:
                break
            try:
                self._settle_acks()
                if not self._closing:
                    self._send_some()
                failure = None
            except Exception as exc:
                # The outbox (a full or failing disk) or paho: say so once, and try again soon.
                if str(exc) != failure:
                    failure = str(exc)
                    log.exception("sending the outbox failed; retrying")
                self._wake.wait(1.0)

    def _next_wait(self) -> float:
        hold = self._hold_until - time.monotonic()
        return min(_IDLE_S, hold) if hold > 0 else _IDLE_S

    def _settle_acks(self) -> None:
        """Remove acknowledged windows from the outbox; keep refused ones."""
        done: list[tuple[Pending, ReasonCode]] = []
        refused_status: list[tuple[State, ReasonCode]] = []
        with self._lock:
            acks, self._acks = self._acks, []
            for connection, mid, reason in acks:
                pending = self._inflight.pop((connection, mid), None)
                if pending is not None:
                    done.append((pending, reason))
                state = self._status_mids.pop((connection, mid), None)
                if state is not None and reason.is_failure:
                    refused_status.append((state, reason))
            # Rows sent on an earlier connection and never acknowledged go again on this one.
            for key in [key for key in self._inflight if key[0] != self._connection]:
                del self._inflight[key]
        for pending, reason in done:
            if reason.is_failure:
                self._refused(pending, reason)
            else:
                self.outbox.remove(pending.id)
                self._refusal_delay = 0.0
        for state, reason in refused_status:
            self._problem(f"broker {self.where} refused the '{state}' status on {self.status_topic}: "
                          f"{str(reason).lower()} — check the broker's ACL")

    def _refused(self, pending: Pending, reason: ReasonCode) -> None:
        # The window stays in the outbox. Wait before trying again (doubling up to
        # reconnect_max_s), then send one window at a time until the broker takes one.
        self._refusal_delay = min(max(1.0, self._refusal_delay * 2), self.config.reconnect_max_s)
        self._hold_until = time.monotonic() + self._refusal_delay
        self._problem(f"broker {self.where} refused window seq {pending.seq} on {pending.topic}: "
                      f"{str(reason).lower()} — check the broker's ACL; the window stays in the outbox")

    def _send_some(self) -> None:
        if time.monotonic() < self._hold_until:
            return
        with self._lock:
            if not self._connected:
                return
            connection = self._connection
            busy = {pending.id for pending in self._inflight.values()}
        room = self.max_inflight - len(busy)
        if self._refusal_delay:
            room = 0 if busy else 1
        if room <= 0:
            return
        for pending in self.outbox.pending(room, exclude=busy):
            if self._closing:
                return
            info = self._client.publish(pending.topic, pending.payload, qos=1, retain=False)
            with self._lock:
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._connection != connection:
                    return  # the connection went away meanwhile; the row goes again on the next one
                self._inflight[(connection, info.mid)] = pending

